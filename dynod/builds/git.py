"""`git push dynod main`: a bare repository per app whose pre-receive hook builds the push.

The hook runs inside git-receive-pack, before any ref moves. It refuses what dynod cannot
deploy (a branch other than main or master, a deletion), exports the pushed commit with
`git archive` (the pushed objects sit in git's quarantine, visible to the hook only, so the
daemon cannot read them from the repository itself), and streams it to dynod's API:

    POST /apps/{app}/builds?source=git&source_version=<sha>&user=<key id>
    Content-Type: application/x-tar, Content-Length: n, body: the tar of the commit

dynod answers 200 with ``application/x-ndjson``: one ``{"line": "..."}`` per output line while it
builds, then one ``{"build": {...}}`` (a BuildRecord's JSON; "status" is "succeeded" or "failed",
"error" the reason, "release" the new version, plus "web_url"). A refusal before the build
starts is the API's usual error answer (4xx, ``{"id", "message"}``). The hook prints every line
to its stdout, which git shows the pusher as ``remote:`` lines, and exits non-zero unless the
build succeeded, so a failed build rejects the push and the ref stays where it was.

Pushes to one app are serialized by an exclusive flock on ``<repo>/dynod-push.lock``, held from
the hook's start until git-receive-pack has exited (a child process keeps it, because git updates
the ref after the hook returns). A push that waited re-checks that the branch still is where its
pusher saw it; if another push moved it, it is rejected the way git rejects any stale push, so
the released code and the branch never disagree and no push is silently lost.

Over SSH, each authorized key's forced command is ``python -m dynod.builds.git serve KEYID``
(see keys.py): it accepts only ``git-receive-pack '<app>.git'`` and runs git-receive-pack on that
app's repository. Pushes from the host itself go straight to the repository path.
"""

from __future__ import annotations

# The hook is a process of its own on every push, started before dynod hears of the push: only
# what it needs before the source is on its way to dynod is imported here (no site, see
# HOOK_TEMPLATE); what reads the answer (json, the events, their dataclasses) is imported once
# the request is sent, while dynod unpacks and builds, and what only the SSH command or dynod
# itself uses is imported where it is used.
import fcntl
import os
import shlex
import socket
import subprocess
import sys
from typing import NamedTuple

from ..errors import NotFound, UserError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
    from typing import IO

DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
ZERO_SHA = "0" * 40
LOCK_FILE = "dynod-push.lock"
LOCK_KEEP_SECONDS = 120.0  # how long the lock may outlive the hook while git updates the ref
# -I -S: no site (the venv's site-packages and the editable install's finder: ~15 ms of a push
# on a quiet host, more on a busy one) and nothing from the pusher's environment (PYTHONPATH);
# dynod itself is found on the path the hook names, where the dynod that wrote it imports from.
HOOK_TEMPLATE = """#!/bin/sh
# Written by dynod: every push to this app is built before the branch moves.
exec {python} -I -S -c {code} pre-receive --app {app} --api-socket {socket}
"""
HOOK_CODE = "import sys; sys.path.insert(0, {root!r}); from dynod.builds.git import main; sys.exit(main())"


# --- the repositories --------------------------------------------------------------------


def repo_path(repos_dir: Path, app: str) -> Path:
    from ..model import check_app_name

    return repos_dir / f"{check_app_name(app)}.git"


def create_repo(repos_dir: Path, app: str, *, api_socket: str | Path, python: str = sys.executable) -> Path:
    """The app's bare repository with dynod's pre-receive hook; re-running refreshes the hook."""
    path = repo_path(repos_dir, app)
    if not path.exists():
        repos_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
                       check=True, capture_output=True)
        # Heroku accepts force pushes; deletes are refused by the hook with a message instead.
        subprocess.run(["git", "-C", str(path), "config", "receive.denyNonFastForwards", "false"], check=True)
    hook = path / "hooks" / "pre-receive"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds dynod/
    hook.write_text(HOOK_TEMPLATE.format(python=shlex.quote(python), code=shlex.quote(HOOK_CODE.format(root=root)),
                                         app=shlex.quote(app), socket=shlex.quote(str(api_socket))))
    hook.chmod(0o755)
    return path


def delete_repo(repos_dir: Path, app: str) -> None:
    import shutil

    shutil.rmtree(repo_path(repos_dir, app), ignore_errors=True)


# --- pure rules ------------------------------------------------------------------------------


