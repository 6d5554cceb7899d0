"""The Go, Ruby, PHP and Java buildpacks through a real dynod; what cannot be built here is refused.

Each example app is deployed with `dynoctl deploy`, built in dynod's own build container on the
default stack, run with the process types its buildpack gives it and served through the router;
a second build of the same source shows the buildpack's cache in use. Only Debian's, PyPI's and
npm's registries are reachable from this host, so the examples need none of their own: a Go
module with vendor/, a gem in vendor/cache, a Composer app whose only requirement is PHP, a Maven
app that needs only Maven's default plugins (Debian packages them). An app that needs an
unreachable registry, a toolchain the stack does not have, or sbt (docs/languages.md says why it
is missing) fails with one line saying so, and releases nothing. Leiningen and Gradle apps:
test_languages_jvm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Dynod
from .test_buildpacks_python import copy_example, deploy, get, serve, versions

pytestmark = pytest.mark.integration


def process_types(dynod: Dynod, app: str) -> dict[str, str]:
    with dynod.client() as client:
        return client.list_releases(app)[-1]["process_types"]


@pytest.mark.parametrize("example, detected, types, body, first_says, cached_says", [
    ("go-vendored", "Go", {"web": "bin/hello"}, "Hello from Go (go1.",
     ["Using vendored modules (vendor/modules.txt)", "Installed Go binaries in bin/: hello"],
     "Using the Go build cache from the last build"),
    ("ruby-vendored", "Ruby",
     {"web": "bundle exec ruby app.rb", "rake": "bundle exec rake", "console": "bundle exec irb"},
     "Hello from Ruby (Ruby 3.3.", ["Installing gems from vendor/cache with Bundler", "Installing greeting 1.0.0"],
     "Restoring cached gems (same stack, Ruby, Bundler and Gemfile.lock as the last build)"),
    ("php-composer", "PHP", {"web": "heroku-php-nginx"}, "Hello from PHP (PHP 8.",
     ["composer install --no-dev --prefer-dist --optimize-autoloader", "Generating optimized autoload files"],
     "Using Composer's cache from the last build"),
    ("java-maven", "Java (Maven)", {"web": "java $JAVA_OPTS -jar target/hello.jar"}, "Hello from Java 21 (max heap ",
     ["Using JDK 21 (from system.properties)", "Using the stack's Maven (", "Executing: mvn -DskipTests clean install",
      "BUILD SUCCESS"],
     "Using the Maven repository cache (~/.m2) from the last build"),
])
def test_example_builds_serves_with_its_default_process_types_and_rebuilds_from_cache(
        dynod: Dynod, app: str, tmp_path: Path, example: str, detected: str, types: dict[str, str],
        body: str, first_says: list[str], cached_says: str) -> None:
    src = copy_example(example, tmp_path)
    first = deploy(dynod, app, src).stdout
    assert f"{detected} app detected" in first
    for line in first_says:
        assert line in first
    assert cached_says not in first
    assert process_types(dynod, app) == types
    status, page = serve(dynod, app)
    assert status == 200 and page.startswith(body), page

    if example == "ruby-vendored":  # `rake` as a one-off, with the slug's gems
        out = dynod.ctl("run", "-a", app, "--", "rake", "greet").stdout
        assert "Hello from rake (Ruby 3.3." in out
        # Heroku's environment for a Ruby dyno; a config var the user set wins.
        echo_env = ("run", "-a", app, "--", "bash", "-c", "echo $RACK_ENV $BUNDLE_WITHOUT")
        assert dynod.ctl(*echo_env).stdout.split() == ["production", "development:test"]
        dynod.ctl("config:set", "RACK_ENV=staging", "-a", app)
        assert dynod.ctl(*echo_env).stdout.split() == ["staging", "development:test"]
    if example == "java-maven":  # Heroku's JVM defaults: the heap from the dyno's 512 MB
        assert 250 <= int(page.split("max heap ")[1].split()[0]) <= 300, page
        opts = dynod.ctl("run", "-a", app, "--", "bash", "-c", "echo $JAVA_OPTS").stdout.split()
        assert opts[:3] == ["-Xmx300m", "-Xss512k", "-XX:CICompilerCount=2"], opts
    if example == "php-composer":  # nginx serves static files itself, and 404s what is not there
        assert get(dynod, app, "/style.css") == (200, "body { color: teal; }\n")
        missing = get(dynod, app, "/nope.php")
        assert missing is not None and missing[0] == 404

    second = deploy(dynod, app, src).stdout
    assert cached_says in second
    if example == "go-vendored":  # the cached build compiled nothing but the app itself
        assert "       runtime\n" not in second and "       runtime\n" in first
    dynod.ctl("ps:scale", "web=0", "-a", app)


def test_apps_that_cannot_be_built_here_say_why_in_one_line_and_release_nothing(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    before = versions(dynod, app)

    def refused(files: dict[str, str], says: str) -> None:
        src = tmp_path / f"app{len(list(tmp_path.iterdir()))}"
        src.mkdir()
        for name, text in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        out = deploy(dynod, app, src, ok=False).stdout
        assert says in out, out
        assert "Traceback" not in out

    main_go = (copy_example("go-vendored", tmp_path) / "main.go").read_text()
    # A module that needs the Go module proxy, which this host cannot reach: named, in seconds.
    refused({"go.mod": "module example.com/hello\n\ngo 1.22\n\nrequire example.com/greeting v1.0.0\n",
             "main.go": main_go},
            "Error: the Go module proxy https://proxy.golang.org cannot be reached")
    # A go directive newer than the stack's toolchain: no other toolchain can be downloaded.
    refused({"go.mod": "module example.com/hello\n\ngo 1.99\n", "main.go": main_go},
            "Error: go.mod's go directive asks for Go 1.99, but stack debian-13 has only Go 1.")
    # Gems from rubygems.org, which cannot be reached.
    gemfile_lock = ("GEM\n  remote: https://rubygems.org/\n  specs:\n    rack (3.1.8)\n\nPLATFORMS\n  ruby\n\n"
                    "DEPENDENCIES\n  rack (= 3.1.8)\n\nBUNDLED WITH\n   2.6.7\n")
    refused({"Gemfile": 'source "https://rubygems.org"\ngem "rack", "3.1.8"\n', "Gemfile.lock": gemfile_lock},
            "Error: the gem source https://rubygems.org/ cannot be reached")
    refused({"Gemfile": 'source "https://rubygems.org"\nruby file: ".ruby-version"\n', ".ruby-version": "2.7.8\n"},
            "Error: .ruby-version (named by the Gemfile) asks for Ruby 2.7.8, but stack debian-13 has only Ruby 3.3.")
    refused({"composer.json": '{"require": {"php": "^7.4"}}', "index.php": "<?php echo 1;"},
            "Error: composer.json requires php ^7.4, but stack debian-13 has only PHP 8.")
    refused({"composer.json": '{"require": {"php": "^8.2", "monolog/monolog": "^3.0"}}'},
            "Error: composer.json has no composer.lock beside it")
    # Only the stack's JDK: another java.runtime.version cannot be downloaded.
    refused({"pom.xml": "<project/>\n", "system.properties": "java.runtime.version=17\n"},
            "Error: system.properties asks for java.runtime.version=17, but stack debian-13 has only JDK 21")
    # A dependency from Maven Central, which cannot be reached, and Debian does not package.
    pom = (copy_example("java-maven", tmp_path) / "pom.xml").read_text().replace(
        "</project>", "<dependencies><dependency><groupId>com.example.dynod</groupId>"
        "<artifactId>unpackaged</artifactId><version>1.0</version></dependency></dependencies></project>")
    refused({"pom.xml": pom}, "Error: the build needs artifacts that are neither in Debian's Maven repository "
            "nor in the cache, and Maven Central (https://repo.maven.apache.org/maven2) cannot be reached")
    refused({"build.sbt": 'scalaVersion := "3.3.4"\n'},
            "Error: this is an sbt (Scala) app, but it cannot be built here: Debian packages no sbt")
    assert versions(dynod, app) == before
