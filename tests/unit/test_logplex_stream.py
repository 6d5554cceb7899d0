"""LogStream without the network: rings, filters, persistence, tails, drain bookkeeping."""

import json
import time

import pytest
import trio
import trio.testing

from dynod.errors import Conflict, NotFound, UserError
from dynod.logplex import LogStream
from dynod.logplex.format import parse_line
from dynod.logplex.store import CURRENT, PREVIOUS


def messages(lines):
    return [parse_line(line).message for line in lines]


def test_ring_keeps_the_last_n_lines(tmp_path):
    ls = LogStream(tmp_path, lines=5)
    for i in range(12):
        ls.emit("myapp", "dynod", "web.1", f"m{i}")
    assert messages(ls.recent("myapp", 100)) == [f"m{i}" for i in range(7, 12)]
    assert messages(ls.recent("myapp", 2)) == ["m10", "m11"]
    assert ls.recent("myapp", 0) == []
    assert ls.recent("other-app") == []


def test_emit_splits_multiline_messages_and_keeps_platform_source(tmp_path):
    ls = LogStream(tmp_path)
    ls.emit("myapp", "dynod", "router", "one\ntwo\n", at=1795694400.5)
    assert ls.recent("myapp") == [
        "2026-11-26T12:00:00.500000+00:00 dynod[router]: one",
        "2026-11-26T12:00:00.500000+00:00 dynod[router]: two",
    ]


def test_every_filter(tmp_path):
    ls = LogStream(tmp_path)
    for source, dyno in [("app", "web.1"), ("app", "web.2"), ("app", "worker.1"), ("dynod", "web.1"),
                         ("dynod", "router"), ("dynod", "api"), ("app", "web.10")]:
        ls.emit("myapp", source, dyno, f"{source}:{dyno}")
    assert messages(ls.recent("myapp", ps="web")) == ["app:web.1", "app:web.2", "dynod:web.1", "app:web.10"]
    assert messages(ls.recent("myapp", ps="web.1")) == ["app:web.1", "dynod:web.1"]
    assert messages(ls.recent("myapp", source="app")) == [
        "app:web.1", "app:web.2", "app:worker.1", "app:web.10"]
    assert messages(ls.recent("myapp", source="dynod")) == ["dynod:web.1", "dynod:router", "dynod:api"]
    assert messages(ls.recent("myapp", ps="web", source="dynod")) == ["dynod:web.1"]
    assert messages(ls.recent("myapp", ps="router")) == ["dynod:router"]
    assert messages(ls.recent("myapp", 2, ps="web")) == ["dynod:web.1", "app:web.10"]


def test_bad_arguments_are_user_errors(tmp_path):
    ls = LogStream(tmp_path)
    with pytest.raises(UserError, match="whole number"):
        ls.recent("myapp", -1)
    with pytest.raises(UserError, match="Unknown log source"):
        ls.recent("myapp", source="kernel")
    with pytest.raises(UserError, match="Unknown log source"):
        ls.tail("myapp", source="kernel")


def test_restart_keeps_every_ring_line_and_disk_stays_bounded(tmp_path):
    ls = LogStream(tmp_path, lines=100)
    for i in range(1050):
        ls.emit("myapp", "app", "web.1", f"line {i}")
    ls.emit("other-app", "dynod", "api", "hello")
    before = ls.recent("myapp", 100)
    again = LogStream(tmp_path, lines=100)
    assert again.recent("myapp", 100) == before
    assert messages(again.recent("other-app")) == ["hello"]
    on_disk = sum(len((tmp_path / "myapp" / name).read_text().splitlines())
                  for name in (CURRENT, PREVIOUS))
    assert 100 <= on_disk <= 200
    # the restarted stream keeps appending where the old one stopped
    again.emit("myapp", "app", "web.1", "after restart")
    assert messages(LogStream(tmp_path, lines=100).recent("myapp", 2)) == ["line 1049", "after restart"]


def test_torn_last_line_is_ignored_on_load(tmp_path):
    ls = LogStream(tmp_path)
    ls.emit("myapp", "app", "web.1", "whole")
    with open(tmp_path / "myapp" / CURRENT, "ab") as f:
        f.write(b"2026-11-26T12:00:00.000000+00:00 app[web.1]: torn")
    assert messages(LogStream(tmp_path).recent("myapp")) == ["whole"]


