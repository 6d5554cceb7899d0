"""The language buildpacks' pure rules, run as the scripts they are (bash, no root, no stack):
what each detects, the default process types each release prints, and Heroku's JVM heap sizes.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

BUILDPACKS = Path(__file__).resolve().parents[2] / "buildpacks"


def run(buildpack: str, script: str, app: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILDPACKS / buildpack / "bin" / script), str(app), "/nonexistent", "/nonexistent"],
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "STACK": "debian-13", **(env or {})})


def write(app: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return app


def release_types(buildpack: str, app: Path) -> dict[str, str]:
    done = run(buildpack, "release", app)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["default_process_types"]


@pytest.mark.parametrize("buildpack, files, name", [
    ("go", {"go.mod": "module x\n"}, "Go"),
    ("ruby", {"Gemfile": ""}, "Ruby"),
    ("php", {"composer.json": "{}"}, "PHP"),
    ("php", {"index.php": "<?php"}, "PHP"),
    ("java", {"pom.xml": "<project/>"}, "Java (Maven)"),
    ("java", {"build.gradle.kts": ""}, "Java (Gradle)"),
    ("java", {"gradlew": ""}, "Java (Gradle)"),
    ("scala", {"build.sbt": ""}, "Scala"),
    ("scala", {"project/build.properties": "sbt.version=1.10.0\n"}, "Scala"),
    ("clojure", {"project.clj": ""}, "Clojure (Leiningen)"),
])
def test_detect_names_the_language_from_its_dependency_file(
        tmp_path: Path, buildpack: str, files: dict[str, str | bytes], name: str) -> None:
    done = run(buildpack, "detect", write(tmp_path, files))
    assert (done.returncode, done.stdout.strip()) == (0, name)


@pytest.mark.parametrize("buildpack", ["go", "ruby", "php", "java", "scala", "clojure"])
def test_detect_refuses_an_app_of_another_language(tmp_path: Path, buildpack: str) -> None:
    done = run(buildpack, "detect", write(tmp_path, {"requirements.txt": "", "package.json": "{}"}))
    assert done.returncode == 1 and done.stdout == ""


def test_go_gets_a_default_web_only_for_exactly_one_main_package(tmp_path: Path) -> None:
    assert release_types("go", tmp_path) == {}
    write(tmp_path, {".heroku/go/installed": "hello\n"})
    assert release_types("go", tmp_path) == {"web": "bin/hello"}
    write(tmp_path, {".heroku/go/installed": "api\nworker\n"})
    assert release_types("go", tmp_path) == {}


def test_ruby_defaults_follow_heroku_for_rails_rack_and_plain_ruby(tmp_path: Path) -> None:
    assert release_types("ruby", tmp_path) == {"rake": "bundle exec rake", "console": "bundle exec irb"}
    write(tmp_path, {".heroku/ruby/kind": "rack\n"})
    assert release_types("ruby", tmp_path) == {"rake": "bundle exec rake", "console": "bundle exec irb",
                                               "web": "bundle exec rackup config.ru -p ${PORT:-5000}"}
    write(tmp_path, {".heroku/ruby/kind": "rails\n"})
    assert release_types("ruby", tmp_path) == {"rake": "bundle exec rake", "console": "bin/rails console",
                                               "web": "bin/rails server -p ${PORT:-5000} -e $RAILS_ENV"}


def test_php_web_is_nginx_in_front_of_php_fpm(tmp_path: Path) -> None:
    assert release_types("php", tmp_path) == {"web": "heroku-php-nginx"}


def test_java_web_default_only_for_a_spring_boot_jar(tmp_path: Path) -> None:
    assert release_types("java", tmp_path) == {}
    write(tmp_path, {".heroku/java/spring-boot-jar": "target/demo-0.0.1.jar\n"})
    assert release_types("java", tmp_path) == {
        "web": "java -Dserver.port=$PORT $JAVA_OPTS -jar target/demo-0.0.1.jar"}


def test_the_spring_boot_jar_is_found_by_its_manifest(tmp_path: Path) -> None:
    # The function bin/compile uses, run on real jars (zip files with a manifest).
    target = tmp_path / "target"
    target.mkdir()
    for name, manifest in [("plain.jar", "Manifest-Version: 1.0\n"),
                           ("demo-0.0.1.jar", "Manifest-Version: 1.0\nSpring-Boot-Version: 3.4.0\n")]:
        with zipfile.ZipFile(target / name, "w") as jar:
            jar.writestr("META-INF/MANIFEST.MF", manifest)
    script = (BUILDPACKS / "java" / "bin" / "compile").read_text()
    functions = script[script.index("spring_boot_jar() {"):script.index('central=https://')]
    done = subprocess.run(["bash", "-c", f'build_dir={tmp_path}\n{functions}\nspring_boot_jar {target}'],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "target/demo-0.0.1.jar", done.stderr


@pytest.mark.parametrize("ram, opts", [
    ("512", "-Xmx300m -Xss512k -XX:CICompilerCount=2 -Dfile.encoding=UTF-8"),  # standard-1X
    ("1024", "-Xmx671m -XX:CICompilerCount=2 -Dfile.encoding=UTF-8"),  # standard-2X
    ("2560", "-Xmx2048m -Dfile.encoding=UTF-8"),  # performance-M: 80%
])
def test_jvm_heap_follows_the_dyno_memory_as_herokus_defaults(ram: str, opts: str) -> None:
    # Outside a dyno's cgroup (the host's root one has no limit) DYNO_RAM is what is left.
    script = f". {BUILDPACKS / 'java' / 'lib' / 'jvm.sh'}; echo \"$JAVA_OPTS|$JAVA_TOOL_OPTIONS\""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "DYNO_RAM": ram})
    if done.stdout.split("|")[0] != opts and "memory" in Path("/proc/self/cgroup").read_text():
        pytest.skip("this test runs inside a memory-limited cgroup")
    assert done.stdout.strip() == f"{opts}|{opts}"
    user = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "DYNO_RAM": ram, "JAVA_OPTS": "-Xmx64m"})
    assert user.stdout.split("|")[0] == "-Xmx64m"  # a value the user set wins


@pytest.mark.parametrize("buildpack, files, says", [
    ("scala", {"build.sbt": ""}, "Debian packages no sbt"),
])
def test_what_debian_lacks_is_refused_in_one_line(
        tmp_path: Path, buildpack: str, files: dict[str, str | bytes], says: str) -> None:
    done = run(buildpack, "compile", write(tmp_path, files))
    assert done.returncode == 1
    lines = done.stdout.rstrip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(" !     Error: ") and says in lines[0]
