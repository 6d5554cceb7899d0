"""The shell that detects among the built-ins, run for real by bash on the host (no container):
the name it announces is the first non-blank line of bin/detect's first 4096 bytes, trimmed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dynod.builds.buildpack import _DETECT_THEN_STEP_SCRIPT


def _detect(tmp_path: Path, said: bytes, *, accepts: bool = True) -> tuple[str, str]:
    """(the status file's line, what the script printed) for one candidate whose detect prints ``said``."""
    candidate = tmp_path / "lang"
    (candidate / "bin").mkdir(parents=True)
    (candidate / "said").write_bytes(said)
    code = 0 if accepts else 1
    (candidate / "bin" / "detect").write_text(f"#!/bin/sh\ncat \"$(dirname \"$0\")/../said\"\nexit {code}\n")
    (candidate / "bin" / "detect").chmod(0o755)
    status = tmp_path / "status"
    scratch = tmp_path / "tmp"  # the container's /tmp; the host's stays untouched
    scratch.mkdir(exist_ok=True)
    done = subprocess.run(["/bin/bash", "-c", _DETECT_THEN_STEP_SCRIPT, "buildpack-build", "exit 0",
                           str(tmp_path / "exports"), str(status), str(tmp_path / "release.yml"), "1",
                           str(candidate), str(tmp_path), "/tmp/cache", "/tmp/env"],
                          capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": str(scratch)})
    return (status.read_text() if status.exists() else ""), done.stdout + done.stderr


@pytest.mark.parametrize("said, name", [
    (b"Python\n", "Python"),
    (b"Python", "Python"),  # no newline at the end
    (b"\n\n  \t Ruby on Rails \t \r\n", "Ruby on Rails"),
    (b"Node.js\r\nmore lines\n", "Node.js"),
    (b"Na\rme\n", "Name"),  # every CR goes, as tr -d '\r' did
    (b"Pyth\xc3\xb6n\n", "Pyth\u00f6n"),
    (b"", "lang"),  # nothing said: the buildpack's directory names it
    (b"  \n\t\n", "lang"),
    (b" " * 5000 + b"Late\n", "lang"),  # only the first 4096 bytes count
    (b"\n" * 4000 + b"Go\n", "Go"),
])
def test_the_announced_name(tmp_path: Path, said: bytes, name: str) -> None:
    status, printed = _detect(tmp_path, said)
    assert status == f"0 {name}\n"
    assert printed == f"-----> {name} app detected\n"


def test_a_declining_detect_announces_nothing(tmp_path: Path) -> None:
    assert _detect(tmp_path, b"Python\n", accepts=False) == ("", "")


@pytest.mark.parametrize("kind", ["file", "link", "directory"])
def test_a_leftover_copy_is_replaced(tmp_path: Path, kind: str) -> None:
    # The copy's path is fixed: whatever is there goes before the candidate is copied.
    leftover = tmp_path / "tmp" / "buildpack-detect"
    leftover.parent.mkdir()
    if kind == "file":
        leftover.write_text("stale")
    elif kind == "link":
        leftover.symlink_to(tmp_path / "nowhere")
    else:
        (leftover / "bin").mkdir(parents=True)
        (leftover / "bin" / "detect").write_text("#!/bin/sh\necho Stale\n")
    assert _detect(tmp_path, b"Python\n")[0] == "0 Python\n"
    assert (leftover / "bin" / "detect").read_text().startswith("#!/bin/sh\ncat")
