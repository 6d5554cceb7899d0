"""Procfile parsing: Heroku's line rule, and the bounds that keep a hostile Procfile small."""

from __future__ import annotations

import pytest

from dynod.errors import UserError
from dynod.procfile import MAX_PROCESS_TYPES, parse_procfile


def test_types_comments_and_blank_lines() -> None:
    assert parse_procfile("# web app\nweb: python3 web.py --port $PORT\n\nworker:   celery\n") == {
        "web": "python3 web.py --port $PORT", "worker": "celery"}


def test_malformed_and_duplicate_lines_name_their_number() -> None:
    with pytest.raises(UserError, match="line 2"):
        parse_procfile("web: x\nnot a line\n")
    with pytest.raises(UserError, match="line 2: process type 'web' is defined twice"):
        parse_procfile("web: x\nweb: y\n")


def test_the_number_of_process_types_is_bounded() -> None:
    assert len(parse_procfile("".join(f"t{i}: x\n" for i in range(MAX_PROCESS_TYPES)))) == MAX_PROCESS_TYPES
    with pytest.raises(UserError, match=f"more than {MAX_PROCESS_TYPES} process types"):
        parse_procfile("".join(f"t{i}: x\n" for i in range(10_001)))


@pytest.mark.parametrize(("text", "why"), [("web: " + "x" * 9000, "over 8192 bytes"),
                                           ("t" * 64 + ": x", "over 63 characters"),
                                           ("web: echo \x00", "NUL")])
def test_long_commands_names_and_nuls_are_refused(text: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        parse_procfile(text)
