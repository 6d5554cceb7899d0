"""What a Python app asks for: its package manager and its Python version, Heroku's way.

Run by bin/compile with the stack's python3 (standard library only, plus pip's vendored
``packaging`` for ``requires-python``):

    manifest.py BUILD_DIR --stack NAME --interpreter /usr/bin/python3.13 [--interpreter ...]
                [--default-interpreter /usr/bin/python3]
    manifest.py BUILD_DIR --stack NAME --available 3.13.5 [--available ...] [--default 3.13.5]

``--interpreter`` names the stack's interpreters and this script finds their versions: the one it
runs on from its own ``sys.version``, any other by starting it once (bin/compile used to start each
of them, and the default once more, before starting this script: ~10 ms each). It prints
``key=value`` lines (``interpreter=VERSION PATH`` for each interpreter that runs, then
``package_manager``, ``lockfile``, ``python_version``,
``python_source``, and one ``warning=`` line per line of a warning) and exits 0, or prints the
error text and exits 2. The rules are the Heroku Python buildpack's: exactly one package
manager's files (Pipfile.lock or Pipfile: Pipenv; requirements.txt: pip; poetry.lock: Poetry;
uv.lock: uv); the version from .python-version, else runtime.txt (deprecated), else Pipfile's
``python_version``, else uv's ``requires-python``, else the stack's default.
"""

from __future__ import annotations

import os
import sys

# Only os and sys at the top: bin/compile starts this script once per build, and on the stack's
# Python `re` alone took ~14 ms to import, pathlib ~10, tomllib ~18 (of ~60 ms in all). tomllib
# and json are imported where a file of theirs is read; the command line is read by hand.

# Which Debian suite ships which Python, so an error can say where another version exists; the
# two that dynod defines a stack for (rootfs/) say its name.
DEBIAN_PYTHONS = {"bullseye (Debian 11)": "3.9", "bookworm (Debian 12)": "3.11",
                  "trixie (Debian 13, the debian-13 stack)": "3.13",
                  "forky (Debian 14, the debian-14 stack)": "3.14"}

MANAGER_FILES = (  # Heroku's order, and the names its message uses
    ("Pipfile.lock", "pipenv", "Pipenv"),
    ("requirements.txt", "pip", "pip"),
    ("poetry.lock", "poetry", "Poetry"),
    ("uv.lock", "uv", "uv"),
)



def is_version(text: str) -> bool:
    """``3.N`` or ``3.N.M`` with ASCII digits (what ``^3\\.\\d+(\\.\\d+)?$`` said, without a
    Unicode digit)."""
    parts = text.split(".")
    return parts[0] == "3" and len(parts) in (2, 3) and all(p.isascii() and p.isdigit() for p in parts[1:])


def _file(build_dir: str | os.PathLike[str], name: str) -> str:
    return os.path.join(build_dir, name)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


class AppError(Exception):
    """The app asks for something this buildpack refuses; the text says what to change."""


