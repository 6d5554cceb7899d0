"""What each custom domain of an app with ACM on needs, and when. No I/O: times are passed in.

A domain is ``pending`` (no certificate from ACM yet, an order due), ``issued`` (a certificate is
installed; its renewal is due at ``next_attempt``), ``failing`` (the last order failed: ``reason``
says why, the next try waits out a back-off that doubles per failure) or ``unsupported`` (a wildcard:
HTTP-01 cannot prove one, so no order is ever sent for it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

PENDING = "pending"
ISSUED = "issued"
FAILING = "failing"
UNSUPPORTED = "unsupported"
STATUSES = (PENDING, ISSUED, FAILING, UNSUPPORTED)

WILDCARD_REASON = ("a wildcard domain cannot be proved with the HTTP-01 challenge (it needs DNS-01); "
                   "add a certificate for it with certs:add")


@dataclass(frozen=True, slots=True)
class Backoff:
    retry_base: float  # seconds before the first retry
    retry_max: float  # the longest wait between tries
    rate_limit_pause: float  # the shortest wait after the CA said rateLimited
    renew_before: float  # seconds before expiry that renewal is due


@dataclass(frozen=True, slots=True)
class DomainState:
    status: str = PENDING
    reason: str = ""  # why the last order failed (failing), or why none is made (unsupported)
    not_after: float | None = None  # expiry of the certificate ACM installed, if any
    failures: int = 0  # orders failed in a row
    next_attempt: float = 0.0  # when the next order (first, retry or renewal) is due
    updated_at: float = 0.0
    cert_pem: str | None = None  # the certificate ACM installed (public): what revocation names

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> DomainState:
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            return cls()  # unreadable: start over as pending (an order is cheap, a wrong state is not)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        try:
            return cls(**known)
        except TypeError:
            return cls()


@dataclass(frozen=True, slots=True)
class AppState:
    enabled: bool = False
    domains: dict[str, DomainState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "domains": {d: s.to_json() for d, s in sorted(self.domains.items())}}

    @classmethod
    def from_json(cls, data: Any) -> AppState:
        if not isinstance(data, dict):
            return cls()
        domains = data.get("domains")
        return cls(enabled=data.get("enabled") is True,
                   domains={d: DomainState.from_json(s) for d, s in domains.items() if isinstance(d, str)}
                   if isinstance(domains, dict) else {})


def is_wildcard(domain: str) -> bool:
    return domain.startswith("*.")


def new_domain(domain: str, now: float) -> DomainState:
    if is_wildcard(domain):
        return DomainState(status=UNSUPPORTED, reason=WILDCARD_REASON, next_attempt=float("inf"), updated_at=now)
    return DomainState(status=PENDING, next_attempt=now, updated_at=now)


def sync_domains(state: AppState, domains: list[str], now: float) -> tuple[AppState, dict[str, DomainState]]:
    """Match ACM's domains to the app's custom domains: new ones pending, gone ones handed back (to revoke)."""
    wanted = set(domains)
    kept = {d: s for d, s in state.domains.items() if d in wanted}
    removed = {d: s for d, s in state.domains.items() if d not in wanted}
    for domain in sorted(wanted - kept.keys()):
        kept[domain] = new_domain(domain, now)
    return replace(state, domains=kept), removed


def due(state: AppState, now: float) -> list[str]:
    """The domains whose order is due now, the longest overdue first."""
    if not state.enabled:
        return []
    ready = [(s.next_attempt, d) for d, s in state.domains.items() if s.status != UNSUPPORTED and s.next_attempt <= now]
    return [d for _, d in sorted(ready)]


def next_wakeup(state: AppState) -> float:
    if not state.enabled:
        return float("inf")
    return min((s.next_attempt for s in state.domains.values() if s.status != UNSUPPORTED), default=float("inf"))


def renewal_time(not_before: float, not_after: float, renew_before: float) -> float:
    """``renew_before`` ahead of expiry; for a certificate shorter than that, at two thirds of its life
    (short-lived certificates would otherwise be renewed the moment they arrive)."""
    lifetime = not_after - not_before
    if lifetime <= renew_before:
        return not_before + lifetime * 2 / 3
    return not_after - renew_before


def issued(state: DomainState, *, cert_pem: str, not_before: float, not_after: float, now: float,
           backoff: Backoff) -> DomainState:
    return DomainState(status=ISSUED, not_after=not_after, failures=0,
                       next_attempt=renewal_time(not_before, not_after, backoff.renew_before),
                       updated_at=now, cert_pem=cert_pem)


def retry_delay(failures: int, backoff: Backoff, *, rate_limited: bool) -> float:
    """Doubling from retry_base per failure in a row, capped at retry_max; a rate limit waits at least its pause."""
    delay = min(backoff.retry_base * 2 ** max(0, failures - 1), backoff.retry_max)
    if rate_limited:
        delay = max(delay, backoff.rate_limit_pause)
    return delay


def failed(state: DomainState, *, reason: str, now: float, backoff: Backoff, rate_limited: bool = False
           ) -> DomainState:
    """The order failed: say why and wait before the next. A certificate still installed stays
    recorded (it serves until it expires), so a failing renewal does not drop HTTPS."""
    failures = state.failures + 1
    next_attempt = now + retry_delay(failures, backoff, rate_limited=rate_limited)
    return replace(state, status=FAILING, reason=reason, failures=failures, next_attempt=next_attempt,
                   updated_at=now)


def retry_now(state: AppState, now: float) -> AppState:
    """certs:auto:refresh: every failing or pending domain is due at once (the back-off counter stays,
    so a refresh right after a failure does not reset what the next automatic retry waits)."""
    return replace(state, domains={
        d: replace(s, next_attempt=now) if s.status in (FAILING, PENDING) else s for d, s in state.domains.items()})
