"""A build's ``source_blob``: the archive a Platform API client names by URL, fetched by dynod.

The URL is the user's, but the request leaves from the host, which can reach what a user must
not: the dynos' and builds' private subnets (another app's internal ports), link-local metadata
addresses, and the host's own loopback services. So every address the name resolves to is checked
before connecting, redirects are not followed (each hop would need the same check), only http and
https are spoken, and the body is bounded like an uploaded source archive. Blocking: call it in a
worker thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Sequence
from typing import IO
from urllib.parse import urlsplit

import httpx

from ..errors import UserError

FETCH_TIMEOUT = 60.0


def check_address(address: str, *, refuse: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
                  allow_loopback: bool) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and allow_loopback:
        return
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved \
            or any(ip in net for net in refuse):
        raise UserError(f"The source_blob URL points at {ip}, an address dynod does not fetch from "
                        "(this host, its dynos or link-local): give a URL on another host.")


def fetch_blob(url: str, into: IO[bytes], *, limit: int, checksum: str | None,
               refuse: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], allow_loopback: bool) -> int:
    """Download ``url`` into ``into`` (at most ``limit`` bytes); the size. UserError for anything wrong."""
    if not isinstance(url, str) or len(url) > 4096:
        raise UserError("source_blob.url must be an http or https URL of at most 4096 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"source_blob.url {url[:80]!r} is not an http or https URL.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise UserError(f"The source_blob URL's host {parts.hostname[:80]!r} does not resolve ({exc}).") from None
    for info in infos:
        check_address(str(info[4][0]), refuse=refuse, allow_loopback=allow_loopback)
    digest = hashlib.sha256()
    size = 0
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False, trust_env=False) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise UserError(f"Fetching the source_blob URL answered {response.status_code}, not 200 "
                                "(redirects are not followed: give the final URL).")
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise UserError(f"The source archive is over {limit >> 20} MB.", status=413, code="too_large")
                digest.update(chunk)
                into.write(chunk)
    except httpx.HTTPError as exc:
        raise UserError(f"Fetching the source_blob URL failed: {exc}.") from None
    if checksum:
        algorithm, _, expected = checksum.partition(":")
        if algorithm.upper() != "SHA256" or expected.lower() != digest.hexdigest():
            raise UserError(f"The source archive's checksum is SHA256:{digest.hexdigest()}, not {checksum[:80]}.")
    into.seek(0)
    return size
