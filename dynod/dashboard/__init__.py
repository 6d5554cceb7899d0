"""The web dashboard: static pages shipped in the package, speaking the control API (docs/dashboard.md)."""
