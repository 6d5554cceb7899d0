"""The default seccomp profile as data, and its BPF compile (libseccomp, no root needed)."""

from __future__ import annotations

import pytest

from dynod.linux import seccomp
from dynod.linux.syscalls import SeccompProgram
from dynod.settings import DynoSettings, Settings


def denied(rules: list[seccomp.Rule], syscall: str, arg0: int = 0) -> int | None:
    """The errno the rules give ``syscall(arg0)``, or None if allowed (rules OR'd, as in the filter)."""
    for rule in rules:
        if rule.syscall == syscall and all(arg0 & mask == want for _, mask, want in rule.masked):
            return rule.errno
    return None


def test_the_issue_s_attacks_are_denied_with_eperm() -> None:
    rules = seccomp.profile_rules()
    for name in ("keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
                 "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "mount", "umount2",
                 "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree", "init_module", "finit_module",
                 "delete_module", "clock_settime", "adjtimex", "settimeofday", "reboot", "swapon", "swapoff",
                 "setns", "open_by_handle_at"):
        assert denied(rules, name) == 1, name


def test_clone3_is_enosys_so_that_libc_falls_back_to_clone() -> None:
    assert denied(seccomp.profile_rules(), "clone3") == 38


def test_user_and_other_namespaces_are_denied_but_threads_and_fork_are_not() -> None:
    rules = seccomp.profile_rules()
    assert denied(rules, "unshare", seccomp.CLONE_NEWUSER) == 1
    assert denied(rules, "clone", seccomp.CLONE_NEWUSER | 0x11) == 1  # SIGCHLD in the low byte
    assert denied(rules, "clone", seccomp.CLONE_NEWNET) == 1
    threads = 0x3D0F00  # glibc's pthread_create flags (CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|...)
    assert denied(rules, "clone", threads) is None
    assert denied(rules, "clone", 0x01200011) is None  # fork(): CHILD_SETTID|CHILD_CLEARTID|SIGCHLD
    assert denied(rules, "unshare", 0x00000400) is None  # CLONE_FILES
    assert denied(rules, "ptrace") is None  # as Docker on kernels >= 4.8: debuggers work in a dyno


@pytest.mark.parametrize(("value", "refused"), [
    (0x0, False), (0x8, False), (0x20000, False), (0xFFFFFFFF, False),  # PER_LINUX, LINUX32, UNAME26, query
    (0x0040000, True), (0x0100000, True), (0x0400000, True), (0x0040008, True),
    (0x80040000, True), (0xFFFFFFFE, True), (0x80000000, True),  # bit 31 set is not the query
])
def test_personality_refuses_flags_that_weaken_memory_protection(value: int, refused: bool) -> None:
    assert seccomp.personality_denied(value) is refused
    assert (denied(seccomp.profile_rules(), "personality", value) is not None) is refused


def test_the_profile_compiles_to_bpf_that_the_loader_accepts() -> None:
    program = seccomp.compile_profile()
    loaded = SeccompProgram(program)
    assert 50 < loaded.instructions < 1000
    assert seccomp.bpf_instructions(program) == loaded.instructions


def test_a_misspelled_syscall_is_an_error_not_a_hole() -> None:
    with pytest.raises(ValueError, match="no syscall 'keyctll'"):
        seccomp.compile_profile([seccomp.Rule("keyctll")])


def test_a_torn_program_is_refused() -> None:
    with pytest.raises(ValueError, match="8-byte"):
        SeccompProgram(b"\0" * 12)


def test_only_listed_apps_run_unconfined() -> None:
    settings = Settings(dynos=DynoSettings(seccomp_unconfined_apps=["legacy"]))
    assert seccomp.seccomp_profile(settings, "legacy") == "unconfined"
    assert seccomp.seccomp_profile(settings, "other") == "default"
