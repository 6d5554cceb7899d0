"""certs, certs:add CERT KEY --domain D: TLS certificates the router serves by SNI; certs:auto[:enable|:disable|
:refresh]: Automated Certificate Management (ACME) for the app's custom domains."""

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


# --- Automated Certificate Management (Heroku's certs:auto verbs) --------------------------------

_STATUS_WORDS = {"pending": "Pending", "issued": "Cert issued", "failing": "Failing", "unsupported": "Not supported"}


def _day(value: str | None) -> str:
    return value.replace("T", " ").replace("Z", " UTC") if value else ""


def acm_lines(status: dict) -> list[str]:
    """certs:auto's layout: a header, one row per domain, then why each failing domain fails."""
    app = status["app"]
    if not status["enabled"]:
        return [f"=== Automatic Certificate Management is disabled on {app}",
                f"Enable it with `dynoctl certs:auto:enable -a {app}`."]
    lines = [header(f"Automatic Certificate Management is enabled on {app}")]
    domains = status["domains"]
    if not domains:
        lines.append(f"{app} has no custom domains yet: add one with `dynoctl domains:add HOST -a {app}`; "
                     "it gets its certificate without another command.")
        return lines
    rows = []
    for d in domains:
        word = "In progress" if d.get("in_progress") else _STATUS_WORDS.get(d["status"], d["status"])
        rows.append((d["hostname"], word, _day(d.get("expires_at")), _day(d.get("updated_at"))))
    lines += table(("Domain", "Status", "Expires", "Last Updated"), rows)
    problems = [d for d in domains if d["status"] in ("failing", "unsupported")]
    if problems:
        lines.append("")
    for d in problems:
        retry = f" (next try {_day(d['next_attempt_at'])})" if d.get("next_attempt_at") else ""
        lines.append(f"{d['hostname']}: {d.get('reason') or 'no reason recorded'}{retry}")
    return lines


def auto(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("certs:auto", "Show Automatic Certificate Management's status per domain."), argv)
    for line in acm_lines(ctx.client().acm_status(ctx.app(args))):
        ctx.out(line)
    return 0


def auto_enable(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("certs:auto:enable", "Get and renew certificates for the app's custom domains "
                                "automatically (ACME, HTTP-01 answered by the router)."), argv)
    app = ctx.app(args)
    ctx.progress(f"Enabling Automatic Certificate Management for {app}... ")
    status = ctx.client().acm_enable(app)
    ctx.out("done")
    ctx.out(f"Check its progress with `dynoctl certs:auto -a {app}`." if status["domains"] else
            f"{app} has no custom domains yet: each one added with domains:add gets its certificate.")
    return 0


def auto_disable(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("certs:auto:disable", "Stop renewing the app's certificates automatically "
                                "(installed ones serve until they expire)."), argv)
    app = ctx.app(args)
    ctx.progress(f"Disabling Automatic Certificate Management for {app}... ")
    ctx.client().acm_disable(app)
    ctx.out("done")
    return 0


def auto_refresh(ctx: Context, argv: list[str]) -> int:
    args = ctx.parse(ctx.parser("certs:auto:refresh", "Retry the app's failing or pending certificates now."), argv)
    app = ctx.app(args)
    ctx.progress(f"Refreshing Automatic Certificate Management for {app}... ")
    ctx.client().acm_refresh(app)
    ctx.out("done")
    return 0
