"""ps:exec's pure parts: what is read from the dyno's init, the pids check, the CLI's argv split."""

from __future__ import annotations

import resource

import pytest

from dynod.cli.ps import split_exec_argv
from dynod.linux.dyno_exec import (
    ExecSpec,
    over_pids_limit,
    parse_environ,
    parse_nofile,
    parse_status,
    session_environment,
)
from dynod.linux.spawner_client import SpawnerError
from dynod.manager.exec import _one_line, _spawner_error

STATUS = "Name:\ttini\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t2000000003\t2000000003\t2000000003\t2000000003\n" \
         "Gid:\t2000000003\t2000000003\t2000000003\t2000000003\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n"


def test_status_gives_the_effective_ids_and_the_seccomp_mode() -> None:
    assert parse_status(STATUS) == (2000000003, 2000000003, 2)
    real_differs = STATUS.replace("Uid:\t2000000003\t", "Uid:\t0\t")
    assert parse_status(real_differs)[0] == 2000000003  # the effective uid is what the dyno runs as
    assert parse_status(STATUS.replace("Seccomp:\t2", "Seccomp:\t0"))[2] == 0
    with pytest.raises(ValueError, match="Uid"):
        parse_status("Name:\tx\n")


def test_environ_is_split_on_nul_and_keeps_equals_in_values() -> None:
    raw = b"PORT=5000\0DATABASE_URL=postgres://u:p@h/db?a=b\0broken\0=novalue\0DYNO=web.1\0"
    assert parse_environ(raw) == {"PORT": "5000", "DATABASE_URL": "postgres://u:p@h/db?a=b", "DYNO": "web.1"}
    assert session_environment({"TERM": "dumb", "PORT": "5000"}, {"TERM": "xterm"}) == {"TERM": "xterm",
                                                                                     "PORT": "5000"}


def test_open_files_limit_from_proc_limits() -> None:
    text = ("Limit                     Soft Limit           Hard Limit           Units     \n"
            "Max processes             96365                96365                processes \n"
            "Max open files            10000                10000                files     \n")
    assert parse_nofile(text) == (10000, 10000)
    assert parse_nofile(text.replace("10000                10000", "1024                 unlimited")) == (
        1024, resource.RLIM_INFINITY)
    with pytest.raises(ValueError, match="open-files"):
        parse_nofile(text.splitlines()[0])


def test_the_pids_check_refuses_only_past_the_limit() -> None:
    assert not over_pids_limit("255\n", "256\n")
    assert not over_pids_limit("256\n", "256\n")  # the session took the last slot, as a fork could
    assert over_pids_limit("257\n", "256\n")  # the join pushed it over: a fork would have failed
    assert not over_pids_limit("100000\n", "max\n")


def test_an_exec_spec_needs_a_command_and_known_stdio() -> None:
    spec = ExecSpec.from_json({"id": "a.web.1.x.exec.1", "dyno": "a.web.1.x", "argv": ["bash"], "cgroup_procs": []})
    assert (spec.stdio, spec.cwd) == ("pipes", "/app")
    with pytest.raises(ValueError, match="stdio"):
        ExecSpec.from_json({"id": "i", "dyno": "d", "argv": ["bash"], "cgroup_procs": [], "stdio": "log"})
    with pytest.raises(ValueError, match="command"):
        ExecSpec.from_json({"id": "i", "dyno": "d", "argv": [], "cgroup_procs": []})
    with pytest.raises(TypeError):
        ExecSpec.from_json({"id": "i", "dyno": "d", "argv": ["bash"], "cgroup_procs": [], "uid": 0})


def test_the_command_starts_after_the_options_or_after_double_dash() -> None:
    assert split_exec_argv(["-d", "web.1", "-a", "app", "ps", "aux"]) == (["-d", "web.1", "-a", "app"], ["ps", "aux"])
    assert split_exec_argv(["-d", "web.1", "--no-tty"]) == (["-d", "web.1", "--no-tty"], [])
    assert split_exec_argv(["-d", "web.1", "--", "ls", "-a", "x"]) == (["-d", "web.1"], ["ls", "-a", "x"])
    assert split_exec_argv(["--dyno", "web.1", "bash"]) == (["--dyno", "web.1"], ["bash"])


def test_spawner_refusals_become_one_line() -> None:
    assert _one_line("DynoFull: the dyno is at its process limit (256 processes and threads)") == \
        "the dyno is at its process limit (256 processes and threads)"
    assert _one_line("RuntimeError: boom | Traceback (most recent call last): | ...") == "boom"
    assert _one_line("[Errno 2] No such file or directory: '/proc/9/ns/net'") == \
        "[Errno 2] No such file or directory: '/proc/9/ns/net'"
    refused = SpawnerError("dyno x is not running")
    assert _spawner_error(refused) is refused
    assert _spawner_error(ExceptionGroup("nursery", [refused])) is refused
    assert _spawner_error(ExceptionGroup("nursery", [refused, ValueError("other")])) is None
    assert _spawner_error(ValueError("other")) is None
