"""The Python buildpack's rules for package managers and Python versions (buildpacks/python/lib/manifest.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "buildpacks" / "python" / "lib" / "manifest.py"
_spec = importlib.util.spec_from_file_location("python_buildpack_manifest", SCRIPT)
assert _spec is not None and _spec.loader is not None
manifest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(manifest)


def app(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"requirements.txt": ""}, ("pip", "requirements.txt")),
    ({"Pipfile": "", "Pipfile.lock": "{}"}, ("pipenv", "Pipfile.lock")),
    ({"Pipfile": ""}, ("pipenv", "Pipfile")),
    ({"pyproject.toml": "", "poetry.lock": ""}, ("poetry", "poetry.lock")),
    ({"pyproject.toml": "", "uv.lock": ""}, ("uv", "uv.lock")),
    ({"pyproject.toml": ""}, ("pip-pyproject", "pyproject.toml")),
    ({"setup.py": ""}, ("pip-setup", "setup.py")),
])
def test_one_package_manager_per_app(tmp_path: Path, files: dict[str, str], expected: tuple[str, str]):
    assert manifest.package_manager(app(tmp_path, files)) == expected


def test_several_package_managers_are_refused_listing_each_in_herokus_order(tmp_path: Path):
    with pytest.raises(manifest.AppError) as err:
        manifest.package_manager(app(tmp_path, {"uv.lock": "", "requirements.txt": "", "Pipfile.lock": "{}",
                                                "Pipfile": ""}))
    text = str(err.value)
    assert text.startswith("Error: Multiple Python package manager files were found.")
    assert "Pipfile.lock (Pipenv)\nrequirements.txt (pip)\nuv.lock (uv)\n" in text
    assert "delete the file(s) and any config from the others" in text


def test_no_package_manager_file_is_an_error_saying_what_to_add(tmp_path: Path):
    with pytest.raises(manifest.AppError, match="create an empty 'requirements.txt'"):
        manifest.package_manager(app(tmp_path, {".python-version": "3.13\n"}))


@pytest.mark.parametrize("files, manager, expected", [
    ({".python-version": "# pinned\n\n3.12\n"}, "pip", ("3.12", ".python-version")),
    ({".python-version": "3.13.5", "runtime.txt": "python-3.11.2"}, "pip", ("3.13.5", ".python-version")),
    ({"Pipfile": '[requires]\npython_version = "3.11"\n'}, "pipenv", ("3.11", "Pipfile")),
    ({"Pipfile": "", "Pipfile.lock": '{"_meta": {"requires": {"python_version": "3.12"}}}'}, "pipenv",
     ("3.12", "Pipfile.lock")),
    ({"pyproject.toml": '[project]\nrequires-python = ">=3.12,<3.14"\n'}, "uv",
     ("spec:>=3.12,<3.14", "requires-python in pyproject.toml")),
    ({"pyproject.toml": '[project]\nrequires-python = ">=3.12"\n'}, "poetry", ("", "")),
    ({}, "pip", ("", "")),
])
def test_where_the_version_comes_from(tmp_path: Path, files: dict[str, str], manager: str,
                                      expected: tuple[str, str]):
    version, source, warnings = manifest.requested_version(app(tmp_path, files), manager)
    assert (version, source) == expected and warnings == []


def test_runtime_txt_still_works_with_a_deprecation_warning(tmp_path: Path):
    version, source, warnings = manifest.requested_version(app(tmp_path, {"runtime.txt": "python-3.13.1\n"}), "pip")
    assert (version, source) == ("3.13.1", "runtime.txt")
    assert "runtime.txt file is deprecated" in warnings[0] and "echo '3.13' > .python-version" in warnings[0]


@pytest.mark.parametrize("files, message", [
    ({".python-version": "latest\n"}, "write a version such as 3.13"),
    ({".python-version": "# nothing\n"}, ".python-version is empty"),
    ({"runtime.txt": "ruby-3.3\n"}, "runtime.txt asks for 'ruby-3.3'"),
])
def test_unreadable_versions_are_refused(tmp_path: Path, files: dict[str, str], message: str):
    with pytest.raises(manifest.AppError, match=message):
        manifest.requested_version(app(tmp_path, files), "pip")


AVAILABLE = ["3.13.5"]


@pytest.mark.parametrize("requested, expected, warned", [
    ("", "3.13.5", False),
    ("3.13", "3.13.5", False),
    ("3.13.5", "3.13.5", False),
    ("3.13.1", "3.13.5", True),  # same series: Debian has one patch release
    ("spec:>=3.11", "3.13.5", False),
])
def test_choosing_among_the_stacks_interpreters(requested: str, expected: str, warned: bool):
    version, warnings = manifest.choose_version(requested, "x", AVAILABLE, "3.13.5", "debian-13")
    assert version == expected and bool(warnings) == warned


@pytest.mark.parametrize("requested, message", [
    ("3.8", "asks for Python 3.8, but stack debian-13 has only: 3.13.5. Change x to 3.13"),
    ("spec:<3.12", "asks for Python '<3.12', but stack debian-13 has only 3.13.5"),
    ("spec:three", "not a valid version specifier"),
])
def test_a_version_the_stack_lacks_names_what_is_there_and_where_else(requested: str, message: str):
    with pytest.raises(manifest.AppError) as err:
        manifest.choose_version(requested, "x", AVAILABLE, "3.13.5", "debian-13")
    assert message in str(err.value)
    if requested != "spec:three":
        assert "bookworm (Debian 12) has 3.11" in str(err.value)


def test_python_3_14_on_the_default_stack_names_the_stack_that_has_it() -> None:
    with pytest.raises(manifest.AppError) as err:
        manifest.choose_version("3.14", ".python-version", AVAILABLE, "3.13.5", "debian-13")
    assert "forky (Debian 14, the debian-14 stack) has 3.14" in str(err.value)


def test_command_line_prints_facts_or_the_error(tmp_path: Path):
    app(tmp_path, {"uv.lock": "", "pyproject.toml": '[project]\nrequires-python = ">=3.11"\n'})
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--stack", "s", "--available", "3.13.5"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["package_manager=uv", "lockfile=uv.lock", "python_version=3.13.5",
                                        "python_source=requires-python in pyproject.toml"]
    (tmp_path / "requirements.txt").write_text("")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--stack", "s", "--available", "3.13.5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout.startswith("Error: Multiple Python package manager files")


def test_interpreters_are_named_by_version_without_starting_the_one_running(tmp_path: Path):
    """bin/compile passes the stack's interpreters; the script's own answers from sys.version,
    another is started once, and one that does not run is left out (and never reaches an error)."""
    app(tmp_path, {"requirements.txt": ""})
    other = tmp_path / "python3.99"
    other.write_text("#!/bin/sh\necho 3.99.1\n")
    other.chmod(0o755)
    broken = tmp_path / "python3.98"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    own = sys.version.split()[0]
    done = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), str(tmp_path), "--stack", "s",
                           "--interpreter", sys.executable, "--interpreter", str(other),
                           "--interpreter", str(broken), "--interpreter", str(tmp_path / "missing"),
                           "--default-interpreter", sys.executable], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines() == [f"interpreter={own} {sys.executable}", f"interpreter=3.99.1 {other}",
                                        "package_manager=pip", "lockfile=requirements.txt",
                                        f"python_version={own}", "python_source="]
    (tmp_path / ".python-version").write_text("3.7\n")
    done = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), str(tmp_path), "--stack", "s",
                           "--interpreter", sys.executable], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout.startswith("Error: .python-version asks for Python 3.7")
    assert "interpreter=" not in done.stdout


def test_a_stack_whose_interpreters_do_not_run_is_refused_in_one_line(tmp_path: Path):
    app(tmp_path, {"requirements.txt": ""})
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--stack", "s",
                           "--interpreter", str(tmp_path / "missing")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "Error: stack s has no Python interpreter; build on a stack with python3.\n"


@pytest.mark.parametrize("text, expected", [
    ("3.13", True), ("3.13.5", True), ("3.9", True), ("3", False), ("3.", False), ("3.13.", False),
    ("3.13.5.1", False), ("2.7", False), ("3.x", False), ("3.1\u0663", False), (" 3.13", False), ("3.13\n", False),
])
def test_a_version_is_3_dot_n_or_3_dot_n_dot_m_in_ascii_digits(text: str, expected: bool):
    assert manifest.is_version(text) is expected


def test_a_pip_app_is_read_without_importing_re_pathlib_argparse_toml_or_json(tmp_path: Path):
    """bin/compile starts the script once per build: each of these took 5-18 ms to import."""
    app(tmp_path, {"requirements.txt": "flask\n", ".python-version": "3.13\n"})
    done = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", str(SCRIPT), str(tmp_path), "--stack",
                           "s", "--available", "3.13.5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "python_version=3.13.5" in done.stdout.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"re", "pathlib", "argparse", "tomllib", "json", "enum"}, sorted(imported)


@pytest.mark.parametrize("argv, said", [
    ([], "usage: manifest.py BUILD_DIR --stack NAME"),
    (["dir"], "usage: manifest.py BUILD_DIR --stack NAME"),
    (["dir", "--stack"], "manifest.py: --stack needs a value"),
    (["dir", "--stack", "s", "--bogus", "x"], "manifest.py: unknown option --bogus"),
    (["dir", "other", "--stack", "s"], "usage: manifest.py BUILD_DIR --stack NAME"),
])
def test_a_wrong_command_line_is_one_line_and_a_non_zero_exit(argv: list[str], said: str):
    done = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *argv], capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith(said) and len(done.stderr.splitlines()) == 1


def test_options_may_be_written_with_an_equals_sign(tmp_path: Path):
    app(tmp_path, {"requirements.txt": ""})
    args = manifest.Args([str(tmp_path), "--stack=s", "--available=3.13.5", "--available", "3.12.1",
                          "--default=3.12.1"])
    assert (args.build_dir, args.stack, args.available, args.default) == (str(tmp_path), "s", ["3.13.5", "3.12.1"],
                                                                          "3.12.1")
