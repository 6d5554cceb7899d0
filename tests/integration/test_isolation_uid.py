"""Each app runs as a uid of its own (issue 9 item 5), through a real dynod.

The attacks: with one uid for every app, app A read app B's secret from the per-uid kernel
keyring, and could use up per-uid limits for all. Both apps here are unconfined (no seccomp), so
the keyring calls reach the kernel and only the uid keeps them apart; the control is the same
uid, where the secret is found.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

APP_A = f"ua{secrets.token_hex(3)}"
APP_B = f"ub{secrets.token_hex(3)}"

# add: store a secret in the user keyring (@u, shared by every process of the uid, in the kernel);
# find: look for it by description; clear: empty @u (the test leaves no key behind).
KEYS = r'''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
USER_KEYRING = ctypes.c_long(-4)
what = sys.argv[1]
if what == "add":
    r = libc.syscall(248, b"user", b"dynod-test-secret", b"s3cr3t", 6, USER_KEYRING)
    print("added" if r >= 0 else f"add errno={ctypes.get_errno()}")
elif what == "find":
    r = libc.syscall(250, 10, USER_KEYRING, b"user", b"dynod-test-secret", 0)  # KEYCTL_SEARCH
    if r < 0:
        print(f"not found errno={ctypes.get_errno()}")
    else:
        buf = ctypes.create_string_buffer(64)
        n = libc.syscall(250, 11, ctypes.c_long(r), buf, 64)  # KEYCTL_READ
        print("found", buf.raw[:n].decode())
elif what == "clear":
    print("cleared" if libc.syscall(250, 7, USER_KEYRING) >= 0 else f"clear errno={ctypes.get_errno()}")
'''


# A uid range of this module's own: other test dynods on the host hand out the default range from
# its start, and the limit-exhaustion test must not touch their apps' uids.
UID_FIRST = 2_100_000_000 + int(secrets.token_hex(2), 16) * 100

HOG = r'''
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while True:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        break
    held.append(fd)
print(f"holding {len(held)} inotify instances, then errno={ctypes.get_errno()}", flush=True)
time.sleep(3600)
'''
ONE_INOTIFY = ("python3 -c \"import ctypes, os; l = ctypes.CDLL(None, use_errno=True); "
               "fd = l.inotify_init1(os.O_CLOEXEC); "
               "print('inotify', 'ok' if fd >= 0 else f'errno={ctypes.get_errno()}')\"")


@pytest.fixture(scope="module")
def uid_dynod() -> Iterator[Dynod]:
    with running_dynod(dynos_extra=f'seccomp_unconfined_apps = ["{APP_A}", "{APP_B}"]\n'
                                   f'uid_first = {UID_FIRST}\nuid_count = 100') as d:
        yield d


@pytest.fixture(scope="module")
def two_apps(uid_dynod: Dynod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    src = write_app(tmp_path_factory.mktemp("src"), "web: python3 web.py\nhog: python3 hog.py\n",
                    {"keys.py": KEYS, "hog.py": HOG})
    for name in (APP_A, APP_B):
        uid_dynod.ctl("apps:create", name)
        uid_dynod.ctl("deploy", str(src), "-a", name)
    yield APP_A, APP_B
    for name in (APP_A, APP_B):
        uid_dynod.ctl("run", "-a", name, "--", "python3", "/app/keys.py", "clear", check=False, timeout=60)
        uid_dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


def run(d: Dynod, app: str, script: str) -> str:
    result = d.ctl("run", "-a", app, "--", "bash", "-c", script, check=False, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_each_app_has_its_own_uid_and_the_dyno_user_still_makes_sense(uid_dynod: Dynod,
                                                                      two_apps: tuple[str, str]) -> None:
    a, b = two_apps
    script = ("echo uid=$(id -u) gid=$(id -g) user=$(whoami) home=$HOME; id; "
              "stat -c 'app-owner=%U:%G app-ids=%u:%g' /app; stat -c 'web-owner=%U' /app/web.py; "
              "echo data > /app/scratch && stat -c 'written=%U' /app/scratch; "
              "mkdir -p /app/tmp/cache && echo made-dir; "
              "getent passwd dyno")
    out_a, out_b = run(uid_dynod, a, script), run(uid_dynod, b, script)
    uid_a = int(out_a.split("uid=")[1].split()[0])
    uid_b = int(out_b.split("uid=")[1].split()[0])
    assert uid_a != uid_b and {uid_a, uid_b} <= set(range(UID_FIRST, UID_FIRST + 100))
    for out, uid in ((out_a, uid_a), (out_b, uid_b)):
        assert f"gid={uid} user=dyno home=/app" in out, out
        assert "app-owner=dyno:dyno" in out and "web-owner=dyno" in out and "written=dyno" in out
        assert "made-dir" in out and f"dyno:x:{uid}:{uid}:dyno:/app:/bin/bash" in out
    # The uid is the app's for good: a second dyno of A runs as the same one.
    assert run(uid_dynod, a, "echo uid=$(id -u)").strip() == f"uid={uid_a}"


def test_one_app_cannot_read_another_app_s_keyring_secret(uid_dynod: Dynod, two_apps: tuple[str, str]) -> None:
    a, b = two_apps
    assert "added" in run(uid_dynod, a, "python3 /app/keys.py add")
    try:
        assert "found s3cr3t" in run(uid_dynod, a, "python3 /app/keys.py find")  # the control: same uid
        assert "not found errno=126" in run(uid_dynod, b, "python3 /app/keys.py find")  # ENOKEY
    finally:
        run(uid_dynod, a, "python3 /app/keys.py clear")


def test_dynos_of_two_apps_run_as_different_host_uids_and_see_no_other_process(
        uid_dynod: Dynod, two_apps: tuple[str, str]) -> None:
    a, b = two_apps
    uid_dynod.ctl("ps:scale", "web=1", "-a", a)
    uid_dynod.ctl("ps:scale", "web=1", "-a", b)
    try:
        uid_dynod.up(a, 1)
        uid_dynod.up(b, 1)
        host = subprocess.run(["ps", "-eo", "uid,args"], capture_output=True, text=True).stdout
        uids = {line.split()[0] for line in host.splitlines() if "python3 web.py" in line
                and UID_FIRST <= int(line.split()[0]) < UID_FIRST + 100}
        assert len(uids) == 2, host  # one per app
        seen = run(uid_dynod, b, "ps -eo uid,args --no-headers")
        assert "web.py" not in seen  # its own PID namespace: not even its own app's web dyno
    finally:
        uid_dynod.ctl("ps:scale", "web=0", "-a", a)
        uid_dynod.ctl("ps:scale", "web=0", "-a", b)


def test_a_build_runs_as_its_app_s_uid_and_writes_what_the_slug_packer_reads(
        uid_dynod: Dynod, two_apps: tuple[str, str], tmp_path: Path) -> None:
    a, _ = two_apps
    package = '{"name": "probe", "version": "1.0.0", "scripts": {"postinstall": "sh ./probe.sh"}}'
    src = write_app(tmp_path / "src", "web: python3 web.py\nhog: python3 hog.py\n", {
        "package.json": package, "keys.py": KEYS, "hog.py": HOG,
        "probe.sh": "echo build-uid=$(id -u) build-user=$(whoami); echo made > /app/built-file\n",
    })
    out = uid_dynod.ctl("deploy", str(src), "-a", a).stdout
    uid_a = int(run(uid_dynod, a, "id -u").strip())
    assert f"build-uid={uid_a} build-user=dyno" in out
    assert "made\n" == run(uid_dynod, a, "cat /app/built-file")  # in the slug, owned as it should be


def test_one_app_exhausting_a_per_uid_limit_leaves_the_others_theirs(uid_dynod: Dynod,
                                                                     two_apps: tuple[str, str]) -> None:
    """inotify instances are counted per uid (fs.inotify.max_user_instances): A takes all of its."""
    a, b = two_apps
    uid_dynod.ctl("ps:scale", "hog=1", "-a", a)
    try:
        uid_dynod.wait_for(lambda: "holding" in uid_dynod.logs(a), timeout=30, what="the hog holding its limit")
        assert "errno=24" in uid_dynod.logs(a)  # EMFILE: the uid's limit, reached
        assert "inotify errno=24" in run(uid_dynod, a, ONE_INOTIFY)  # the control: A itself has none left
        assert "inotify ok" in run(uid_dynod, b, ONE_INOTIFY)
    finally:
        uid_dynod.ctl("ps:scale", "hog=0", "-a", a)
