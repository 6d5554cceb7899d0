"""The seccomp profile every dyno and build container runs under.

In the spirit of Docker's and the OCI runtime's default profiles, but written as a deny list: a
dyno already runs without capabilities, with no_new_privs, in its own namespaces, so the filter
only has to take away the kernel surface that an unprivileged process still reaches and that
ordinary apps never need: new user namespaces (which hand back a full capability set, and with
it nf_tables and mounts: CVE-2024-1086, CVE-2023-32233), the kernel keyring (shared per uid),
io_uring, bpf, perf events, userfaultfd, the mount API, kernel modules, kexec, the clocks, swap,
reboot and personality flags that switch off ASLR. docs/dynos.md lists each with its reason.

libseccomp compiles the rules into BPF once, in the spawner (``compile_profile``); each dyno
then loads those bytes with one prctl just before exec (``syscalls.load_seccomp``), so a
dyno start pays microseconds, not libseccomp's compile.

Denied calls fail with EPERM, except clone3, which fails with ENOSYS: its flags sit in a struct a
filter cannot read, and ENOSYS is what makes glibc and language runtimes fall back to clone,
whose flags the filter does check (Docker does the same).
"""

from __future__ import annotations

import errno
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import Settings

# Namespace flags of clone/unshare. CLONE_NEWUSER is the one that matters (a user namespace is
# the only one an unprivileged process may make, and it brings capabilities with it); the others
# already need CAP_SYS_ADMIN, which a dyno lacks, and are denied too so the answer is the same.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                   CLONE_NEWNET, CLONE_NEWTIME)

# personality(2) flags that weaken the process's own memory protections (ADDR_NO_RANDOMIZE turns
# off ASLR for what it execs; MMAP_PAGE_ZERO maps page 0, the classic NULL-deref exploit aid).
ADDR_NO_RANDOMIZE = 0x0040000
MMAP_PAGE_ZERO = 0x0100000
ADDR_COMPAT_LAYOUT = 0x0200000
READ_IMPLIES_EXEC = 0x0400000
ADDR_LIMIT_32BIT = 0x0800000
ADDR_LIMIT_3GB = 0x8000000
PERSONALITY_DENIED_FLAGS = (ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO, ADDR_COMPAT_LAYOUT, READ_IMPLIES_EXEC,
                            ADDR_LIMIT_32BIT, ADDR_LIMIT_3GB)
PERSONALITY_QUERY = 0xFFFFFFFF  # reads the personality, changes nothing: allowed
_BIT31 = 0x80000000

# Denied outright, by what they reach.
DENIED: dict[str, tuple[str, ...]] = {
    "user namespaces and joining namespaces": ("setns",),
    "the kernel keyring (shared by every process of a uid)": ("keyctl", "add_key", "request_key"),
    "io_uring (a large, often-exploited kernel surface that bypasses syscall filtering)":
        ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "bpf and perf events": ("bpf", "perf_event_open"),
    "userfaultfd (stalls kernel page faults: a race-exploit aid)": ("userfaultfd",),
    "mounts, old and new API": ("mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
                                "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr"),
    "kernel modules and kexec": ("init_module", "finit_module", "delete_module", "create_module",
                                 "kexec_load", "kexec_file_load"),
    "the host's clocks": ("clock_settime", "clock_adjtime", "adjtimex", "settimeofday", "stime"),
    "host administration": ("reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "nfsservctl",
                            "syslog", "vhangup", "iopl", "ioperm", "lookup_dcookie", "uselib", "_sysctl",
                            "get_kernel_syms", "query_module", "vm86", "vm86old", "sysfs", "ustat"),
    "file handles (open_by_handle_at escapes a mount: the 'shocker' exploit)": ("open_by_handle_at",),
}
CLONE3_ERRNO = errno.ENOSYS
DENY_ERRNO = errno.EPERM


@dataclass(frozen=True, slots=True)
class Rule:
    """One seccomp rule, as data: deny ``syscall`` (when every ``(arg, mask, value)`` matches,
    i.e. ``args[arg] & mask == value``) with ``errno``."""

    syscall: str
    errno: int = DENY_ERRNO
    masked: tuple[tuple[int, int, int], ...] = ()


def profile_rules() -> list[Rule]:
    """Pure: the default profile as a list of rules (an allow-by-default filter)."""
    rules = [Rule(name) for names in DENIED.values() for name in names]
    for flag in NAMESPACE_FLAGS:
        # x86_64 and aarch64 pass clone's flags in its first argument, as unshare does. clone's
        # low byte is the exit signal, so CLONE_NEWTIME (0x80, clone3 and unshare only) is not a
        # flag there.
        if flag != CLONE_NEWTIME:
            rules.append(Rule("clone", masked=((0, flag, flag),)))
        rules.append(Rule("unshare", masked=((0, flag, flag),)))
    rules.append(Rule("clone3", errno=CLONE3_ERRNO))
    # A rule compares each argument at most once, so "flag set and not the query" is spelled in
    # two halves: a denied flag with bit 31 clear (every real personality value), and bit 31 set
    # with any other bit clear (anything but the query 0xffffffff, which has every bit set).
    for flag in PERSONALITY_DENIED_FLAGS:
        rules.append(Rule("personality", masked=((0, flag | _BIT31, flag),)))
    for bit in range(31):
        rules.append(Rule("personality", masked=((0, _BIT31 | (1 << bit), _BIT31),)))
    return rules


def personality_denied(value: int) -> bool:
    """Pure: whether the profile denies personality(value) (the rules above, evaluated here)."""
    return any(value & mask == want for rule in profile_rules() if rule.syscall == "personality"
               for _arg, mask, want in rule.masked)


def compile_profile(rules: list[Rule] | None = None) -> bytes:
    """Compile ``rules`` (default: the profile) to a BPF program with libseccomp.

    Other architectures' calling conventions (i386's int 0x80 on x86_64) are killed: libseccomp
    checks the audit arch first, so no compat ABI slips past the rules.
    """
    import pyseccomp  # imported here: only the spawner compiles, once

    sf = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for rule in profile_rules() if rules is None else rules:
        # A name libseccomp does not know is a typo here, not a syscall to skip quietly. (Names
        # this architecture lacks, vm86 on x86_64, resolve to pseudo-numbers it accepts and drops.)
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.syscall) == -1:
            raise ValueError(f"libseccomp knows no syscall {rule.syscall!r}")
        args = [pyseccomp.Arg(arg, pyseccomp.MASKED_EQ, mask, value) for arg, mask, value in rule.masked]
        sf.add_rule(pyseccomp.ERRNO(rule.errno), rule.syscall, *args)
    with tempfile.TemporaryFile() as out:
        sf.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise RuntimeError(f"libseccomp exported a BPF program of {len(program)} bytes")
    return program


def bpf_instructions(program: bytes) -> int:
    return len(program) // 8



def seccomp_profile(settings: Settings, app: str) -> str:
    """The profile name a dyno spec carries for ``app``: "default", or "unconfined" if listed."""
    return "unconfined" if app in settings.dynos.seccomp_unconfined_apps else "default"
