"""The log stream through the real daemon and real dynos: what a dyno prints reaches
`dynoctl logs`, its tail and its drains, whole, in order, on time, and across a dynod restart."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
import trio

from dynod.logplex.format import parse_line

from .conftest import VENV_BIN, Dynod, write_app
from .test_logplex_drains import HttpsReceiver, LoopbackCA, SyslogReceiver, app_messages, make_loopback_ca

pytestmark = pytest.mark.integration


def deploy(dynod: Dynod, app: str, path: Path) -> None:
    dynod.ctl("deploy", "--no-build", str(path), "-a", app)


def app_lines(text: str, dyno_prefix: str = "") -> list[tuple[str, str]]:
    """(dyno, message) of every app line, optionally only dynos whose name starts with a prefix."""
    out = []
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is not None and parsed.source == "app" and parsed.dyno.startswith(dyno_prefix):
            out.append((parsed.dyno, parsed.message))
    return out


def wait_logs(dynod: Dynod, app: str, predicate, timeout: float = 30, what: str = "log lines"):  # type: ignore[no-untyped-def]
    return dynod.wait_for(lambda: (lambda text: text if predicate(text) else None)(dynod.logs(app)),
                          timeout=timeout, interval=0.2, what=what)


# A one-off that prints numbered lines, a 25,000-byte line, invalid UTF-8, and a last line with no
# newline, then exits: run:detached, so it is never restarted and prints all this exactly once.
PRINTER = r"""
import sys
out = sys.stdout.buffer
for i in range(300):
    out.write(b"seq %d\n" % i)
out.write(b"L" * 25000 + b"\n")
out.write(b"bad \xff\xfe utf8 \xc3(\n")
out.write(b"no newline at the end")
out.flush()
"""


def test_a_dynos_lines_arrive_whole_in_order_escaped_and_the_last_without_newline(
        dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "web: python3 web.py\n", {"printer.py": PRINTER}))
    dynod.ctl("ps:scale", "web=0", "-a", app)
    dynod.ctl("run:detached", "-a", app, "python3", "printer.py")
    text = wait_logs(dynod, app, lambda t: "no newline at the end" in t, what="the printer's last line")
    lines = app_lines(text, "run.")
    assert len({dyno for dyno, _ in lines}) == 1, lines[:3]
    messages = [m for _, m in lines]
    assert messages[:300] == [f"seq {i}" for i in range(300)]
    assert messages[300:303] == ["L" * 10000, "L" * 10000, "L" * 5000]
    assert messages[303] == r"bad \xff\xfe utf8 \xc3("
    assert messages[304:] == ["no newline at the end"]


TICKER = "worker: sh -c 'while true; do echo \"clock $(date +%s%N)\"; sleep 0.02; done'\n"


def tail_delays(dynod: Dynod, app: str, count: int = 50) -> list[float]:
    """Milliseconds from a worker's `date +%s%N` to `dynoctl logs --tail` printing it, sorted."""
    tail = subprocess.Popen([str(VENV_BIN / "dynoctl"), "logs", "--tail", "-n", "1", "-p", "worker", "-a", app],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dynod.env())
    assert tail.stdout is not None and tail.stderr is not None
    delays: list[float] = []
    buffered = b""
    try:
        deadline = time.monotonic() + 30
        while len(delays) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([tail.stdout], [], [], 1)
            if not ready:
                continue
            data = os.read(tail.stdout.fileno(), 65536)
            now_ns = time.time_ns()
            assert data, f"the tail ended: {tail.stderr.read().decode()}"
            buffered += data
            *complete, buffered = buffered.split(b"\n")
            for raw in complete:
                m = re.search(rb"app\[worker\.1\]: clock (\d+)$", raw)
                if m:
                    delays.append((now_ns - int(m[1])) / 1e6)
    finally:
        tail.terminate()
        tail.wait(5)
    assert len(delays) >= count, f"the tail showed only {len(delays)} clock lines"
    return sorted(delays[3:])  # the first lines may have been written before the tail began


