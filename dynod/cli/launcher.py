"""The dynoctl command's launcher: ``python -m dynod.cli.launcher PATH`` writes it (install.sh does).

pip's console script runs Python with its ``site`` step, which reads every ``.pth`` file of the
venv; an editable install's is a finder that imports pathlib, importlib.util and re on every
start (~13 ms of CPU, a third of what `dynoctl run -- true` costs the client). The launcher
starts the interpreter with ``-S -P``: no site, and not the script's own directory first on
``sys.path``. It then puts there what site would have found for dynoctl: the directory holding
the ``dynod`` package, then the venv's site-packages (for commands that need a third-party
package). The paths are the installing interpreter's, written into the script, so start-up
looks nothing up. PYTHON* variables (PYTHONUNBUFFERED, PYTHONPATH...) work as they did with
the console script, which is why this is not ``-I``.

pyproject.toml still declares the console script, so a plain ``pip install`` gives a working
dynoctl; install.sh replaces it with this launcher after each install.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -SP
# dynoctl, written by `python -m dynod.cli.launcher` (install.sh): the interpreter starts without
# site (-S) and without this script's directory on its path (-P); these are the paths site gave.
import sys
sys.path += {paths!r}
from dynod.cli import main
sys.exit(main())
"""


def search_paths() -> list[str]:
    """Where this interpreter finds dynod (an editable install's source tree, or site-packages),
    then its site-packages: the launcher's additions to the stdlib's ``sys.path``, in order."""
    import sysconfig

    import dynod

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(dynod.__file__)))]
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in paths:
            paths.append(path)
    return paths


def script(python: str, paths: list[str]) -> str:
    if any(c.isspace() for c in python):
        # The kernel splits a #! line at whitespace: such a path cannot be an interpreter there.
        raise ValueError(f"the interpreter's path {python!r} has whitespace; a #! line cannot name it")
    return TEMPLATE.format(python=python, paths=paths)


def write(path: str, python: str | None = None) -> None:
    """Write the launcher at ``path`` (atomically: a dynoctl running meanwhile reads the old or the new)."""
    text = script(python or sys.executable, search_paths())
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o755)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m dynod.cli.launcher PATH   (the dynoctl script to write)\n")
        return 2
    try:
        write(argv[0])
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: cannot write the dynoctl launcher {argv[0]}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
