"""The workers' shared connection counts: who holds back, and what a gone worker's slot means."""

from __future__ import annotations

import os

import pytest

from dynod.router.shares import ABSENT, ConnectionShares, slack


@pytest.fixture
def page():
    fd = ConnectionShares.create_fd(3)
    views = [ConnectionShares(fd, 3, slot) for slot in range(3)]
    parent = ConnectionShares(fd, 3)
    yield parent, views
    for view in views + [parent]:
        view.close()
    os.close(fd)


def test_a_new_page_has_every_slot_absent(page):
    parent, _ = page
    assert list(parent.counts) == [ABSENT, ABSENT, ABSENT]


def test_a_worker_alone_never_holds_back(page):
    _, (first, _second, _third) = page
    first.publish(5000)
    assert not first.over_share(5000)


def test_counts_published_by_one_view_are_read_by_the_others(page):
    _, (first, second, third) = page
    first.publish(10)
    second.publish(2)
    assert list(third.counts)[:2] == [10, 2]
    assert first.over_share(10) and not second.over_share(2)


def test_the_least_loaded_live_peer_and_the_slack_decide(page):
    _, (a, b, _absent) = page
    assert slack(0) == 2 and slack(16) == 2 and slack(80) == 10
    b.publish(0)
    assert not a.over_share(2) and a.over_share(3)  # a burst alternates: at most two ahead
    b.publish(80)
    assert not a.over_share(90) and a.over_share(91)  # an eighth ahead at higher counts


def test_a_gone_workers_slot_holds_nobody_back(page):
    parent, (first, second, third) = page
    for view in (first, second, third):
        view.publish(0)
    first.publish(40)
    assert first.over_share(40)
    parent.mark_absent(1)
    parent.mark_absent(2)
    assert not first.over_share(40)


def test_a_worker_at_its_limit_leaves_the_connect_to_a_peer_with_room(page):
    _, (first, second, third) = page
    first.publish(1000)
    second.publish(995)
    third.publish(1000)
    assert not first.over_share(1000)  # within the slack of the least-loaded peer
    assert first.over_share(1000, limit=1000)  # but full, and the second has room
    second.publish(1000)
    assert not first.over_share(1000, limit=1000)  # all full: it evicts or sheds itself
