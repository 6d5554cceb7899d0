"""What every dynoctl command shares: its context (streams, environment, API client) and parser.

A command is a function ``(ctx, argv) -> exit code`` in its topic's module. It parses ``argv``
with ``ctx.parser(...)``, whose errors are one ``UserError`` line (never argparse's usage dump and
exit 2), asks the API through ``ctx.client()``, and prints with ``ctx.out``.

Only the stdlib's cheapest modules are imported here: argparse (dynod.cli.parser) and the API
client load when a command first asks for them, so ``dynoctl --version`` and ``dynoctl run`` do
not pay for what they do not use.
"""

from __future__ import annotations

import os
import sys
import time

from ..errors import UserError

# typing costs startup time; the constant is all dynoctl needs from it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from datetime import tzinfo
    from typing import TextIO

    from ..api.client import ApiClient
    from .parser import CommandParser


class HelpShown(Exception):  # noqa: N818 - a signal to stop, not an error
    """``--help`` was printed: the command is over, successfully."""


class Context:
    """One dynoctl invocation's world; tests build their own with captured streams."""

    def __init__(
        self,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        fds: tuple[int, int, int] = (0, 1, 2),
        now: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
    ) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdin = stdin if stdin is not None else sys.stdin
        self.environ = environ if environ is not None else os.environ
        self.fds = fds  # raw stdin, stdout, stderr for `run`, which bypasses Python's buffers
        self.now = now
        self.tz = tz  # None: the local time zone, as Heroku's CLI prints times
        self._client: ApiClient | None = None
        self._socket: str | None = None
        self._host: str | None = None

    def parser(self, command: str, description: str, *, app: bool = True) -> CommandParser:
        from .parser import CommandParser

        parser = CommandParser(prog=f"dynoctl {command}", description=description, stdout=self.stdout,
                               allow_abbrev=False)
        if app:
            parser.add_argument("-a", "--app", help="the app (default: $DYNOD_APP)")
        parser.add_argument("--socket", help="the API socket (default: $DYNOD_SOCKET, /run/dynod/api.sock)")
        parser.add_argument("--host", help="a remote dynod, https://HOST:PORT, logged in to with dynoctl login "
                                           "(default: $DYNOD_HOST; none: the socket)")
        return parser

    def parse(self, parser: CommandParser, argv: list[str]) -> argparse.Namespace:
        args = parser.parse_args(argv)
        self.use_endpoint(args.socket, args.host)
        return args

    def use_endpoint(self, socket: str | None, host: str | None) -> None:
        """The --socket and --host a command was given (None: the environment's, else the default)."""
        self._socket = socket
        self._host = host

    def host(self) -> str | None:
        """The remote dynod this command talks to (--host, $DYNOD_HOST), or None for the socket."""
        if self._socket:
            return None
        return self._host or self.environ.get("DYNOD_HOST") or None

    def app(self, args: object) -> str:
        """The app named by the parsed options (argparse's or run's: anything with an ``app``), else $DYNOD_APP."""
        app = getattr(args, "app", None) or self.environ.get("DYNOD_APP")
        if not app:
            raise UserError("No app specified: use -a APP or set $DYNOD_APP.")
        return app

    def client(self) -> ApiClient:
        if self._client is None:
            from ..api.client import ApiClient, default_socket_path

            host = self.host()
            if host is not None:
                from .credentials import remote_for

                self._client = ApiClient(host, remote=remote_for(host, dict(self.environ)))
            else:
                self._client = ApiClient(self._socket or default_socket_path(dict(self.environ)))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def progress(self, text: str) -> None:
        """Heroku's ``Doing something... done`` lines: the start now, the end by ``out`` later."""
        self.stdout.write(text)
        self.stdout.flush()
