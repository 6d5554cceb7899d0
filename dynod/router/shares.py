"""The router workers' connection counts on one shared page, so that accepts spread over the workers.

Without SO_REUSEPORT every worker accepts on the same listening sockets, and the one that wakes
first drains a whole burst of connects (a 64-connection keep-alive client was measured split 95 / 5
between two workers); kept-alive clients stay where they landed, so one worker did the work of two
while the other idled. As with nginx's accept_mutex threshold, a worker that holds more than its
share holds back for a moment and lets a peer with fewer accept. The moment is bounded, and a worker
whose hold no peer ended takes what comes for a while without holding, so a worker that hangs or
dies costs its peers a short delay now and then, never their accepts or their rate.

The page is a memfd the parent (supervisor) makes and hands to each worker with its slot number: one
int32 per worker, the worker's open client connections, or ABSENT while no worker runs in the slot.
"""

from __future__ import annotations

import mmap
import os

ABSENT = -1
_SLOT_BYTES = 4

# How long an over-share worker leaves a waiting connect to its peers, and how often it looks again.
# A peer woken by the same readiness takes it within a scheduler pass; past the bound the
# over-share worker takes it itself (its peers are busy, hung or gone).
HOLD_BACK = 0.002
HOLD_STEP = 0.0005
# After HOLDS_BEFORE_OFF holds in a row that no peer ended, the worker takes what comes for HOLD_OFF
# without holding: a hung peer must cost a burst a few holds, not one per connection (2 ms each
# would cap a worker at ~500 connections a second). One failed hold is a peer busy for a moment.
HOLDS_BEFORE_OFF = 3
HOLD_OFF = 0.1


def slack(least: int) -> int:
    """How many more connections than the least-loaded live peer a worker may hold and still accept:
    a couple at low counts (a connect burst alternates), an eighth beyond that."""
    return max(2, least // 8)


class ConnectionShares:
    """One process's view of the page: its own slot to publish in, every slot to read."""

    def __init__(self, fd: int, workers: int, slot: int | None = None) -> None:
        self._map = mmap.mmap(fd, workers * _SLOT_BYTES)
        self.counts = memoryview(self._map).cast("i")
        self.slot = slot

    @staticmethod
    def create_fd(workers: int) -> int:
        """A new page with every slot ABSENT; the caller passes the fd to the workers (pass_fds)."""
        fd = os.memfd_create("dynod-router-shares")  # close-on-exec: only pass_fds hands it to a worker
        os.ftruncate(fd, workers * _SLOT_BYTES)
        shares = ConnectionShares(fd, workers)
        for i in range(workers):
            shares.counts[i] = ABSENT
        shares.close()
        return fd

    def publish(self, count: int) -> None:
        assert self.slot is not None
        self.counts[self.slot] = count

    def mark_absent(self, slot: int) -> None:
        """The worker in ``slot`` is gone: its last count must not hold its peers back."""
        self.counts[slot] = ABSENT

    def over_share(self, count: int, limit: int | None = None) -> bool:
        """True if a worker holding ``count`` connections should leave the next one to a peer: it
        holds more than its share, or it is at ``limit`` (its max_connections) and a peer is not."""
        least = -1
        own = self.slot
        for i, c in enumerate(self.counts):
            if i != own and c >= 0 and (least < 0 or c < least):
                least = c
        if least < 0:
            return False
        return count > least + slack(least) or (limit is not None and count >= limit > least)

    def close(self) -> None:
        self.counts.release()
        self._map.close()
