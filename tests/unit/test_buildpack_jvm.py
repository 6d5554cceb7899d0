"""The Clojure buildpack's and the Gradle half of the Java buildpack's pure rules, run as the
bash they are (no root, no stack): what project.clj's :main and :uberjar-name are read as, the
default `web` bin/release prints, the Gradle task chosen, and the JVM defaults both share.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

BUILDPACKS = Path(__file__).resolve().parents[2] / "buildpacks"


def bash(script: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, cwd=cwd,
                          env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def project(tmp_path: Path, text: str) -> tuple[str, str]:
    (tmp_path / "project.clj").write_text(text)
    lib = BUILDPACKS / "clojure" / "lib" / "project.sh"
    main = bash(f". {lib}; project_main {tmp_path / 'project.clj'} || true")
    jar = bash(f". {lib}; project_uberjar_name {tmp_path / 'project.clj'} || true")
    return main, jar


@pytest.mark.parametrize("text, main, jar", [
    ('(defproject hello "1.0.0"\n  :main hello.core\n  :uberjar-name "hello-standalone.jar")\n',
     "hello.core", "hello-standalone.jar"),
    # metadata before the symbol, a key on the next line, a profile's own :main after the project's
    ('(defproject a "1"\n  :main\n    ^:skip-aot my-app.web\n  :profiles {:dev {:main user}})\n', "my-app.web", ""),
    ('(defproject a "1" :main ^{:skip-aot true} a.b.c)', "a.b.c", ""),
    # a commented-out key is not the project's
    ('(defproject a "1"\n  ; :main old.core\n  ;; :uberjar-name "old.jar"\n  :dependencies [])\n', "", ""),
    # :main-class is another key
    ('(defproject a "1" :main-class x.y)', "", ""),
])
def test_clojure_reads_main_and_uberjar_name_from_project_clj(
        tmp_path: Path, text: str, main: str, jar: str) -> None:
    assert project(tmp_path, text) == (main, jar)


def test_clojure_web_default_is_the_one_compile_chose(tmp_path: Path) -> None:
    def types() -> dict[str, str]:
        done = subprocess.run([str(BUILDPACKS / "clojure" / "bin" / "release"), str(tmp_path)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)["default_process_types"]

    assert types() == {}  # no standalone jar was found: the app names its web in a Procfile
    (tmp_path / ".heroku" / "clojure").mkdir(parents=True)
    web = "java $JVM_OPTS -cp target/hello-standalone.jar clojure.main -m hello.core"
    (tmp_path / ".heroku" / "clojure" / "web").write_text(web + "\n")
    assert types() == {"web": web}


def test_clojure_dynos_get_the_java_buildpacks_jvm_defaults() -> None:
    # Each buildpack is copied alone into a build, so the Clojure one carries its own copy.
    assert (BUILDPACKS / "clojure" / "lib" / "jvm.sh").read_bytes() == (
        BUILDPACKS / "java" / "lib" / "jvm.sh").read_bytes()


def test_clojure_compile_refuses_in_one_line_on_a_stack_without_leiningen(tmp_path: Path) -> None:
    # PATH without lein (this host has none): the refusal names what the stack lacks.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "cat", "basename", "dirname", "javac"):
        found = next((Path(d) / tool for d in os.environ["PATH"].split(":") if (Path(d) / tool).exists()), None)
        if found:
            (bin_dir / tool).symlink_to(found)
    app = tmp_path / "app"
    app.mkdir()
    (app / "project.clj").write_text('(defproject a "1")\n')
    done = subprocess.run([str(BUILDPACKS / "clojure" / "bin" / "compile"), str(app), str(tmp_path / "c"),
                           str(tmp_path / "e")], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bin_dir), "STACK": "debian-13"})
    assert done.returncode == 1
    lines = done.stdout.rstrip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(" !     Error: this stack (debian-13) has no "), lines


@pytest.mark.parametrize("script, task", [
    ("apply plugin: 'java'\n", "build -x check"),
    ("apply plugin: 'application'\ntask stage(dependsOn: installDist)\n", "stage"),
    ("task 'stage' {\n}\n", "stage"),
    ('tasks.register("stage") {\n  dependsOn("installDist")\n}\n', "stage"),
    ("// task stage is not defined here\ntask stageAll\n", "build -x check"),
])
def test_gradle_runs_herokus_stage_task_when_the_build_defines_one(tmp_path: Path, script: str, task: str) -> None:
    name = "build.gradle.kts" if "register" in script else "build.gradle"
    (tmp_path / name).write_text(script)
    compile_script = (BUILDPACKS / "java" / "bin" / "compile").read_text()
    function = compile_script[compile_script.index("gradle_default_task() {"):compile_script.index("jar_manifest() {")]
    assert bash(f"{function}\ngradle_default_task", cwd=tmp_path) == task
