"""Automated Certificate Management (Heroku's ACM): certificates for an app's custom domains from an
ACME server (Let's Encrypt by default), proved with the HTTP-01 challenge that the router answers,
installed through the ledger like a `certs:add` certificate, renewed before they expire.

- ``schedule``: what each domain needs and when (status, renewal time, back-off); no I/O.
- ``store``: ACM's own state under ``<state_dir>/acm``: the account key and one file per app.
- ``issuer``: the ACME protocol, through the ``acme`` library (synchronous: run in a thread).
- ``manager``: the trio task in dynod that carries the schedule out.

Only ``issuer`` imports the ``acme`` library, and only when the first order is made, so dynoctl and
a dynod with no app on ACM never load it.

Each public name is imported from its module on first use (dynod/exports.py), so importing
the package loads none of them.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "AppState": "schedule",
    "DomainState": "schedule",
    "due": "schedule",
    "sync_domains": "schedule",
    "AcmeFailure": "issuer",
    "AcmeIssuer": "issuer",
    "CertManager": "manager",
}, globals())
