"""dynoctl buildpacks verbs: the list editing and Heroku's words, and the checks dynod makes."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from dynod.api.server import serve_api
from dynod.builds.buildpack import (
    BUILTIN_ORDER,
    BuildError,
    check_buildpack_ref,
    classify_buildpack,
    requested_buildpacks,
)
from dynod.cli import main
from dynod.cli.buildpacks import added, cleared_message, listing, removed, replaced, update_message
from dynod.errors import UserError
from tests.unit.fake_platform import FakePlatform

BUILTINS = set(BUILTIN_ORDER)


# --- the list editing ------------------------------------------------------------------------------


def test_add_appends_or_inserts_before_the_index() -> None:
    assert added([], "heroku/python", None) == ["heroku/python"]
    assert added(["a", "b"], "c", None) == ["a", "b", "c"]
    assert added(["a", "b"], "c", 1) == ["c", "a", "b"]
    assert added(["a", "b"], "c", 2) == ["a", "c", "b"]
    assert added(["a", "b"], "c", 3) == ["a", "b", "c"]


@pytest.mark.parametrize(("urls", "index", "message"), [
    (["a", "b"], 4, "Invalid index. Please choose a value between 1 and 3."),
    ([], 2, "Invalid index. Only valid value is 1."),
    (["a"], 0, "Invalid index. Must be greater than 0."),
    (["a"], -1, "Invalid index. Must be greater than 0."),
])
def test_add_refuses_an_index_out_of_range(urls: list[str], index: int, message: str) -> None:
    with pytest.raises(UserError) as caught:
        added(urls, "c", index)
    assert str(caught.value) == message


def test_add_and_set_refuse_a_buildpack_already_in_the_list() -> None:
    for edit in (added, replaced):
        with pytest.raises(UserError) as caught:
            edit(["heroku/python", "b"], "heroku/python", None)
        assert str(caught.value) == "The buildpack heroku/python is already set on your app."


def test_set_replaces_the_one_at_the_index_and_the_first_without_one() -> None:
    assert replaced([], "x", None) == ["x"]
    assert replaced(["a", "b", "c"], "x", None) == ["x", "b", "c"]  # Heroku's CLI: the first only
    assert replaced(["a", "b", "c"], "x", 2) == ["a", "x", "c"]
    assert replaced(["a", "b", "c"], "x", 4) == ["a", "b", "c", "x"]
    with pytest.raises(UserError, match="between 1 and 4"):
        replaced(["a", "b", "c"], "x", 5)


def test_remove_by_url_or_index_and_its_refusals() -> None:
    assert removed(["a", "b", "c"], "b", None, "blog") == ["a", "c"]
    assert removed(["a", "b", "c"], None, 3, "blog") == ["a", "b"]
    assert removed(["a"], "a", None, "blog") == []
    cases = [
        ((["a"], "z", None), "Buildpack not found. Nothing was removed."),
        ((["a", "b"], None, 3), "Invalid index. Please choose a value between 1 and 2."),
        ((["a"], None, 2), "Invalid index. Only valid value is 1."),
        ((["a"], "a", 1), "Please choose either index or Buildpack, but not both."),
        (([], "a", None), "No buildpacks were found. Next release on blog will detect buildpack normally."),
    ]
    for (urls, url, index), message in cases:
        with pytest.raises(UserError) as caught:
            removed(urls, url, index, "blog")
        assert str(caught.value) == message
    with pytest.raises(UserError, match="Must specify a buildpack to remove"):
        removed(["a"], None, None, "blog")


def test_the_heroku_layouts() -> None:
    assert listing("blog", []) == ["blog has no Buildpack URL set."]
    assert listing("blog", ["heroku/python"]) == ["=== blog Buildpack URL", "heroku/python"]
    assert listing("blog", ["a", "heroku/python"]) == ["=== blog Buildpack URLs", "1. a", "2. heroku/python"]
    assert update_message("blog", ["heroku/python"], "set") == [
        "Buildpack set. Next release on blog will use heroku/python.",
        "Run git push dynod main to create a new release using this buildpack."]
    assert update_message("blog", ["a", "b"], "added") == [
        "Buildpack added. Next release on blog will use:", "  1. a", "  2. b",
        "Run git push dynod main to create a new release using these buildpacks."]
    assert cleared_message("blog", "Buildpacks cleared.", {}) == (
        "Buildpacks cleared. Next release on blog will detect buildpacks normally.", None)
    line, warning = cleared_message("blog", "Buildpacks cleared.", {"BUILDPACK_URL": "heroku/go"})
    assert line == "Buildpacks cleared." and warning is not None and "BUILDPACK_URL" in warning


# --- what dynod accepts in an app's list, and which list a build uses ------------------------------


def test_names_and_urls_an_app_list_accepts(tmp_path: Path) -> None:
    root = tmp_path / "packs"
    (root / "mine").mkdir(parents=True)
    for ok in ("heroku/python", "python", "heroku/gradle", "heroku-community/apt",
               "https://github.com/heroku/heroku-buildpack-apt#v1", "git@example.test:me/pack.git",
               str(root / "mine"), f"file://{root / 'mine'}"):
        check_buildpack_ref(ok, BUILTINS, (root,))
    assert classify_buildpack("heroku-community/apt", BUILTINS) == "git"
    assert classify_buildpack("heroku/gradle", BUILTINS) == "builtin"


@pytest.mark.parametrize("bad", ["not a url", "heroku/cobol", "someone/unknown", "relative/dir", "/etc",
                                 "file:///etc/#main"])
def test_what_an_app_list_refuses_in_one_line(bad: str, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        check_buildpack_ref(bad, BUILTINS, (tmp_path,))
    assert "\n" not in str(caught.value) and (bad in str(caught.value))


def test_the_apps_list_wins_over_buildpack_url_which_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / ".buildpacks").write_text("heroku/nodejs\n")
    config = {"BUILDPACK_URL": "heroku/go"}
    assert requested_buildpacks(tmp_path, config, ["heroku/python"]) == (["heroku/python"], "the app's buildpacks")
    assert requested_buildpacks(tmp_path, config, []) == (["heroku/go"], "BUILDPACK_URL")
    assert requested_buildpacks(tmp_path, {}, None) == (["heroku/nodejs"], ".buildpacks")


# --- end to end through the API server ---------------------------------------------------------------


class BuildpacksPlatform(FakePlatform):
    """The fake platform, with the app's buildpack list checked as dynod checks it."""

    def __init__(self) -> None:
        super().__init__()
        self.buildpacks: dict[str, list[str]] = {}

    async def get_buildpacks(self, app: str) -> list[str]:
        self._call("get_buildpacks", app)
        self._app(app)
        return list(self.buildpacks.get(app, []))

    async def set_buildpacks(self, app: str, urls: list[str]) -> list[str]:
        self._call("set_buildpacks", app, urls)
        self._app(app)
        for url in urls:
            check_buildpack_ref(url, BUILTINS, ())
        if len(set(urls)) != len(urls):
            raise UserError("A buildpack is given twice; list each buildpack once.")
        self.buildpacks[app] = list(urls)
        return list(urls)


