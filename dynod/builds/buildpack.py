"""The buildpack runner: Heroku's buildpack API, run inside a build container, never on the host.

A build compiles the app in place: the source directory is /app inside the container, so every
path a buildpack writes (a venv's shebangs, node_modules/.bin links) stays valid in the dyno,
where the slug is unpacked at /app again. The steps, as Heroku defines them:

1. ``.slugignore`` removes what the slug must not carry (before any buildpack sees the tree);
2. choose buildpacks: the app's own list (``dynoctl buildpacks``), else those named by the
   BUILDPACK_URL config var or the app's ``.buildpacks`` file (built-in names, local paths, git
   URLs; several = multi-buildpack), else the first
   built-in whose ``bin/detect /app`` exits 0; detect prints the name shown to the user;
3. ``bin/compile /app /tmp/cache /tmp/env`` for each, with STACK set and ENV_DIR holding one file
   per config var; the cache directory is the app's and survives between builds;
4. ``bin/release /app`` prints YAML (``default_process_types``, ``addons``); the app's Procfile
   overrides the buildpack's defaults, type by type.

Rules kept here: one deadline for the whole build (Heroku's 15 minutes by default), after which
the container kills everything the build started; output is streamed line by line with a bound
per line and a bound in total, so no buildpack can make dynod hold megabytes; every failure is a
``BuildError``, one sentence saying what failed and what to do. Files the container wrote are
read from the host with O_NOFOLLOW, so a build cannot point dynod (root) at a host file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio
import yaml

from ..errors import UserError
from ..model import CONFIG_VAR_RE
from ..procfile import parse_procfile
from .build_output import BuildOutputSplitter, detail, seconds, step
from .slugignore import apply_slugignore

# Where things are inside the build container (Heroku's layout: the app is built where it runs).
APP_DIR = "/app"
CACHE_DIR = "/tmp/cache"
ENV_DIR = "/tmp/env"
BUILDPACKS_DIR = "/buildpacks"
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_TIMEOUT = 15 * 60.0  # Heroku's compile limit
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # more than any honest build prints
MAX_DETECT_OUTPUT = 4096
MAX_RELEASE_YAML_BYTES = 1024 * 1024
MAX_APP_FILE_BYTES = 1024 * 1024  # Procfile, .buildpacks
GIT_CLONE_TIMEOUT = 120.0

BUILTIN_ROOT = Path(__file__).resolve().parents[2] / "buildpacks"
# Detection order, most specific first: Heroku's (Ruby, Node.js, Clojure, Python, Java, Gradle,
# Scala, PHP, Go), except that Python stays ahead of Node.js as it always has here (a Django app
# with a package.json for its assets is a Python app); java covers Heroku's java and gradle.
BUILTIN_ORDER = ("ruby", "python", "nodejs", "clojure", "java", "scala", "php", "go", "procfile")
# Heroku's buildpack registry names that dynod answers without the registry (it is not reachable
# from here): heroku/<lang> are the built-ins (heroku/gradle is the java one, which builds Gradle
# apps too); heroku-community/* are cloned from the public repository the registry publishes.
BUILTIN_ALIASES = {"gradle": "java"}
REGISTRY_SOURCES = {
    "heroku-community/apt": "https://github.com/heroku/heroku-buildpack-apt",
    "heroku-community/nginx": "https://github.com/heroku/heroku-buildpack-nginx",
    "heroku-community/inline": "https://github.com/heroku/heroku-buildpack-inline",
    "heroku-community/multi-procfile": "https://github.com/heroku/heroku-buildpack-multi-procfile",
    "heroku-community/static": "https://github.com/heroku/heroku-buildpack-static",
    "heroku-community/chrome-for-testing": "https://github.com/heroku/heroku-buildpack-chrome-for-testing",
}


class BuildTimeout(Exception):
    """Raised by a BuildContainer when a command outlives its timeout (its process tree is gone)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"command exceeded {timeout:.0f} s")
        self.timeout = timeout


class BuildError(UserError):
    """A build that failed: the sentence says which step failed and what the user can do."""


class BuildContainer(Protocol):
    # The host directory shown read-only at /buildpacks, read when a command starts: the build's
    # own (the buildpacks it names, placed there), or the shared built-ins (shared_builtins).
    buildpacks_dir: Path

    async def run(self, argv: list[str], *, env: dict[str, str], timeout: float,
                  output: Callable[[bytes], None]) -> int:
        """Run ``argv`` in the container; stdout and stderr both go to ``output`` as they come.

        /app is the build dir (read-write), /tmp/cache the app's build cache, /tmp/env the ENV_DIR,
        /buildpacks/<name> each buildpack (read-only). Returns the exit code; raises BuildTimeout
        past ``timeout``. Past the timeout, and when the calling task is cancelled, the whole
        process tree is killed before this returns or raises.
        """
        ...