def test_unwritable_logs_dir_never_reaches_the_caller(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    ls = LogStream(blocker)
    ls.emit("myapp", "dynod", "web.1", "still kept in memory")
    assert messages(ls.recent("myapp")) == ["still kept in memory"]
    stats = ls.statistics()
    assert stats["persist_errors"] == 1 and "logs" in stats["last_persist_error"]


def test_drains_persist_and_are_listed_in_order(tmp_path):
    ls = LogStream(tmp_path)
    a = ls.add_drain("myapp", "syslog://127.0.0.1:6514")
    b = ls.add_drain("myapp", "https://user:pw@127.0.0.1:8443/logs")
    assert a["token"].startswith("d.") and set(a) == {"id", "url", "token"}
    assert ls.list_drains("myapp") == [a, b]
    assert LogStream(tmp_path).list_drains("myapp") == [a, b]
    assert json.loads((tmp_path / "myapp" / "drains.json").read_text()) == [a, b]
    assert (tmp_path / "myapp" / "drains.json").stat().st_mode & 0o077 == 0  # URLs may hold passwords


def test_bad_or_duplicate_drain_changes_nothing(tmp_path):
    ls = LogStream(tmp_path)
    with pytest.raises(UserError, match="unsupported scheme"):
        ls.add_drain("myapp", "tcp://127.0.0.1:1")
    with pytest.raises(UserError, match="Invalid app name"):
        ls.add_drain("../etc", "syslog://127.0.0.1:1")
    assert ls.list_drains("myapp") == []
    assert not (tmp_path / "myapp" / "drains.json").exists()
    ls.add_drain("myapp", "syslog://127.0.0.1:1")
    with pytest.raises(Conflict, match="already drains myapp"):
        ls.add_drain("myapp", "syslog://127.0.0.1:1")
    assert len(ls.list_drains("myapp")) == 1


@pytest.mark.parametrize("key", ["id", "url", "token"])
def test_remove_drain_by_id_url_or_token(tmp_path, key):
    ls = LogStream(tmp_path)
    d = ls.add_drain("myapp", "syslog://127.0.0.1:1")
    keep = ls.add_drain("myapp", "syslog://127.0.0.1:2")
    ls.remove_drain("myapp", d[key])
    assert ls.list_drains("myapp") == [keep]
    assert LogStream(tmp_path).list_drains("myapp") == [keep]
    with pytest.raises(NotFound, match="No drain"):
        ls.remove_drain("myapp", d[key])


def test_broken_drains_file_does_not_stop_startup(tmp_path):
    LogStream(tmp_path).emit("myapp", "dynod", "api", "x")
    (tmp_path / "myapp" / "drains.json").write_text("{not json")
    ls = LogStream(tmp_path)
    assert ls.list_drains("myapp") == []
    assert "drains.json" in ls.statistics()["load_errors"][0]
    assert messages(ls.recent("myapp")) == ["x"]


def test_forget_app_drops_ring_drains_and_files(tmp_path):
    ls = LogStream(tmp_path)
    ls.emit("myapp", "dynod", "api", "x")
    ls.add_drain("myapp", "syslog://127.0.0.1:1")
    ls.forget_app("myapp")
    assert ls.recent("myapp") == [] and ls.list_drains("myapp") == []
    assert not (tmp_path / "myapp").exists()
    assert LogStream(tmp_path).recent("myapp") == []


async def test_tail_gives_backlog_then_new_lines_quickly(tmp_path):
    ls = LogStream(tmp_path)
    for i in range(5):
        ls.emit("myapp", "app", "web.1", f"old {i}")
    got: list[tuple[str, float]] = []

    async def reader():
        async for line in ls.tail("myapp", 2):
            got.append((line, time.perf_counter()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert messages([g[0] for g in got]) == ["old 3", "old 4"]
        sent = time.perf_counter()
        ls.emit("myapp", "app", "web.1", "new")
        await trio.sleep(0.01)
        assert messages([g[0] for g in got])[-1] == "new"
        assert got[-1][1] - sent < 0.1
        ls.forget_app("myapp")  # ends the tail
    assert ls.statistics()["tails"] == 0


async def test_tail_filters_new_lines(tmp_path):
    ls = LogStream(tmp_path)
    got = []

    async def reader():
        async for line in ls.tail("myapp", 0, ps="worker", source="app"):
            got.append(line)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        ls.emit("myapp", "app", "web.1", "no")
        ls.emit("myapp", "dynod", "worker.1", "no")
        ls.emit("myapp", "app", "worker.2", "yes")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert messages(got) == ["yes"]


async def test_slow_tail_gets_l11_and_never_slows_others(tmp_path):
    ls = LogStream(tmp_path, tail_buffer=10)
    slow = ls.tail("myapp", 0)
    fast_got = []

    async def fast():
        async for line in ls.tail("myapp", 0):
            fast_got.append(line)

    async def slow_first_line():
        assert messages([await slow.__anext__()]) == ["line 0"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fast)
        # The slow reader takes its first line, then stops reading while 50 more arrive.
        async with trio.open_nursery() as first:
            first.start_soon(slow_first_line)
            await trio.testing.wait_all_tasks_blocked()
            ls.emit("myapp", "app", "web.1", "line 0")
        for i in range(1, 51):
            ls.emit("myapp", "app", "web.1", f"line {i}")
            await trio.sleep(0)
        await trio.testing.wait_all_tasks_blocked()
        assert messages(fast_got) == [f"line {i}" for i in range(51)]  # the fast one missed nothing
        rest = [await slow.__anext__() for _ in range(11)]
        assert messages(rest[:10]) == [f"line {i}" for i in range(1, 11)]
        assert "Error L11 (Tail buffer overflow) -> This tail session dropped 40 messages since" in rest[10]
        assert ls.statistics()["tail_dropped"] == 40
        await slow.aclose()
        nursery.cancel_scope.cancel()
