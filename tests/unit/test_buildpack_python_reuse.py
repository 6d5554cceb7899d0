"""When the Python buildpack may skip pip on a warm cache: lib/plain_requirements.sh, run by bash.

pip is skipped only when it could do nothing but confirm the cached install: every line a plain
requirement whose meaning lies in requirements.txt's own bytes (which the cache key hashes).
Anything that can change what pip installs without changing those bytes must make it run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "buildpacks" / "python" / "lib" / "plain_requirements.sh"


def plain(tmp_path: Path, text: str, config: dict[str, str] | None = None) -> bool:
    requirements = tmp_path / "requirements.txt"
    requirements.write_bytes(text.encode())
    env_dir = tmp_path / "env"
    env_dir.mkdir(exist_ok=True)
    for name, value in (config or {}).items():
        (env_dir / name).write_text(value)
    # nullglob as bin/compile sets it: an env dir without PIP_* files must not look like one.
    done = subprocess.run(["bash", "-c", 'shopt -s nullglob; set -euo pipefail; source "$1"; '
                           'plain_requirements "$2" "$3"', "bash", str(LIB), str(requirements), str(env_dir)],
                          capture_output=True, text=True, timeout=10)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.mark.parametrize("text", [
    "flask==3.1.1\ngunicorn==23.0.0\n",
    "gunicorn>=20,<24  # a comment after it\n",
    'requests[socks,security] ~= 2.3 ; python_version < "3.14"\n',
    "# only a comment\n\n",
    "",
    "Django\n",
    "flask==3.1.1\r\ngunicorn==23.0.0\r\n",  # written on Windows
    "flask==3.1.1",  # no newline at the end
    "zope.interface===5.4.0\n",
    "backports.tarfile==1.2.0\n",  # a dotted name, not an archive
    "python-gzip-tools\n",
])
def test_plain_requirements_let_pip_be_skipped(tmp_path: Path, text: str) -> None:
    assert plain(tmp_path, text)


@pytest.mark.parametrize("text", [
    "-r other.txt\n",  # the included file is not in the cache key
    "flask==3.1.1\n-c constraints.txt",  # last line without a newline is read too
    "-e .\n",  # a local source changes without requirements.txt changing
    "./libs/foo\n",
    "libs/foo\n",
    "foo @ https://example.test/foo-1.0.whl\n",
    "https://example.test/foo-1.0.tar.gz\n",
    "git+https://example.test/foo.git\n",
    "foo==${FOO_VERSION}\n",  # pip expands environment variables
    "foo==1.0 \\\n  --hash=sha256:00\n",
    "foo==1.0 --hash=sha256:00\n",
    "--index-url https://example.test/simple\nfoo\n",
    "--upgrade\nfoo\n",
    "foo-1.0-py3-none-any.whl\n",  # pip installs a file of that name, whose bytes can change
    "foo-1.0.tar.gz\n",
    "foo.zip ; python_version > '3'\n",
])
def test_anything_pip_reads_beyond_the_file_makes_it_run(tmp_path: Path, text: str) -> None:
    assert not plain(tmp_path, text)


@pytest.mark.parametrize("name", ["PIP_UPGRADE", "PIP_INDEX_URL", "PIP_FORCE_REINSTALL"])
def test_a_pip_config_var_makes_it_run(tmp_path: Path, name: str) -> None:
    assert plain(tmp_path, "flask==3.1.1\n")
    assert not plain(tmp_path, "flask==3.1.1\n", {name: "1"})