@pytest.fixture
async def cli() -> AsyncIterator[tuple[BuildpacksPlatform, dict[str, str]]]:
    directory = Path(tempfile.mkdtemp(prefix="dynod-cli-bp-", dir="/tmp"))
    platform = BuildpacksPlatform()
    await platform.create_app("blog")
    try:
        async with trio.open_nursery() as nursery:
            path = await nursery.start(partial(serve_api, platform, directory / "api.sock",
                                               group="dynod-test-no-such-group"))
            yield platform, {"DYNOD_SOCKET": str(path), "DYNOD_APP": "blog"}
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run(environ: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(lambda: main(list(argv), stdout=out, stderr=err, environ=environ))
    return code, out.getvalue(), err.getvalue()


async def test_the_verbs_through_the_api(cli: tuple[BuildpacksPlatform, dict[str, str]]) -> None:
    platform, env = cli
    assert await run(env, "buildpacks") == (0, "blog has no Buildpack URL set.\n", "")
    code, out, _ = await run(env, "buildpacks:set", "heroku/python")
    assert code == 0 and out.startswith("Buildpack set. Next release on blog will use heroku/python.\n")
    code, out, _ = await run(env, "buildpacks:add", "--index", "1", "heroku-community/apt")
    assert code == 0 and "  1. heroku-community/apt\n  2. heroku/python\n" in out
    assert platform.buildpacks["blog"] == ["heroku-community/apt", "heroku/python"]
    assert (await run(env, "buildpacks"))[1] == "=== blog Buildpack URLs\n1. heroku-community/apt\n2. heroku/python\n"
    code, out, _ = await run(env, "buildpacks:remove", "-i", "1")
    assert code == 0 and out.startswith("Buildpack removed. Next release on blog will use heroku/python.")
    code, out, _ = await run(env, "buildpacks:remove", "heroku/python")
    assert (code, out) == (0, "Buildpack removed. Next release on blog will detect buildpacks normally.\n")
    await run(env, "buildpacks:add", "heroku/go")
    await platform.update_config("blog", {"BUILDPACK_URL": "heroku/ruby"})
    code, out, err = await run(env, "buildpacks:clear")
    assert (code, out) == (0, "Buildpacks cleared.\n") and "BUILDPACK_URL config var is still set" in err
    assert platform.buildpacks["blog"] == []


async def test_bad_input_is_one_line_and_changes_nothing(cli: tuple[BuildpacksPlatform, dict[str, str]]) -> None:
    platform, env = cli
    await run(env, "buildpacks:add", "heroku/python")
    for argv, says in [
        (("buildpacks:add", "heroku/python"), "The buildpack heroku/python is already set on your app."),
        (("buildpacks:add", "-i", "5", "heroku/go"), "Invalid index. Please choose a value between 1 and 2."),
        (("buildpacks:remove", "heroku/go"), "Buildpack not found. Nothing was removed."),
        (("buildpacks:add", "no such thing"), "no such thing is not a buildpack URL or a known buildpack name"),
        (("buildpacks:add", "file:///etc/x"), "is outside the directories buildpacks may come from"),
        (("buildpacks:set", "-i", "x", "heroku/go"), "Argument -i/--index: invalid int value"),
    ]:
        code, out, err = await run(env, *argv)
        assert code == 1 and out == "" and err.count("\n") == 1 and says in err, (argv, err)
    assert platform.buildpacks["blog"] == ["heroku/python"]


async def test_a_registry_name_whose_source_is_unreachable_fails_the_build_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from dynod.builds import buildpack

    with socket.socket() as s:  # a loopback port nothing listens on: the host "cannot reach" it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(buildpack.REGISTRY_SOURCES, "heroku-community/apt", f"http://127.0.0.1:{port}/apt.git")
    (tmp_path / "dest").mkdir()
    with pytest.raises(BuildError) as caught:
        await buildpack.install_buildpacks(["heroku-community/apt"], dest=tmp_path / "dest",
                                           builtins=buildpack.builtin_buildpacks(), source_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"Buildpack heroku-community/apt (http://127.0.0.1:{port}/apt.git) could not be cloned")
    assert "\n" not in message and list((tmp_path / "dest").iterdir()) == []
