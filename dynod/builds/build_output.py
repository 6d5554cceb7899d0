"""What a build prints, as its watcher and its log see it: lines, and Heroku's framing of them.

A buildpack's bytes are split into lines (none over ``MAX_LINE_BYTES``, the same cut Logplex
makes); the splitter holds at most one line, so memory stays bounded whatever a buildpack
prints. ``step`` and ``detail`` are Heroku's build output framing, used by the builder
(builds.py) and the buildpack runner (buildpack.py) alike. Pure: no I/O.
"""

from __future__ import annotations

MAX_LINE_BYTES = 10_000  # Logplex splits lines at 10,000 bytes; build output does the same


class BuildOutputSplitter:
    """Sans-I/O: the bytes a build step prints in, its complete text lines (without their newline) out."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._partial += data[start:end]
            lines.extend(self._cut(final=True))
            start = end + 1
        self._partial += data[start:]
        lines.extend(self._cut(final=False))
        return lines

    def flush(self) -> list[str]:
        """The last line of a stream that did not end with a newline."""
        return self._cut(final=True) if self._partial else []

    def _cut(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while len(self._partial) > self.max_line_bytes:
            out.append(_decode(self._partial[: self.max_line_bytes]))
            del self._partial[: self.max_line_bytes]
        if final:
            out.append(_decode(self._partial))
            self._partial.clear()
        return out


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).rstrip(b"\r").decode("utf-8", errors="replace")


# Heroku's build output framing: a step header, and indented detail lines below it.
def step(text: str) -> str:
    return f"-----> {text}"


def detail(text: str) -> str:
    return f"       {text}"


def seconds(elapsed: float) -> str:
    return f"{elapsed:.2f} s"
