"""Tail sessions: bounded queues with L11 exactly where lines went missing."""

import trio
import trio.testing

from dynod.logplex.format import LineFilter, parse_line
from dynod.logplex.tail import TailSession


def test_overflow_drops_newest_and_marks_the_gap():
    s = TailSession(LineFilter(), capacity=3)
    s.offer(["a", "b"], now=1.0)
    s.offer(["c", "d", "e"], now=2.0)  # room for c only
    s.offer(["f"], now=3.0)  # still full: joins the same gap
    assert s.dropped_total == 3
    out = s.take_nowait()
    assert out[:3] == ["a", "b", "c"]
    l11 = parse_line(out[3])
    assert l11 is not None and (l11.source, l11.dyno) == ("dynod", "logplex")
    assert "This tail session dropped 3 messages since" in l11.message
    assert len(out) == 4
    s.offer(["g"], now=4.0)
    assert s.take_nowait() == ["g"]


def test_lines_after_a_gap_follow_its_notice():
    s = TailSession(LineFilter(), capacity=1)
    s.offer(["a", "b"], now=1.0)
    out = s.take_nowait()
    s.offer(["c"], now=2.0)
    assert out[0] == "a" and "dropped 1 messages" in out[1]
    assert s.take_nowait() == ["c"]


async def test_reader_wakes_on_offer_and_ends_on_close():
    s = TailSession(LineFilter(), capacity=10)
    got = []

    async def reader():
        while batch := await s.next_lines():
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        s.offer(["x"], now=0.0)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["x"]
        s.close()
    assert got == ["x"]
