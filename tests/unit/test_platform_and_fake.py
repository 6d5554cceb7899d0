"""The daemon's Platform and the API tests' FakePlatform decide alike, because both use the rules.

The same calls go to a real ``Platform`` (on a real SQLite ledger, with a dyno manager that only
records what it is asked) and to ``FakePlatform``; each answer, refusal and release made must be
the same. Before the rules were shared the fake made a release for every config call (even one
that changed nothing), described a mixed set-and-unset as "Set" only, named unset vars that were
not set, and took any config name or value: the config cases here fail against that fake.
"""

from __future__ import annotations

import gzip
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dynod.api.service import PlatformService
from dynod.errors import UserError
from dynod.ledger import open_ledger
from dynod.platform import Platform
from dynod.settings import Settings
from tests.unit.fake_platform import FakePlatform

TYPES = {"web": "python3 -m http.server $PORT", "worker": "python3 worker.py"}


class RecordingManager:
    """The dyno manager's intents that config, release and formation calls use; it runs nothing."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    def reset_crashes(self, app: str) -> None:
        self.asked.append(("reset_crashes", app))

    def wake_app(self, app: str) -> None:
        self.asked.append(("wake_app", app))

    def wake(self) -> None:
        self.asked.append(("wake", None))


class RecordingLogs:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, app: str, source: str, ps: str, line: str) -> None:
        self.lines.append(f"{app} {source}[{ps}]: {line}")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Platform, FakePlatform]]:
    settings = Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    settings.state_dir.mkdir()
    ledger = open_ledger(f"sqlite:///{settings.state_dir / 'dynod.sqlite3'}")
    real = Platform(settings, ledger=ledger, manager=RecordingManager(), logs=RecordingLogs(),  # type: ignore[arg-type]
                    slugs=None, stacks=None, routes_changed=lambda: None, request_shutdown=lambda stop: None)
    fake = FakePlatform()
    fake.slug_process_types = dict(TYPES)
    try:
        for platform in (real, fake):
            await platform.create_app("shop")
        # The same code on both: the daemon releases a built slug, the fake one uploaded to it.
        real.release("shop", slug_id="a" * 64, config={}, process_types=dict(TYPES), description="Deploy aaaaaa")
        slug = await fake.upload_slug("shop", _chunks(gzip.compress(b"slug")))
        await fake.create_release("shop", slug["id"], "Deploy aaaaaa")
        yield real, fake
    finally:
        ledger.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _outcome(call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
    try:
        return "ok", await call()
    except UserError as exc:
        return type(exc).__name__, str(exc)


async def _newest(platform: PlatformService) -> tuple[int, str]:
    releases = await platform.list_releases("shop")
    return len(releases), releases[-1]["description"]


# (changes, whether they make a release)
CONFIG_CALLS: list[tuple[dict[str, Any], bool]] = [
    ({"A": "1", "B": "2"}, True),
    ({"A": "1"}, False),  # its own value
    ({"GONE": None}, False),  # not set
    ({"B": None, "D": "4", "GONE": None}, True),  # a set and a real unset; GONE is not named
    ({}, False),
    ({"PORT": "80"}, False),
    ({"1A": "x"}, False),
    ({"A": 5}, False),
    ({"BIG": "x" * 40_000}, False),
]


async def test_config_calls_answer_and_release_alike(pair: tuple[Platform, FakePlatform]) -> None:
    real, fake = pair
    for changes, releases in CONFIG_CALLS:
        before = [(await _newest(p))[0] for p in (real, fake)]
        got = [await _outcome(_bind(p.update_config, "shop", dict(changes))) for p in (real, fake)]
        assert got[0] == got[1], changes
        made = [(await _newest(p))[0] - count for p, count in zip((real, fake), before, strict=True)]
        assert made == [int(releases)] * 2, changes
        assert (await _newest(real))[1] == (await _newest(fake))[1]
        assert await real.get_config("shop") == await fake.get_config("shop")
    assert (await _newest(real))[1] == "Set D config vars; Remove B config vars"
    assert await real.get_config("shop") == {"A": "1", "D": "4"}


def _bind(method: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: method(*args)


async def test_a_rollback_releases_the_old_config_on_both(pair: tuple[Platform, FakePlatform]) -> None:
    real, fake = pair
    for platform in (real, fake):
        await platform.update_config("shop", {"A": "1"})
        await platform.update_config("shop", {"A": "2"})
        await platform.rollback("shop", None)
    assert await real.get_config("shop") == await fake.get_config("shop") == {"A": "1"}
    # The daemon's v1 is "Initial release", made with the app; the fake has none, so its numbers are one less.
    assert [r["description"] for r in await real.list_releases("shop")][1:] == \
        [r["description"].replace("Rollback to v2", "Rollback to v3") for r in await fake.list_releases("shop")]


@pytest.mark.parametrize("updates", [
    [{"type": "web", "quantity": 2}, {"type": "worker", "size": "standard-2X"}],
    [{"type": "clock", "quantity": 1}],
    [{"type": "release", "quantity": 1}],
    [{"type": "web", "quantity": 2, "size": "basic"}],
    [{"type": "worker", "quantity": 1}, {"type": "web", "size": "eco"}],
    [{"type": "web", "size": "huge"}],
])
async def test_formation_updates_answer_alike(pair: tuple[Platform, FakePlatform], updates: list[Any]) -> None:
    real, fake = pair
    got = [await _outcome(_bind(p.update_formation, "shop", [dict(u) for u in updates])) for p in (real, fake)]
    assert got[0] == got[1]
    assert await real.get_formation("shop") == await fake.get_formation("shop")


def test_the_platform_has_every_call_of_the_service_protocol_with_its_parameters() -> None:
    wanted = {name: member for name, member in vars(PlatformService).items()
              if callable(member) and not name.startswith("_")}
    assert {"exec_attached", "list_features", "set_health_check", "acm_status"} <= set(wanted)
    for name, member in wanted.items():
        have = getattr(Platform, name, None)
        assert have is not None, f"Platform lacks {name}"
        expected = list(inspect.signature(member).parameters)
        assert list(inspect.signature(have).parameters)[:len(expected)] == expected, name
        assert inspect.iscoroutinefunction(have) == inspect.iscoroutinefunction(member), name
