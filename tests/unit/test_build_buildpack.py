"""The buildpack runner's pure rules and its step logic, against an in-memory container."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dynod.builds.buildpack import (
    BuildError,
    Buildpack,
    BuildTimeout,
    classify_buildpack,
    compile_app,
    merge_process_types,
    parse_buildpack_url,
    parse_buildpacks_file,
    parse_detect_results,
    parse_release_yaml,
    read_app_file,
    requested_buildpacks,
)

BUILTINS = {"python", "nodejs", "procfile"}


def test_release_yaml_heroku_shape():
    info = parse_release_yaml("---\naddons:\n  - heroku-postgresql\ndefault_process_types:\n  web: npm start\n",
                              "nodejs")
    assert info.default_process_types == {"web": "npm start"}
    assert info.addons == ["heroku-postgresql"]


@pytest.mark.parametrize("text", ["", "---\n", "--- {}\n"])
def test_release_yaml_empty_is_no_defaults(text: str):
    assert parse_release_yaml(text, "bp").default_process_types == {}


@pytest.mark.parametrize("text, message", [
    ("default_process_types: {web: [unclosed", "invalid YAML at line 1"),
    ("- a\n- b\n", "must print a YAML mapping, not a list"),
    ("default_process_types:\n  web: [1, 2]\n", "must map process type names to command strings"),
    ("default_process_types:\n  'bad name': x\n", "must map process type names"),
    ("addons: heroku-postgresql\n", "addons in bin/release's YAML must be a list"),
])
def test_release_yaml_errors_are_one_sentence(text: str, message: str):
    with pytest.raises(BuildError, match=message) as err:
        parse_release_yaml(text, "bp")
    assert "\n" not in str(err.value)


def test_buildpacks_file_skips_comments_and_blanks():
    assert parse_buildpacks_file("# first\nhttps://x/y.git#v1\n\n  nodejs  \n") == ["https://x/y.git#v1", "nodejs"]


def test_buildpack_url_may_list_several():
    assert parse_buildpack_url("nodejs, python\n/opt/bp") == ["nodejs", "python", "/opt/bp"]


@pytest.mark.parametrize("ref, kind", [
    ("python", "builtin"), ("heroku/nodejs", "builtin"),
    ("https://github.com/heroku/heroku-buildpack-ruby.git", "git"), ("git@github.com:me/bp.git", "git"),
    ("file:///srv/bp.git#main", "git"), ("/srv/buildpacks/go", "path"), ("vendor/bp", "path"),
])
def test_classify(ref: str, kind: str):
    assert classify_buildpack(ref, BUILTINS) == kind


def test_procfile_overrides_defaults_type_by_type():
    assert merge_process_types({"web": "npm start", "worker": "node w.js"}, {"web": "node server.js"}) == {
        "web": "node server.js", "worker": "node w.js"}
    assert merge_process_types({"web": "npm start"}, None) == {"web": "npm start"}


def test_buildpack_url_wins_over_dot_buildpacks(tmp_path: Path):
    (tmp_path / ".buildpacks").write_text("nodejs\n")
    assert requested_buildpacks(tmp_path, {"BUILDPACK_URL": "python"}) == (["python"], "BUILDPACK_URL")
    assert requested_buildpacks(tmp_path, {}) == (["nodejs"], ".buildpacks")
    assert requested_buildpacks(tmp_path / "missing", {}) == ([], "")


def test_app_files_are_never_read_through_a_symlink(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("web: leaked\n")
    app = tmp_path / "app"
    app.mkdir()
    os.symlink(secret, app / "Procfile")
    with pytest.raises(BuildError, match="Procfile in the app cannot be read"):
        read_app_file(app, "Procfile")


# --- compile_app's steps, against a container that runs shell-free Python stand-ins ---------


class ScriptedContainer:
    """Plays each buildpack script from a table: (argv[0] suffix) -> (exit code, output, side effect)."""

    def __init__(self, app: Path, scripts: dict[str, tuple[int, bytes, Callable[[], None] | None]]) -> None:
        self.app = app
        self.scripts = scripts
        self.calls: list[list[str]] = []
        self.programs: list[str] = []
        self.envs: list[dict[str, str]] = []

    async def run(self, argv: list[str], *, env: dict[str, str], timeout: float,
                  output: Callable[[bytes], None]) -> int:
        self.calls.append(argv)
        self.envs.append(env)
        if argv[:2] == ["/bin/bash", "-c"] and argv[3] == "buildpack-detect":
            return self._detect_batch(argv[4], argv[7:], output)
        if argv[:2] == ["/bin/bash", "-c"] and argv[3] == "buildpack-build":
            return await self._detect_then_step(argv, timeout, output)
        return await self._step(argv, timeout, output)

    async def _detect_then_step(self, argv: list[str], timeout: float, output: Callable[[bytes], None]) -> int:
        """What _DETECT_THEN_STEP_SCRIPT does: the first detect that accepts, announced, then its step."""
        step_script, exports, status, release_file, count = argv[4:9]
        candidates, args = argv[9:9 + int(count)], argv[9 + int(count):]
        for index, bp in enumerate(candidates):
            self.programs.append(f"{bp}/bin/detect")
            code, out, effect = self.scripts.get(f"{bp}/bin/detect", (1, b"", None))
            if effect:
                effect()
            if code == 0:
                name = out.decode().strip().splitlines()[0].strip() if out.strip() else bp.rsplit("/", 1)[-1]
                (self.app / Path(status).name).write_text(f"{index} {name}\n")
                output(f"-----> {name} app detected\n".encode())
                return await self._step(["/bin/bash", "-c", step_script, "buildpack-step", bp, "compile", "00",
                                         exports, f"{bp}={release_file}", *args], timeout, output)
        return 0

    async def _step(self, argv: list[str], timeout: float, output: Callable[[bytes], None]) -> int:
        program = step_program(argv)
        self.programs.append(program)
        code, out, effect = self.scripts.get(program, (1, b"", None))
        if out == b"HANG":
            await trio.sleep(timeout)
            raise BuildTimeout(timeout)
        if effect:
            effect()
        for i in range(0, len(out), 1000):
            output(out[i:i + 1000])
            await trio.sleep(0)
        if code == 0 and argv[8]:  # then each bin/release: stdout to its file, the exit code beside it
            for pair in argv[8].split(" "):
                directory, _, file = pair.partition("=")
                self.programs.append(f"{directory}/bin/release")
                release_code, yaml_out, _effect = self.scripts.get(f"{directory}/bin/release", (0, b"", None))
                (self.app / Path(file).name).write_bytes(yaml_out)
                (self.app / f"{Path(file).name}.code").write_text(f"{release_code}\n")
        return code

    def _detect_batch(self, mode: str, buildpacks: list[str], output: Callable[[bytes], None]) -> int:
        """What _DETECT_SCRIPT does: each detect in order, its result framed, until the mode stops."""
        for index, bp in enumerate(buildpacks):
            program = f"{bp}/bin/detect"
            self.programs.append(program)
            code, out, effect = self.scripts.get(program, (1, b"", None))
            if effect:
                effect()
            out = out[:4096]
            output(f"{index} {code} {len(out)}\n".encode() + out)
            if (mode == "first" and code == 0) or (mode == "every" and code != 0):
                break
        return 0


def step_program(argv: list[str]) -> str:
    """The buildpack program a step runs."""
    if argv[:2] == ["/bin/bash", "-c"] and argv[3] == "buildpack-step":
        return f"{argv[4]}/bin/{argv[5]}"
    return argv[0]


def builtins_at(root: Path) -> list[Buildpack]:
    bps = []
    for name in ("python", "nodejs", "procfile"):
        (root / name / "bin").mkdir(parents=True)
        for script in ("detect", "compile", "release"):
            (root / name / "bin" / script).write_text("#!/bin/sh\n")
            (root / name / "bin" / script).chmod(0o755)
        bps.append(Buildpack(name, root / name, name))
    return bps


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {name: tmp_path / name for name in ("app", "cache", "env", "bps", "builtins")}
    for path in d.values():
        path.mkdir()
    return d


async def run_compile(dirs: dict[str, Path], container: ScriptedContainer, config: dict[str, str] | None = None,
                      **kw) -> tuple[list[str], object]:
    lines: list[str] = []
    result = await compile_app(dirs["app"], container=container, buildpacks=builtins_at(dirs["builtins"]),
                               buildpacks_dir=dirs["bps"], config=config or {}, cache_dir=dirs["cache"],
                               env_dir=dirs["env"], stack="debian-13", output=lines.append, **kw)
    return lines, result


async def test_detection_runs_in_order_and_stops_at_the_first_match(dirs: dict[str, Path]):
    (dirs["app"] / "Procfile").write_text("web: node index.js\n")
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/nodejs/bin/detect": (0, b"Node.js\n", None),
        "/buildpacks/nodejs/bin/compile": (0, b"-----> Installing\n       done", None),
        "/buildpacks/nodejs/bin/release": (0, b"default_process_types:\n  web: npm start\n  worker: x\n", None),
    })
    lines, result = await run_compile(dirs, container, {"SECRET": "s3"})
    detects = [p for p in container.programs if p.endswith("/detect")]
    assert detects == ["/buildpacks/python/bin/detect", "/buildpacks/nodejs/bin/detect"]
    # Detection, the compile and the release: one container for the whole build.
    assert len(container.calls) == 1 and container.calls[0][3] == "buildpack-build"
    assert container.programs[2:] == ["/buildpacks/nodejs/bin/compile", "/buildpacks/nodejs/bin/release"]
    # Each step runs from a writable copy of its buildpack; compile gets Heroku's three arguments.
    assert container.calls[0][-3:] == ["/app", "/tmp/cache", "/tmp/env"]
    assert lines.index("-----> Node.js app detected") < lines.index("       done")
    assert result.buildpacks == ["Node.js"]
    assert result.process_types == {"web": "node index.js", "worker": "x"}
    assert lines[0] == "-----> Building on the debian-13 stack"
    assert "-----> Node.js app detected" in lines and "       done" in lines
    assert any(line.startswith("-----> Node.js app compiled (") for line in lines)
    assert "       Procfile declares types     -> web" in lines
    assert (dirs["env"] / "SECRET").read_text() == "s3"
    assert all(env["STACK"] == "debian-13" and "SECRET" not in env for env in container.envs)
    assert not list(dirs["app"].glob(".dynod-release-*"))


async def test_a_build_running_the_builtins_alone_is_shown_them_where_they_are_not_copied(dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {"/buildpacks/python/bin/detect": (0, b"Python\n", None),
                                                "/buildpacks/python/bin/compile": (0, b"", None)})
    container.buildpacks_dir = dirs["bps"]  # type: ignore[attr-defined]
    await run_compile(dirs, container)
    assert container.buildpacks_dir == dirs["builtins"]  # type: ignore[attr-defined]
    assert list(dirs["bps"].iterdir()) == []
    # Named buildpacks (even built-in ones) are placed in the build's own directory, as before.
    named = ScriptedContainer(dirs["app"], {"/buildpacks/python/bin/detect": (0, b"Python\n", None),
                                            "/buildpacks/python/bin/compile": (0, b"", None)})
    named.buildpacks_dir = dirs["bps"]  # type: ignore[attr-defined]
    again = {**dirs, "builtins": dirs["builtins"].with_name("builtins-2")}
    again["builtins"].mkdir()
    await run_compile(again, named, {"BUILDPACK_URL": "python"})
    assert named.buildpacks_dir == dirs["bps"]  # type: ignore[attr-defined]
    assert sorted(p.name for p in dirs["bps"].iterdir()) == ["python"]


async def test_nothing_detected(dirs: dict[str, Path]):
    with pytest.raises(BuildError, match="No default language could be detected"):
        await run_compile(dirs, ScriptedContainer(dirs["app"], {}))


async def test_explicit_buildpack_that_declines_the_app(dirs: dict[str, Path]):
    with pytest.raises(BuildError, match="App not compatible with buildpack nodejs"):
        await run_compile(dirs, ScriptedContainer(dirs["app"], {}), {"BUILDPACK_URL": "nodejs"})


async def test_every_named_buildpack_is_asked_in_one_container_and_the_first_decline_is_named(
        dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {"/buildpacks/python/bin/detect": (0, b"Python\n", None)})
    with pytest.raises(BuildError, match="App not compatible with buildpack nodejs: its bin/detect declined"):
        await run_compile(dirs, container, {"BUILDPACK_URL": "python,nodejs,procfile"})
    # One container asked python (accepted) and nodejs (declined); procfile was not asked.
    assert len(container.calls) == 1
    assert container.programs == ["/buildpacks/python/bin/detect", "/buildpacks/nodejs/bin/detect"]


async def test_releases_run_after_the_last_compile_and_a_failing_one_fails_the_build(dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/python/bin/detect": (0, b"Python\n", None),
        "/buildpacks/nodejs/bin/detect": (0, b"Node.js\n", None),
        "/buildpacks/python/bin/compile": (0, b"", None),
        "/buildpacks/nodejs/bin/compile": (0, b"", None),
        "/buildpacks/python/bin/release": (0, b"default_process_types:\n  web: gunicorn app:app\n", None),
        "/buildpacks/nodejs/bin/release": (3, b"", None),
    })
    with pytest.raises(BuildError, match="Buildpack nodejs: bin/release exited with 3; see the output above"):
        await run_compile(dirs, container, {"BUILDPACK_URL": "python,nodejs"})
    # The first compile carries no releases; the last runs both, in order, after itself.
    assert [call[8] for call in container.calls[1:]][0] == ""
    assert container.programs[2:] == ["/buildpacks/python/bin/compile", "/buildpacks/nodejs/bin/compile",
                                      "/buildpacks/python/bin/release", "/buildpacks/nodejs/bin/release"]
    assert not list(dirs["app"].glob(".dynod-release-*"))  # the YAML and code files are gone


async def test_a_failed_compile_runs_no_release(dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/python/bin/detect": (0, b"Python\n", None),
        "/buildpacks/python/bin/compile": (2, b"boom\n", None),
    })
    with pytest.raises(BuildError, match="python's bin/compile exited with 2"):
        await run_compile(dirs, container)
    assert "/buildpacks/python/bin/release" not in container.programs
    assert not list(dirs["app"].glob(".dynod-release-*"))


def test_detect_results_are_read_result_by_result():
    data = b"0 1 0\n1 0 14\nNode.js\nextra\n"
    assert parse_detect_results(data, 2) == {0: (1, ""), 1: (0, "Node.js")}
    # Anything else ends the reading: what is missing counts as not accepted.
    assert parse_detect_results(b"0 0 7\nPython\n9 0 0\n", 2) == {0: (0, "Python")}
    assert parse_detect_results(b"Python\n", 1) == {}
    assert parse_detect_results(b"0 0 99999\nPython\n", 1) == {}
    assert parse_detect_results(b"0 -1 3\nabc", 1) == {}
    # A name cut short by the end of the output is still the name.
    assert parse_detect_results(b"0 0 50\nPyth", 1) == {0: (0, "Pyth")}


async def test_timeout_is_a_build_error_naming_the_step(dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/python/bin/detect": (0, b"Python\n", None),
        "/buildpacks/python/bin/compile": (0, b"HANG", None),
    })
    with pytest.raises(BuildError, match=r"exceeded its 0.2 s limit while the buildpacks' bin/detect and bin/compile"):
        await run_compile(dirs, container, timeout=0.2)


async def test_output_over_the_cap_cancels_the_step(dirs: dict[str, Path]):
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/python/bin/detect": (0, b"Python\n", None),
        "/buildpacks/python/bin/compile": (0, b"x" * 50_000, None),
    })
    with pytest.raises(BuildError, match="printed over 0 MiB of output while the buildpacks' bin/detect and"):
        await run_compile(dirs, container, max_output_bytes=10_000)


async def test_slugignore_runs_before_any_buildpack(dirs: dict[str, Path]):
    (dirs["app"] / ".slugignore").write_text("*.log\n")
    (dirs["app"] / "debug.log").write_text("x")
    seen: list[bool] = []
    container = ScriptedContainer(dirs["app"], {
        "/buildpacks/python/bin/detect": (0, b"Python", lambda: seen.append((dirs["app"] / "debug.log").exists())),
        "/buildpacks/python/bin/compile": (0, b"", None),
        "/buildpacks/python/bin/release": (0, b"--- {}\n", None),
    })
    _lines, result = await run_compile(dirs, container)
    assert seen == [False] and result.slugignored == ["debug.log"]


def test_the_export_hand_over_dir_is_removed_without_following_links(tmp_path: Path):
    # The build owns /app: it may leave a link where the hand-over dir was, pointing at host files.
    from dynod.builds.buildpack import EXPORTS_DIR, _remove_exports

    precious = tmp_path / "host"
    precious.mkdir()
    (precious / "keep").write_text("host file\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / EXPORTS_DIR).symlink_to(precious)
    _remove_exports(app)
    assert not (app / EXPORTS_DIR).exists() and (precious / "keep").read_text() == "host file\n"
    (app / EXPORTS_DIR).mkdir()
    (app / EXPORTS_DIR / "00").symlink_to(precious)
    (app / EXPORTS_DIR / "sub").mkdir()
    (app / EXPORTS_DIR / "sub" / "link").symlink_to(precious / "keep")
    _remove_exports(app)
    assert not (app / EXPORTS_DIR).exists() and (precious / "keep").read_text() == "host file\n"
