"""Where ``dynoctl login`` keeps a remote dynod's token and pinned certificate.

``$XDG_CONFIG_HOME/dynod/credentials.json`` (default ~/.config/dynod), mode 0600 in a 0700
directory: {"https://host:port": {"token", "email", "cafile"}}. The pinned certificate (a
self-signed dynod's) is a PEM file beside it; a host whose certificate the system trusts pins
nothing. ``$DYNOD_API_TOKEN`` overrides the stored token (for scripts and CI), as
``HEROKU_API_KEY`` does for Heroku's CLI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..api.client import Remote
from ..errors import UserError


def config_dir(environ: dict[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "dynod"


def normalize(host: str) -> str:
    return Remote(host, "").url


def load(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    path = config_dir(environ) / "credentials.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read {path} ({exc}): remove it and log in again.") from None
    return data if isinstance(data, dict) else {}


def save(environ: dict[str, str], data: dict[str, dict[str, str]]) -> None:
    directory = config_dir(environ)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "credentials.json"
    temporary = directory / f".credentials.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(temporary, path)


def pin_path(environ: dict[str, str], url: str) -> Path:
    safe = url.removeprefix("https://").replace(":", "_").replace("/", "_").replace("[", "").replace("]", "")
    return config_dir(environ) / f"{safe}.pem"


def remote_for(host: str, environ: dict[str, str]) -> Remote:
    """The Remote for ``host``: its stored login, or $DYNOD_API_TOKEN."""
    url = normalize(host)
    entry = load(environ).get(url, {})
    token = environ.get("DYNOD_API_TOKEN") or entry.get("token")
    if not token:
        raise UserError(f"Not logged in to {url}: run `dynoctl login --host {url}`.")
    return Remote(url, token, entry.get("cafile") or environ.get("DYNOD_CA_FILE") or None)
