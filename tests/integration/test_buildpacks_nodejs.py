"""The Node.js buildpack through a real dynod: npm, Yarn classic and Berry, pnpm, engines, scripts.

Every app is deployed with `dynoctl deploy`, built in dynod's own build container and served
through the router; refused apps leave the release list as it was. Node.js releases, Yarn and
pnpm come from the npm registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Dynod
from .test_buildpacks_python import copy_example, deploy, serve, versions

pytestmark = pytest.mark.integration


def in_dyno(dynod: Dynod, app: str, script: str) -> str:
    return dynod.ctl("run", "-a", app, "--", "bash", "-c", script, timeout=60).stdout


def test_typescript_app_with_a_build_script_and_no_engines(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("node-typescript", tmp_path)
    out = deploy(dynod, app, src).stdout
    assert "Using Node.js 20." in out and "no engines.node in package.json" in out
    assert "-----> Running build" in out and "Pruning devDependencies" in out
    status, body = serve(dynod, app)
    assert status == 200 and body.startswith("Hello from TypeScript on Node.js v20.")
    # TypeScript was there for the build and is gone from the slug; no npm log came along.
    listing = in_dyno(dynod, app, "ls node_modules/typescript 2>&1; ls -a; ls -a .npm 2>&1 || true")
    assert "No such file or directory" in listing.splitlines()[0]
    assert "dist" in listing.split() and not any(n.startswith("npm-debug") for n in listing.split())


def test_yarn_classic_runs_herokus_scripts_prunes_and_keeps_node_modules(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("node-yarn", tmp_path)
    out = deploy(dynod, app, src).stdout
    assert "Installing node modules (yarn install --frozen-lockfile)" in out
    order = [out.index(f"Running {s}") for s in ("heroku-prebuild", "heroku-postbuild", "heroku-cleanup")]
    assert order == sorted(order) and "Running build" not in out  # heroku-postbuild replaces build
    assert "postbuild saw devDependencies" in out
    assert out.index("Pruning devDependencies") < order[2]
    status, body = serve(dynod, app)  # `web: yarn start`: yarn is in the slug
    assert status == 200 and body.startswith("Hello from Yarn classic") and "(ms says 1m)" in body
    assert in_dyno(dynod, app, "ls node_modules; cat prebuild.txt cleanup.txt").split() == [
        "ms", "prebuild", "ran", "cleanup", "ran"]
    second = deploy(dynod, app, src).stdout
    assert "Using yarn 1.22.22 (cached)" in second and "Restoring node_modules from the last build" in second

    # YARN_PRODUCTION=false keeps the devDependencies.
    dynod.ctl("config:set", "YARN_PRODUCTION=false", "-a", app)
    kept = deploy(dynod, app, src).stdout
    assert "Skipping pruning devDependencies" in kept
    assert "is-number" in in_dyno(dynod, app, "ls node_modules").split()


@pytest.mark.parametrize("example, greeting, manager", [
    ("node-yarn-berry", "Yarn Berry", "yarn 4.18.1"),
    ("node-pnpm", "pnpm", "pnpm 10."),
])
def test_berry_and_pnpm_install_from_their_lockfiles(
        dynod: Dynod, app: str, tmp_path: Path, example: str, greeting: str, manager: str) -> None:
    src = copy_example(example, tmp_path)
    out = deploy(dynod, app, src).stdout
    assert f"-----> Using {manager}" in out
    assert "--immutable" in out or "--frozen-lockfile" in out
    status, body = serve(dynod, app)
    assert status == 200 and body.startswith(f"Hello from {greeting}")
    assert "is-number" not in in_dyno(dynod, app, "ls node_modules").split()


def test_node_app_asking_for_another_nodejs_gets_it_in_the_slug(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = copy_example("node-engines", tmp_path)
    out = deploy(dynod, app, src).stdout
    assert "Resolving Node.js version: engines.node '22.x' -> 22." in out
    assert "Installed Node.js v22." in out and "-----> Using npm 10." in out
    assert "Restoring npm cache" not in out  # a first build has none: only its own version lookups were there
    status, body = serve(dynod, app)
    assert status == 200 and "on Node.js v22." in body
    assert in_dyno(dynod, app, "node --version; npm --version").split()[0].startswith("v22.")
    second = deploy(dynod, app, src).stdout
    assert "Using Node.js 22." in second and "(cached)" in second
    assert "Restoring npm cache" in second


def test_refused_node_apps_say_why_and_release_nothing(dynod: Dynod, app: str, tmp_path: Path) -> None:
    before = versions(dynod, app)

    both = copy_example("node-yarn", tmp_path)
    (both / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}\n')
    out = deploy(dynod, app, both, ok=False).stdout
    assert "Error: Two different lockfiles found: package-lock.json yarn.lock." in out

    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    (nowhere / "package.json").write_text(json.dumps({"name": "x", "engines": {"node": "0.1.x"}}))
    out = deploy(dynod, app, nowhere, ok=False).stdout
    assert "asks for Node.js '0.1.x' (engines.node), but no Node.js release matches it" in out

    # heroku/node-js-sample's engines.node: a release the registry holds only as a tarball.
    (nowhere / "package.json").write_text(json.dumps({"name": "x", "engines": {"node": "4.0.0"}}))
    out = deploy(dynod, app, nowhere, ok=False).stdout
    assert "Node.js 4.0.0 is published on the npm registry in an old form" in out and "cp: cannot stat" not in out

    stale = copy_example("node-typescript", tmp_path)
    manifest = json.loads((stale / "package.json").read_text())
    manifest["dependencies"] = {"ms": "2.1.3"}  # not in package-lock.json
    (stale / "package.json").write_text(json.dumps(manifest))
    out = deploy(dynod, app, stale, ok=False).stdout
    assert "`npm ci` can only install packages when your package.json and package-lock.json" in out

    failing = copy_example("node-typescript", tmp_path / "failing")
    (failing / "src" / "index.ts").write_text("const n: number = 'not a number';\n")
    out = deploy(dynod, app, failing, ok=False).stdout
    assert "error TS2322" in out and "Error: the 'build' script failed" in out
    # The app's log has none of that output: its line says where the output is, and that works.
    failed = [line for line in dynod.logs(app).splitlines() if "Build failed" in line][-1]
    assert "see the output above" not in failed and "dynoctl builds:output " in failed, failed
    command = failed.split("check the build's output: dynoctl ", 1)[1].split()
    assert "error TS2322" in dynod.ctl(*command).stdout

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "package.json").write_text('{"name": "x", ')
    out = deploy(dynod, app, bad, ok=False).stdout
    assert "Error: package.json is not valid JSON" in out
    assert versions(dynod, app) == before


NATIVE_ADDON = {
    "package.json": json.dumps({"name": "native-addon-app", "version": "1.0.0", "private": True,
                                "gypfile": True, "scripts": {"start": "node index.js"}}),
    "binding.gyp": json.dumps({"targets": [{"target_name": "hello", "sources": ["hello.c"]}]}),
    "hello.c": """\
#include <node_api.h>

static napi_value Hello(napi_env env, napi_callback_info info) {
  napi_value result;
  napi_create_string_utf8(env, "compiled by node-gyp", NAPI_AUTO_LENGTH, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, NULL, 0, Hello, NULL, &fn);
  napi_set_named_property(env, exports, "hello", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
""",
    "index.js": """\
const http = require("http");
const addon = require("./build/Release/hello.node");
http.createServer((req, res) => res.end(`${addon.hello()}\\n`)).listen(process.env.PORT);
""",
}


def test_a_node_gyp_addon_compiles_on_the_build_image(dynod: Dynod, app: str, tmp_path: Path) -> None:
    # node-gyp needs make, a C compiler and node's headers: the build image's, never downloaded.
    src = tmp_path / "native"
    src.mkdir()
    for name, text in NATIVE_ADDON.items():
        (src / name).write_text(text)
    out = deploy(dynod, app, src).stdout
    assert "gyp info ok" in out or "node-gyp" in out
    status, body = serve(dynod, app)
    assert status == 200 and body == "compiled by node-gyp\n"
