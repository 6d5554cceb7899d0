"""certs, certs:add CERT KEY --domain D: TLS certificates the router serves by SNI."""

from __future__ import annotations

from ..errors import UserError
from .command import Context
from .output import header, table


def show(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("certs", "List an app's TLS certificates."), argv)
    app = ctx.app(args)
    certs = ctx.client().list_certs(app)
    if not certs:
        ctx.out(f"{app} has no SSL certificates: add one with `dynoctl certs:add CERT KEY --domain D`.")
        return 0
    rows = [(c["domain"], c["not_after"], "yes" if c.get("self_signed") else "no") for c in certs]
    ctx.out(header(f"{app} SSL Certificates"))
    for line in table(("Domain", "Expires", "Self-signed"), rows):
        ctx.out(line)
    return 0


def _read_pem(path: str, what: str) -> str:
    try:
        with open(path, encoding="ascii") as pem:
            return pem.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not PEM text"
        raise UserError(f"Cannot read the {what} {path}: {reason}.") from None


def add(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("certs:add", "Serve a certificate (PEM chain and key) for a domain of an app.")
    parser.add_argument("cert", metavar="CERT", help="PEM certificate chain file")
    parser.add_argument("key", metavar="KEY", help="PEM private key file")
    parser.add_argument("--domain", required=True, help="the hostname it is for")
    args = ctx.parse(parser, argv)
    app = ctx.app(args)
    cert_pem = _read_pem(args.cert, "certificate")
    key_pem = _read_pem(args.key, "private key")
    ctx.progress(f"Adding SSL certificate to {app}... ")
    cert = ctx.client().add_cert(app, args.domain, cert_pem, key_pem)
    ctx.out("done")
    self_signed = " (self-signed)" if cert.get("self_signed") else ""
    ctx.out(f"{cert['domain']}, expires {cert['not_after']}{self_signed}")
    return 0
