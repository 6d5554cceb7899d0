"""The warm pool's refill decision, pure: how many warm dynos to start forking now.

A warm dyno (a forked, namespaced Python waiting for its spec) makes the next start skip the fork
and the cgroup and network wiring. The pool is kept at ``[dynos] warm_pool``: ones ready plus ones
being made; none is made while dynod shuts down, or where cgroups cannot be renamed (a warm dyno's
group must become the dyno's: dynod.linux.cgroups CgroupBackend.can_rename).
"""

from __future__ import annotations


def to_make(*, ready: int, filling: int, target: int, closing: bool, can_rename: bool = True) -> int:
    """Warm dynos to start making now so that ready + being made reaches ``target``."""
    if closing or not can_rename or target <= 0:
        return 0
    return max(0, target - ready - filling)
