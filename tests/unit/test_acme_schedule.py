import math

from dynod.acm import schedule
from dynod.acm.schedule import AppState, Backoff, DomainState

BACKOFF = Backoff(retry_base=600, retry_max=86400, rate_limit_pause=3600, renew_before=30 * 86400)
DAY = 86400.0


def test_new_domains_are_pending_and_due_now_and_a_wildcard_is_never_ordered():
    state, removed = schedule.sync_domains(AppState(enabled=True), ["www.a.test", "*.a.test"], now=100)
    assert removed == {}
    assert state.domains["www.a.test"].status == schedule.PENDING
    wild = state.domains["*.a.test"]
    assert wild.status == schedule.UNSUPPORTED and "HTTP-01" in wild.reason and "DNS-01" in wild.reason
    assert schedule.due(state, now=100) == ["www.a.test"]
    assert schedule.due(state, now=10**12) == ["www.a.test"]
    assert schedule.next_wakeup(state) == 100


def test_a_removed_domain_is_handed_back_with_its_certificate_for_revocation():
    issued = DomainState(status=schedule.ISSUED, cert_pem="PEM", not_after=5 * DAY, next_attempt=4 * DAY)
    state = AppState(enabled=True, domains={"old.a.test": issued, "www.a.test": DomainState(next_attempt=1)})
    synced, removed = schedule.sync_domains(state, ["www.a.test"], now=2)
    assert list(synced.domains) == ["www.a.test"] and removed == {"old.a.test": issued}
    assert synced.domains["www.a.test"].next_attempt == 1  # a kept domain keeps its schedule


def test_a_disabled_app_has_nothing_due():
    state, _ = schedule.sync_domains(AppState(enabled=False), ["www.a.test"], now=1)
    assert schedule.due(state, now=10) == [] and math.isinf(schedule.next_wakeup(state))


def test_renewal_is_due_renew_before_expiry_or_at_two_thirds_of_a_short_life():
    assert schedule.renewal_time(0, 90 * DAY, 30 * DAY) == 60 * DAY  # Let's Encrypt's 90 days
    assert schedule.renewal_time(0, 6 * DAY, 30 * DAY) == 4 * DAY  # a six-day certificate
    done = schedule.issued(DomainState(failures=3, status=schedule.FAILING, reason="x"), cert_pem="PEM",
                           not_before=0, not_after=90 * DAY, now=1, backoff=BACKOFF)
    assert (done.status, done.failures, done.reason, done.next_attempt) == (schedule.ISSUED, 0, "", 60 * DAY)


def test_failures_back_off_doubling_up_to_the_cap():
    state = DomainState()
    waits = []
    for _ in range(12):
        state = schedule.failed(state, reason="refused", now=0, backoff=BACKOFF)
        waits.append(state.next_attempt)
    assert waits[:4] == [600, 1200, 2400, 4800]
    assert waits[-1] == 86400 and max(waits) == 86400
    assert state.status == schedule.FAILING and state.reason == "refused" and state.failures == 12


def test_a_rate_limit_waits_at_least_its_pause():
    assert schedule.retry_delay(1, BACKOFF, rate_limited=True) == 3600
    assert schedule.retry_delay(10, BACKOFF, rate_limited=True) == 86400


def test_a_failing_renewal_keeps_the_installed_certificate_on_record():
    issued = DomainState(status=schedule.ISSUED, cert_pem="PEM", not_after=10 * DAY, next_attempt=DAY)
    failing = schedule.failed(issued, reason="CA down", now=DAY, backoff=BACKOFF)
    assert failing.cert_pem == "PEM" and failing.not_after == 10 * DAY and failing.status == schedule.FAILING


def test_refresh_makes_failing_and_pending_domains_due_but_keeps_the_failure_count():
    failing = schedule.failed(DomainState(), reason="x", now=0, backoff=BACKOFF)
    issued = DomainState(status=schedule.ISSUED, next_attempt=50 * DAY)
    state = schedule.retry_now(AppState(enabled=True, domains={"f.test": failing, "i.test": issued}), now=7)
    assert state.domains["f.test"].next_attempt == 7 and state.domains["f.test"].failures == 1
    assert state.domains["i.test"].next_attempt == 50 * DAY


def test_state_round_trips_and_garbage_reads_as_a_fresh_start():
    state = AppState(enabled=True, domains={"www.a.test": DomainState(status=schedule.ISSUED, not_after=3.0)})
    assert AppState.from_json(state.to_json()) == state
    assert AppState.from_json(["nonsense"]) == AppState()
    assert AppState.from_json({"enabled": "yes", "domains": {"a.test": {"status": "bogus"}}}) == AppState(
        enabled=False, domains={"a.test": DomainState()})
    assert DomainState.from_json({"status": "issued", "failures": "many", "extra": 1}).status == schedule.ISSUED
