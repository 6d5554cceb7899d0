"""[scheduler] and [autoscale] settings: defaults, and each bad value one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.settings import load_settings


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "dynod.toml"
    path.write_text(text)
    return load_settings(path)


def test_defaults_are_heroku_like(tmp_path: Path) -> None:
    s = _load(tmp_path, "")
    assert s.scheduler.clock_rate == 1.0
    assert (s.autoscale.window, s.autoscale.up_windows, s.autoscale.down_windows) == (60.0, 3, 5)
    assert (s.autoscale.down_ratio, s.autoscale.cooldown) == (0.5, 300.0)


def test_test_settings_load(tmp_path: Path) -> None:
    s = _load(tmp_path, "[scheduler]\nclock_rate = 20\n[autoscale]\nwindow = 1.0\nup_windows = 2\ncooldown = 2.0\n")
    assert s.scheduler.clock_rate == 20 and s.autoscale.window == 1.0 and s.autoscale.up_windows == 2


@pytest.mark.parametrize(("text", "words"), [
    ("[scheduler]\nclock_rate = 0\n", "[scheduler] clock_rate"),
    ("[scheduler]\nclock_rate = true\n", "[scheduler] clock_rate"),
    ("[scheduler]\nclock_rate = 'fast'\n", "[scheduler] clock_rate"),
    ("[scheduler]\ntick = 1\n", "unknown setting 'tick'"),
    ("[autoscale]\nwindow = 0\n", "[autoscale] window"),
    ("[autoscale]\nup_windows = 2.5\n", "[autoscale] window"),
    ("[autoscale]\ndown_ratio = 1.5\n", "down_ratio"),
    ("[autoscale]\ncooldown = -1\n", "cooldown"),
    ("[autoscale]\ndown_windows = 0\n", "down_windows"),
])
def test_bad_values_are_one_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(UserError) as err:
        _load(tmp_path, text)
    assert words in str(err.value) and "\n" not in str(err.value)
