"""The ACME protocol (RFC 8555), spoken through the ``acme`` library (certbot's, from PyPI).

The library is synchronous (requests): the manager runs every call here in a worker thread. Each
HTTP request is bounded by ``request_timeout`` and each order's polling by a deadline, so a thread
that trio abandons on cancellation still ends on its own. One lock serializes the calls: the
library's network object (session, nonces) is not meant to be shared between threads.

An order goes in two halves so that dynod can publish the challenge in between:
``begin(domain)`` makes a fresh key and CSR, opens the order and returns each HTTP-01 token with its
key authorization; once the router answers them, ``finish(order)`` tells the CA to validate,
waits, finalizes and returns the full chain. Every failure is an ``AcmeFailure`` with one line.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Any, cast

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .. import __version__

USER_AGENT = f"dynod/{__version__} (ACM)"


class AcmeFailure(Exception):
    """An order or revocation failed; ``str()`` is the one line a user sees."""

    def __init__(self, reason: str, *, rate_limited: bool = False, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.rate_limited = rate_limited  # the CA said rateLimited: no orders for a while, for anyone
        self.unreachable = unreachable  # the CA did not answer: the other domains wait too


class _AccountGone(AcmeFailure):
    """The CA no longer knows the account (a test CA restarted, or the account was deactivated)."""


@dataclass(frozen=True)
class Challenge:
    token: str
    key_authorization: str  # what the router answers at /.well-known/acme-challenge/<token>
    body: Any  # the library's ChallengeBody, answered in finish()


@dataclass(frozen=True)
class Order:
    domain: str
    key_pem: str  # the new certificate's private key
    challenges: tuple[Challenge, ...]  # empty when the CA reused an authorization already valid
    resource: Any  # the library's OrderResource


def new_account_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _problem(error: messages.Error) -> str:
    detail = error.detail or error.description or error.typ or "no detail given"
    return _one_line(detail)


class AcmeIssuer:
    def __init__(self, *, directory_url: str, account_key_pem: bytes, email: str | None = None,
                 ca_file: str | None = None, request_timeout: float = 30.0) -> None:
        self.directory_url = directory_url
        key = serialization.load_pem_private_key(account_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the ACME account key must be an RSA key")
        self._key = jose.JWKRSA(key=key)
        self._email = email
        # requests takes a CA bundle path where the library's hint says bool.
        self._verify: bool | str = ca_file or True
        self._timeout = request_timeout
        self._client: client.ClientV2 | None = None
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Run one protocol step; every error becomes an AcmeFailure naming what went wrong."""
        url = self.directory_url
        try:
            return fn(*args)
        except AcmeFailure:
            raise
        except errors.ValidationError as exc:
            reasons = [_problem(ch.error) for authz in exc.failed_authzrs for ch in authz.body.challenges
                       if ch.error is not None]
            raise AcmeFailure(f"the challenge failed: {'; '.join(reasons) or 'no reason given'} "
                              "(does the domain's DNS point at this host, port 80?)") from None
        except errors.TimeoutError:
            raise AcmeFailure(f"the ACME server did not finish {what} in time") from None
        except errors.IssuanceError as exc:
            raise AcmeFailure(f"the ACME server refused {what}: {_problem(exc.error)}") from None
        except messages.Error as exc:
            if exc.code == "accountDoesNotExist":
                self._client = None  # the CA forgot the account: register again on the next call
                raise _AccountGone(f"the ACME server no longer knows dynod's account: {_problem(exc)}") from None
            raise AcmeFailure(f"the ACME server refused {what}: {_problem(exc)}",
                              rate_limited=exc.code == "rateLimited") from None
        except requests.exceptions.SSLError as exc:
            raise AcmeFailure(f"the ACME server at {url} has a certificate that does not verify "
                              f"({_one_line(exc, 120)}); set [acm] ca_file if it uses a private CA") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise AcmeFailure(f"the ACME server at {url} did not answer ({type(exc).__name__})",
                              unreachable=True) from None
        except (errors.Error, jose.DeserializationError, requests.exceptions.RequestException, ValueError,
                KeyError, TypeError, AttributeError) as exc:
            # A server that answers, but not ACME: HTML, broken JSON, missing fields.
            raise AcmeFailure(f"the ACME server at {url} answered {what} with something that is not ACME "
                              f"({type(exc).__name__})") from None

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        net = client.ClientNetwork(self._key, alg=jose.RS256, verify_ssl=cast(bool, self._verify),
                                   user_agent=USER_AGENT, timeout=cast(int, self._timeout))
        directory = self._call("the directory request", client.ClientV2.get_directory, self.directory_url, net)
        acme = client.ClientV2(directory, net=net)
        registration = messages.NewRegistration.from_data(email=self._email, terms_of_service_agreed=True)

        def register() -> None:
            try:
                acme.new_account(registration)
            except errors.ConflictError as exc:
                # This key has an account already (dynod restarted, the key is kept): use that one.
                existing = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
                acme.net.account = existing
                acme.net.account = acme.query_registration(existing)

        self._call("the account registration", register)
        self._client = acme
        return acme

    # -- the protocol ----------------------------------------------------------------------------
    def begin(self, domain: str) -> Order:
        with self._lock:
            try:
                return self._begin(domain)
            except _AccountGone:
                return self._begin(domain)  # registered again with the same key: one more try

    def _begin(self, domain: str) -> Order:
        acme = self._connect()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        csr = crypto_util.make_csr(key_pem, [domain])
        order = self._call("the order", acme.new_order, csr)
        found: list[Challenge] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA reused an authorization it validated recently
            http01 = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
            if not http01:
                raise AcmeFailure(f"the ACME server offers no HTTP-01 challenge for {domain}")
            body = http01[0]
            response, validation = body.chall.response_and_validation(self._key)
            found.append(Challenge(token=body.chall.encode("token"), key_authorization=validation,
                                   body=(body, response)))
        return Order(domain=domain, key_pem=key_pem.decode(), challenges=tuple(found), resource=order)

    def finish(self, order: Order, timeout: float) -> str:
        """Have the CA validate the published challenges, then finalize; the full chain PEM."""
        with self._lock:
            acme = self._connect()
            for challenge in order.challenges:
                body, response = challenge.body
                self._call("the challenge answer", acme.answer_challenge, body, response)
            # The library compares against naive local time.
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
            done = self._call("the order", acme.poll_and_finalize, order.resource, deadline)
            chain = done.fullchain_pem
            if not isinstance(chain, str) or "BEGIN CERTIFICATE" not in chain:
                raise AcmeFailure(f"the ACME server at {self.directory_url} returned no certificate")
            return chain

    def revoke(self, cert_pem: str) -> None:
        """Revoke a certificate this account ordered (reason 4, superseded: the domain left the app)."""
        with self._lock:
            acme = self._connect()
            try:
                cert = x509.load_pem_x509_certificate(cert_pem.encode())
            except ValueError:
                raise AcmeFailure("the recorded certificate is not PEM; nothing to revoke") from None
            self._call("the revocation", acme.revoke, cert, 4)
