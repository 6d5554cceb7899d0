"""The pids bounds: per dyno ([dynos] pids_max caps a size's limit) and for all dynos together."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.linux.cgroups import subtree_pids_max
from dynod.settings import load_settings


def test_all_dynos_together_get_half_of_pid_max_unless_set() -> None:
    assert subtree_pids_max(0, 32768) == 16384
    assert subtree_pids_max(0, 4194304) == 2097152
    assert subtree_pids_max(5000, 32768) == 5000


def test_the_settings_default_caps_performance_sizes_below_a_small_pid_max(tmp_path: Path) -> None:
    settings = load_settings(None)
    assert settings.dynos.pids_max == 8192 and settings.dynos.pids_total == 0
    config = tmp_path / "dynod.toml"
    config.write_text("[dynos]\npids_max = 64\npids_total = 100\n")
    loaded = load_settings(config)
    assert (loaded.dynos.pids_max, loaded.dynos.pids_total) == (64, 100)


@pytest.mark.parametrize("line", ["pids_max = 3", "pids_max = true", "pids_max = 1.5", "pids_total = -1",
                                  'pids_total = "lots"'])
def test_bad_pids_settings_are_one_line(tmp_path: Path, line: str) -> None:
    config = tmp_path / "dynod.toml"
    config.write_text(f"[dynos]\n{line}\n")
    with pytest.raises(UserError, match=r"\[dynos\] pids_max must be"):
        load_settings(config)
