"""dynoctl's Heroku-style layouts, as pure functions of API data."""

from __future__ import annotations

from datetime import UTC

from dynod.cli.output import human_size, key_values, table, time_ago
from dynod.cli.ps import format_dyno_types, format_ps
from dynod.cli.releases import format_release_info, format_releases

NOON = 1795694400.0  # 2026-11-26T12:00:00Z


def test_time_ago_like_heroku() -> None:
    assert time_ago("2026-11-26T12:00:00Z", NOON + 42, UTC) == "2026/11/26 12:00:00 +0000 (~ 42s ago)"
    assert time_ago("2026-11-26T12:00:00Z", NOON + 300, UTC) == "2026/11/26 12:00:00 +0000 (~ 5m ago)"
    assert time_ago("2026-11-26T12:00:00+00:00", NOON + 7200, UTC) == "2026/11/26 12:00:00 +0000 (~ 2h ago)"
    assert time_ago("2026-11-26T12:00:00Z", NOON + 3 * 86400, UTC) == "2026/11/26 12:00:00 +0000"
    assert time_ago(None, NOON) == ""
    # Heroku's boundaries are inclusive: a minute is still "60s", an hour still "60m".
    assert time_ago("2026-11-26T12:00:00Z", NOON + 60, UTC).endswith("(~ 60s ago)")
    assert time_ago("2026-11-26T12:00:00Z", NOON + 3600, UTC).endswith("(~ 60m ago)")


def test_key_values_align_values() -> None:
    assert key_values([("A", "1"), ("LONGER", "two"), ("E", "")]) == ["A:      1", "LONGER: two", "E:"]


def test_table_pads_columns_under_a_rule() -> None:
    assert table(("type", "qty"), [("web", 2), ("worker", 10)]) == [
        "type    qty", "------  ---", "web     2", "worker  10"]


def test_human_size() -> None:
    assert [human_size(n) for n in (None, 12, 2048, 5 * 1024 * 1024, 3 * 1024 ** 3)] == [
        "-", "12 B", "2.0 KB", "5.0 MB", "3.0 GB"]


RELEASES = [
    {"version": 1, "description": "Initial release", "created_at": "2026-11-26T10:59:00Z", "current": False,
     "status": "succeeded"},
    {"version": 2, "description": "Set A config vars", "created_at": "2026-11-26T11:55:00Z", "current": False,
     "status": "succeeded"},
    {"version": 3, "description": "Deploy 3f2a1c", "created_at": "2026-11-26T11:55:00Z", "current": True,
     "status": "succeeded", "slug": {"id": "3f2a1c" + "0" * 58}, "process_types": {"web": "x", "worker": "y"},
     "config_var_names": ["A"]},
    {"version": 4, "description": "Deploy 9e8d7c", "created_at": "2026-11-26T11:58:00Z", "current": False,
     "status": "failed"},
]


def test_releases_newest_first_with_current_in_the_header() -> None:
    assert format_releases("myapp", RELEASES, NOON, UTC) == [
        "=== myapp Releases - Current: v3",
        "v4  Deploy 9e8d7c (release command failed)  2026/11/26 11:58:00 +0000 (~ 2m ago)",
        "v3  Deploy 3f2a1c                           2026/11/26 11:55:00 +0000 (~ 5m ago)",
        "v2  Set A config vars                       2026/11/26 11:55:00 +0000 (~ 5m ago)",
        "v1  Initial release                         2026/11/26 10:59:00 +0000 (~ 1h ago)",
    ]
    assert format_releases("myapp", [], NOON, UTC) == ["=== myapp Releases - Current: none"]


def test_release_info() -> None:
    lines = format_release_info(RELEASES[2], NOON, UTC)
    assert lines[0] == "=== Release v3"
    assert "Process Types: web, worker" in lines
    assert "Change:        Deploy 3f2a1c" in lines
    assert "Current:       yes" in lines


def _dyno(name: str, state: str = "up", size: str = "standard-1X", command: str = "python app.py") -> dict:
    return {"name": name, "type": name.split(".")[0], "state": state, "size": size, "command": command,
            "release": {"version": 3}, "created_at": "2026-11-26T11:55:00Z", "updated_at": "2026-11-26T11:55:00Z"}


def test_ps_groups_by_type_web_first_one_offs_last() -> None:
    dynos = [_dyno("worker.1", command="python worker.py"), _dyno("web.10"), _dyno("web.2", "crashed"),
             _dyno("run.4821", command="bash")]
    formation = [{"type": "web", "quantity": 2, "size": "standard-1X", "command": "python app.py"},
                 {"type": "worker", "quantity": 1, "size": "standard-1X", "command": "python worker.py"}]
    assert format_ps("myapp", dynos, formation, NOON, UTC) == [
        "=== web (standard-1X): python app.py (2)",
        "web.2: crashed 2026/11/26 11:55:00 +0000 (~ 5m ago)",
        "web.10: up 2026/11/26 11:55:00 +0000 (~ 5m ago)",
        "",
        "=== worker (standard-1X): python worker.py (1)",
        "worker.1: up 2026/11/26 11:55:00 +0000 (~ 5m ago)",
        "",
        "=== run: one-off processes (1)",
        "run.4821 (standard-1X): up 2026/11/26 11:55:00 +0000 (~ 5m ago): bash",
    ]
    assert format_ps("myapp", [], formation, NOON) == ["No dynos on myapp."]


def test_dyno_types_table() -> None:
    formation = [{"type": "worker", "quantity": 0, "size": "standard-2X"},
                 {"type": "web", "quantity": 2, "size": "standard-1X"}]
    assert format_dyno_types(formation) == [
        "=== Dyno Types", "type    size         qty", "------  -----------  ---",
        "web     standard-1X  2", "worker  standard-2X  0"]
