"""Each package's ``__init__`` exports its public surface (``__all__``), lazily.

Lazily, because an eager ``__init__`` makes every importer of one module pay for all of them:
dynoctl imports the slug format, the API client and the log line format, and must not load
trio, the builder or the daemon with them.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

DYNOD = Path(__file__).resolve().parents[2] / "dynod"
PACKAGES = ["accounts", "acm", "addons", "api", "autoscale", "builds", "dashboard", "ledger", "logplex",
            "metrics", "scheduler", "stack"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves_to_its_modules_object(name: str) -> None:
    package = importlib.import_module(f"dynod.{name}")
    assert package.__all__ == sorted(package.__all__) and package.__all__
    submodules = {p.stem for p in (DYNOD / name).glob("*.py")} | {p.name for p in (DYNOD / name).iterdir()
                                                                   if (p / "__init__.py").is_file()}
    for public in package.__all__:
        # A name shared with a submodule would be replaced by that module once it is imported.
        assert public not in submodules, f"dynod.{name}.{public} is also a module's name"
        value = getattr(package, public)
        if isinstance(value, type) or inspect.isfunction(value):  # defined in the package, not re-exported
            module = value.__module__
            assert module.startswith(f"dynod.{name}.") or module == f"dynod.{name}", (public, module)
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'not_exported'"):
        package.not_exported  # noqa: B018


def test_importing_a_package_loads_none_of_its_modules() -> None:
    code = ("import sys, importlib\n"
            f"for name in {PACKAGES!r}:\n"
            "    before = set(sys.modules)\n"
            "    importlib.import_module('dynod.' + name)\n"
            "    added = sorted(m for m in set(sys.modules) - before if m.startswith('dynod.' + name + '.'))\n"
            "    print(name, added)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"{name} []" for name in PACKAGES]


def test_what_dynoctl_imports_loads_no_daemon_module_and_no_third_party_code() -> None:
    # The modules dynoctl's commands import from outside dynod.cli, with their packages.
    code = ("import sys; before = set(sys.modules)\n"
            "import dynod.api.client, dynod.builds.slug, dynod.logplex.format, dynod.stack.definition\n"
            "added = set(sys.modules) - before\n"
            "print(sorted({m.split('.')[0] for m in added} - set(sys.stdlib_module_names)))\n"
            "print(sorted(m for m in added if m.startswith('dynod')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outside, ours = out.stdout.splitlines()
    assert outside == "['dynod']"
    assert ours == str(sorted([
        "dynod", "dynod.errors", "dynod.exports", "dynod.procfile",
        "dynod.api", "dynod.api.attach", "dynod.api.client",
        "dynod.builds", "dynod.builds.archive", "dynod.builds.slug",
        "dynod.logplex", "dynod.logplex.format", "dynod.stack", "dynod.stack.definition"]))
