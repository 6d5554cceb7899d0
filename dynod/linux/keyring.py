"""Each app's kernel keyrings go with the app: emptied when it is destroyed, before its uid can
become another app's.

The per-uid keyrings (``@u``, the user session keyring ``@us`` and the persistent keyring) belong
to the uid, not to its processes: since Linux 5.3 the kernel keeps them in the user namespace's
register, so they outlive every process of the uid. The ledger hands a destroyed app's uid to the
next new app (the lowest free one), which would find the old app's keys there. Dynos under the
default seccomp profile cannot reach keyctl at all; apps in ``[dynos] seccomp_unconfined_apps``
can, and so can nothing else of the next tenant's.

Only the owner may clear its own ``@u``: ``KEY_SPEC_USER_KEYRING`` always means the caller's. So
the spawner, single-threaded, forks a child that becomes the uid (no capabilities left) and clears
each keyring, then exits; ``clear_keyrings`` runs in that child.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219}.get(os.uname().machine, 250)
KEYCTL_CLEAR = 7
KEYCTL_GET_PERSISTENT = 22
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_USER_KEYRING = -4
KEY_SPEC_USER_SESSION_KEYRING = -5


def _keyctl(*args: int) -> int:
    result = _libc.syscall(_SYS_KEYCTL, *(ctypes.c_long(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"keyctl{args}: {os.strerror(err)}")
    return int(result)


def clear_keyrings() -> list[str]:
    """Empty the calling uid's user, user-session and persistent keyrings; what was cleared.

    Call it as the uid itself. A kernel without persistent keyrings (EOPNOTSUPP) has none to clear.
    """
    cleared = []
    for name, spec in (("user", KEY_SPEC_USER_KEYRING), ("user-session", KEY_SPEC_USER_SESSION_KEYRING)):
        _keyctl(KEYCTL_CLEAR, spec)
        cleared.append(name)
    try:
        persistent = _keyctl(KEYCTL_GET_PERSISTENT, -1, KEY_SPEC_PROCESS_KEYRING)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    else:
        _keyctl(KEYCTL_CLEAR, persistent)
        cleared.append("persistent")
    return cleared


def clear_as(uid: int, gid: int) -> int:
    """Fork a child that becomes ``uid``/``gid`` and clears its keyrings; its exit status (0: done).

    The caller must be single-threaded (the spawner) and root; the child never returns.
    """
    if uid == 0 or gid == 0:
        raise ValueError("root's keyrings are not an app's")
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(err_r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)  # every capability goes: what follows is the uid's own doing
            clear_keyrings()
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            try:
                os.write(err_w, str(exc).encode()[:1000])
            except OSError:
                pass
        finally:
            os._exit(status)
    os.close(err_w)
    try:
        message = os.read(err_r, 1000).decode(errors="replace")
    finally:
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(errno.EIO, f"clearing the keyrings of uid {uid} failed: {message or status}")
    return 0
