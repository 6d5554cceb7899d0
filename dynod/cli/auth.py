"""login, logout, auth:token, auth:whoami, authorizations[:create|:revoke]: API tokens.

On the API socket the caller is the host's administrator: ``auth:token`` makes a new token for
the administrator's account (only hashes are stored, so an old one cannot be shown again). On a
remote dynod (--host, $DYNOD_HOST) ``auth:token`` prints the token ``login`` stored.
"""

from __future__ import annotations

import hashlib
import sys

from ..errors import UserError
from .command import Context


def login(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("login", "Store an API token for a remote dynod (asks for it; or --token -, stdin).",
                        app=False)
    parser.add_argument("--token", help="'-' to read the token from stdin (never put a token in argv)")
    parser.add_argument("--ca", help="a CA or certificate file to trust (default: the system's, else pin "
                                     "the certificate the host shows now)")
    args = ctx.parse(parser, argv)
    host = ctx.host()
    if host is None:
        raise UserError("Name the dynod to log in to: dynoctl login --host https://HOST:PORT.")
    from ..api.client import ApiClient, Remote
    from . import credentials

    url = credentials.normalize(host)
    if args.token == "-":
        token = ctx.stdin.readline().strip()
    elif args.token:
        raise UserError("Give --token - and the token on stdin: a token in argv is visible to every user.")
    else:
        import getpass

        token = getpass.getpass("API token (dynoctl auth:token on the host, or authorizations:create): ").strip()
    if not token:
        raise UserError("No token given.")
    remote = Remote(url, token, args.ca)
    cafile = args.ca or _pin_if_needed(ctx, remote, credentials.pin_path(dict(ctx.environ), url))
    remote.cafile = cafile
    with ApiClient(url, remote=remote) as client:
        account = client.request("GET", "/account")
    data = credentials.load(dict(ctx.environ))
    data[url] = {"token": token, "email": account.get("email", ""), "cafile": cafile or ""}
    credentials.save(dict(ctx.environ), data)
    ctx.out(f"Logged in to {url} as {account.get('email')}")
    return 0


def _pin_if_needed(ctx: Context, remote: object, path: object) -> str | None:
    """None when the system trusts the host's certificate; else pin the one it shows (trust on first use)."""
    import ssl
    from pathlib import Path

    assert hasattr(remote, "host")
    host, port = remote.host, remote.port  # type: ignore[attr-defined]
    try:
        with ssl.create_default_context().wrap_socket(__import__("socket").create_connection((host, port), 10),
                                                      server_hostname=host):
            return None
    except ssl.SSLCertVerificationError:
        pass
    except OSError as exc:
        raise UserError(f"Cannot reach {host}:{port} ({exc}).") from None
    pem = ssl.get_server_certificate((host, port))
    der = ssl.PEM_cert_to_DER_cert(pem)
    fingerprint = hashlib.sha256(der).hexdigest()
    print(f"Pinning {host}'s self-signed certificate, SHA256 {fingerprint}; compare it with the one "
          "dynod printed when it started (its log: 'dynod API on ...').", file=sys.stderr)
    target = Path(str(path))
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.write_text(pem)
    return str(target)


def logout(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("logout", "Forget the token stored for a remote dynod.", app=False)
    ctx.parse(parser, argv)
    host = ctx.host()
    if host is None:
        raise UserError("Name the dynod to log out of: dynoctl logout --host https://HOST:PORT.")
    from . import credentials

    url = credentials.normalize(host)
    data = credentials.load(dict(ctx.environ))
    if data.pop(url, None) is None:
        raise UserError(f"Not logged in to {url}.")
    credentials.save(dict(ctx.environ), data)
    ctx.out(f"Logged out of {url} (the token itself stays valid: authorizations:revoke ends it)")
    return 0


def token(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("auth:token", "Print an API token.", app=False)
    ctx.parse(parser, argv)
    host = ctx.host()
    if host is not None:
        from . import credentials

        ctx.out(credentials.remote_for(host, dict(ctx.environ)).token)
        return 0
    made = ctx.client().request("POST", "/oauth/authorizations", {"description": "dynoctl auth:token"})
    ctx.out(made["access_token"]["token"])
    return 0


def whoami(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("auth:whoami", "Show who the API sees.", app=False)
    ctx.parse(parser, argv)
    if ctx.host() is None:
        ctx.out("root (the API socket: the host's administrator)")
        return 0
    ctx.out(ctx.client().request("GET", "/account")["email"])
    return 0


def list_authorizations(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("authorizations", "List API tokens (yours; on the socket, everyone's).", app=False)
    ctx.parse(parser, argv)
    rows = ctx.client().request("GET", "/oauth/authorizations")
    ctx.out("=== Authorizations")
    for row in rows:
        expires = "" if row.get("expires_in") is None else f"  expires in {row['expires_in']} s"
        ctx.out(f"{row['id']}  {row['user']['email']}  {row.get('description') or '-'}{expires}")
    return 0


def create_authorization(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("authorizations:create", "Make an API token.", app=False)
    parser.add_argument("-d", "--description", default="")
    parser.add_argument("-e", "--expires-in", type=int, help="seconds until it stops working")
    parser.add_argument("--user", help="for another user (the administrator only)")
    args = ctx.parse(parser, argv)
    body: dict[str, object] = {"description": args.description}
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    if args.user:
        body["user"] = args.user
    made = ctx.client().request("POST", "/oauth/authorizations", body)
    ctx.out(f"Created authorization {made['id']} for {made['user']['email']}")
    ctx.out(f"Token: {made['access_token']['token']}")
    return 0


def revoke_authorization(ctx: Context, argv: list[str]) -> int:
    parser = ctx.parser("authorizations:revoke", "Revoke an API token: authorizations:revoke ID.", app=False)
    parser.add_argument("id")
    args = ctx.parse(parser, argv)
    from ..api.client import _path

    ctx.client().request("DELETE", _path("oauth", "authorizations", args.id))
    ctx.out(f"Revoked authorization {args.id}")
    return 0