class RefUpdate(NamedTuple):
    old: str
    new: str
    ref: str


def parse_ref_updates(lines: Iterable[str]) -> list[RefUpdate]:
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
    return updates


def deploy_update(updates: list[RefUpdate]) -> RefUpdate:
    """The one update dynod builds; a UserError (shown to the pusher) for anything else."""
    for update in updates:
        if update.ref not in DEPLOY_BRANCHES:
            name = update.ref.removeprefix("refs/heads/")
            raise UserError(f"Pushed to {name}: dynod deploys only main or master; "
                            f"push with `git push dynod {name}:main`.")
    if len(updates) != 1:
        raise UserError("Push main or master, not both, in one push.")
    update = updates[0]
    if update.new == ZERO_SHA:
        raise UserError(f"Deleting {update.ref.removeprefix('refs/heads/')} is not allowed: "
                        "it is what the app runs; destroy the app instead.")
    return update


def parse_ssh_command(command: str | None) -> tuple[str, str]:
    """SSH_ORIGINAL_COMMAND -> (git service, app). Only receive-pack of ``<app>.git`` passes."""
    import re

    from ..model import check_app_name

    if not command:
        raise UserError("This key can push apps to dynod with git; it opens no shell.")
    try:
        words = shlex.split(command)
    except ValueError:
        raise UserError("Unreadable git command; push with `git push dynod main`.") from None
    if len(words) == 3 and words[0] == "git":
        words = [f"git-{words[1]}", words[2]]
    if len(words) != 2 or words[0] not in ("git-receive-pack", "git-upload-pack"):
        raise UserError("Only `git push` is served here; this key opens no shell and runs no commands.")
    if words[0] != "git-receive-pack":
        raise UserError("dynod accepts pushes only; clone from where the app's code lives.")
    match = re.fullmatch(r"/?(?:~/)?([^/]+?)(?:\.git)?/?", words[1])
    if match is None:
        raise UserError(f"{words[1]} is not an app repository; the remote is ssh://HOST/<app>.git.")
    return words[0], check_app_name(match.group(1))


# --- the pre-receive hook --------------------------------------------------------------------


def _say(text: str, out: IO[str]) -> None:
    out.write(text + "\n")
    out.flush()


