import json

from dynod.router import codes
from dynod.router.worker import LogBatcher

RECORD = ("myapp", b"GET", b"/", b"myapp.localhost", b"rid", b"127.0.0.1", b"web.1", 0.0, 0.002, 200, 5, b"http",
          None)


async def test_a_batch_is_formatted_in_arrival_order_with_control_messages_between():
    logs = LogBatcher(limit=10)
    logs.emit(RECORD)
    logs.send_nowait({"type": "ready", "pid": 7})
    logs.emit(RECORD[:-4] + (503, None, b"http", codes.H13))
    messages = [json.loads(line) for line in logs.take_batch().splitlines()]
    assert [m["type"] for m in messages] == ["log", "ready", "log"]
    assert messages[0]["line"].startswith('at=info method=GET path="/" host=myapp.localhost')
    assert messages[2]["line"].startswith('at=error code=H13 desc="Connection closed without response"')
    assert logs.pending == [] and logs.take_batch() == b""


async def test_lines_beyond_the_limit_are_dropped_and_counted():
    logs = LogBatcher(limit=2)
    for _ in range(5):
        logs.emit(RECORD)
    assert logs.dropped == 3 and len(logs.take_batch().splitlines()) == 2
