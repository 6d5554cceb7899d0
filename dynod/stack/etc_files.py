"""The files a stack's /etc gets after debootstrap: the dyno account, and the network files that
make sense inside a container. Pure: text in, text out."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .definition import StackUser

# A dyno's hostname is set at start; this is only what a tool reading the file before then sees.
HOSTNAME_TEXT = "dyno\n"
HOSTS_TEXT = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
# systemd-resolved's stub points at the host's loopback, which a dyno's own netns cannot reach;
# this file lists the upstream servers the stub forwards to.
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip()]


def _join(entries: list[list[str]]) -> str:
    return "".join(":".join(entry) + "\n" for entry in entries)


def _check_free(entries: list[list[str]], name: str, number: int, what: str, file: str) -> None:
    for entry in entries:
        if entry[0] != name and len(entry) > 2 and entry[2] == str(number):
            raise UserError(
                f"The stack's {file} already gives {what} {number} to {entry[0]!r}; "
                f"set [dynos] {what} in dynod.toml to a free id."
            )


def with_account(files: dict[str, str], user: StackUser, uid: int, gid: int) -> dict[str, str]:
    """Return passwd/group/shadow/gshadow texts with ``user`` (and its group) added or replaced.

    The password is locked ('!'): nobody logs in as the dyno user, processes are started as it.
    """
    passwd, group = _entries(files["passwd"]), _entries(files["group"])
    _check_free(passwd, user.name, uid, "uid", "/etc/passwd")
    _check_free(group, user.name, gid, "gid", "/etc/group")
    passwd = [e for e in passwd if e[0] != user.name]
    passwd.append([user.name, "x", str(uid), str(gid), "dyno", user.home, user.shell])
    group = [e for e in group if e[0] != user.name]
    group.append([user.name, "x", str(gid), ""])
    shadow = [e for e in _entries(files["shadow"]) if e[0] != user.name]
    # Field 3 (days since 1970 of the last change) is left empty, so builds stay reproducible.
    shadow.append([user.name, "!", "", "0", "99999", "7", "", "", ""])
    gshadow = [e for e in _entries(files["gshadow"]) if e[0] != user.name]
    gshadow.append([user.name, "!", "", ""])
    return {"passwd": _join(passwd), "group": _join(group), "shadow": _join(shadow),
            "gshadow": _join(gshadow)}


def _nameservers(text: str) -> list[str]:
    return [parts[1] for parts in (line.split() for line in text.splitlines())
            if len(parts) >= 2 and parts[0] == "nameserver"]


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def container_resolv_conf(host_text: str, upstream_text: str | None) -> tuple[str, str | None]:
    """Pick the resolv.conf a dyno gets: (text, warning or None).

    A dyno has its own network namespace, so a loopback nameserver (systemd-resolved's
    127.0.0.53, a local dnsmasq) is unreachable from it: prefer the host's file when it names a
    real server, else resolved's upstream list, else keep the host's and warn.
    """
    if any(not _is_loopback(ns) for ns in _nameservers(host_text)):
        return host_text, None
    if upstream_text and any(not _is_loopback(ns) for ns in _nameservers(upstream_text)):
        return upstream_text, None
    return host_text, ("the host's resolv.conf names only loopback nameservers, which dynos cannot "
                       "reach; edit the stack's /etc/resolv.conf or the host's and rebuild with --force")