def _current(ref: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ZERO_SHA


def _push_lock(git_dir: str, out: IO[str]) -> int:
    """The push lock's descriptor, once held; closing it (or this process exiting) releases it."""
    fd = os.open(os.path.join(git_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("-----> Another push to this app is building; waiting for it to finish", out)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _archive_file(git_dir: str) -> IO[bytes]:
    """An unnamed file for the commit's tar, gone when closed (O_TMPFILE: tempfile's import
    costs the hook more than the file)."""
    try:
        fd = os.open(git_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:  # a filesystem without O_TMPFILE
        import tempfile

        return tempfile.TemporaryFile()
    return os.fdopen(fd, "w+b")


def _keep_lock_until_git_exits() -> None:
    """Hold the push lock until git-receive-pack (our parent) exits.

    git moves the ref only after this hook returns; releasing the lock earlier would let the
    next push check the branch before it moved. The flock lasts until the last copy of its
    descriptor closes, so a detached child that outlives the hook keeps it (and closes every
    stream git reads, or git would wait for it forever).
    """
    from ..linux.pidfd import keep_open_until_exit

    keep_open_until_exit(os.getppid(), LOCK_KEEP_SECONDS)


class _Answer:
    """An HTTP answer from dynod's API socket: status, reason and the body as a binary stream.

    The hook speaks HTTP/1.0 itself instead of importing http.client (which pulls in the email
    package: ~30 ms of a push's start on a quiet host, ~0.1 s on a loaded one). As a 1.0 client
    it gets a body that ends where the connection closes, not a chunked one, so the build's
    ndjson lines are read straight off the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.body = sock.makefile("rb")
        status_line = self.body.readline(8192).decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _BadAnswer(f"not an HTTP answer: {status_line.strip()[:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        for _ in range(100):  # the headers: nothing here needs them, but they must end
            if self.body.readline(8192) in (b"\r\n", b"\n", b""):
                break
        else:
            raise _BadAnswer("too many header lines")

    def close(self) -> None:
        self.body.close()
        self._sock.close()


class _BadAnswer(OSError):
    """What came back on dynod's socket is not an HTTP answer."""


def _request(api_socket: str | Path, method: str, target: str, *, timeout: float, headers: dict[str, str] | None = None,
             body: IO[bytes] | None = None, size: int = 0) -> _Answer:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(api_socket))
        head = [f"{method} {target} HTTP/1.0", "Host: localhost",
                *(f"{name}: {value}" for name, value in (headers or {}).items())]
        if body is not None:
            head.append(f"Content-Length: {size}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if body is not None:
            sock.sendfile(body, count=size)  # the tar straight from its file: no copies through Python
        _answer_readers()  # imported while dynod works on the request, not before it was sent
        return _Answer(sock)
    except BaseException:
        sock.close()
        raise


def _answer_readers() -> None:
    """Import what reads dynod's answers (json, the build events and their dataclasses) now, while
    dynod works on the request just sent: the readers' own imports are then only look-ups."""
    import json  # noqa: F401

    from . import events  # noqa: F401


def request_build(api_socket: str | Path, app: str, archive: IO[bytes], size: int, *, source_version: str,
                  user: str | None, out: IO[str], timeout: float = 3600.0) -> bool:
    """POST the source to dynod and print its output as it comes; True if the build succeeded."""
    import urllib.parse

    query = urllib.parse.urlencode({"source": "git", "source_version": source_version,
                                    **({"user": user} if user else {})})
    response: _Answer | None = None
    try:
        response = _request(api_socket, "POST", f"/apps/{app}/builds?{query}", timeout=timeout,
                            headers={"Content-Type": "application/x-tar", "Accept": "application/x-ndjson"},
                            body=archive, size=size)
        import json

        from .events import BuildFailed, BuildFinished, BuildOutput, decode_build_event

        if response.status != 200:
            try:
                message = json.loads(response.body.read(1 << 20)).get("message")
            except (ValueError, AttributeError):
                message = None
            _say(f" !     {message or f'dynod answered {response.status} {response.reason}'}", out)
            return False
        build: BuildFinished | None = None
        for raw in response.body:
            event = decode_build_event(raw)
            if isinstance(event, BuildOutput):
                _say(event.line, out)
            elif isinstance(event, BuildFailed):  # dynod could not run the build at all
                _say(f" !     Push rejected: {event.message}", out)
                return False
            else:
                build = event
        if build is None:
            _say(" !     dynod stopped answering before the build finished; the push is rejected.", out)
            return False
        if not build.succeeded:
            _say(f" !     Push rejected: {build.error or 'the build failed'}", out)
            return False
        if build.release is not None:
            _say(f"       Released v{build.release}", out)
        if build.web_url:
            _say(f"       {build.web_url} deployed to dynod", out)
        return True
    except UserError as exc:  # a line that is no build event: the stream was cut or garbled
        _say(f" !     {exc} The push is rejected.", out)
        return False
    except OSError as exc:
        _say(f" !     Cannot reach dynod at {api_socket} ({exc}); is it running?", out)
        return False
    finally:
        if response is not None:
            response.close()


def authorize_push(api_socket: str | Path, app: str, key_id: str, timeout: float = 30.0) -> str:
    """Who an SSH key pushes as, if it may push to ``app``; a UserError to show the pusher if not.

    A key belongs to a user (``dynoctl keys:add`` over a user's token) or to the administrator
    (added on the socket); a user's key may push only to apps its user owns or collaborates on,
    as their API token may. Asked of dynod over its socket, before the build sees any config."""
    import urllib.parse

    query = urllib.parse.urlencode({"key": key_id})
    try:
        response = _request(api_socket, "GET", f"/apps/{urllib.parse.quote(app, safe='')}/push-authorization?{query}",
                            timeout=timeout)
        try:
            body = response.body.read(1 << 20)
        finally:
            response.close()
    except OSError as exc:
        raise UserError(f"Cannot reach dynod at {api_socket} ({exc}); is it running?") from None
    import json

    try:
        answer = json.loads(body)
        if not isinstance(answer, dict):
            answer = {}
    except ValueError:
        answer = {}
    if response.status != 200:
        raise UserError(str(answer.get("message") or f"dynod answered {response.status} {response.reason}"))
    return str(answer.get("user") or key_id)


def pre_receive(stdin: IO[str], out: IO[str], *, app: str, api_socket: str | Path,
                user: str | None, key_id: str | None = None) -> int:
    """The hook: 0 lets git move the branch, anything else rejects the push."""
    try:
        update = deploy_update(parse_ref_updates(stdin))
        if key_id:  # an SSH push: the key must be allowed on this app
            user = authorize_push(api_socket, app, key_id)
    except UserError as exc:
        _say(f" !     {exc}", out)
        return 1
    git_dir = os.path.realpath(os.environ.get("GIT_DIR", "."))
    lock = _push_lock(git_dir, out)
    try:
        if _current(update.ref) != update.old:
            _say(" !     Another push moved this branch while this one waited; "
                 "fetch, merge and push again.", out)
            return 1
        branch = update.ref.removeprefix("refs/heads/")
        _say(f"-----> Building {app} from {branch} ({update.new[:8]})", out)
        with _archive_file(git_dir) as archive:
            subprocess.run(["git", "archive", "--format=tar", update.new], stdout=archive, check=True)
            size = archive.tell()
            archive.seek(0)
            ok = request_build(api_socket, app, archive, size, source_version=update.new, user=user, out=out)
        if ok:
            _keep_lock_until_git_exits()
        return 0 if ok else 1
    finally:
        os.close(lock)


# --- the SSH forced command -----------------------------------------------------------------


def serve(command: str | None, *, repos_dir: Path, key_id: str) -> list[str]:
    """The argv to exec for an SSH session's command, or a UserError to show the pusher."""
    service, app = parse_ssh_command(command)
    path = repo_path(repos_dir, app)
    if not path.is_dir():
        raise NotFound(f"No app named {app} here; create it with `dynoctl apps:create {app}`.")
    os.environ["DYNOD_KEY_ID"] = key_id  # the hook names the pusher in the build record
    return [service, str(path)]


def _hook_arguments(argv: list[str]) -> tuple[str, str] | None:
    """(app, api socket) from the hook's own line (HOOK_TEMPLATE), or None for argparse to read."""
    if len(argv) == 5 and argv[0] == "pre-receive" and argv[1] == "--app" and argv[3] == "--api-socket":
        return argv[2], argv[4]
    return None


def _serve_arguments(argv: list[str]) -> tuple[str, str] | None:
    """(repos dir, key id) from a forced command's line (keys.authorized_line), or None.

    By hand, not by argparse: a key id is URL-safe base64, so one in 64 begins with "-", which
    argparse takes for an option (lines written before keys.authorized_line put "--" before it).
    """
    if len(argv) == 4 and argv[0] == "serve" and argv[1] == "--repos":
        return argv[2], argv[3]
    if len(argv) == 5 and argv[0] == "serve" and argv[1] == "--repos" and argv[3] == "--":
        return argv[2], argv[4]
    return None


def _run_serve(repos: str, key_id: str) -> int:
    from pathlib import Path

    try:
        exec_argv = serve(os.environ.get("SSH_ORIGINAL_COMMAND"), repos_dir=Path(repos), key_id=key_id)
    except UserError as exc:
        sys.stderr.write(f"dynod: {exc}\n")
        return 1
    os.execvp(exec_argv[0], exec_argv)
    return 127  # unreachable: execvp replaced this process or raised


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The hook's line is parsed by hand: argparse's import is a few ms of every push.
    if (hook_arguments := _hook_arguments(argv)) is not None:
        return _run_hook(*hook_arguments)
    if (serve_arguments := _serve_arguments(argv)) is not None:
        return _run_serve(*serve_arguments)
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m dynod.builds.git")
    sub = parser.add_subparsers(dest="command", required=True)
    hook = sub.add_parser("pre-receive")
    hook.add_argument("--app", required=True)
    hook.add_argument("--api-socket", required=True, type=Path)
    ssh = sub.add_parser("serve")
    ssh.add_argument("--repos", required=True, type=Path)
    ssh.add_argument("key_id")
    args = parser.parse_args(argv)
    if args.command == "pre-receive":
        return _run_hook(args.app, str(args.api_socket))
    return _run_serve(str(args.repos), args.key_id)


def _run_hook(app: str, api_socket: str) -> int:
    # DYNOD_KEY_ID: an SSH push (set by `serve`); DYNOD_PUSHER: an HTTPS push, authorized by
    # dynod already (dynod/api/git_http.py); neither: a push on the host itself.
    key_id = os.environ.get("DYNOD_KEY_ID") or None
    user = os.environ.get("DYNOD_PUSHER") or key_id or "local"
    return pre_receive(sys.stdin, sys.stdout, app=app, api_socket=api_socket, user=user, key_id=key_id)


if __name__ == "__main__":
    sys.exit(main())
