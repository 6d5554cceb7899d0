"""A private file written whole: keys, certificates with their keys, ACME state.

Written to a temporary file beside it (0600 from its creation, never through a link), synced,
handed to ``owner`` if given (a server that must own its key), then renamed over the old one:
a reader sees the old file or the new one, never a part, and never a moment of wider modes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_private(path: Path, data: bytes, *, owner: str | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if owner is not None:
            shutil.chown(tmp, owner, owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
