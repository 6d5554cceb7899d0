"""What dynod checks about its state before it trusts the ledger.

Two rules, both applied at start-up, before the spawner is asked about a single dyno:

- **The state dir is private.** It holds the ledger (every app's config vars), git repositories,
  slugs, unpacked slugs and build logs. It is made (or tightened to) 0700, owned by dynod's user,
  so no other local user can read anything beneath it, whatever the modes of the files inside.
  Nothing non-root needs to traverse it: the API socket lives in the run dir, dynos and builds see
  slugs and stacks only through mounts that root made, and git pushes (local or over SSH with
  forced commands) run git-receive-pack as root on root-owned repositories. The ledger's own
  files are 0600 as well (``SqliteLedger``), so loosening the dir by hand does not expose them.
- **A lost ledger is not a new one.** A ledger that is missing, empty (0 bytes) or has no schema
  while the state dir holds apps' data (slugs, repositories, build records) has been lost, not
  never made: starting on it would show "no apps" and stop every running dyno as unknown. dynod
  refuses to start, with one line, and touches nothing. A state dir with no app data at all is a
  new install, and the ledger is created; so installs and tests need no extra step.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UserError
from .backends import open_ledger
from .interface import Ledger, LedgerMissing

STATE_DIR_MODE = 0o700
# What only an app that the ledger knew about can have left in the state dir.
# (where, what, one, many)
_APP_DATA = (("slugs", "*.tgz", "slug", "slugs"),
             ("slugs/unpacked", "*", "unpacked slug", "unpacked slugs"),
             ("repos", "*.git", "git repository", "git repositories"),
             ("builds", "*", "app's build records", "apps' build records"))


def secure_state_dir(state_dir: Path) -> None:
    """Create the state dir 0700, or tighten an existing one to 0700 (older installs made it
    0755). Refuses a state dir that belongs to another user or is not a directory."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        # mkdir's mode is applied at creation (and only narrowed by the umask), so the dir is
        # never readable by others, not even between mkdir and a chmod.
        state_dir.mkdir(mode=STATE_DIR_MODE)
    except FileExistsError:
        pass
    info = os.stat(state_dir)
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"The state dir {state_dir} is not a directory; set state_dir to a directory.",
                        status=500, code="internal")
    if info.st_uid != os.geteuid():
        raise UserError(f"The state dir {state_dir} belongs to uid {info.st_uid}, not to dynod's user "
                        f"(uid {os.geteuid()}); chown it (chown -R root: {state_dir}) or choose another "
                        "state_dir.", status=500, code="internal")
    if stat.S_IMODE(info.st_mode) != STATE_DIR_MODE:
        os.chmod(state_dir, STATE_DIR_MODE)


def app_data(state_dir: Path) -> list[str]:
    """What of apps' data the state dir holds, as "3 slugs", "1 git repository", ...: only
    kinds that are present (empty directories of a fresh start are not data)."""
    found: list[str] = []
    for sub, pattern, one, many in _APP_DATA:
        directory = state_dir / sub
        if directory.is_dir():
            count = sum(1 for path in directory.glob(pattern) if not path.name.startswith("."))
            if count:
                found.append(f"{count} {one if count == 1 else many}")
    return found


def open_ledger_of(state_dir: Path, url: str) -> Ledger:
    """The ledger at ``url`` for the state in ``state_dir``: created when this is a new install,
    refused (one ``UserError`` line) when it is missing or empty although apps' data exist."""
    found = app_data(state_dir)
    try:
        return open_ledger(url, may_create=not found)
    except LedgerMissing as exc:
        raise UserError(
            f"{exc}, but {state_dir} holds apps' data ({', '.join(found)}): dynod will not start on a lost ledger "
            "(it would stop every running dyno as unknown). Restore the ledger from a backup, or move "
            f"{state_dir} aside to start afresh.", status=500, code="internal") from None
