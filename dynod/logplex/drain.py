"""Drains, sans I/O: what a drain URL may be, and the bounded buffer in front of each drain.

Rules kept here:
- a drain URL is ``syslog://host[:port]``, ``syslog+tls://host[:port]``, ``https://[user:pass@]host
  [:port]/path`` or ``http://...`` (Heroku accepts plain HTTP drains too); anything else is refused
  with one sentence saying what to use;
- each drain has its own buffer of ``capacity`` lines (Heroku: 1024); when full, the oldest lines
  go, and the drop is counted, never silent: the next batch the drain sends starts with Logplex's
  L10 line saying how many were dropped since when, and the app's own log is told as well.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections import deque
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import UserError
from .format import line_prefix
from .syslog import LOGPLEX_PROCID, l10_message

DEFAULT_PORTS = {"syslog": 514, "syslog+tls": 6514, "https": 443, "http": 80}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")
_USAGE = "use syslog://host:port, syslog+tls://host:port or https://host/path"


@dataclass(frozen=True, slots=True)
class DrainTarget:
    """Where a drain sends, taken apart from its URL."""

    scheme: str
    host: str
    port: int
    path: str  # http(s) only: path and query of the POST
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme in ("syslog+tls", "https")

    @property
    def is_http(self) -> bool:
        return self.scheme in ("http", "https")

    @property
    def post_url(self) -> str:
        """The URL to POST to, credentials left out (they travel as Basic auth)."""
        return self.post_url_to(self.host)

    def post_url_to(self, address: str) -> str:
        """The URL to POST to at ``address``, an address ``host`` resolved to and that was checked."""
        shown = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{shown}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        """The Host header a POST to the resolved address carries: the name from the URL."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == DEFAULT_PORTS[self.scheme] else f"{shown}:{self.port}"


def _check_host(host: str, url: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise UserError(f"Drain URL {url!r} has no valid host name; {_USAGE}.")
    return host.rstrip(".").lower()


def parse_drain_url(url: str) -> DrainTarget:
    """Validate a drain URL (UserError when it cannot be a drain) and take it apart."""
    url = url.strip()
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UserError(f"Drain URL {url!r} is empty or holds spaces or control characters; {_USAGE}.")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"Drain URL {url!r} is not a valid URL ({exc}); {_USAGE}.") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = f"{parts.scheme}:" if parts.scheme else ""
        raise UserError(f"Drain URL {url!r} has an unsupported scheme {shown!r}; {_USAGE}.")
    if not parts.hostname:
        raise UserError(f"Drain URL {url!r} names no host; {_USAGE}.")
    host = _check_host(parts.hostname, url)
    if port == 0:
        raise UserError(f"Drain URL {url!r} has port 0; give the port the receiver listens on.")
    path = ""
    if scheme in ("http", "https"):
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    elif parts.username or parts.password:
        raise UserError(f"Drain URL {url!r}: syslog drains take no user or password; remove them.")
    return DrainTarget(
        scheme=scheme,
        host=host,
        port=port or DEFAULT_PORTS[scheme],
        path=path,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def redact(url: str) -> str:
    """The URL with any password replaced, for statistics and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


@dataclass(frozen=True, slots=True)
class Drain:
    """A drain as stored: Heroku's {"id", "url", "token"}."""

    id: str
    url: str
    token: str

    @classmethod
    def new(cls, url: str) -> Drain:
        return cls(id=str(uuid.uuid4()), url=url, token=f"d.{uuid.uuid4()}")

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "url": self.url, "token": self.token}

    @classmethod
    def from_json(cls, data: object) -> Drain:
        keys = ("id", "url", "token")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in keys):
            raise ValueError(f"not a drain record: {data!r}")
        return cls(id=data["id"], url=data["url"], token=data["token"])


@dataclass(frozen=True, slots=True)
class Batch:
    """What a drain sends at once: maybe an L10 line, then ``line_count`` buffered lines."""

    lines: list[str]
    line_count: int
    carried_drops: int  # the drops the leading L10 line reports (0: no L10 line)
    carried_since: float


class DrainBuffer:
    """The lines waiting for one drain, bounded, with the drops it had to make.

    ``push`` never blocks and never fails: the buffer keeps the newest ``capacity`` lines.
    ``take`` hands the sender a batch, led by an L10 line when lines were dropped since the last
    batch. ``lost`` counts a batch the network ate. ``announce`` tells the caller, at most once
    per interval, how many drops the app's own log has not yet heard about.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a drain buffer holds at least one line")
        self.capacity = capacity
        self._lines: deque[str] = deque(maxlen=capacity)
        self._dropped = 0  # since the last batch: goes into the next batch's L10
        self._dropped_since = 0.0
        self._unannounced = 0  # since the last local notice
        self._unannounced_since = 0.0
        self._last_announce = float("-inf")
        self.dropped_total = 0
        self.taken_total = 0

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def pending(self) -> bool:
        return bool(self._lines) or self._dropped > 0

    def _count_drops(self, count: int, now: float) -> None:
        if not self._dropped:
            self._dropped_since = now
        if not self._unannounced:
            self._unannounced_since = now
        self._dropped += count
        self._unannounced += count
        self.dropped_total += count

    def push(self, lines: list[str], now: float) -> None:
        overflow = len(self._lines) + len(lines) - self.capacity
        if overflow > 0:
            self._count_drops(overflow, now)
        self._lines.extend(lines)  # maxlen: the oldest fall off the front

    def take(self, max_lines: int, now: float) -> Batch:
        lines: list[str] = []
        carried, since = self._dropped, self._dropped_since
        if carried:
            lines.append(line_prefix(now, "dynod", LOGPLEX_PROCID) + l10_message(carried, since))
            self._dropped = 0
        buffered = self._lines
        count = min(max_lines, len(buffered))
        if count == len(buffered):
            lines.extend(buffered)
            buffered.clear()
        else:
            lines.extend(buffered.popleft() for _ in range(count))
        self.taken_total += count
        return Batch(lines, count, carried, since)

    def lost(self, batch: Batch, now: float) -> None:
        """A batch that never (surely) reached the receiver: its lines, and the drops its L10 was
        to report, go into the next L10, dated from the earlier of the two."""
        if batch.line_count:
            self._count_drops(batch.line_count, now)
        if batch.carried_drops:
            # Already counted (and maybe announced) once: only the in-band report is owed again.
            self._dropped_since = min(self._dropped_since, batch.carried_since) if self._dropped \
                else batch.carried_since
            self._dropped += batch.carried_drops

    def announce(self, now: float, every: float) -> tuple[int, float] | None:
        if not self._unannounced or now - self._last_announce < every:
            return None
        notice = (self._unannounced, self._unannounced_since)
        self._unannounced = 0
        self._last_announce = now
        return notice
