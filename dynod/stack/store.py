"""The stack store: built stacks under ``stacks_dir``, one per definition in the definitions dir.

Rules it keeps:
- a stack counts as built only once its directory has its final name, and it gets that name by
  one rename(2) of a finished temp dir: a crash mid-build leaves a ``.building-*`` dir that no
  reader counts, and the next builder removes it;
- one builder per stack at a time (flock on ``.<name>-<hash12>.lock``); a second waits, then finds
  the stack built.

``ensure`` and ``build`` block for a minute or more on a first build: call them from a worker
thread (``trio.to_thread.run_sync``); ``progress`` is called on that thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import NotFound, UserError
from .bootstrap import Bootstrap, Progress, finish_rootfs, run_debootstrap
from .definition import DEFAULT_STACK, StackDefinition, extended_name, is_stack_name, parse_definition, stack_key
from .tree import disk_usage, remove_tree

ROOTFS_DIR_ENV = "DYNOD_ROOTFS_DIR"
METADATA_FILE = "stack.json"


def default_definitions_dir() -> Path:
    """$DYNOD_ROOTFS_DIR, else the rootfs/ beside the dynod package (a checkout or -e install)."""
    env = os.environ.get(ROOTFS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "rootfs"


@contextlib.contextmanager
def _locked(lock_path: Path, what: str, progress: Progress) -> Iterator[None]:
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"Waiting for another build of {what} to finish...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class StackStore:
    """Built stacks under ``stacks_dir``, one per definition in ``definitions_dir``."""

    def __init__(self, stacks_dir: Path, definitions_dir: Path | None = None, *,
                 default: str = DEFAULT_STACK, uid: int = 61000, gid: int = 61000,
                 bootstrap: Bootstrap = run_debootstrap) -> None:
        self.stacks_dir = Path(stacks_dir)
        self.definitions_dir = Path(definitions_dir) if definitions_dir else default_definitions_dir()
        self.default = default
        self.uid = uid
        self.gid = gid
        self._bootstrap = bootstrap

    # -- definitions

    def names(self) -> list[str]:
        if not self.definitions_dir.is_dir():
            raise UserError(f"Stack definitions dir {self.definitions_dir} does not exist; "
                            f"set {ROOTFS_DIR_ENV} to dynod's rootfs/ directory.")
        return sorted(p.stem for p in self.definitions_dir.glob("*.toml"))

    def definition(self, name: str, _chain: tuple[str, ...] = ()) -> StackDefinition:
        file = self.definitions_dir / f"{name}.toml"
        if not is_stack_name(name) or not file.is_file():
            known = ", ".join(self.names()) or "none"
            raise NotFound(f"Unknown stack {name!r}; known stacks: {known}.")
        text = file.read_text()
        extends = extended_name(name, text)
        if not extends:
            return parse_definition(name, text)
        if extends in (*_chain, name):
            raise UserError(f"Stack definition {name}.toml: 'extends' makes a loop "
                            f"({' -> '.join((*_chain, name, extends))}).")
        return parse_definition(name, text, self.definition(extends, (*_chain, name)))

    def build_image(self, name: str) -> str:
        """The stack builds of ``name`` run on: ``<name>-build`` when it extends ``name``, else itself.

        Like heroku-24 and heroku-24-build: the build image adds compilers and headers to the run
        image, so a native extension built on it runs on the run image beneath the dyno.
        """
        candidate = f"{name}-build"
        file = self.definitions_dir / f"{candidate}.toml"
        if is_stack_name(candidate) and file.is_file() and extended_name(candidate, file.read_text()) == name:
            return candidate
        return name

    def ensure_build(self, name: str, progress: Progress) -> Path:
        """The rootfs builds of ``name`` run on (its build image, or itself), built on first need."""
        return self.ensure(self.build_image(name), progress)

    def _key(self, definition: StackDefinition) -> tuple[str, str]:
        return stack_key(definition, self.uid, self.gid)

    # -- queries

    def is_built(self, name: str) -> bool:
        _, key = self._key(self.definition(name))
        return (self.stacks_dir / key / METADATA_FILE).is_file()

    def path(self, name: str) -> Path:
        """The rootfs dir of the built stack ``name``."""
        _, key = self._key(self.definition(name))
        if not (self.stacks_dir / key / METADATA_FILE).is_file():
            raise NotFound(f"Stack {name} is not built yet; build it with `dynoctl stacks:build {name}` "
                           "or `python -m dynod.stack build`.")
        return self.stacks_dir / key / "rootfs"

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            digest, key = self._key(self.definition(name))
            meta_file = self.stacks_dir / key / METADATA_FILE
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
            out.append({
                "name": name,
                "hash": digest,
                "built": meta is not None,
                "path": str(self.stacks_dir / key / "rootfs") if meta else None,
                "size_bytes": meta["size_bytes"] if meta else None,
                "default": name == self.default,
            })
        return out

    # -- building

    def ensure(self, name: str, progress: Progress) -> Path:
        """The built stack's rootfs, building it first if this is its first use."""
        return self.build(name, progress, force=False)

    def build(self, name: str, progress: Progress, force: bool = False) -> Path:
        """Build ``name`` (unless built and not ``force``) and return its rootfs dir.

        With ``force`` the new tree replaces the old one: dynos running on the old tree should be
        restarted, because an overlay's lower layer must not change under it.
        """
        definition = self.definition(name)
        digest, key = self._key(definition)
        final = self.stacks_dir / key
        self.stacks_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.stacks_dir / f".{key}.lock", name, progress):
            if (final / METADATA_FILE).is_file() and not force:
                return final / "rootfs"
            # Holding the lock, any temp dir of this key is a dead builder's leftover.
            leftovers = [*self.stacks_dir.glob(f".building-{key}-*"), *self.stacks_dir.glob(f".old-{key}-*")]
            for stale in leftovers:
                progress(f"Removing {stale.name}, left by an interrupted build")
                remove_tree(stale)
            temp = self.stacks_dir / f".building-{key}-{os.getpid()}"
            temp.mkdir(mode=0o755)
            try:
                started = time.monotonic()
                progress(f"Building stack {name} ({definition.suite}, {len(definition.packages)} packages) "
                         f"into {final}")
                self._bootstrap(definition, temp / "rootfs", self.stacks_dir / ".debs", progress)
                bootstrapped = time.monotonic()
                progress(f"Base system and packages installed in {bootstrapped - started:.1f} s")
                finish_rootfs(definition, temp / "rootfs", self.uid, self.gid, progress=progress)
                size = disk_usage(temp / "rootfs")
                meta = {"name": name, "hash": digest, "suite": definition.suite,
                        "packages": list(definition.packages), "uid": self.uid, "gid": self.gid,
                        "built_at": time.time(), "build_seconds": round(time.monotonic() - started, 1),
                        "size_bytes": size}
                (temp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
                old = None
                if final.exists():
                    old = self.stacks_dir / f".old-{key}-{os.getpid()}"
                    final.rename(old)
                temp.rename(final)
            except BaseException as exc:
                # The half-built tree goes; debootstrap's own log is what a user needs to see why.
                log = temp / "rootfs" / "debootstrap" / "debootstrap.log"
                kept = self.stacks_dir / f"{key}.failed.log"
                has_log = log.is_file()
                if has_log:
                    shutil.copyfile(log, kept)
                remove_tree(temp)
                if isinstance(exc, UserError) and has_log:
                    raise UserError(f"{exc} Full log: {kept}") from None
                raise
            if old is not None:
                remove_tree(old)
            (self.stacks_dir / f"{key}.failed.log").unlink(missing_ok=True)
            progress(f"Stack {name} built in {meta['build_seconds']} s, {size / 1e6:.0f} MB: "
                     f"{final / 'rootfs'}")
            return final / "rootfs"

