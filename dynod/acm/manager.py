"""The ACM task in dynod: obtains, installs, renews and revokes certificates for apps with ACM on.

One pass at a time, one order at a time (gentle on the CA): each pass matches every app's ACM state
to its custom domains (new domains become pending; removed ones, and destroyed apps, have their
certificates revoked and their state dropped), then orders what is due. Between passes the task
sleeps until the next renewal or retry is due, or until something changes (``wake``).

An order: the issuer (in a thread) opens it and returns the HTTP-01 tokens; they go into the route
snapshot (the router answers ``GET /.well-known/acme-challenge/TOKEN`` for the domain); dynod checks
through its own router that the answer is served before telling the CA (a failed validation counts
against the CA's limits, so a broken router must not spend them); then the CA validates and the
certificate is installed with the ledger's ``add_cert``, the path ``certs:add`` takes, so the router
picks it up without a restart and without dropping a connection.

Every state change is load, modify, save with no await in between, so the API's enable/disable and
this task never lose each other's writes (all of it runs on dynod's one trio thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import trio

from ..errors import NotFound, UserError
from ..settings import Settings
from . import schedule
from .schedule import AppState, Backoff, DomainState
from .store import AcmStore

log = logging.getLogger("dynod.acm")

_SELF_CHECK_TIMEOUT = 5.0
_LONGEST_SLEEP = 3600.0  # re-read the state at least hourly, whatever it says


def _iso(ts: float | None) -> str | None:
    if ts is None or ts == float("inf"):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def self_check_address(listen: str) -> tuple[str, int]:
    """Where dynod itself reaches the router's HTTP listener: a wildcard address means loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


