"""The Python buildpack through a real dynod: each package manager, the hooks, Django's static files.

Every app is deployed with `dynoctl deploy`, built in dynod's own build container and served
through the router; refused apps leave the release list as it was. Packages and the package
managers themselves come from PyPI.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, Dynod

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"


def get(dynod: Dynod, app: str, path: str = "/") -> tuple[int, str] | None:
    request = urllib.request.Request(f"http://127.0.0.1:{dynod.http_port}{path}",
                                     headers={"Host": f"{app}.localhost"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return None


def serve(dynod: Dynod, app: str, path: str = "/") -> tuple[int, str]:
    dynod.up(app, 1, timeout=60)
    # Until the router has the new dyno's route it may answer 503 or 404: wait for the app's 200.
    answer = dynod.wait_for(lambda: (r := get(dynod, app, path)) and r[0] == 200 and r, timeout=60,
                            what=f"{path} answering 200")
    return answer


def versions(dynod: Dynod, app: str) -> list[int]:
    with dynod.client() as client:
        return [r["version"] for r in client.list_releases(app)]


def deploy(dynod: Dynod, app: str, src: Path, *, ok: bool = True):  # type: ignore[no-untyped-def]
    result = dynod.ctl("deploy", str(src), "-a", app, check=False, timeout=600)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def copy_example(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest)
    return dest


@pytest.mark.parametrize("example, tool, command", [
    ("python-pipenv", "Pipenv", "pipenv install --deploy"),
    ("python-poetry", "Poetry", "poetry sync --only main"),
    ("python-uv", "uv", "uv sync --locked --no-default-groups"),
])
def test_package_manager_installs_from_its_lockfile_and_is_cached(
        dynod: Dynod, app: str, tmp_path: Path, example: str, tool: str, command: str) -> None:
    src = copy_example(example, tmp_path)
    first = deploy(dynod, app, src).stdout
    assert f"Installing {tool} " in first and f"Installing dependencies using '{command}'" in first
    status, body = serve(dynod, app)
    assert status == 200 and body == f"Hello from {tool} (gunicorn 23.0.0)\n"
    # WEB_CONCURRENCY follows the dyno's size (standard-1X, 512 MB: 2) unless the user set it.
    run = dynod.ctl("run", "-a", app, "--", "bash", "-c", "echo $WEB_CONCURRENCY; pip list 2>/dev/null"
                    " | grep -ci pytest || true").stdout.split()
    assert run[0] == "2"
    assert run[1] == "0", "dev dependencies were installed"
    second = deploy(dynod, app, src).stdout
    assert f"Using {tool} " in second and "(cached)" in second  # the tool came from the build cache
    assert "Restoring cached packages" in second


def test_web_concurrency_follows_the_dyno_size_and_a_value_the_user_set_wins(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = tmp_path / "app"
    src.mkdir()
    (src / "requirements.txt").write_text("")
    (src / "Procfile").write_text("web: python -m http.server $PORT\n")
    deploy(dynod, app, src)
    # standard-2X: 1 GB quota -> 4 (memory); performance-M: 2.5 GB -> 2 x CPUs + 1 on this host.
    sized = dynod.ctl("run", "-s", "standard-2X", "-a", app, "--", "bash", "-c", "echo $WEB_CONCURRENCY $DYNO_RAM")
    assert sized.stdout.split() == ["4", "1024"]
    big = dynod.ctl("run", "-s", "performance-M", "-a", app, "--", "bash", "-c", "echo $WEB_CONCURRENCY")
    assert big.stdout.split() == [str(min(2560 // 256, (os.cpu_count() or 1) * 2 + 1))]
    dynod.ctl("config:set", "WEB_CONCURRENCY=7", "-a", app)
    out = dynod.ctl("run", "-a", app, "--", "bash", "-c", "echo $WEB_CONCURRENCY $DYNO_RAM").stdout.split()
    assert out == ["7", "512"]
    dynod.ctl("ps:scale", "web=0", "-a", app)


def test_django_with_whitenoise_serves_collected_static_files(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("python-django", tmp_path)
    out = deploy(dynod, app, src).stdout
    assert "$ python manage.py collectstatic --noinput" in out
    assert "1 static file copied to '/app/staticfiles'" in out
    status, page = serve(dynod, app)
    assert status == 200 and "Hello from Django" in page
    stylesheet = page.split('href="')[1].split('"')[0]  # hashed by the manifest storage
    assert stylesheet.startswith("/static/hello.") and stylesheet.endswith(".css")
    assert get(dynod, app, stylesheet) == (200, "body { color: rebeccapurple; }\n")

    # DISABLE_COLLECTSTATIC=1 skips the step (and this app then answers 500, as on Heroku).
    dynod.ctl("config:set", "DISABLE_COLLECTSTATIC=1", "-a", app)
    out = deploy(dynod, app, src).stdout
    assert "collectstatic" not in out
    dynod.ctl("config:unset", "DISABLE_COLLECTSTATIC", "-a", app)

    # A failing collectstatic fails the build with Django's own error; nothing is released.
    before = versions(dynod, app)
    # (the manifest storage refuses a stylesheet that names a file that does not exist)
    (src / "static" / "broken.css").write_text('body { background: url("missing.png"); }\n')
    failed = deploy(dynod, app, src, ok=False)
    assert "Error: Unable to generate Django static files." in failed.stdout
    assert "The file 'missing.png' could not be found" in failed.stdout  # Django's own message
    assert versions(dynod, app) == before


def test_hooks_run_around_the_install_and_a_failing_hook_fails_the_build(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = tmp_path / "hooks"
    (src / "bin").mkdir(parents=True)
    (src / "requirements.txt").write_text("six==1.17.0\n")
    (src / "Procfile").write_text("web: python -m http.server $PORT\n")
    (src / "bin" / "pre_compile").write_text("#!/bin/sh\necho pre-compile ran; echo before > hook-order.txt\n")
    (src / "bin" / "post_compile").write_text(
        "#!/bin/sh\necho post-compile ran\npython -c 'import six' && echo after-six >> hook-order.txt\n")
    out = deploy(dynod, app, src).stdout
    assert "-----> Running bin/pre_compile hook" in out and "pre-compile ran" in out
    assert out.index("pre-compile ran") < out.index("Installing requirements with pip")
    assert out.index("post-compile ran") > out.index("Installing requirements with pip")
    assert dynod.ctl("run", "-a", app, "--", "cat", "hook-order.txt").stdout.split() == ["before", "after-six"]

    before = versions(dynod, app)
    (src / "bin" / "post_compile").write_text("#!/bin/sh\necho the hook is unhappy\nexit 4\n")
    failed = deploy(dynod, app, src, ok=False)
    assert "the hook is unhappy" in failed.stdout
    assert "Error: bin/post_compile failed (exit 4)" in failed.stdout
    assert versions(dynod, app) == before


def test_refused_apps_say_why_and_release_nothing(dynod: Dynod, app: str, tmp_path: Path) -> None:
    before = versions(dynod, app)

    # requirements.txt beside Pipfile.lock: Heroku refuses to guess.
    both = copy_example("python-pipenv", tmp_path)
    (both / "requirements.txt").write_text("gunicorn==23.0.0\n")
    out = deploy(dynod, app, both, ok=False).stdout
    assert "Error: Multiple Python package manager files were found." in out
    assert "Pipfile.lock (Pipenv)\n !     requirements.txt (pip)" in out

    # A version no source can provide names what the stack has and what other suites give.
    old = tmp_path / "old"
    old.mkdir()
    (old / "requirements.txt").write_text("")
    (old / ".python-version").write_text("3.8\n")
    out = deploy(dynod, app, old, ok=False).stdout
    assert "asks for Python 3.8, but stack debian-13 has only: 3.13" in out
    assert "bookworm (Debian 12) has 3.11" in out

    # A lockfile out of sync with its manifest: the tool's own error.
    stale = copy_example("python-uv", tmp_path)
    (stale / "pyproject.toml").write_text((stale / "pyproject.toml").read_text().replace(
        '"gunicorn==23.0.0"', '"gunicorn==23.0.0", "six"'))
    out = deploy(dynod, app, stale, ok=False).stdout
    assert "needs to be updated, but `--locked` was provided" in out
    assert "Error: Unable to install dependencies using uv." in out

    stale_poetry = copy_example("python-poetry", tmp_path)
    (stale_poetry / "pyproject.toml").write_text((stale_poetry / "pyproject.toml").read_text().replace(
        '"gunicorn==23.0.0"', '"gunicorn==23.0.0", "six"'))
    out = deploy(dynod, app, stale_poetry, ok=False).stdout
    assert "poetry lock" in out and "Error: Unable to install dependencies using Poetry." in out
    assert versions(dynod, app) == before


def test_a_lone_pipfile_is_a_python_app_built_with_pipenv(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("python-pipenv", tmp_path)
    (src / "Pipfile.lock").unlink()
    (src / "runtime.txt").write_text("python-3.13.5\n")
    out = deploy(dynod, app, src).stdout
    assert "Python app detected" in out
    assert "Warning: No 'Pipfile.lock' found!" in out
    assert "Warning: The runtime.txt file is deprecated." in out
    status, body = serve(dynod, app)
    assert status == 200 and "Pipenv (gunicorn 23.0.0)" in body


def test_psycopg2_builds_from_source_on_the_build_image_and_runs_on_the_run_image(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    # psycopg2 has no Linux wheels: it compiles against libpq-dev with gcc and Python.h, which only
    # the build image has; the dyno then loads it with the run image's libpq.
    src = tmp_path / "pg"
    src.mkdir()
    (src / "requirements.txt").write_text("psycopg2==2.9.13\n")
    (src / "Procfile").write_text("web: python -m http.server $PORT\n")
    out = deploy(dynod, app, src).stdout
    assert "Building wheel for psycopg2" in out or "Running setup.py install for psycopg2" in out
    probe = dynod.ctl("run", "-a", app, "--", "python", "-c",
                      "import psycopg2, shutil; print(psycopg2.__libpq_version__, shutil.which('gcc'))").stdout
    version, gcc = probe.split()
    assert int(version) >= 170000 and gcc == "None"  # libpq 17 from Debian 13; no compiler in a dyno
