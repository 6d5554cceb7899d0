"""ACM's own state under ``<state_dir>/acm``: the ACME account key and one JSON file per app.

Every file is 0600 in a 0700 directory and written atomically (a temporary file, fsync, rename), so a
crash leaves the old state or the new, never half of one. An app's file goes with the app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..model import APP_NAME_RE
from ..private_file import write_private
from .schedule import AppState


class AcmStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps_dir = root / "apps"

    def _ensure(self) -> None:
        for directory in (self.root, self.apps_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)

    def _app_path(self, app: str) -> Path:
        # An app name is checked by the ledger already; checked again because it becomes a path here.
        if not APP_NAME_RE.match(app):
            raise ValueError(f"not an app name: {app!r}")
        return self.apps_dir / f"{app}.json"

    # -- the account key -----------------------------------------------------------------------
    @property
    def account_key_path(self) -> Path:
        return self.root / "account-key.pem"

    def account_key(self) -> bytes | None:
        try:
            return self.account_key_path.read_bytes()
        except FileNotFoundError:
            return None

    def save_account_key(self, pem: bytes) -> None:
        self._ensure()
        write_private(self.account_key_path, pem)

    # -- per-app state -------------------------------------------------------------------------
    def load(self, app: str) -> AppState:
        try:
            return AppState.from_json(json.loads(self._app_path(app).read_text()))
        except FileNotFoundError:
            return AppState()
        except (ValueError, UnicodeDecodeError):
            return AppState()  # damaged: ACM starts over for the app (what is installed keeps serving)

    def save(self, app: str, state: AppState) -> None:
        self._ensure()
        write_private(self._app_path(app), json.dumps(state.to_json(), indent=1).encode())

    def remove(self, app: str) -> None:
        self._app_path(app).unlink(missing_ok=True)

    def apps(self) -> list[str]:
        """The apps ACM has state for (including ones since destroyed: the manager cleans those up)."""
        try:
            names = [p.name[:-5] for p in self.apps_dir.iterdir() if p.name.endswith(".json")]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if APP_NAME_RE.match(n))