class CertManager:
    def __init__(self, settings: Settings, *, ledger: Any, logs: Any, routes_changed: Callable[[], None],
                 routes_flushed: Callable[[], Awaitable[None]], clock: Callable[[], float] = time.time) -> None:
        self.settings = settings.acm
        self._router_http = settings.router.http[0] if settings.router.enabled and settings.router.http else None
        self.ledger = ledger
        self.logs = logs
        self.store = AcmStore(settings.state_dir / "acm")
        self._routes_changed = routes_changed
        self._routes_flushed = routes_flushed
        self._clock = clock
        self.backoff = Backoff(retry_base=self.settings.retry_base, retry_max=self.settings.retry_max,
                               rate_limit_pause=self.settings.rate_limit_pause,
                               renew_before=self.settings.renew_before_days * 86400)
        self._challenges: dict[str, dict[str, str]] = {}  # app -> token -> key authorization
        self._wake = trio.Event()
        self._issuer: Any = None
        self._paused_until = 0.0  # the CA said rateLimited: no orders for anyone until then
        self._down_until = 0.0  # the CA did not answer: no orders until the failed domain's next try
        self.ordering: tuple[str, str] | None = None  # (app, domain) of the order in progress
        # (app, domain, state, to the app's log): certificates to revoke on the next pass
        self._to_revoke: list[tuple[str, str, DomainState, bool]] = []
        self.orders = 0  # orders started since dynod started (statistics, and the tests' retry-storm check)

    # -- what the platform asks ------------------------------------------------------------------
    def challenges(self, app: str) -> dict[str, str]:
        """The app's pending HTTP-01 tokens, for the route snapshot."""
        return dict(self._challenges.get(app, {}))

    def wake(self) -> None:
        self._wake.set()

    def status(self, app: str) -> dict[str, Any]:
        domains = self.ledger.list_domains(app)  # NotFound for an unknown app
        state = self.store.load(app)
        if state.enabled:
            state, _removed = schedule.sync_domains(state, domains, self._clock())
        return self._status_json(app, state)

    def _status_json(self, app: str, state: AppState) -> dict[str, Any]:
        rows = []
        for domain, ds in sorted(state.domains.items()):
            in_progress = self.ordering == (app, domain)
            rows.append({"hostname": domain, "status": ds.status, "in_progress": in_progress,
                         "reason": ds.reason or None, "expires_at": _iso(ds.not_after),
                         "next_attempt_at": _iso(ds.next_attempt) if ds.status != schedule.UNSUPPORTED else None,
                         "failures": ds.failures, "updated_at": _iso(ds.updated_at)})
        return {"app": app, "enabled": state.enabled, "directory_url": self.settings.directory_url,
                "domains": rows}

    def enable(self, app: str) -> dict[str, Any]:
        domains = self.ledger.list_domains(app)
        if self._router_http is None:
            raise UserError("Automatic Certificate Management needs the router's HTTP listener "
                            "([router] enabled with an http address): HTTP-01 challenges are answered there.")
        state = self.store.load(app)
        if not state.enabled:
            state, _removed = schedule.sync_domains(AppState(enabled=True), domains, self._clock())
            self.store.save(app, state)
            self._emit(app, "Automatic Certificate Management enabled")
            self.wake()
        return self._status_json(app, state)

    def disable(self, app: str) -> dict[str, Any]:
        """Stop managing the app's certificates. Those already installed stay and serve until they expire
        (or are replaced with certs:add); nothing is revoked, so HTTPS keeps working meanwhile."""
        self.ledger.get_app(app)
        was = self.store.load(app)
        self.store.remove(app)
        if self._challenges.pop(app, None):
            self._routes_changed()
        if was.enabled:
            self._emit(app, "Automatic Certificate Management disabled")
        return self._status_json(app, AppState())

    def refresh(self, app: str) -> dict[str, Any]:
        self.ledger.get_app(app)
        state = self.store.load(app)
        if not state.enabled:
            raise UserError(f"Automatic Certificate Management is not enabled on {app}: "
                            f"run `dynoctl certs:auto:enable -a {app}` first.")
        state, _removed = schedule.sync_domains(state, self.ledger.list_domains(app), self._clock())
        state = schedule.retry_now(state, self._clock())
        self.store.save(app, state)
        self._down_until = 0.0  # try the CA again now; a rate-limit pause stands (refreshing must not spend it)
        self.wake()
        return self._status_json(app, state)

    def domain_removed(self, app: str, domain: str) -> None:
        """The domain left the app (the ledger dropped its certificate): forget it now, so that adding it
        back at once starts a fresh order, and revoke what ACM issued for it on the next pass."""
        state = self.store.load(app)
        removed = state.domains.get(domain)
        if removed is not None:
            self.store.save(app, AppState(enabled=state.enabled,
                                          domains={d: s for d, s in state.domains.items() if d != domain}))
            self._emit(app, f"{domain} left the app: its certificate is no longer renewed")
            self._to_revoke.append((app, domain, removed, True))
        self.wake()

    def app_destroyed(self, app: str) -> None:
        """Drop the app's ACM state now (a new app of the same name must not inherit it) and revoke its
        certificates on the next pass."""
        state = self.store.load(app)
        self.store.remove(app)
        self._challenges.pop(app, None)
        self._to_revoke += [(app, domain, ds, False) for domain, ds in state.domains.items()]
        self.wake()

    def statistics(self) -> dict[str, Any]:
        return {"orders": self.orders, "ordering": list(self.ordering) if self.ordering else None,
                "paused_until": _iso(p) if (p := max(self._paused_until, self._down_until)) > self._clock() else None}

    # -- the task ----------------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            try:
                await self.run_pass()
            except Exception:  # noqa: BLE001 - a bug in one pass must not end certificate renewals
                log.exception("ACM pass failed; retrying in a minute")
                with trio.move_on_after(60):
                    await self._wake.wait()
                continue
            delay = min(max(self._next_wakeup() - self._clock(), 0.0), _LONGEST_SLEEP)
            with trio.move_on_after(delay):
                await self._wake.wait()

    def _next_wakeup(self) -> float:
        wakeup = float("inf")
        for app in self.store.apps():
            wakeup = min(wakeup, schedule.next_wakeup(self.store.load(app)))
        return max(wakeup, self._paused_until, self._down_until)

    async def run_pass(self) -> None:
        while self._to_revoke:
            app, domain, ds, to_app_log = self._to_revoke.pop(0)
            await self._revoke(app, domain, ds, to_app_log=to_app_log)
        apps = {a.name for a in self.ledger.list_apps()}
        for app in self.store.apps():
            if app not in apps:
                await self._app_gone(app)
                continue
            state = self.store.load(app)
            if not state.enabled:
                self.store.remove(app)
                continue
            try:
                domains = self.ledger.list_domains(app)
            except NotFound:
                continue  # destroyed since list_apps: the next pass cleans up
            synced, removed = schedule.sync_domains(state, domains, self._clock())
            if synced != state:
                self.store.save(app, synced)
            for domain, ds in removed.items():
                self._emit(app, f"{domain} left the app: its certificate is no longer renewed")
                await self._revoke(app, domain, ds)
            for domain in schedule.due(synced, self._clock()):
                if self._clock() < max(self._paused_until, self._down_until):
                    break  # they stay due; the first pass after the pause takes them
                current = self.store.load(app)  # the previous order took a while: disabled, removed since?
                if not current.enabled:
                    break
                if (ds := current.domains.get(domain)) is None or ds.next_attempt > self._clock():
                    continue
                await self._obtain(app, domain)

    async def _app_gone(self, app: str) -> None:
        state = self.store.load(app)
        self.store.remove(app)
        self._challenges.pop(app, None)
        for domain, ds in state.domains.items():
            await self._revoke(app, domain, ds, to_app_log=False)  # the app's log went with the app

    # -- one domain ----------------------------------------------------------------------------------
    def _update(self, app: str, domain: str, change: Callable[[DomainState], DomainState]) -> bool:
        """Apply ``change`` to the domain's state if ACM still manages it; False if it no longer does."""
        state = self.store.load(app)
        current = state.domains.get(domain)
        if not state.enabled or current is None:
            return False
        self.store.save(app, AppState(enabled=True, domains={**state.domains, domain: change(current)}))
        return True

    async def _get_issuer(self) -> Any:
        if self._issuer is None:
            from .issuer import AcmeIssuer, new_account_key

            key = self.store.account_key()
            if key is None:
                key = await trio.to_thread.run_sync(new_account_key)
                self.store.save_account_key(key)
            s = self.settings
            self._issuer = AcmeIssuer(directory_url=s.directory_url, account_key_pem=key, email=s.email,
                                      ca_file=s.ca_file, request_timeout=s.request_timeout)
        return self._issuer

    async def _obtain(self, app: str, domain: str) -> None:
        from ..router.tls import check_cert_pair
        from .issuer import AcmeFailure

        self.ordering = (app, domain)
        self.orders += 1
        s = self.settings
        chain = key_pem = None
        published: list[str] = []
        failure: str | None = None
        rate_limited = unreachable = False
        try:
            issuer = await self._get_issuer()
            # Each request is bounded by request_timeout and polling by order_timeout; this bounds the lot.
            with trio.move_on_after(s.order_timeout + 8 * s.request_timeout) as scope:
                order = await trio.to_thread.run_sync(issuer.begin, domain, abandon_on_cancel=True)
                if order.challenges:
                    self._challenges.setdefault(app, {}).update(
                        {c.token: c.key_authorization for c in order.challenges})
                    published = [c.token for c in order.challenges]
                    self._routes_changed()
                    await self._routes_flushed()
                    for c in order.challenges:
                        if not await self._router_serves(domain, c.token, c.key_authorization):
                            raise AcmeFailure("the router did not serve the challenge to dynod itself "
                                              "(see router.log); nothing was sent to the CA")
                chain = await trio.to_thread.run_sync(issuer.finish, order, s.order_timeout,
                                                      abandon_on_cancel=True)
                key_pem = order.key_pem
                cert = check_cert_pair(domain, chain, key_pem)
            if scope.cancelled_caught:
                failure = f"the ACME server did not finish the order within {s.order_timeout:g} s"
        except AcmeFailure as exc:
            failure = str(exc)
            rate_limited, unreachable = exc.rate_limited, exc.unreachable
        except UserError as exc:  # check_cert_pair: what the CA sent does not serve this domain
            failure = f"the ACME server sent a certificate that cannot be served: {exc}"
        finally:
            self.ordering = None
            if published:  # the CA is done with them (valid or not): the router stops answering
                tokens = self._challenges.get(app, {})
                for token in published:
                    tokens.pop(token, None)
                if not tokens:
                    self._challenges.pop(app, None)
                self._routes_changed()
        now = self._clock()
        if failure is not None or chain is None or key_pem is None:
            reason = failure or "the order ended without a certificate"
            if rate_limited:
                self._paused_until = now + s.rate_limit_pause
            if self._update(app, domain, lambda ds: schedule.failed(ds, reason=reason, now=now, backoff=self.backoff,
                                                                   rate_limited=rate_limited)):
                state = self.store.load(app).domains[domain]
                if unreachable:  # one dead CA, not one per domain: every order waits out this back-off
                    self._down_until = max(self._down_until, state.next_attempt)
                self._emit(app, f"Certificate for {domain} failed: {reason}; next try {_iso(state.next_attempt)}")
            return
        try:
            still_here = domain in self.ledger.list_domains(app) and self.store.load(app).domains.get(domain)
        except NotFound:
            still_here = None
        if not still_here:  # removed (or ACM disabled) while the order ran: the new certificate is not wanted
            await self._revoke(app, domain, DomainState(cert_pem=chain))
            return
        self.ledger.add_cert(app, domain, chain, key_pem)
        self._routes_changed()
        not_before = cert.not_valid_before_utc.timestamp()
        not_after = cert.not_valid_after_utc.timestamp()
        self._update(app, domain, lambda ds: schedule.issued(ds, cert_pem=chain, not_before=not_before,
                                                            not_after=not_after, now=now, backoff=self.backoff))
        self._emit(app, f"Certificate issued for {domain}, expires {_iso(not_after)}")

    async def _router_serves(self, domain: str, token: str, answer: str) -> bool:
        """GET the challenge through dynod's own router, as the CA will, until it answers (5 s at most)."""
        assert self._router_http is not None
        host, port = self_check_address(self._router_http)
        request = (f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {domain}\r\n"
                   "Connection: close\r\nUser-Agent: dynod-acm-self-check\r\n\r\n").encode()
        with trio.move_on_after(_SELF_CHECK_TIMEOUT):
            while True:
                try:
                    stream = await trio.open_tcp_stream(host, port)
                    async with stream:
                        await stream.send_all(request)
                        data = b""
                        while chunk := await stream.receive_some(4096):
                            data += chunk
                            if len(data) > 65536:
                                break
                    head, _, body = data.partition(b"\r\n\r\n")
                    if head.startswith(b"HTTP/1.1 200") and body == answer.encode():
                        return True
                except OSError:
                    pass
                await trio.sleep(0.05)  # the route change may still be on its way to the workers
        return False

    async def _revoke(self, app: str, domain: str, ds: DomainState, *, to_app_log: bool = True) -> None:
        """Revoke a certificate ACM installed, once, best effort: a CA that is down is logged, not retried
        (the certificate expires on its own; revocation is a courtesy, not what stops it serving)."""
        from .issuer import AcmeFailure

        if not ds.cert_pem or (ds.not_after is not None and ds.not_after <= self._clock()):
            return
        try:
            issuer = await self._get_issuer()
            with trio.move_on_after(4 * self.settings.request_timeout) as scope:
                await trio.to_thread.run_sync(issuer.revoke, ds.cert_pem, abandon_on_cancel=True)
            if scope.cancelled_caught:
                raise AcmeFailure("the ACME server did not answer the revocation in time")
        except AcmeFailure as exc:
            self._emit(app, f"Could not revoke the certificate for {domain}: {exc}", to_app_log=to_app_log)
            return
        self._emit(app, f"Certificate for {domain} revoked", to_app_log=to_app_log)

    def _emit(self, app: str, message: str, *, to_app_log: bool = True) -> None:
        log.info("%s: %s", app, message)
        if not to_app_log:
            return
        try:
            self.logs.emit(app, "dynod", "acm", message)
        except Exception:  # noqa: BLE001 - the app's log may be gone with the app; the daemon log has it
            pass