@dataclass(frozen=True, slots=True)
class Buildpack:
    name: str  # its directory under /buildpacks
    path: Path  # on the host: holds bin/detect, bin/compile, bin/release
    source: str  # what the user named (a built-in name, a path, a git URL), for messages


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    default_process_types: dict[str, str] = field(default_factory=dict)
    addons: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CompileResult:
    buildpacks: list[str]  # the names the buildpacks' detect printed, in run order
    process_types: dict[str, str]  # buildpack defaults overlaid with the Procfile
    addons: list[str]
    slugignored: list[str]  # paths .slugignore removed
    timings: dict[str, float]  # step -> seconds


def builtin_buildpacks(root: Path = BUILTIN_ROOT) -> list[Buildpack]:
    return [Buildpack(name, root / name, name) for name in BUILTIN_ORDER]


def prepared_builtins(root: Path, builtins: list[Buildpack] | None = None) -> list[Buildpack]:
    """The built-in buildpacks copied once under ``root``, which a build that uses them alone is
    then shown at /buildpacks as it is (``shared_builtins``), instead of getting copies of its own.

    Taken afresh each time dynod starts, so a build never sees the buildpacks of an older dynod,
    and holding nothing else. Root's files, shown read-only: a build can change none of them.
    """
    from .archive import remove_tree

    if root.exists():
        remove_tree(root)
    root.mkdir(parents=True, mode=0o755)
    prepared = []
    for builtin in builtins if builtins is not None else builtin_buildpacks():
        shutil.copytree(builtin.path, root / builtin.name, symlinks=True)
        prepared.append(Buildpack(builtin.name, root / builtin.name, builtin.source))
    return prepared


def shared_builtins(builtins: list[Buildpack]) -> Path | None:
    """The one directory that holds these built-ins and nothing else, if there is one: a build that
    runs every built-in in detection order (no buildpacks named) is shown it at /buildpacks, read-only.

    Copying the nine into each build's own directory took 25-45 ms of every push here, nearly all
    of it in ext4 making their 23 directories, hard links or not."""
    roots = {bp.path.parent for bp in builtins}
    if len(roots) != 1 or any(bp.path.name != bp.name for bp in builtins):
        return None
    root = roots.pop()
    try:
        held = {entry.name for entry in os.scandir(root)}
    except OSError:
        return None
    return root if held == {bp.name for bp in builtins} else None


# --- pure rules ---------------------------------------------------------------------------


def parse_release_yaml(text: str, buildpack: str) -> ReleaseInfo:
    """bin/release's YAML -> ReleaseInfo; anything that is not Heroku's shape is a BuildError."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise BuildError(f"Buildpack {buildpack}: bin/release printed invalid YAML{at}; "
                         "it must print a mapping with default_process_types and addons.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BuildError(f"Buildpack {buildpack}: bin/release must print a YAML mapping, "
                         f"not a {type(data).__name__}.")
    types = data.get("default_process_types") or {}
    if not isinstance(types, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k) and v.strip()
        for k, v in types.items()
    ):
        raise BuildError(f"Buildpack {buildpack}: default_process_types in bin/release's YAML must map "
                         "process type names to command strings.")
    addons = data.get("addons") or []
    if not isinstance(addons, list) or not all(isinstance(a, str) for a in addons):
        raise BuildError(f"Buildpack {buildpack}: addons in bin/release's YAML must be a list of names.")
    return ReleaseInfo({k: v.strip() for k, v in types.items()}, list(addons))


def parse_buildpacks_file(text: str) -> list[str]:
    """A ``.buildpacks`` file: one buildpack per line; blank lines and '#' comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def parse_buildpack_url(value: str) -> list[str]:
    """BUILDPACK_URL: one buildpack, or several separated by commas or whitespace."""
    return [part for part in re.split(r"[,\s]+", value) if part]


def builtin_name(ref: str, builtin_names: set[str]) -> str | None:
    """The built-in ``ref`` names (``python``, ``heroku/python``, ``heroku/gradle``), or None."""
    name = ref.removeprefix("heroku/")
    name = BUILTIN_ALIASES.get(name, name) if name != ref else name
    return name if name in builtin_names else None


def registry_source(ref: str) -> str:
    """A heroku-community registry name's public source URL; any other ref unchanged."""
    return REGISTRY_SOURCES.get(ref, ref)


def classify_buildpack(ref: str, builtin_names: set[str]) -> str:
    """'builtin', 'git' or 'path'. ``heroku/python`` names the built-in ``python`` too."""
    if builtin_name(ref, builtin_names) is not None:
        return "builtin"
    ref = registry_source(ref)
    if re.match(r"^(https?|git|ssh|file)://", ref) or re.match(r"^[\w.-]+@[\w.-]+:", ref):
        return "git"
    return "path"


def merge_process_types(defaults: dict[str, str], procfile: dict[str, str] | None) -> dict[str, str]:
    """Procfile entries replace a buildpack's default of the same type; other defaults stay."""
    merged = dict(defaults)
    merged.update(procfile or {})
    return merged


