"""The stack: the shared, read-only base root filesystem every dyno and build runs on.

A stack is defined by a small TOML file in the definitions dir (rootfs/ in a checkout, or
$DYNOD_ROOTFS_DIR) and built once with debootstrap into
``stacks_dir/<name>-<hash12>/rootfs``. The hash covers everything that changes the built tree
(the definition, the dyno uid/gid, the builder's own steps), so editing a definition means a new
directory beside the old one, never an in-place change under running dynos.

Rules this module keeps:
- a stack counts as built only once its directory has its final name, and it gets that name by
  one rename(2) of a finished temp dir: a crash mid-build leaves a ``.building-*`` dir that no
  reader counts, and the next builder removes it;
- one builder per stack at a time (flock on ``.<name>-<hash12>.lock``); a second waits, then finds
  the stack built;
- the pure parts (definition parsing, hashing, account and resolv.conf editing) do no I/O, so they
  test in milliseconds; debootstrap is behind the ``Bootstrap`` seam.

``ensure`` and ``build`` block for a minute or more on a first build: call them from a worker
thread (``trio.to_thread.run_sync``); ``progress`` is called on that thread.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import NotFound, UserError

Progress = Callable[[str], None]

# Bump when the post-build steps below change what a built tree holds: every stack rebuilds.
BUILDER_VERSION = 1
DEFAULT_STACK = "debian-13"
ROOTFS_DIR_ENV = "DYNOD_ROOTFS_DIR"
METADATA_FILE = "stack.json"

_STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9-]*$")
# Debian policy 5.6.1: package names are lowercase alphanumerics and + - . , at least two long.
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_VARIANTS = ("minbase", "buildd", "-")

# A dyno's hostname is set at start; this is only what a tool reading the file before then sees.
HOSTNAME_TEXT = "dyno\n"
HOSTS_TEXT = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
# systemd-resolved's stub points at the host's loopback, which a dyno's own netns cannot reach;
# this file lists the upstream servers the stub forwards to.
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


# ---------------------------------------------------------------------------------------------
# Definitions (pure)


@dataclass(frozen=True, slots=True)
class StackUser:
    """The unprivileged account app processes run as; its uid/gid come from settings."""

    name: str = "dyno"
    home: str = "/app"
    shell: str = "/bin/bash"


@dataclass(frozen=True, slots=True)
class StackDefinition:
    name: str
    suite: str
    mirror: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)
    description: str = ""
    user: StackUser = field(default_factory=StackUser)
    # The stack this one extends (a build image extends its run image): its packages come first.
    extends: str = ""


def _string(values: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = values.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing {key!r}; add it (see rootfs/README.md).")
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: {key!r} must be a non-empty string.")
    return value


def _names(values: dict[str, Any], key: str, where: str, pattern: re.Pattern[str],
           default: list[str] | None = None) -> tuple[str, ...]:
    value = values.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing {key!r}; add it (see rootfs/README.md).")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: {key!r} must be a list of strings.")
    for item in value:
        if not pattern.match(item):
            raise UserError(f"{where}: {key!r} has an invalid entry {item!r}.")
    if len(set(value)) != len(value):
        raise UserError(f"{where}: {key!r} lists an entry twice.")
    return tuple(value)


def _load_toml(name: str, text: str) -> dict[str, Any]:
    where = f"Stack definition {name}.toml"
    if not _STACK_NAME_RE.match(name):
        raise UserError(f"{where}: invalid stack name; use lowercase letters, digits, dots and dashes.")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where} is not valid TOML: {exc}.") from None


def extended_name(name: str, text: str) -> str:
    """The stack a definition extends ('' for none), so the store can load that one first."""
    value = _load_toml(name, text).get("extends", "")
    if not isinstance(value, str) or (value and not _STACK_NAME_RE.match(value)):
        raise UserError(f"Stack definition {name}.toml: 'extends' must name another stack definition.")
    return value


def parse_definition(name: str, text: str, base: StackDefinition | None = None) -> StackDefinition:
    """Parse and validate one definition file's text; ``name`` is the file's stem.

    With ``extends = "other"`` the definition is ``base`` (other's, parsed) plus its own packages:
    suite, mirror, variant, components and user come from the base unless given (a build image
    must match its run image, or what was built against it would not run on it).
    """
    where = f"Stack definition {name}.toml"
    values = _load_toml(name, text)
    known = {"suite", "variant", "mirror", "components", "packages", "description", "user", "extends"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}.")
    extends = extended_name(name, text)
    if extends:
        if base is None or base.name != extends:
            raise UserError(f"{where}: it extends {extends!r}, which was not given to it.")
        for key in ("suite", "mirror", "variant", "components", "user"):
            if key in values:
                raise UserError(f"{where}: {key!r} comes from {extends}.toml, which it extends; remove it.")
        own = _names(values, "packages", where, _PACKAGE_RE)
        description = values.get("description", "")
        if not isinstance(description, str):
            raise UserError(f"{where}: 'description' must be a string.")
        return StackDefinition(
            name=name, suite=base.suite, mirror=base.mirror,
            packages=base.packages + tuple(p for p in own if p not in base.packages),
            variant=base.variant, components=base.components, description=description, user=base.user,
            extends=extends)
    suite = _string(values, "suite", where)
    if not _SUITE_RE.match(suite):
        raise UserError(f"{where}: 'suite' must be a Debian suite name such as 'trixie'.")
    variant = _string(values, "variant", where, "minbase")
    if variant not in _VARIANTS:
        raise UserError(f"{where}: 'variant' must be one of {', '.join(_VARIANTS)}.")
    mirror = _string(values, "mirror", where)
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", mirror):
        raise UserError(f"{where}: 'mirror' must be an http:// or https:// URL.")
    user_values = values.get("user", {})
    if not isinstance(user_values, dict):
        raise UserError(f"{where}: [user] must be a table.")
    unknown = sorted(set(user_values) - {"name", "home", "shell"})
    if unknown:
        raise UserError(f"{where}: [user] has unknown key {unknown[0]!r}; known: home, name, shell.")
    defaults = StackUser()
    user = StackUser(
        name=_string(user_values, "name", f"{where} [user]", defaults.name),
        home=_string(user_values, "home", f"{where} [user]", defaults.home),
        shell=_string(user_values, "shell", f"{where} [user]", defaults.shell),
    )
    if not _ACCOUNT_RE.match(user.name):
        raise UserError(f"{where}: [user] name {user.name!r} is not a valid account name.")
    for key in ("home", "shell"):
        path = getattr(user, key)
        if not path.startswith("/") or ".." in path.split("/") or ":" in path:
            raise UserError(f"{where}: [user] {key} must be an absolute path without '..' or ':'.")
    description = values.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: 'description' must be a string.")
    return StackDefinition(
        name=name,
        suite=suite,
        mirror=mirror.rstrip("/"),
        packages=_names(values, "packages", where, _PACKAGE_RE),
        variant=variant,
        components=_names(values, "components", where, _COMPONENT_RE, ["main"]),
        description=description,
        user=user,
    )


def definition_hash(definition: StackDefinition, uid: int, gid: int) -> str:
    """sha256 of everything that shapes the built tree. The description is left out: it changes
    no file, so rewording it must not cost a rebuild."""
    shaped = asdict(definition)
    del shaped["description"]
    if not shaped["extends"]:  # absent from stacks that extend none: their hashes stay as they were
        del shaped["extends"]
    shaped.update(uid=uid, gid=gid, builder=BUILDER_VERSION)
    return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Account and network files (pure: text in, text out)


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip()]


def _join(entries: list[list[str]]) -> str:
    return "".join(":".join(entry) + "\n" for entry in entries)


def _check_free(entries: list[list[str]], name: str, number: int, what: str, file: str) -> None:
    for entry in entries:
        if entry[0] != name and len(entry) > 2 and entry[2] == str(number):
            raise UserError(
                f"The stack's {file} already gives {what} {number} to {entry[0]!r}; "
                f"set [dynos] {what} in dynod.toml to a free id."
            )


def with_account(files: dict[str, str], user: StackUser, uid: int, gid: int) -> dict[str, str]:
    """Return passwd/group/shadow/gshadow texts with ``user`` (and its group) added or replaced.

    The password is locked ('!'): nobody logs in as the dyno user, processes are started as it.
    """
    passwd, group = _entries(files["passwd"]), _entries(files["group"])
    _check_free(passwd, user.name, uid, "uid", "/etc/passwd")
    _check_free(group, user.name, gid, "gid", "/etc/group")
    passwd = [e for e in passwd if e[0] != user.name]
    passwd.append([user.name, "x", str(uid), str(gid), "dyno", user.home, user.shell])
    group = [e for e in group if e[0] != user.name]
    group.append([user.name, "x", str(gid), ""])
    shadow = [e for e in _entries(files["shadow"]) if e[0] != user.name]
    # Field 3 (days since 1970 of the last change) is left empty, so builds stay reproducible.
    shadow.append([user.name, "!", "", "0", "99999", "7", "", "", ""])
    gshadow = [e for e in _entries(files["gshadow"]) if e[0] != user.name]
    gshadow.append([user.name, "!", "", ""])
    return {"passwd": _join(passwd), "group": _join(group), "shadow": _join(shadow),
            "gshadow": _join(gshadow)}


def _nameservers(text: str) -> list[str]:
    return [parts[1] for parts in (line.split() for line in text.splitlines())
            if len(parts) >= 2 and parts[0] == "nameserver"]


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def container_resolv_conf(host_text: str, upstream_text: str | None) -> tuple[str, str | None]:
    """Pick the resolv.conf a dyno gets: (text, warning or None).

    A dyno has its own network namespace, so a loopback nameserver (systemd-resolved's
    127.0.0.53, a local dnsmasq) is unreachable from it: prefer the host's file when it names a
    real server, else resolved's upstream list, else keep the host's and warn.
    """
    if any(not _is_loopback(ns) for ns in _nameservers(host_text)):
        return host_text, None
    if upstream_text and any(not _is_loopback(ns) for ns in _nameservers(upstream_text)):
        return upstream_text, None
    return host_text, ("the host's resolv.conf names only loopback nameservers, which dynos cannot "
                       "reach; edit the stack's /etc/resolv.conf or the host's and rebuild with --force")


# ---------------------------------------------------------------------------------------------
# Filesystem helpers


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (like ``du -s``: blocks, each hard-linked inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


def _unescape_mountinfo(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mounts_beneath(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or beneath ``path`` in /proc/self/mountinfo text, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            point = _unescape_mountinfo(parts[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a (possibly half-built) tree. A debootstrap killed mid-run leaves /proc, /sys or
    device binds mounted inside its target; deleting through them would reach the host's, so
    they are detached first, and the delete is refused if any is still there."""
    if not path.exists():
        return
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for point in mounts_beneath(path.resolve(), mountinfo):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = mounts_beneath(path.resolve(), Path("/proc/self/mountinfo").read_text())
    if left:
        raise UserError(f"Cannot remove {path}: {left[0]} is still mounted; unmount it and retry.")
    shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------
# Building


class Bootstrap(Protocol):
    """Makes a Debian tree at ``target`` from ``definition``; raises UserError on failure."""

    def __call__(self, definition: StackDefinition, target: Path, cache_dir: Path,
                 progress: Progress) -> None: ...


def debootstrap_argv(definition: StackDefinition, target: Path, cache_dir: Path) -> list[str]:
    """The base system only: the definition's packages are apt's job (see apt_steps)."""
    return ["debootstrap", f"--variant={definition.variant}", f"--cache-dir={cache_dir}",
            f"--components={','.join(definition.components)}",
            definition.suite, str(target), definition.mirror]


def build_namespace_argv(target: Path) -> list[str]:
    """The prefix that runs a command in a private mount and PID namespace with ``target/proc``
    mounted: maintainer scripts need /proc (the JRE's postinst runs `java`, which refuses to
    start without it). The mount exists only in that namespace, so the kernel drops it when the
    namespace's last process exits, on every path (success, error, SIGKILL): nothing to unmount,
    and the host never sees it. The PID namespace makes its /proc show only the build's processes
    and kills whatever a maintainer script left running when apt exits."""
    return ["unshare", "--mount", "--propagation=private", "--pid", "--fork", "--kill-child",
            f"--mount-proc={target / 'proc'}"]


def apt_steps(definition: StackDefinition, target: Path) -> list[tuple[str, list[str]]]:
    """apt-get runs, chrooted into the debootstrapped base, that install the definition's packages.

    Not debootstrap's --include: its resolver follows plain Depends only, and with npm it leaves
    dozens of node-* dependencies out (npm then dies with "Cannot find module"), or fails while
    configuring, depending on the order it picks. apt resolves properly; check proves the result.
    """
    # Dpkg::Use-Pty=0: the chroot has no /dev/pts, and apt would print an error line for it.
    chroot = [*build_namespace_argv(target), "chroot", str(target),
              "apt-get", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0"]
    steps = [("apt-get check", [*chroot, "check"])]
    if definition.packages:
        steps.insert(0, ("apt-get install", [*chroot, "install", *definition.packages]))
    return steps


_BUILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive"}
# apt's summary line, e.g. "12 upgraded, 340 newly installed, 0 to remove and 0 not upgraded."
_APT_SUMMARY = re.compile(r"^\d+ upgraded, \d+ newly installed")
# Refuses every service start while packages are configured in the chroot (invoke-rc.d's hook).
_POLICY_RC_D = "#!/bin/sh\n# dynod stack build: no daemons start inside a stack.\nexit 101\n"


def run_debootstrap(definition: StackDefinition, target: Path, cache_dir: Path,
                    progress: Progress) -> None:
    """Run debootstrap, then apt in the new tree to complete the package set.

    debootstrap's I:/W:/E: lines and apt's summary lines go to ``progress``.
    """
    if os.geteuid() != 0:
        raise UserError("Building a stack runs debootstrap, which needs root: run this as root.")
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is not installed: run ./install.sh --deps-only "
                        "(or apt-get install debootstrap).")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _run_logged(debootstrap_argv(definition, target, cache_dir), definition.name, "debootstrap",
                lambda line: line[:2] in ("I:", "W:", "E:"), progress)
    policy = target / "usr/sbin/policy-rc.d"
    policy.write_text(_POLICY_RC_D)
    policy.chmod(0o755)
    # The same .deb cache debootstrap used, both ways, so a rebuild downloads nothing twice.
    archives = target / "var/cache/apt/archives"
    _copy_debs(cache_dir, archives)
    try:
        for what, argv in apt_steps(definition, target):
            _run_logged(argv, definition.name, what,
                        lambda line: line[:2] in ("W:", "E:") or bool(_APT_SUMMARY.match(line)), progress)
    finally:
        policy.unlink()
    _copy_debs(archives, cache_dir)


def _copy_debs(source: Path, dest: Path) -> None:
    for deb in source.glob("*.deb"):
        if not (dest / deb.name).exists():
            try:
                os.link(deb, dest / deb.name)
            except OSError:  # another filesystem
                shutil.copyfile(deb, dest / deb.name)


def _run_logged(argv: list[str], stack_name: str, what: str, shown: Callable[[str], bool],
                progress: Progress) -> None:
    """Run one build command, passing the lines ``shown`` selects to ``progress``."""
    # Its own session, so an interrupted build can stop the command and everything it started.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=_BUILD_ENV)
    tail: deque[str] = deque(maxlen=20)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            if shown(line):
                progress(line)
        status = proc.wait()
    except BaseException:
        # SIGTERM first: debootstrap's exit trap unmounts what it mounted inside the target.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if status != 0:
        errors = [line for line in tail if line.startswith("E:")]
        reason = errors[0][2:].strip() if errors else (tail[-1] if tail else "no output")
        raise UserError(f"Building stack {stack_name} failed ({what} exit {status}): {reason}.")


def finish_rootfs(definition: StackDefinition, rootfs: Path, uid: int, gid: int, *,
                  host_resolv_conf: Path = Path("/etc/resolv.conf"),
                  resolved_upstream: Path = RESOLVED_UPSTREAM,
                  progress: Progress) -> None:
    """The steps after debootstrap that make a tree a stack: the dyno account, an empty home,
    no apt caches, and network files that make sense inside a container."""
    etc = rootfs / "etc"
    names = ("passwd", "group", "shadow", "gshadow")
    files = with_account({n: (etc / n).read_text() for n in names}, definition.user, uid, gid)
    for name in names:
        _replace_file(etc / name, files[name], 0o640 if "shadow" in name else 0o644)
    home = rootfs / definition.user.home.lstrip("/")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, mode=0o755)
    # Only root can give a file away; a non-root run is only ever a test with a fake bootstrap.
    if os.geteuid() == 0:
        os.chown(home, uid, gid)
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/cache/apt/archives/partial/*", "var/cache/debconf/*-old", "var/log/apt/*",
                    "var/log/dpkg.log", "var/log/bootstrap.log", "var/log/alternatives.log"):
        for found in rootfs.glob(pattern):
            if found.is_dir() and not found.is_symlink():
                shutil.rmtree(found)
            else:
                found.unlink()
    _replace_file(etc / "hostname", HOSTNAME_TEXT, 0o644)
    _replace_file(etc / "hosts", HOSTS_TEXT, 0o644)
    upstream = resolved_upstream.read_text() if resolved_upstream.exists() else None
    resolv, warning = container_resolv_conf(host_resolv_conf.read_text(), upstream)
    if warning:
        progress(f"W: {warning}")
    _replace_file(etc / "resolv.conf", resolv, 0o644)


def _replace_file(path: Path, text: str, mode: int) -> None:
    # unlink first: debootstrap may leave a symlink (resolv.conf) that must not be written through.
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


# ---------------------------------------------------------------------------------------------
# The store


def default_definitions_dir() -> Path:
    """$DYNOD_ROOTFS_DIR, else the rootfs/ beside the dynod package (a checkout or -e install)."""
    env = os.environ.get(ROOTFS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "rootfs"


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
        if not _STACK_NAME_RE.match(name) or not file.is_file():
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
        if _STACK_NAME_RE.match(candidate) and file.is_file() and extended_name(candidate, file.read_text()) == name:
            return candidate
        return name

    def ensure_build(self, name: str, progress: Progress) -> Path:
        """The rootfs builds of ``name`` run on (its build image, or itself), built on first need."""
        return self.ensure(self.build_image(name), progress)

    def _key(self, definition: StackDefinition) -> tuple[str, str]:
        digest = definition_hash(definition, self.uid, self.gid)
        return digest, f"{definition.name}-{digest[:12]}"

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


# ---------------------------------------------------------------------------------------------
# Command line (used by install.sh and bench/): python -m dynod.stack build|path|list


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        print(f"error: {message} (see python -m dynod.stack --help)", file=sys.stderr)
        sys.exit(2)


def _store_from_args(args: argparse.Namespace) -> StackStore:
    from .settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    stacks_dir = Path(args.stacks_dir) if args.stacks_dir else settings.stacks_dir
    return StackStore(stacks_dir, default=settings.stack, uid=settings.dynos.uid, gid=settings.dynos.gid)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m dynod.stack", description="Build and list dynod stacks.")
    parser.add_argument("--config", help="dynod.toml (default: $DYNOD_CONFIG or /etc/dynod/dynod.toml)")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_OneLineParser)
    build = verbs.add_parser("build", help="build a stack and its build image (the default one without NAME)")
    build.add_argument("name", nargs="?", metavar="NAME")
    build.add_argument("--stacks-dir", metavar="DIR")
    build.add_argument("--force", action="store_true", help="rebuild even if built")
    where = verbs.add_parser("path", help="print a built stack's rootfs dir (the default one without NAME)")
    where.add_argument("name", nargs="?", metavar="NAME")
    where.add_argument("--stacks-dir", metavar="DIR")
    listing = verbs.add_parser("list", help="list stack definitions and whether they are built")
    listing.add_argument("--stacks-dir", metavar="DIR")
    listing.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        store = _store_from_args(args)
        if args.verb == "build":
            name = args.name or store.default
            # A stack and the build image builds of it run on (debian-13 and debian-13-build).
            for each in dict.fromkeys([name, store.build_image(name)]):
                path = store.build(each, lambda line: print(line, flush=True), force=args.force)
                print(path)
        elif args.verb == "path":
            print(store.path(args.name or store.default))
        else:
            stacks = store.list()
            if args.json:
                print(json.dumps(stacks, indent=2))
            else:
                print(f"{'NAME':<16} {'HASH':<12} {'BUILT':<5} {'SIZE':>8}  PATH")
                for s in stacks:
                    size = f"{s['size_bytes'] / 1e6:.0f} MB" if s["size_bytes"] else "-"
                    mark = "*" if s["default"] else " "
                    print(f"{s['name'] + mark:<16} {s['hash'][:12]:<12} {'yes' if s['built'] else 'no':<5} "
                          f"{size:>8}  {s['path'] or '-'}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the partial build was removed.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
