"""dynoctl's argument parser: argparse, with errors as one UserError line and help on the context's stdout.

Its own module because argparse (with the ``re`` and ``gettext`` it pulls in) costs dynoctl several
milliseconds of start-up: ``Context.parser`` imports it on first use, and ``dynoctl run``'s
common argument shapes are read without it (dynod.cli.run).
"""

from __future__ import annotations

import argparse

from ..errors import UserError
from .command import HelpShown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, TextIO


class CommandParser(argparse.ArgumentParser):
    """argparse, but bad arguments are a UserError and help goes to the context's stdout."""

    def __init__(self, *args: object, stdout: TextIO, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._stdout = stdout

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message[:1].upper()}{message[1:]}: see `dynoctl {self.prog.split()[-1]} --help`.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UserError(message.strip() if message else f"{self.prog} failed.")
        raise HelpShown

    def _print_message(self, message: str, file: object = None) -> None:
        if message:
            self._stdout.write(message)
