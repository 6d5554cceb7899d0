"""Building a stack's tree: debootstrap for the base system, apt (in a private mount and PID
namespace, chrooted) for the definition's packages, then the edits that make it a stack.

``run_debootstrap`` is the real ``Bootstrap``; the store takes any other (the unit tests' fake
writes a tiny tree), so everything but debootstrap itself tests without root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..errors import UserError
from ..linux import process as processes
from .definition import StackDefinition
from .etc_files import HOSTNAME_TEXT, HOSTS_TEXT, RESOLVED_UPSTREAM, container_resolv_conf, with_account

Progress = Callable[[str], None]


class Bootstrap(Protocol):
    """Makes a Debian tree at ``target`` from ``definition``; raises UserError on failure."""

    def __call__(self, definition: StackDefinition, target: Path, cache_dir: Path,
                 progress: Progress) -> None: ...


DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")


def debootstrap_argv(definition: StackDefinition, target: Path, cache_dir: Path,
                     scripts: Path = DEBOOTSTRAP_SCRIPTS) -> list[str]:
    """The base system only: the definition's packages are apt's job (see apt_steps).

    A suite named after the host's debootstrap was released (Debian 12's knows trixie, not
    forky) has no script of its own there; Debian's later suites are all bootstrapped by sid's
    script (debootstrap's own links for testing and unstable point at it), so it is named."""
    argv = ["debootstrap", f"--variant={definition.variant}", f"--cache-dir={cache_dir}",
            f"--components={','.join(definition.components)}",
            definition.suite, str(target), definition.mirror]
    if not (scripts / definition.suite).exists() and (scripts / "sid").exists():
        argv.append(str(scripts / "sid"))
    return argv


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
        processes.signal_group(proc.pid, signal.SIGTERM)  # False if it is already gone
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            processes.signal_group(proc.pid, signal.SIGKILL)
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

