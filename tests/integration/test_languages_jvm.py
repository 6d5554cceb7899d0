"""Leiningen (Clojure) and Gradle apps through a real dynod, with Clojars and Maven Central unreachable.

As tests/integration/test_languages.py does for the other languages: each example is deployed with
`dynoctl deploy`, built in dynod's build container on the default stack's build image (Debian's
leiningen and gradle), run with its default process types and served through the router, then
built again from the same source to show the cache in use. Both examples need only what Debian's
Maven repository has (Clojure itself; Maven's own commons-lang3), which the buildpacks resolve
from; what it lacks fails the build with one line naming the unreachable registries, in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Dynod
from .test_buildpacks_python import copy_example, deploy, serve, versions
from .test_languages import process_types

pytestmark = pytest.mark.integration


def max_heap_mb(page: str) -> int:
    return int(page.split("max heap ")[1].split()[0])


def test_leiningen_app_builds_an_uberjar_from_debians_repository_serves_and_rebuilds_from_cache(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("clojure-lein", tmp_path)
    first = deploy(dynod, app, src).stdout
    assert "Clojure (Leiningen) app detected" in first
    assert "Using Leiningen 2.10.0 and JDK 21 (the stack's)" in first
    assert "Clojars and Maven Central cannot be reached: resolving from Debian's Maven repository" in first
    assert "Building with Leiningen: lein uberjar" in first
    assert "Retrieving org/clojure/clojure/1.12.0/clojure-1.12.0.jar from debian" in first
    assert "Using the Maven repository cache (~/.m2) from the last build" not in first
    # Heroku's default web for an uberjar: the JRE of the run image, no Leiningen.
    assert process_types(dynod, app) == {
        "web": "java $JVM_OPTS -cp target/hello-standalone.jar clojure.main -m hello.core"}
    status, page = serve(dynod, app)
    assert status == 200 and page.startswith("Hello from Clojure 1.12.0 (max heap "), page
    assert 250 <= max_heap_mb(page) <= 300, page  # JVM_OPTS from the 512 MB dyno, as JAVA_OPTS
    opts = dynod.ctl("run", "-a", app, "--", "bash", "-c", "echo $JVM_OPTS; echo $RING_ENV").stdout.splitlines()
    assert opts[0].split()[:3] == ["-Xmx300m", "-Xss512k", "-XX:CICompilerCount=2"], opts
    assert opts[1] == "production"
    # Leiningen's home (the buildpack's profile) and ~/.m2 stay in the cache, out of the slug.
    listing = dynod.ctl("run", "-a", app, "--", "bash", "-c", "ls -A /app").stdout.split()
    assert ".lein" not in listing and ".m2" not in listing, listing

    second = deploy(dynod, app, src).stdout
    assert "Using the Maven repository cache (~/.m2) from the last build" in second
    assert "Retrieving " not in second  # every artifact came from the cached ~/.m2
    dynod.ctl("ps:scale", "web=0", "-a", app)


def test_gradle_app_without_a_wrapper_builds_with_the_stacks_gradle_serves_and_rebuilds_from_cache(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("gradle-java", tmp_path)
    first = deploy(dynod, app, src).stdout
    assert "Java (Gradle) app detected" in first
    assert "Using the stack's Gradle 4.4.1: this app has no ./gradlew" in first
    assert "Maven Central cannot be reached: resolving from Debian's Maven repository and the cache" in first
    assert "Executing: gradle stage" in first and "BUILD SUCCESSFUL" in first
    assert "Using the Gradle cache from the last build" not in first
    assert "MavenResolverHook" not in first  # Debian's packaging hook is off
    assert process_types(dynod, app) == {"web": "build/install/hello/bin/hello"}
    status, page = serve(dynod, app)
    # commons-lang3 (from Debian's repository, in the installed app's lib/) capitalised it.
    assert status == 200 and page.startswith("Hello from Gradle on Java 21 (max heap "), page
    assert 250 <= max_heap_mb(page) <= 300, page

    second = deploy(dynod, app, src).stdout
    assert "Using the Gradle cache from the last build" in second
    assert "BUILD SUCCESSFUL" in second
    dynod.ctl("ps:scale", "web=0", "-a", app)


def test_a_gradle_wrapper_whose_distribution_cannot_be_downloaded_builds_with_the_stacks_gradle(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("gradle-java", tmp_path)
    (src / "gradlew").write_text("#!/bin/sh\necho gradlew must not run here >&2\nexit 3\n")
    (src / "gradle" / "wrapper").mkdir(parents=True)
    (src / "gradle" / "wrapper" / "gradle-wrapper.properties").write_text(
        "distributionUrl=https\\://services.gradle.org/distributions/gradle-8.10.2-bin.zip\n")
    out = deploy(dynod, app, src).stdout
    assert ("Using the stack's Gradle 4.4.1: ./gradlew downloads Gradle from https://services.gradle.org, "
            "which cannot be reached") in out
    assert "gradlew must not run here" not in out and "BUILD SUCCESSFUL" in out


def test_dependencies_debian_lacks_fail_in_one_line_naming_the_registries_and_release_nothing(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    before = versions(dynod, app)

    def refused(example: str, file: str, old: str, new: str, says: str) -> None:
        src = copy_example(example, tmp_path / f"app{len(list(tmp_path.iterdir()))}")
        (src / file).write_text((src / file).read_text().replace(old, new))
        started = time.monotonic()
        out = deploy(dynod, app, src, ok=False).stdout
        assert says in out, out
        assert "Traceback" not in out
        assert time.monotonic() - started < 240  # probed and refused, never waiting on a registry

    refused("clojure-lein", "project.clj", '[[org.clojure/clojure "1.12.0"]]',
            '[[org.clojure/clojure "1.12.0"] [ring/ring-core "1.12.2"]]',
            "Error: the project needs dependencies that are neither in Debian's Maven repository nor in the "
            "cache, and Clojars (https://repo.clojars.org: ")
    refused("gradle-java", "build.gradle", "compile 'org.apache.commons:commons-lang3:3.17.0'",
            "compile 'com.example.dynod:unpackaged:1.0'",
            "Error: the build needs artifacts or plugins that are neither in Debian's Maven repository nor in "
            "the cache, and Maven Central (https://repo.maven.apache.org/maven2) cannot be reached")
    assert versions(dynod, app) == before