def config_env_files(config: Mapping[str, str]) -> dict[str, str]:
    """ENV_DIR's content: one file per config var, named after it (so names must be file-safe)."""
    for name in config:
        if not CONFIG_VAR_RE.match(name):
            raise BuildError(f"Config var {name!r} cannot be given to buildpacks: rename it to letters, "
                             "digits and underscores.")
    return dict(config)


# --- host-side file handling --------------------------------------------------------------


def read_app_file(directory: Path, name: str, limit: int = MAX_APP_FILE_BYTES) -> str | None:
    """A regular file directly in ``directory`` that the build may have written; None if absent.

    O_NOFOLLOW: dynod runs as root, and a symlink planted by a build must not make it read a
    host file. Bigger than ``limit`` is refused rather than read.
    """
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BuildError(f"{name} in the app cannot be read ({exc.strerror}); "
                         "it must be a plain file.") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BuildError(f"{name} in the app must be a plain file.")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{name} in the app is over {limit // 1024} KiB; it cannot be that big.")
    return data.decode("utf-8", errors="replace")


def check_buildpack_ref(ref: str, builtin_names: set[str], local_roots: tuple[Path, ...]) -> None:
    """Refuse, in one line, a buildpack an app's list may not hold (``dynoctl buildpacks:add``).

    Built-in and registry names, git URLs, and ``file://`` URLs or absolute paths under the
    operator's ``local_roots``; a relative path (a directory of the app) belongs in .buildpacks.
    """
    kind = classify_buildpack(ref, builtin_names)
    if kind == "git":
        if ref.startswith("file://"):
            _check_local_root(ref, Path(ref[len("file://"):].partition("#")[0]), local_roots)
        return
    if kind == "path":
        if ref.startswith("/"):
            _check_local_root(ref, Path(ref), local_roots)
            return
        raise BuildError(f"{ref} is not a buildpack URL or a known buildpack name: give a git URL "
                         "(https://github.com/...), a name such as heroku/python or heroku-community/apt, "
                         "or a directory under the operator's local buildpack roots.")


def requested_buildpacks(source_dir: Path, config: Mapping[str, str],
                         app_buildpacks: list[str] | None = None) -> tuple[list[str], str]:
    """The buildpacks the user named and where. As on Heroku, the app's own list (dynoctl
    buildpacks:set) wins over the legacy BUILDPACK_URL config var, which wins over ``.buildpacks``."""
    if app_buildpacks:
        return list(app_buildpacks), "the app's buildpacks"
    if config.get("BUILDPACK_URL", "").strip():
        return parse_buildpack_url(config["BUILDPACK_URL"]), "BUILDPACK_URL"
    text = read_app_file(source_dir, ".buildpacks")
    if text is not None and parse_buildpacks_file(text):
        return parse_buildpacks_file(text), ".buildpacks"
    return [], ""


def _slot_name(index: int, ref: str) -> str:
    base = re.sub(r"(\.git)?(#.*)?$", "", ref.rstrip("/")).rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip(".-") or "buildpack"
    return f"{index}-{base}"[:64]


async def install_buildpacks(refs: list[str], *, dest: Path, builtins: list[Buildpack],
                             source_dir: Path, local_roots: tuple[Path, ...] = ()) -> list[Buildpack]:
    """Place each named buildpack under ``dest`` (seen as /buildpacks in the container).

    Built-ins are copied; a git URL (``URL#ref`` picks a branch or tag) is cloned; a relative
    path names a directory inside the app; an absolute path must lie under one of ``local_roots``
    (the operator's choice), because copying it exposes it to the build.
    """
    by_name = {bp.name: bp for bp in builtins}
    installed: list[Buildpack] = []
    for index, ref in enumerate(refs):
        kind = classify_buildpack(ref, set(by_name))
        if kind == "builtin":
            builtin = by_name[builtin_name(ref, set(by_name)) or ref]
            target = dest / builtin.name
            if not target.exists():
                shutil.copytree(builtin.path, target, symlinks=True)
            installed.append(Buildpack(builtin.name, target, ref))
            continue
        target = dest / _slot_name(index, ref)
        if kind == "git" and ref.startswith("file://"):
            # git would read any repository on the host, as root: file:// is a local path like any other.
            _check_local_root(ref, Path(ref[len("file://"):].partition("#")[0]), local_roots)
        if kind == "git":
            await _git_clone(registry_source(ref), target, named=ref)
        else:
            _copy_local(ref, target, source_dir, local_roots)
        compile_script = target / "bin" / "compile"
        if not (compile_script.is_file() and os.access(compile_script, os.X_OK)):
            shutil.rmtree(target, ignore_errors=True)
            raise BuildError(f"Buildpack {ref} has no executable bin/compile; a buildpack needs "
                             "bin/detect, bin/compile and bin/release.")
        installed.append(Buildpack(target.name, target, ref))
    return installed


def _check_local_root(ref: str, path: Path, local_roots: tuple[Path, ...]) -> Path:
    """``path``'s real location, which must lie under one of the operator's ``local_roots``."""
    real = Path(os.path.realpath(path))
    if not path.is_absolute() or not any(real.is_relative_to(os.path.realpath(root)) for root in local_roots):
        allowed = ", ".join(str(r) for r in local_roots) or "none configured"
        raise BuildError(f"Buildpack path {ref} is outside the directories buildpacks may come from "
                         f"({allowed}); put it there or use a git URL.")
    return real


def _copy_local(ref: str, target: Path, source_dir: Path, local_roots: tuple[Path, ...]) -> None:
    path = Path(ref)
    if path.is_absolute():
        real = _check_local_root(ref, path, local_roots)
    else:
        real = Path(os.path.realpath(source_dir / path))
        if not real.is_relative_to(os.path.realpath(source_dir)):
            raise BuildError(f"Buildpack path {ref} leaves the app; a relative path must stay inside it.")
    if not real.is_dir():
        raise BuildError(f"Buildpack {ref} is not a directory; name a buildpack directory or a git URL.")
    shutil.copytree(real, target, symlinks=True)


async def _git_clone(ref: str, target: Path, named: str | None = None) -> None:
    url, _, branch = ref.partition("#")
    shown = ref if named in (None, ref) else f"{named} ({ref})"
    argv = ["git", "-c", "protocol.ext.allow=never", "clone", "--quiet", "--depth", "1"]
    if branch:
        argv += ["--branch", branch]
    argv += ["--", url, str(target)]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    with trio.move_on_after(GIT_CLONE_TIMEOUT) as scope:
        done = await trio.run_process(argv, env=env, capture_stdout=True, capture_stderr=True, check=False)
    if scope.cancelled_caught:
        shutil.rmtree(target, ignore_errors=True)
        raise BuildError(f"Cloning buildpack {shown} took over {GIT_CLONE_TIMEOUT:.0f} s; check the URL.")
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise BuildError(f"Buildpack {shown} could not be cloned ({reason[-1] if reason else 'git failed'}); "
                         "check the URL and branch.")


# --- running the steps ---------------------------------------------------------------------

# Every step runs from a private, writable copy of its buildpack in the container's /tmp: Heroku's
# buildpack dirs are writable, and third-party buildpacks write into theirs (heroku-buildpack-apt
# writes ``export`` there). After a compile, the buildpack's ``export`` file, if any, is kept in
# EXPORTS_DIR, and every later compile sources each kept file first, in order: Heroku's way for
# one buildpack to hand PATH, LD_LIBRARY_PATH and the like to the next. The host never reads these
# files; the directory is removed from /app before release (so it never reaches the slug).
EXPORTS_DIR = ".dynod-buildpack-exports"
# The last compile's container then runs every chosen buildpack's bin/release too (Heroku's
# order: all compiles, then all releases), each from a fresh copy, rather than one container
# more per buildpack: ``releases`` lists ``<buildpack dir>=<file>`` pairs; bin/release's stdout
# (the YAML) goes to the file and its exit code to ``<file>.code``, which the host reads with
# O_NOFOLLOW and removes. The container has one output stream, so this keeps stdout apart.
_STEP_SCRIPT = r"""
buildpack=$1 step=$2 index=$3 exports=$4 releases=$5
shift 5
copy=/tmp/buildpack-$index
rm -rf "$copy" && cp -R "$buildpack" "$copy" || { echo " !     cannot copy $buildpack to $copy"; exit 70; }
if [ "$step" = compile ]; then
  for file in "$exports"/*; do
    [ -f "$file" ] && . "$file"
  done
fi
"$copy/bin/$step" "$@"
code=$?
if [ "$step" = compile ] && [ "$code" = 0 ] && [ -f "$copy/export" ]; then
  mkdir -p "$exports" && cp "$copy/export" "$exports/$index" || exit 70
fi
if [ "$code" = 0 ] && [ -n "$releases" ]; then
  for pair in $releases; do
    release=/tmp/buildpack-release
    rm -rf "$release" && cp -R "${pair%%=*}" "$release" || { echo " !     cannot copy ${pair%%=*}"; exit 70; }
    "$release/bin/release" "$1" > "${pair#*=}" < /dev/null
    echo "$?" > "${pair#*=}.code"
  done
fi
exit "$code"
"""


# A build that detects among the built-ins runs in ONE container from detect to release: the
# first built-in whose bin/detect accepts (each from a writable copy) is announced as Heroku does
# ("-----> Python app detected"), its index and name go to ``status`` for the host, and the
# shell execs _STEP_SCRIPT for its compile and release. Nothing accepted: no status file, exit 0.
_DETECT_THEN_STEP_SCRIPT = r"""
step_script=$1 exports=$2 status=$3 release_file=$4 count=$5
candidates=("${@:6:$count}")
shift $((5 + count))
# Each process this shell starts before the "detected" line is build overhead (a fork and an exec
# under the container's seccomp filter), so the name is read with bash's own builtins: the first
# line of the first 4096 bytes that is not blank, without CRs, spaces and tabs around it.
detected_name() {
  local LC_ALL=C said line  # C: read -N counts bytes, and the patterns match bytes
  IFS= read -r -d '' -N 4096 said < "$1"
  said=${said//$'\r'/}
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[!$' \t']*}"} line=${line%"${line##*[!$' \t']}"}
    if [[ -n $line ]]; then printf -v name '%s' "$line"; return; fi
  done <<< "$said"
}
for i in "${!candidates[@]}"; do
  candidate=${candidates[$i]}
  copy=${TMPDIR:-/tmp}/buildpack-detect out=${TMPDIR:-/tmp}/dynod-detect.out
  if [[ -e $copy || -L $copy ]]; then rm -rf "$copy" || continue; fi
  cp -R "$candidate" "$copy" || continue
  if "$copy/bin/detect" "$1" > "$out" 2>&1 < /dev/null; then
    name=
    detected_name "$out"
    [ -n "$name" ] || name=${candidate##*/}
    printf '%s %s\n' "$i" "$name" > "$status" || exit 70
    echo "-----> $name app detected"
    exec /bin/bash -c "$step_script" buildpack-step "$candidate" compile 00 "$exports" \
      "$candidate=$release_file" "$@"
  fi
done
exit 0
"""


def detect_then_compile_argv(bps: list[Buildpack], status: str, release_file: str, *args: str) -> list[str]:
    """The argv that detects among ``bps`` and compiles and releases the first that accepts."""
    return ["/bin/bash", "-c", _DETECT_THEN_STEP_SCRIPT, "buildpack-build", _STEP_SCRIPT,
            f"{APP_DIR}/{EXPORTS_DIR}", status, release_file, str(len(bps)),
            *(f"{BUILDPACKS_DIR}/{bp.name}" for bp in bps), *args]


def step_argv(bp: Buildpack, step: str, index: int, *args: str, releases: str = "") -> list[str]:
    """The argv that runs ``bin/<step>`` of ``bp`` (the ``index``-th chosen) from a writable copy,
    then, after a compile that succeeded, the bin/release of each ``releases`` pair."""
    return ["/bin/bash", "-c", _STEP_SCRIPT, "buildpack-step", f"{BUILDPACKS_DIR}/{bp.name}", step,
            f"{index:02d}", f"{APP_DIR}/{EXPORTS_DIR}", releases, *args]


class _OutputBudget:
    """Counts what buildpacks print and stops the running step once the total passes the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False
        self.scope: trio.CancelScope | None = None

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit and not self.exceeded:
            self.exceeded = True
            if self.scope is not None:
                self.scope.cancel()


class _Runner:
    def __init__(self, container: BuildContainer, env: dict[str, str], deadline: float,
                 timeout: float, budget: _OutputBudget, output: Callable[[str], None]) -> None:
        self.container = container
        self.env = env
        self.deadline = deadline
        self.timeout = timeout
        self.budget = budget
        self.output = output

    async def run(self, argv: list[str], what: str, sink: Callable[[bytes], None] | None = None) -> int:
        """Run one step; its output streams to the user line by line unless ``sink`` takes it."""
        splitter = BuildOutputSplitter()

        def stream(data: bytes) -> None:
            self.budget.charge(len(data))
            if self.budget.exceeded:
                return
            if sink is not None:
                sink(data)
                return
            for line in splitter.feed(data):
                self.output(line)

        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout_error(what)
        with trio.CancelScope() as scope:
            self.budget.scope = scope
            try:
                code = await self.container.run(argv, env=self.env, timeout=remaining, output=stream)
            except BuildTimeout:
                raise self._timeout_error(what) from None
            finally:
                self.budget.scope = None
        if sink is None:
            for line in splitter.flush():
                self.output(line)
        if scope.cancelled_caught or self.budget.exceeded:
            raise BuildError(f"The build printed over {self.budget.limit // (1024 * 1024)} MiB of output "
                             f"while {what} ran and was stopped; make it print less.")
        return code

    def _timeout_error(self, what: str) -> BuildError:
        return BuildError(f"The build exceeded its {_minutes(self.timeout)} limit while {what} ran; "
                          "everything it started was stopped. Make the build faster or ask the "
                          "operator to raise the build timeout.")


def _minutes(limit: float) -> str:
    return f"{limit / 60:g} min" if limit >= 60 else f"{limit:g} s"


# Detection runs every buildpack's bin/detect that must be asked in ONE container, in order, each
# from a writable copy: a container start costs about as much as a built-in's detect, and a
# Procfile app used to pay nine of them. Mode ``first`` stops at the first that accepts (choosing
# among the built-ins), ``every`` at the first that declines (the user's list: all must accept).
# For each detect run the script prints ``<index> <exit code> <n>`` and then the first n bytes
# (at most MAX_DETECT_OUTPUT) of what it printed, so the host can tell one result from another.
_DETECT_SCRIPT = r"""
mode=$1 app=$2 limit=$3
shift 3
index=0
out=/tmp/dynod-detect.out head=/tmp/dynod-detect.head
for buildpack in "$@"; do
  copy=/tmp/buildpack-detect
  if rm -rf "$copy" && cp -R "$buildpack" "$copy"; then
    "$copy/bin/detect" "$app" > "$out" 2>&1 < /dev/null
    code=$?
  else
    echo "cannot copy $buildpack to $copy" > "$out"
    code=70
  fi
  head -c "$limit" "$out" > "$head"
  printf '%s %s %s\n' "$index" "$code" "$(wc -c < "$head")"
  cat "$head"
  if [ "$mode" = first ] && [ "$code" = 0 ]; then exit 0; fi
  if [ "$mode" = every ] && [ "$code" != 0 ]; then exit 0; fi
  index=$((index + 1))
done
exit 0
"""


def detect_argv(bps: list[Buildpack], mode: str) -> list[str]:
    """The argv that runs ``bin/detect`` of each of ``bps`` in one container (see _DETECT_SCRIPT)."""
    return ["/bin/bash", "-c", _DETECT_SCRIPT, "buildpack-detect", mode, APP_DIR, str(MAX_DETECT_OUTPUT),
            *(f"{BUILDPACKS_DIR}/{bp.name}" for bp in bps)]


def parse_detect_results(data: bytes, count: int) -> dict[int, tuple[int, str]]:
    """_DETECT_SCRIPT's output -> {index: (exit code, name printed)}; what cannot be read is
    left out (a buildpack with no result is one that did not accept)."""
    results: dict[int, tuple[int, str]] = {}
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        fields = data[pos:end].split(b" ")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            break
        index, code, size = (int(f) for f in fields)
        if index >= count or size > MAX_DETECT_OUTPUT:
            break
        text = data[end + 1:end + 1 + size].decode(errors="replace").strip().splitlines()
        results[index] = (code, text[0].strip() if text else "")
        pos = end + 1 + size
    return results


async def _detect_each(runner: _Runner, bps: list[Buildpack], mode: str) -> list[str | None]:
    """Each of ``bps``' detected name (what its bin/detect printed first, else its own name), or
    None where it declined or was not asked (mode ``first``: after the one that accepted; mode
    ``every``: after the first that declined). A buildpack without bin/detect accepts any app."""
    names: list[str | None] = [None] * len(bps)
    asked: list[int] = []
    for index, bp in enumerate(bps):
        if not (bp.path / "bin" / "detect").is_file():
            if mode == "first":
                names[index] = bp.name  # accepts: the ones after it are never asked
                break
            names[index] = bp.name
            continue
        asked.append(index)
    if not asked:
        return names
    captured = bytearray()
    limit = (MAX_DETECT_OUTPUT + 64) * len(asked)

    def keep(data: bytes) -> None:
        captured.extend(data[: max(0, limit - len(captured))])

    what = f"{bps[asked[0]].source}'s bin/detect" if len(asked) == 1 else "the buildpacks' bin/detect"
    await runner.run(detect_argv([bps[i] for i in asked], mode), what, sink=keep)
    results = parse_detect_results(bytes(captured), len(asked))
    found: list[str | None] = [None] * len(bps)
    for position, index in enumerate(asked):
        code, name = results.get(position, (1, ""))
        found[index] = (name or bps[index].name) if code == 0 else None
    if mode == "first":
        for index, name in enumerate(found):
            if name is not None:
                return [name if i == index else None for i in range(len(bps))]
        return names  # none asked accepted: the one without bin/detect, if any, did
    return [names[i] if names[i] is not None else found[i] for i in range(len(bps))]


def _read_release(bp: Buildpack, source_dir: Path, name: str) -> ReleaseInfo:
    """What ``bp``'s bin/release printed into ``name`` in the app, and its exit code beside it."""
    code_text = read_app_file(source_dir, f"{name}.code", 64)
    if code_text is None or not code_text.strip().isdigit():
        raise BuildError(f"Buildpack {bp.source}: bin/release did not finish (its result was removed); "
                         "build again.")
    code = int(code_text)
    if code != 0:
        raise BuildError(f"Buildpack {bp.source}: bin/release exited with {code}; see the output above.")
    try:
        text = read_app_file(source_dir, name, MAX_RELEASE_YAML_BYTES) or ""
    except BuildError:
        raise BuildError(f"Buildpack {bp.source}: bin/release printed more than "
                         f"{MAX_RELEASE_YAML_BYTES // 1024} KiB, or no plain YAML.") from None
    return parse_release_yaml(text, bp.source)


async def _detect_and_compile(runner: _Runner, bps: list[Buildpack], source_dir: Path,
                              output: Callable[[str], None]) -> tuple[Buildpack, str, str, float]:
    """Detect among ``bps`` and compile the first that accepts, in one container (see
    _DETECT_THEN_STEP_SCRIPT): (the buildpack, its name, its release's YAML file, seconds)."""
    token = secrets.token_hex(8)
    status, release_file = f".dynod-detect-{token}", f".dynod-release-{token}.yml"
    # The compile's time counts from the "app detected" line on, as it did when the compile had
    # a container of its own (minus that container's start, which is build overhead, not compile).
    compile_started: list[float] = []

    def timed(line: str) -> None:
        if not compile_started and line.startswith("-----> ") and line.endswith(" app detected"):
            compile_started.append(time.monotonic())
        output(line)

    runner.output, t = timed, time.monotonic()
    try:
        code = await runner.run(
            detect_then_compile_argv(bps, f"{APP_DIR}/{status}", f"{APP_DIR}/{release_file}",
                                     APP_DIR, CACHE_DIR, ENV_DIR),
            "the buildpacks' bin/detect and bin/compile")
        elapsed = time.monotonic() - (compile_started[0] if compile_started else t)
        found = read_app_file(source_dir, status, MAX_DETECT_OUTPUT + 64)
    except BaseException:
        for leftover in (release_file, f"{release_file}.code"):
            with contextlib.suppress(OSError):
                (source_dir / leftover).unlink(missing_ok=True)
        raise
    finally:
        runner.output = output
        with contextlib.suppress(OSError):
            (source_dir / status).unlink(missing_ok=True)
    index_text, _, name = (found or "").strip().partition(" ")
    if not index_text.isdigit() or int(index_text) >= len(bps):
        raise BuildError("No default language could be detected for this app: add a requirements.txt, "
                         "pyproject.toml, package.json or Procfile, or set BUILDPACK_URL.")
    bp = bps[int(index_text)]
    name = name.strip() or bp.name
    if code != 0:
        for leftover in (release_file, f"{release_file}.code"):
            with contextlib.suppress(OSError):
                (source_dir / leftover).unlink(missing_ok=True)
        raise BuildError(f"Failed to compile the {name} app: {bp.source}'s bin/compile exited with "
                         f"{code} after {seconds(elapsed)}; see the output above.")
    output(step(f"{name} app compiled ({seconds(elapsed)})"))
    return bp, name, release_file, elapsed


def _remove_exports(source_dir: Path) -> None:
    # rmtree never follows a symlink the build may have put there (it works on directory fds).
    path = source_dir / EXPORTS_DIR
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _write_env_dir(env_dir: Path, config: Mapping[str, str]) -> None:
    files = config_env_files(config)
    for old in env_dir.iterdir():
        old.unlink()
    for name, value in files.items():
        (env_dir / name).write_text(value)


async def compile_app(
    source_dir: Path,
    *,
    container: BuildContainer,
    buildpacks: list[Buildpack],
    buildpacks_dir: Path,
    config: dict[str, str],
    cache_dir: Path,
    env_dir: Path,
    stack: str,
    timeout: float = DEFAULT_TIMEOUT,
    output: Callable[[str], None],
    source_version: str | None = None,
    local_roots: tuple[Path, ...] = (),
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    app_buildpacks: list[str] | None = None,
    after_slugignore: Callable[[], Awaitable[object]] | None = None,
) -> CompileResult:
    """Compile ``source_dir`` (the container's /app) in place; raise BuildError on any failure.

    ``buildpacks`` are the built-ins in detection order; ``buildpacks_dir`` is the host directory
    the container shows read-only at /buildpacks (empty at start: the chosen buildpacks are
    placed there), unless the build runs the built-ins alone from a directory of their own
    (``shared_builtins``): the container is then shown that directory instead.
    ``cache_dir``/``env_dir`` are the host sides of /tmp/cache and /tmp/env.
    ``output`` receives each line of output, Heroku-framed, as it happens. ``app_buildpacks``:
    the app's own list (the ledger's), which wins over BUILDPACK_URL and .buildpacks.
    ``after_slugignore`` runs once .slugignore has been applied, before any buildpack: what dynod
    adds to /app that is not the app's source (a prepared restore) must not be matched by it.
    """
    del cache_dir  # the container binds it; named here so callers keep host and container in step
    started = time.monotonic()
    timings: dict[str, float] = {}
    output(step(f"Building on the {stack} stack"))

    removed = apply_slugignore(source_dir)
    if removed:
        took = seconds(time.monotonic() - started)
        output(step(f"Removed {len(removed)} paths listed in .slugignore ({took})"))
    if after_slugignore is not None:
        await after_slugignore()
    _write_env_dir(env_dir, config)

    env = {"PATH": BUILD_PATH, "HOME": APP_DIR, "STACK": stack, "LANG": "C.UTF-8",
           "DYNOD_BUILD": "1", "CNB_STACK_ID": stack}
    if source_version:
        env["SOURCE_VERSION"] = source_version
    runner = _Runner(container, env, started + timeout, timeout, _OutputBudget(max_output_bytes), output)

    refs, named_by = requested_buildpacks(source_dir, config, app_buildpacks)
    t = time.monotonic()
    chosen: list[tuple[Buildpack, str]] = []
    compiled: dict[int, str] = {}  # set when detection and the compile ran as one container
    if refs:
        output(step(f"Using buildpacks from {named_by}: {', '.join(refs)}"))
        installed = await install_buildpacks(refs, dest=buildpacks_dir, builtins=buildpacks,
                                             source_dir=source_dir, local_roots=local_roots)
        for bp, name in zip(installed, await _detect_each(runner, installed, "every"), strict=True):
            if name is None:
                raise BuildError(f"App not compatible with buildpack {bp.source}: its bin/detect declined "
                                 f"the app; fix the app or change {named_by}.")
            chosen.append((bp, name))
    else:
        shared = shared_builtins(buildpacks)
        if shared is not None:  # shown as they are: nothing to copy
            container.buildpacks_dir = shared
            installed = list(buildpacks)
        else:
            installed = await install_buildpacks([bp.name for bp in buildpacks], dest=buildpacks_dir,
                                                 builtins=buildpacks, source_dir=source_dir)
        if all((bp.path / "bin" / script).is_file() for bp in installed for script in ("detect", "release")):
            # The usual build: detect, compile and release in one container.
            _remove_exports(source_dir)
            bp, name, release_file, elapsed = await _detect_and_compile(runner, installed, source_dir, output)
            chosen.append((bp, name))
            compiled = {0: release_file}
            timings[f"compile {bp.name}"] = elapsed
        else:
            for bp, name in zip(installed, await _detect_each(runner, installed, "first"), strict=True):
                if name is not None:
                    chosen.append((bp, name))
        if not chosen:
            raise BuildError("No default language could be detected for this app: add a requirements.txt, "
                             "pyproject.toml, package.json or Procfile, or set BUILDPACK_URL.")
    timings["detect"] = time.monotonic() - t

    _remove_exports(source_dir)
    # Each bin/release's YAML file in /app (removed before the slug is packed, whatever happens).
    release_files = compiled or {
        index: f".dynod-release-{secrets.token_hex(8)}.yml"
        for index, (bp, _name) in enumerate(chosen) if (bp.path / "bin" / "release").is_file()}
    releases = " ".join(f"{BUILDPACKS_DIR}/{chosen[index][0].name}={APP_DIR}/{name}"
                        for index, name in release_files.items())
    try:
        for index, (bp, name) in enumerate(chosen if not compiled else []):
            t = time.monotonic()
            output(step(f"{name} app detected"))
            last = index == len(chosen) - 1
            code = await runner.run(step_argv(bp, "compile", index, APP_DIR, CACHE_DIR, ENV_DIR,
                                              releases=releases if last else ""),
                                    f"{bp.source}'s bin/compile")
            elapsed = time.monotonic() - t
            timings[f"compile {bp.name}"] = elapsed
            if code != 0:
                raise BuildError(f"Failed to compile the {name} app: {bp.source}'s bin/compile exited with "
                                 f"{code} after {seconds(elapsed)}; see the output above.")
            output(step(f"{name} app compiled ({seconds(elapsed)})"))

        _remove_exports(source_dir)
        t = time.monotonic()
        output(step("Discovering process types"))
        defaults: dict[str, str] = {}
        addons: list[str] = []
        for index, (bp, _name) in enumerate(chosen):
            info = _read_release(bp, source_dir, release_files[index]) if index in release_files else ReleaseInfo()
            defaults.update(info.default_process_types)  # a later buildpack's default wins
            addons.extend(a for a in info.addons if a not in addons)
    finally:
        for name in release_files.values():
            for leftover in (name, f"{name}.code"):
                # The build owns /app: what it put in their place (a directory) stays, as its own file.
                with contextlib.suppress(OSError):
                    (source_dir / leftover).unlink(missing_ok=True)
    procfile_text = read_app_file(source_dir, "Procfile")
    procfile = parse_procfile(procfile_text) if procfile_text is not None else None
    process_types = merge_process_types(defaults, procfile)
    if procfile is not None:
        output(detail(f"Procfile declares types     -> {', '.join(procfile) or '(none)'}"))
    if defaults:
        output(detail(f"Default types for buildpack -> {', '.join(defaults)}"))
    if not process_types:
        output(detail("No process types: add a Procfile (e.g. 'web: python app.py') to run dynos."))
    timings["release"] = time.monotonic() - t
    output(step(f"Compiled in {seconds(time.monotonic() - started)}"))
    return CompileResult(buildpacks=[name for _, name in chosen], process_types=process_types,
                         addons=addons, slugignored=removed, timings=timings)