def package_manager(build_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """(manager, its file): exactly one package manager's files, else an AppError in Heroku's words."""
    found: list[tuple[str, str, str]] = []
    for name, manager, display in MANAGER_FILES:
        if os.path.isfile(_file(build_dir, name)):
            found.append((name, manager, display))
        elif name == "Pipfile.lock" and os.path.isfile(_file(build_dir, "Pipfile")):
            found.append(("Pipfile", manager, display))
    if len(found) > 1:
        listed = "\n".join(f"{name} ({display})" for name, _, display in found)
        raise AppError(
            "Error: Multiple Python package manager files were found.\n\n"
            "Exactly one package manager file must be present in your app's\n"
            "source code, however, several were found:\n\n"
            f"{listed}\n\n"
            "Decide which package manager you want to use with your app, and\n"
            "then delete the file(s) and any config from the others.")
    if found:
        return found[0][1], found[0][0]
    # Not Heroku's (it wants a package manager file), kept for apps that list [project] dependencies.
    if os.path.isfile(_file(build_dir, "pyproject.toml")):
        return "pip-pyproject", "pyproject.toml"
    if os.path.isfile(_file(build_dir, "setup.py")):
        return "pip-setup", "setup.py"
    raise AppError(
        "Error: Couldn't find any supported Python package manager files.\n\n"
        "A Python app must have either a 'requirements.txt', 'Pipfile',\n"
        "'poetry.lock' or 'uv.lock' package manager file in the root\n"
        "directory of its source code. If your app has no dependencies,\n"
        "create an empty 'requirements.txt' file.")


def _toml(path: str) -> dict:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AppError(f"Error: {os.path.basename(path)} cannot be read ({exc}); fix it and push again.") from None


def requested_version(build_dir: str | os.PathLike[str], manager: str) -> tuple[str, str, list[str]]:
    """(what is asked, where it was asked, warnings); ("", "", []) when nothing asks.

    What is asked is ``3.N`` or ``3.N.M``, or for uv's ``requires-python`` a specifier set
    prefixed with ``spec:``.
    """
    warnings: list[str] = []
    python_version = _file(build_dir, ".python-version")
    if os.path.isfile(python_version):
        lines = [line.strip() for line in _read_text(python_version).splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise AppError("Error: .python-version is empty; write a version such as 3.13 in it.")
        version = lines[0].removeprefix("python-")
        if not is_version(version):
            raise AppError(f"Error: .python-version asks for Python '{lines[0]}'; "
                           "write a version such as 3.13 or 3.13.5.")
        return version, ".python-version", warnings
    runtime = _file(build_dir, "runtime.txt")
    if os.path.isfile(runtime):
        text = _read_text(runtime).strip()
        version = text.removeprefix("python-")
        if not is_version(version):
            raise AppError(f"Error: runtime.txt asks for '{text}'; write a version such as python-3.13.5, "
                           "or better, 3.13 in a .python-version file.")
        minor = ".".join(version.split(".")[:2])
        warnings.append("Warning: The runtime.txt file is deprecated.\n\n"
                        "Switch to a .python-version file, which other Python tools\n"
                        f"understand too: delete runtime.txt and run\n  echo '{minor}' > .python-version")
        return version, "runtime.txt", warnings
    if manager == "pipenv":
        for name in ("Pipfile.lock", "Pipfile"):
            path = _file(build_dir, name)
            if not os.path.isfile(path):
                continue
            if name == "Pipfile.lock":
                import json

                try:
                    with open(path, encoding="utf-8") as f:
                        requires = json.loads(f.read()).get("_meta", {}).get("requires", {})
                except (ValueError, AttributeError):
                    raise AppError("Error: Pipfile.lock is not valid JSON; run `pipenv lock` and push again.") \
                        from None
            else:
                requires = _toml(path).get("requires", {})
            version = str(requires.get("python_full_version") or requires.get("python_version") or "")
            if version:
                if not is_version(version):
                    raise AppError(f"Error: {name} asks for Python '{version}'; write a version such as 3.13.")
                return version, name, warnings
    if manager == "uv" and os.path.isfile(_file(build_dir, "pyproject.toml")):
        spec = _toml(_file(build_dir, "pyproject.toml")).get("project", {}).get("requires-python")
        if isinstance(spec, str) and spec.strip():
            return "spec:" + spec.strip(), "requires-python in pyproject.toml", warnings
    return "", "", warnings


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def choose_version(requested: str, source: str, available: list[str], default: str, stack: str
                   ) -> tuple[str, list[str]]:
    """The interpreter version to use, with warnings; an AppError when the stack has none that fits."""
    if not requested:
        return default, []
    have = ", ".join(available)
    others = "; ".join(f"{suite} has {v}" for suite, v in DEBIAN_PYTHONS.items())
    if requested.startswith("spec:"):
        spec = requested[5:]
        try:
            from pip._vendor.packaging.specifiers import InvalidSpecifier, SpecifierSet
        except ImportError:  # no pip next to this python: nothing can read the specifier
            raise AppError(f"Error: the stack's Python cannot read {source}; "
                           "write the version in a .python-version file.") from None
        try:
            specifiers = SpecifierSet(spec)
        except InvalidSpecifier:
            raise AppError(f"Error: {source} is not a valid version specifier ('{spec}').") from None
        fitting = [v for v in available if specifiers.contains(v)]
        if not fitting:
            raise AppError(f"Error: {source} asks for Python '{spec}', but stack {stack} has only {have}. "
                           f"Change it to include one of these, or use a stack with another Python ({others}).")
        preferred = default if default in fitting else max(fitting, key=lambda v: tuple(map(int, v.split("."))))
        return preferred, []
    exact = [v for v in available if v == requested]
    if exact:
        return exact[0], []
    same_minor = [v for v in available if _minor(v) == _minor(requested)]
    if same_minor and requested.count(".") == 1:
        return same_minor[0], []
    if same_minor:
        # Debian ships one patch release per minor version; patch releases are compatible.
        return same_minor[0], [f"Warning: {source} asks for Python {requested}; stack {stack} has "
                               f"{same_minor[0]} of the same {_minor(requested)} series, which is used instead.\n"
                               f"Write {_minor(requested)} to follow the series' patch releases."]
    raise AppError(f"Error: {source} asks for Python {requested}, but stack {stack} has only: {have}. "
                   f"Change {source} to {_minor(available[0])}, or use a stack with Python "
                   f"{_minor(requested)} ({others}).")


def interpreter_version(path: str) -> str | None:
    """``path``'s Python version (sys.version's first word, which is platform.python_version()),
    or None when it does not run. The interpreter running this script answers without a start."""
    try:
        if os.path.realpath(path) == os.path.realpath(sys.executable):
            return sys.version.split()[0]
    except OSError:
        return None
    import subprocess  # only for a stack with several interpreters: ~5 ms of imports otherwise saved

    try:
        done = subprocess.run([path, "-I", "-S", "-c", "import sys; print(sys.version.split()[0])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version and len(version.split()) == 1 else None


class Args:
    """The command line: BUILD_DIR, then ``--stack NAME`` and the other options, each with its
    value as the next word (as bin/compile writes them); ``--available`` and ``--interpreter``
    may repeat."""

    SINGLE = ("--stack", "--default", "--default-interpreter")
    REPEATED = ("--available", "--interpreter")

    def __init__(self, argv: list[str]) -> None:
        values: dict[str, str] = {}
        lists: dict[str, list[str]] = {name: [] for name in self.REPEATED}
        positional: list[str] = []
        words = iter(argv)
        for word in words:
            name, equals, value = word.partition("=")
            if name in self.SINGLE or name in self.REPEATED:
                if not equals:
                    value = next(words, None)  # type: ignore[assignment]
                    if value is None:
                        raise SystemExit(f"manifest.py: {name} needs a value")
                if name in self.SINGLE:
                    values[name] = value
                else:
                    lists[name].append(value)
            elif word.startswith("-"):
                raise SystemExit(f"manifest.py: unknown option {word}")
            else:
                positional.append(word)
        if len(positional) != 1 or "--stack" not in values:
            raise SystemExit("usage: manifest.py BUILD_DIR --stack NAME [--interpreter PATH ...] "
                             "[--default-interpreter PATH] [--available VERSION ...] [--default VERSION]")
        self.build_dir = positional[0]
        self.stack = values["--stack"]
        self.default = values.get("--default", "")
        self.default_interpreter = values.get("--default-interpreter", "")
        self.available = lists["--available"]
        self.interpreter = lists["--interpreter"]


def main(argv: list[str]) -> int:
    args = Args(argv)
    interpreters = []  # printed with the facts, never into an error's text
    for path in args.interpreter:
        found = interpreter_version(path)
        if found is not None:
            interpreters.append(f"interpreter={found} {path}")
            args.available.append(found)
    if args.default_interpreter and not args.default:
        args.default = interpreter_version(args.default_interpreter) or ""
    try:
        if not args.available:
            raise AppError(f"Error: stack {args.stack} has no Python interpreter; build on a stack with python3.")
        manager, lockfile = package_manager(args.build_dir)
        requested, source, warnings = requested_version(args.build_dir, manager)
        version, more = choose_version(requested, source, args.available, args.default or args.available[0],
                                       args.stack)
    except AppError as exc:
        print(exc)
        return 2
    for line in interpreters:
        print(line)
    print(f"package_manager={manager}")
    print(f"lockfile={lockfile}")
    print(f"python_version={version}")
    print(f"python_source={source}")
    for warning in warnings + more:
        for line in warning.splitlines():
            print(f"warning={line}")
        print("warning=")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
