"""Stack definitions, hashing, the post-build edits and the store's build protocol, without root:
debootstrap is replaced by a fake that writes a tiny tree, so every rule runs in milliseconds."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from dynod import stack
from dynod.errors import NotFound, UserError
from dynod.stack import (
    StackDefinition,
    StackStore,
    StackUser,
    apt_steps,
    build_namespace_argv,
    container_resolv_conf,
    debootstrap_argv,
    definition_hash,
    mounts_beneath,
    parse_definition,
    with_account,
)

REPO_ROOTFS = Path(__file__).resolve().parents[2] / "rootfs"

MINIMAL = """
suite = "trixie"
mirror = "http://deb.debian.org/debian"
packages = ["python3", "tini"]
"""


def test_minimal_definition_gets_the_defaults() -> None:
    d = parse_definition("tiny", MINIMAL)
    assert d == StackDefinition(name="tiny", suite="trixie", mirror="http://deb.debian.org/debian",
                                packages=("python3", "tini"))
    assert d.variant == "minbase" and d.components == ("main",)
    assert d.user == StackUser("dyno", "/app", "/bin/bash")


def test_repo_default_definition_is_valid_and_has_the_required_packages() -> None:
    d = parse_definition("debian-13", (REPO_ROOTFS / "debian-13.toml").read_text())
    assert d.suite == "trixie" and d.variant == "minbase"
    required = {"bash", "coreutils", "ca-certificates", "procps", "python3", "python3-venv",
                "python3-pip", "tini"}
    assert required <= set(d.packages)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("suite = 'trixie'\npackages = []", "missing 'mirror'"),
        ("mirror = 'http://m/debian'\npackages = []", "missing 'suite'"),
        (MINIMAL + "colour = 'blue'", "unknown key 'colour'"),
        (MINIMAL.replace('"tini"', '"Tini!"'), "invalid entry 'Tini!'"),
        (MINIMAL.replace('"tini"', '"python3"'), "lists an entry twice"),
        (MINIMAL.replace("http://deb.debian.org/debian", "ftp://x"), "http:// or https://"),
        (MINIMAL + "variant = 'fat'", "'variant' must be one of"),
        (MINIMAL + "packages2 = 1", "unknown key"),
        (MINIMAL + "[user]\nhome = 'app'", "absolute path"),
        (MINIMAL + "[user]\nname = 'Root Me'", "not a valid account name"),
        (MINIMAL + "[user]\nuid = 0", "[user] has unknown key 'uid'"),
        ("suite = ", "not valid TOML"),
    ],
)
def test_bad_definitions_are_one_line_user_errors(text: str, complaint: str) -> None:
    with pytest.raises(UserError) as err:
        parse_definition("tiny", text)
    assert complaint in str(err.value)
    assert "\n" not in str(err.value)


def test_stack_name_must_be_safe_for_a_directory() -> None:
    with pytest.raises(UserError, match="invalid stack name"):
        parse_definition("../etc", MINIMAL)


def test_hash_changes_with_content_and_ids_but_not_description() -> None:
    base = parse_definition("tiny", MINIMAL)
    h = definition_hash(base, 61000, 61000)
    assert len(h) == 64
    assert definition_hash(parse_definition("tiny", MINIMAL + "description = 'x'"), 61000, 61000) == h
    assert definition_hash(parse_definition("tiny", MINIMAL.replace('"tini"', '"tini", "git"')),
                           61000, 61000) != h
    assert definition_hash(base, 61001, 61000) != h
    assert definition_hash(base, 61000, 61001) != h
    assert definition_hash(parse_definition("tiny", MINIMAL + "[user]\nshell = '/bin/sh'"),
                           61000, 61000) != h


def test_debootstrap_argv(tmp_path: Path) -> None:
    (tmp_path / "trixie").write_text("")
    (tmp_path / "sid").write_text("")
    d = parse_definition("tiny", MINIMAL)
    assert debootstrap_argv(d, Path("/s/t"), Path("/s/.debs"), tmp_path) == [
        "debootstrap", "--variant=minbase", "--cache-dir=/s/.debs", "--components=main",
        "trixie", "/s/t", "http://deb.debian.org/debian"]


def test_a_suite_newer_than_the_hosts_debootstrap_is_bootstrapped_by_sids_script(tmp_path: Path) -> None:
    (tmp_path / "trixie").write_text("")
    (tmp_path / "sid").write_text("")
    d = parse_definition("tiny", MINIMAL.replace('"trixie"', '"forky"'))
    argv = debootstrap_argv(d, Path("/s/t"), Path("/s/.debs"), tmp_path)
    assert argv[-4:] == ["forky", "/s/t", "http://deb.debian.org/debian", str(tmp_path / "sid")]
    (tmp_path / "sid").unlink()  # no sid script either: debootstrap says what it lacks itself
    assert debootstrap_argv(d, Path("/s/t"), Path("/s/.debs"), tmp_path)[-1] == "http://deb.debian.org/debian"


ACCOUNTS = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "shadow": "root:*:20000:0:99999:7:::\n",
    "gshadow": "root:*::\n",
}


def test_account_is_added_with_locked_password() -> None:
    out = with_account(ACCOUNTS, StackUser(), 61000, 61000)
    assert out["passwd"].splitlines()[-1] == "dyno:x:61000:61000:dyno:/app:/bin/bash"
    assert out["passwd"].startswith(ACCOUNTS["passwd"])
    assert out["group"].splitlines()[-1] == "dyno:x:61000:"
    assert out["shadow"].splitlines()[-1].startswith("dyno:!:")
    assert out["gshadow"].splitlines()[-1] == "dyno:!::"


def test_account_edit_is_idempotent() -> None:
    once = with_account(ACCOUNTS, StackUser(), 61000, 61000)
    assert with_account(once, StackUser(), 61000, 61000) == once


def test_account_refuses_an_id_taken_by_another_account() -> None:
    with pytest.raises(UserError, match="gives uid 65534 to 'nobody'"):
        with_account(ACCOUNTS, StackUser(), 65534, 61000)
    with pytest.raises(UserError, match="gives gid 65534 to 'nogroup'"):
        with_account(ACCOUNTS, StackUser(), 61000, 65534)


def test_resolv_conf_keeps_a_real_nameserver() -> None:
    assert container_resolv_conf("nameserver 9.9.9.9\n", None) == ("nameserver 9.9.9.9\n", None)


def test_resolv_conf_skips_a_loopback_stub_for_the_upstream_list() -> None:
    text, warning = container_resolv_conf("nameserver 127.0.0.53\n", "nameserver 1.1.1.1\n")
    assert (text, warning) == ("nameserver 1.1.1.1\n", None)


def test_resolv_conf_warns_when_only_loopback_is_known() -> None:
    text, warning = container_resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n", None)
    assert text == "nameserver 127.0.0.1\nnameserver ::1\n"
    assert warning and "loopback" in warning


def test_mounts_beneath_lists_deepest_first_and_ignores_siblings() -> None:
    info = (
        "22 1 0:20 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:30 / /s/.building-x/rootfs/proc rw - proc proc rw\n"
        "31 22 0:31 / /s/.building-x/rootfs/dev/pts rw - devpts devpts rw\n"
        "32 22 0:32 / /s/.building-xy/rootfs/proc rw - proc proc rw\n"
        "33 22 0:33 / /s/.building-x/with\\040space rw - tmpfs t rw\n"
    )
    assert mounts_beneath(Path("/s/.building-x"), info) == [
        "/s/.building-x/rootfs/dev/pts", "/s/.building-x/rootfs/proc", "/s/.building-x/with space"]


# ---------------------------------------------------------------------------------------------
# The store, with a fake bootstrap


class FakeBootstrap:
    """Writes the few files finish_rootfs edits, as debootstrap would, and counts its runs."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.runs = 0
        self.fail = fail
        self.delay = delay

    def __call__(self, definition: StackDefinition, target: Path, cache_dir: Path, progress) -> None:
        self.runs += 1
        (target / "etc").mkdir(parents=True)
        for name, text in ACCOUNTS.items():
            (target / "etc" / name).write_text(text)
        (target / "usr/bin").mkdir(parents=True)
        (target / "usr/bin/tini").write_bytes(b"\x7fELF" + b"\0" * 5000)
        lists = target / "var/lib/apt/lists"
        lists.mkdir(parents=True)
        (lists / "deb.debian.org_debian_dists_trixie_InRelease").write_text("x")
        (target / "var/cache/apt").mkdir(parents=True)
        (target / "var/cache/apt/pkgcache.bin").write_text("x")
        (target / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
        progress("I: Base system installed successfully.")
        time.sleep(self.delay)
        if self.fail:
            (target / "debootstrap").mkdir()
            (target / "debootstrap/debootstrap.log").write_text("E: Couldn't find these debs: nope\n")
            raise UserError("Building stack tiny failed (debootstrap exit 1): "
                            "Couldn't find these debs: nope.")


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    d = tmp_path / "defs"
    d.mkdir()
    (d / "tiny.toml").write_text(MINIMAL)
    (d / "other.toml").write_text(MINIMAL.replace("trixie", "bookworm"))
    return d


def store_for(tmp_path: Path, definitions: Path, bootstrap: FakeBootstrap) -> StackStore:
    return StackStore(tmp_path / "stacks", definitions, default="tiny", bootstrap=bootstrap)


def test_unbuilt_stack_is_listed_but_has_no_path(tmp_path: Path, definitions: Path) -> None:
    store = store_for(tmp_path, definitions, FakeBootstrap())
    listed = store.list()
    assert [s["name"] for s in listed] == ["other", "tiny"]
    tiny = listed[1]
    assert tiny["built"] is False and tiny["path"] is None and tiny["size_bytes"] is None
    assert tiny["default"] is True and listed[0]["default"] is False
    assert tiny["hash"] == definition_hash(parse_definition("tiny", MINIMAL), 61000, 61000)
    assert store.is_built("tiny") is False
    with pytest.raises(NotFound, match="not built yet"):
        store.path("tiny")


def test_unknown_stack_names_the_known_ones(tmp_path: Path, definitions: Path) -> None:
    store = store_for(tmp_path, definitions, FakeBootstrap())
    with pytest.raises(NotFound, match="Unknown stack 'nope'; known stacks: other, tiny"):
        store.path("nope")
    with pytest.raises(NotFound):
        store.ensure("../tiny", lambda line: None)


def test_build_finishes_the_tree_and_names_it_by_hash(tmp_path: Path, definitions: Path) -> None:
    fake = FakeBootstrap()
    store = store_for(tmp_path, definitions, fake)
    lines: list[str] = []
    path = store.build("tiny", lines.append)
    digest = definition_hash(parse_definition("tiny", MINIMAL), 61000, 61000)
    assert path == tmp_path / "stacks" / f"tiny-{digest[:12]}" / "rootfs"
    assert store.path("tiny") == path and store.is_built("tiny")
    assert "dyno:x:61000:61000:dyno:/app:/bin/bash" in (path / "etc/passwd").read_text()
    assert (path / "app").is_dir() and list((path / "app").iterdir()) == []
    assert list((path / "var/lib/apt/lists").iterdir()) == []
    assert not (path / "var/cache/apt/pkgcache.bin").exists()
    assert not (path / "etc/resolv.conf").is_symlink()
    assert "nameserver" in (path / "etc/resolv.conf").read_text()
    assert (path / "etc/hostname").read_text() == "dyno\n"
    assert "I: Base system installed successfully." in lines
    assert any(line.startswith("Base system and packages installed in") for line in lines)
    meta = json.loads((path.parent / "stack.json").read_text())
    assert meta["hash"] == digest and meta["size_bytes"] > 5000
    listed = {s["name"]: s for s in store.list()}["tiny"]
    assert listed["built"] and listed["path"] == str(path) and listed["size_bytes"] == meta["size_bytes"]
    assert [p.name for p in (tmp_path / "stacks").iterdir() if p.name.startswith(".building")] == []


def test_ensure_builds_once(tmp_path: Path, definitions: Path) -> None:
    fake = FakeBootstrap()
    store = store_for(tmp_path, definitions, fake)
    first = store.ensure("tiny", lambda line: None)
    assert store.ensure("tiny", lambda line: None) == first
    assert fake.runs == 1


def test_force_rebuilds_in_place_of_the_old_tree(tmp_path: Path, definitions: Path) -> None:
    fake = FakeBootstrap()
    store = store_for(tmp_path, definitions, fake)
    path = store.build("tiny", lambda line: None)
    (path / "marker").write_text("old")
    assert store.build("tiny", lambda line: None, force=True) == path
    assert fake.runs == 2 and not (path / "marker").exists()
    assert [p.name for p in (tmp_path / "stacks").iterdir() if p.is_dir()] == [path.parent.name]


def test_failed_build_leaves_nothing_built_and_keeps_the_log(tmp_path: Path, definitions: Path) -> None:
    store = store_for(tmp_path, definitions, FakeBootstrap(fail=True))
    with pytest.raises(UserError) as err:
        store.build("tiny", lambda line: None)
    assert "Couldn't find these debs: nope" in str(err.value) and "Full log:" in str(err.value)
    assert not store.is_built("tiny")
    left = sorted(p.name for p in (tmp_path / "stacks").iterdir() if not p.name.endswith(".lock"))
    assert len(left) == 1 and left[0].endswith(".failed.log")


def test_a_crashed_builds_leftover_does_not_count_and_is_swept(tmp_path: Path, definitions: Path) -> None:
    store = store_for(tmp_path, definitions, FakeBootstrap())
    digest = definition_hash(parse_definition("tiny", MINIMAL), 61000, 61000)
    leftover = tmp_path / "stacks" / f".building-tiny-{digest[:12]}-99999"
    (leftover / "rootfs/etc").mkdir(parents=True)
    (leftover / "stack.json").write_text("{}")
    assert not store.is_built("tiny")
    lines: list[str] = []
    store.build("tiny", lines.append)
    assert not leftover.exists()
    assert any("left by an interrupted build" in line for line in lines)


def test_two_builders_never_race(tmp_path: Path, definitions: Path) -> None:
    fake = FakeBootstrap(delay=0.3)
    store = store_for(tmp_path, definitions, fake)
    results: list[Path] = []
    waits: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.ensure("tiny", waits.append)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.runs == 1
    assert results[0] == results[1]
    assert any(line.startswith("Waiting for another build of tiny") for line in waits)


def test_definitions_dir_comes_from_the_environment(tmp_path: Path, definitions: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOD_ROOTFS_DIR", str(definitions))
    assert StackStore(tmp_path / "stacks").names() == ["other", "tiny"]
    monkeypatch.delenv("DYNOD_ROOTFS_DIR")
    assert stack.default_definitions_dir() == REPO_ROOTFS
    monkeypatch.setenv("DYNOD_ROOTFS_DIR", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="DYNOD_ROOTFS_DIR"):
        StackStore(tmp_path / "stacks").list()


def test_cli_bad_input_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         definitions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOD_ROOTFS_DIR", str(definitions))
    monkeypatch.setenv("DYNOD_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    assert stack.main(["build", "--stacks-dir", str(tmp_path / "s"), "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown stack 'nope'") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        stack.main(["frobnicate"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_list_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, definitions: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOD_ROOTFS_DIR", str(definitions))
    (tmp_path / "d.toml").write_text('stack = "other"\n')
    monkeypatch.setenv("DYNOD_CONFIG", str(tmp_path / "d.toml"))
    assert stack.main(["list", "--json", "--stacks-dir", str(tmp_path / "s")]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["default"], s["built"]) for s in listed] == [("other", True, False),
                                                                       ("tiny", False, False)]


def test_apt_installs_every_named_package_then_checks() -> None:
    d = parse_definition("tiny", MINIMAL)
    steps = apt_steps(d, Path("/s/t"))
    assert [what for what, _ in steps] == ["apt-get install", "apt-get check"]
    prefix = build_namespace_argv(Path("/s/t"))
    assert steps[0][1] == [*prefix, "chroot", "/s/t", "apt-get", "-y", "-q", "--no-install-recommends",
                           "-o", "Dpkg::Use-Pty=0", "install", "python3", "tini"]
    assert all(argv[:len(prefix) + 2] == [*prefix, "chroot", "/s/t"] for _, argv in steps)


def test_apt_runs_with_proc_in_a_private_mount_and_pid_namespace() -> None:
    # /proc for maintainer scripts (the JRE's postinst runs java), mounted only inside a private
    # namespace so that it vanishes with the namespace instead of needing an unmount.
    argv = build_namespace_argv(Path("/s/t"))
    assert argv[0] == "unshare"
    assert {"--mount", "--propagation=private", "--pid", "--fork", "--kill-child"} <= set(argv)
    assert "--mount-proc=/s/t/proc" in argv


def test_cli_path_prints_the_built_rootfs(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          definitions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOD_ROOTFS_DIR", str(definitions))
    (tmp_path / "d.toml").write_text('stack = "tiny"\n')
    monkeypatch.setenv("DYNOD_CONFIG", str(tmp_path / "d.toml"))
    assert stack.main(["path", "--stacks-dir", str(tmp_path / "s")]) == 1
    assert "not built yet" in capsys.readouterr().err
    store = StackStore(tmp_path / "s", definitions, bootstrap=FakeBootstrap())
    built = store.build("tiny", lambda line: None)
    assert stack.main(["path", "--stacks-dir", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out == f"{built}\n"


# --- build images (a stack that extends another) ------------------------------------------------

BUILD_IMAGE = """
description = "tiny plus compilers"
extends = "tiny"
packages = ["build-essential", "tini"]
"""


def test_a_build_image_is_its_run_image_plus_its_own_packages(tmp_path: Path, definitions: Path) -> None:
    (definitions / "tiny-build.toml").write_text(BUILD_IMAGE)
    store = store_for(tmp_path, definitions, FakeBootstrap())
    build = store.definition("tiny-build")
    run = store.definition("tiny")
    assert build.packages == ("python3", "tini", "build-essential")  # the run image's first, no repeats
    assert (build.suite, build.mirror, build.user, build.extends) == (run.suite, run.mirror, run.user, "tiny")
    assert store.build_image("tiny") == "tiny-build"
    assert store.build_image("other") == "other"  # no build image: builds run on the stack itself
    # Changing the run image changes the build image's hash too.
    before = definition_hash(build, 61000, 61000)
    (definitions / "tiny.toml").write_text(MINIMAL.replace('"tini"]', '"tini", "curl"]'))
    assert definition_hash(store.definition("tiny-build"), 61000, 61000) != before


def test_ensure_build_builds_the_build_image(tmp_path: Path, definitions: Path) -> None:
    (definitions / "tiny-build.toml").write_text(BUILD_IMAGE)
    store = store_for(tmp_path, definitions, FakeBootstrap())
    path = store.ensure_build("tiny", lambda line: None)
    assert path.parent.name.startswith("tiny-build-") and store.is_built("tiny-build")
    assert store.ensure_build("other", lambda line: None).parent.name.startswith("other-")


def test_stacks_that_extend_nothing_keep_their_hash() -> None:
    # Hashes name built trees on every host: adding 'extends' must not rebuild existing stacks.
    d = parse_definition("tiny", MINIMAL)
    shaped = {"name": "tiny", "suite": "trixie", "mirror": "http://deb.debian.org/debian",
              "packages": ["python3", "tini"], "variant": "minbase", "components": ["main"],
              "user": {"name": "dyno", "home": "/app", "shell": "/bin/bash"}, "uid": 61000, "gid": 61000,
              "builder": 1}
    assert definition_hash(d, 61000, 61000) == hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize(("files", "complaint"), [
    ({"tiny-build.toml": BUILD_IMAGE + 'suite = "bookworm"\n'}, "'suite' comes from tiny.toml"),
    ({"tiny-build.toml": BUILD_IMAGE.replace('"tiny"', '"nope"')}, "Unknown stack 'nope'"),
    ({"tiny-build.toml": BUILD_IMAGE.replace('"tiny"', '"loop"'),
      "loop.toml": 'extends = "tiny-build"\npackages = []\n'}, "'extends' makes a loop"),
    ({"tiny-build.toml": BUILD_IMAGE.replace('"tiny"', '"../x"')}, "'extends' must name another stack"),
])
def test_bad_build_images_are_one_line_errors(tmp_path: Path, definitions: Path, files: dict[str, str],
                                              complaint: str) -> None:
    for name, text in files.items():
        (definitions / name).write_text(text)
    store = store_for(tmp_path, definitions, FakeBootstrap())
    with pytest.raises(UserError, match=complaint) as err:
        store.definition("tiny-build")
    assert "\n" not in str(err.value)


def test_the_definition_and_etc_files_are_pure_and_import_no_io() -> None:
    # The package's pure half must stay importable without its I/O half (debootstrap, mounts,
    # locks): a change that pulls the store or a syscall into it fails here.
    import subprocess
    import sys

    code = ("import sys, dynod.stack.definition, dynod.stack.etc_files; "
            "print(sorted(m for m in sys.modules if m.startswith('dynod') or m in ('subprocess', 'fcntl', 'ctypes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(["dynod", "dynod.errors", "dynod.exports", "dynod.stack",
                                              "dynod.stack.definition", "dynod.stack.etc_files"]))


def test_the_package_exports_each_public_name_from_its_module() -> None:
    from dynod.stack import bootstrap, definition, store

    assert stack.StackStore is store.StackStore
    assert stack.parse_definition is definition.parse_definition
    assert stack.run_debootstrap is bootstrap.run_debootstrap
    assert "StackStore" in dir(stack) and "StackStore" in stack.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        stack.nothing_here  # noqa: B018


def test_stack_key_names_the_tree_by_the_definition_digest() -> None:
    d = parse_definition("tiny", MINIMAL)
    digest, key = stack.stack_key(d, 61000, 61000)
    assert digest == definition_hash(d, 61000, 61000) and key == f"tiny-{digest[:12]}"
    assert stack.is_stack_name("debian-13") and not stack.is_stack_name("../etc")
