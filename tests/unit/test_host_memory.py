"""A scale is refused when the formations would ask more memory of the host than it offers."""

from __future__ import annotations

import pytest

from dynod.errors import UserError
from dynod.platform import check_host_memory, formation_memory_mb, host_memory_mb


def test_formation_memory_is_the_sum_of_the_quotas() -> None:
    assert formation_memory_mb([(2, "standard-1X"), (1, "performance-L"), (0, "performance-M")]) == 2 * 512 + 14336


def test_within_the_ratio_is_allowed() -> None:
    check_host_memory(before_mb=0, after_mb=48 * 1024, host_mb=24 * 1024, ratio=2.0)


def test_beyond_the_ratio_is_refused_naming_what_is_left() -> None:
    with pytest.raises(UserError) as refused:
        check_host_memory(before_mb=40 * 1024, after_mb=54 * 1024, host_mb=24 * 1024, ratio=2.0)
    message = str(refused.value)
    assert refused.value.status == 422 and "\n" not in message
    assert "would need 54.0 GB" in message and "offers 48.0 GB (2 x its 24.0 GB of RAM" in message
    assert "of which 8.0 GB is left" in message


def test_scaling_down_an_overfull_host_is_always_allowed() -> None:
    check_host_memory(before_mb=60 * 1024, after_mb=55 * 1024, host_mb=24 * 1024, ratio=2.0)


def test_the_host_memory_is_read_from_the_kernel() -> None:
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    assert abs(host_memory_mb() - total_kb // 1024) <= 1
