"""Turning source into slugs: pack/verify/store (``slug``), buildpacks and git receive."""