def check_delays(delays: list[float], what: str) -> None:
    p50, worst = delays[len(delays) // 2], delays[-1]
    print(f"{what}: tail latency over {len(delays)} lines: median {p50:.1f} ms, worst {worst:.1f} ms")
    assert worst < 100, delays
    assert p50 < 30, delays


def test_tail_sees_a_dynos_line_well_under_100_ms(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", TICKER))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    check_delays(tail_delays(dynod, app), "quiet host")


FILTER_PROCFILE = "web: python3 web.py\nworker: sh -c 'echo worker-says-hi; exec sleep 1000'\n"


def test_every_filter(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", FILTER_PROCFILE))
    dynod.ctl("ps:scale", "web=2", "worker=1", "-a", app)
    dynod.up(app, 2)
    wait_logs(dynod, app, lambda t: "booting web.2" in t and "worker-says-hi" in t, what="every dyno's first line")

    def parsed(*args: str) -> list[tuple[str, str]]:
        out = dynod.ctl("logs", "-a", app, "-n", "1500", *args).stdout.splitlines()
        lines = [parse_line(line) for line in out]
        assert all(line is not None for line in lines), out
        return [(line.source, line.dyno) for line in lines if line is not None]

    everything = parsed()
    assert {"web.1", "web.2", "worker.1", "api"} <= {dyno for _, dyno in everything}
    web = parsed("-p", "web")
    assert {d for _, d in web} == {"web.1", "web.2"}
    assert {s for s, _ in web} == {"app", "dynod"}  # a dyno's own lines and the platform's about it
    assert {d for _, d in parsed("-p", "web.1")} == {"web.1"}
    assert {s for s, _ in parsed("-s", "app")} == {"app"}
    dynod_only = parsed("-s", "dynod")
    assert {s for s, _ in dynod_only} == {"dynod"} and "api" in {d for _, d in dynod_only}
    assert parsed("-p", "web.1", "-s", "app") == [("app", "web.1")] * len(parsed("-p", "web.1", "-s", "app"))
    assert len(everything) == len(parsed("-s", "app")) + len(dynod_only)


COUNTER = r"""
import sys, time
i = 0
while True:  # ~300 lines/s: the 1,500-line ring spans some 5 s, the restart included
    sys.stdout.write(f"n {i}\n")
    sys.stdout.flush()
    i += 1
    if i % 3 == 0:
        time.sleep(0.01)
"""


def counted(text: str) -> list[int]:
    return [int(m[2:]) for _, m in app_lines(text, "worker.") if m.startswith("n ")]


def test_the_ring_survives_kill_9_of_dynod_and_no_line_is_lost(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "worker: python3 counter.py\n", {"counter.py": COUNTER}))
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    # More lines than the ring holds, so that a short ring after the restart shows.
    before = counted(wait_logs(dynod, app, lambda t: " n 1600\n" in t, what="1,600 counted lines"))
    dynod.kill9()
    time.sleep(0.5)  # the dyno keeps writing while dynod is away
    dynod.start()
    lines = dynod.logs(app, 1500).splitlines()
    assert len(lines) == 1500, [line for line in lines if "]: n " not in line]
    after = counted("\n".join(lines))
    assert before[-1] in after, "the ring lost what it held before the restart"
    after = counted(wait_logs(dynod, app, lambda t: f" n {before[-1] + 600}\n" in t, what="600 more lines"))
    assert after == list(range(after[0], after[0] + len(after))), "a line went missing or swapped"
    assert after[0] <= before[-1]  # the lines read span the restart


@pytest.fixture
def trust_test_ca(dynod: Dynod, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Restart dynod trusting a test CA (OpenSSL's SSL_CERT_FILE: how an operator adds a CA)."""
    test_ca = make_loopback_ca()
    bundle = tmp_path / "ca-bundle.pem"
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + test_ca.ca_pem)
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(bundle)
    try:
        dynod.kill9()
        dynod.start()
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before
    return test_ca


ECHO = "worker: sh -c 'for i in 1 2 3 4 5; do echo drained $i; done; exec sleep 1000'\n"


async def test_syslog_and_https_drains_receive_a_real_dynos_lines(
        dynod: Dynod, app: str, tmp_path: Path, trust_test_ca: LoopbackCA) -> None:
    async with trio.open_nursery() as nursery:
        syslog = SyslogReceiver()
        await syslog.start(nursery)
        https = HttpsReceiver(trust_test_ca.server_context(tmp_path))
        await https.start(nursery)
        await trio.to_thread.run_sync(dynod.ctl, "drains:add", f"syslog://127.0.0.1:{syslog.port}", "-a", app)
        await trio.to_thread.run_sync(dynod.ctl, "drains:add", f"https://127.0.0.1:{https.port}/logs?app=1",
                                      "-a", app)
        with dynod.client() as client:
            drains = client.list_drains(app)
        https.token = next(d["token"] for d in drains if d["url"].startswith("https:"))
        syslog_token = next(d["token"] for d in drains if d["url"].startswith("syslog:"))
        await trio.to_thread.run_sync(deploy, dynod, app, write_app(tmp_path / "src", ECHO))
        await trio.to_thread.run_sync(dynod.ctl, "ps:scale", "worker=1", "-a", app)
        expected = [f"drained {i}" for i in range(1, 6)]
        with trio.fail_after(30):
            while app_messages(syslog.frames) != expected or app_messages(https.frames) != expected:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    for frames, host in ((syslog.frames, syslog_token), (https.frames, "host")):
        worker = [f for f in frames if f.app == "app"]
        assert {f.procid for f in worker} == {"worker.1"} and {f.host for f in worker} == {host}
        assert {f.pri for f in worker} == {190}  # local7.info
        assert any(f.app == "dynod" and "Scaled worker to 1" in f.msg for f in frames)


FLOOD = r"""
import sys
line = b"f" * 99 + b"\n"
block = line * 600
while True:
    sys.stdout.buffer.write(block)
"""


def test_a_flooding_app_does_not_delay_another_apps_lines(dynod: Dynod, app: str, tmp_path: Path) -> None:
    flooder = f"{app}f"
    dynod.ctl("apps:create", flooder)
    try:
        deploy(dynod, flooder, write_app(tmp_path / "flood", "worker: python3 flood.py\n", {"flood.py": FLOOD}))
        deploy(dynod, app, write_app(tmp_path / "src", TICKER))
        dynod.ctl("ps:scale", "worker=2", "-a", flooder)
        dynod.wait_for(lambda: len(dynod.ctl("logs", "-a", flooder, "-n", "1500", "-s", "app").stdout
                                   .splitlines()) == 1500, what="the flood")
        dynod.ctl("ps:scale", "worker=1", "-a", app)
        check_delays(tail_delays(dynod, app), "two dynos of another app flooding")
        flooded = dynod.ctl("logs", "-a", flooder, "-n", "1500", "-s", "app").stdout.splitlines()
        assert len(flooded) == 1500  # still flooding while the other app was measured
    finally:
        dynod.ctl("apps:destroy", "-a", flooder, "--confirm", flooder, check=False)


def test_a_drain_url_with_a_bad_scheme_is_one_clear_line(dynod: Dynod, app: str) -> None:
    result = dynod.ctl("drains:add", "ftp://127.0.0.1:21/logs", "-a", app, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "unsupported scheme 'ftp:'" in result.stderr and "syslog://" in result.stderr
    assert dynod.ctl("drains", "-a", app).stdout.strip() == f"{app} has no drains."
