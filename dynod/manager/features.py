"""Heroku's app features that dynod knows, and what each one does (``dynoctl features``).

The ledger keeps only the names an app has enabled; this catalogue says which names exist, so a
typo is refused with the list instead of being stored and silently doing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotFound


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    description: str
    doc: str  # where dynod's docs explain it


PREBOOT = "preboot"

CATALOGUE: dict[str, Feature] = {f.name: f for f in (
    Feature(PREBOOT, "Provide seamless web dyno deploys: new web dynos boot and are up before the old "
                     "ones leave the routes", "docs/manager.md#preboot"),
)}


def feature(name: str) -> Feature:
    """The catalogue entry for ``name``; NotFound, with the names there are, for any other."""
    found = CATALOGUE.get(name) if isinstance(name, str) else None
    if found is None:
        raise NotFound(f"Couldn't find that feature ({name!r}); dynod has: {', '.join(sorted(CATALOGUE))}.")
    return found


def feature_json(found: Feature, enabled: bool) -> dict[str, object]:
    """The Platform API's shape of an app feature."""
    return {"name": found.name, "description": found.description, "enabled": enabled, "state": "general",
            "doc_url": found.doc}
