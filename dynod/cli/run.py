"""run CMD... (attached one-off dyno) and run:detached CMD... (output to the log stream).

Attached: with a terminal on stdin, the terminal goes raw so every key (Ctrl-C included) reaches
the dyno as a byte, and SIGWINCH becomes a RESIZE frame; without one, stdin/stdout/stderr are
piped through. dynoctl exits with the command's exit code. One select loop over the terminal,
the API socket and a signal wake-up pipe: no threads, nothing to import beyond the stdlib.

Start-up is most of what `dynoctl run -- true` costs on the client, so the usual argument shapes
(-a APP, --app=APP, -s, -e, --no-tty, --socket, --host) are read here without argparse, and the
command's words are quoted without shlex (both bring ``re``); anything else, --help and every
mistake included, goes to argparse, which says what was wrong exactly as for other commands.
"""

from __future__ import annotations

# ``_signal`` is ``signal`` without its IntEnum wrappers (which import ``enum``: ~4 ms of every
# `dynoctl run`); the calls and constants used here are the same functions and ints.
import _signal as signal
import os
import select

from ..api.attach import FrameType
from ..api.client import AttachSession, handle_server_frame
from ..errors import UserError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .command import Context
    from .parser import CommandParser

# Stop reading stdin while this much is queued for a dyno that is not reading it.
MAX_QUEUED = 1024 * 1024
# A shell killed by SIGPIPE reports 128 + 13; a `dynoctl run ... | head` should look the same.
EXIT_BROKEN_PIPE = 141


class RunOptions:
    """dynoctl's options to run and run:detached, the same names argparse would give them."""

    __slots__ = ("app", "size", "env", "no_tty", "socket", "host")

    def __init__(self, app: str | None = None, size: str | None = None, env: list[str] | None = None,
                 no_tty: bool = False, socket: str | None = None, host: str | None = None) -> None:
        self.app = app
        self.size = size
        self.env = env if env is not None else []
        self.no_tty = no_tty
        self.socket = socket
        self.host = host

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunOptions) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return "RunOptions(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


def split_command(ctx: Context, command: str, argv: list[str], description: str,
                  ) -> tuple[RunOptions, str]:
    """dynoctl's options come first; the command is everything from its first word (or after --).

    One word is a shell command line, parsed by the dyno's shell (`dynoctl run 'echo $HOME'`
    expands $HOME in the dyno, as on Heroku). Several words are an argv and keep their
    boundaries (`dynoctl run -- sh -c 'echo hi; id'` runs exactly that), which Heroku's plain
    join with spaces would break.
    """
    words: list[str] = []
    explicit = "--" in argv  # after --, every word is the command's, a trailing -a included
    if explicit:
        at = argv.index("--")
        argv, words = argv[:at], argv[at + 1:]
    else:
        for index, word in enumerate(argv):
            # An option's value never starts the command: the options here all take one, but flags.
            if not word.startswith("-") and (index == 0 or not _takes_value(argv[index - 1])):
                argv, words = argv[:index], argv[index:]
                break
    if not explicit and len(words) >= 3 and words[-2] in ("-a", "--app") and "-a" not in argv \
            and "--app" not in argv:
        # Heroku's habit, `run bash -a APP`: a trailing -a names the app, not an argument.
        argv, words = [*argv, *words[-2:]], words[:-2]
    options = quick_options(command, argv)
    if options is None:
        args = ctx.parse(_parser(ctx, command, description), argv)
        options = RunOptions(args.app, args.size, args.env, getattr(args, "no_tty", False), args.socket, args.host)
    else:
        ctx.use_endpoint(options.socket, options.host)
    if not words:
        raise UserError(f"Usage: dynoctl {command} [-a APP] [-s SIZE] [-e K=V;...] [--] COMMAND...")
    return options, words[0] if len(words) == 1 else shell_join(words)


# The options that take a value, and the RunOptions field each sets.
_VALUE_OPTIONS = {"-a": "app", "--app": "app", "-s": "size", "--size": "size", "-e": "env", "--env": "env",
                  "--socket": "socket", "--host": "host"}


def _takes_value(word: str) -> bool:
    return word in _VALUE_OPTIONS


def quick_options(command: str, argv: list[str]) -> RunOptions | None:
    """``argv`` (dynoctl's options, the command's words removed) read as argparse would read it,
    or None for anything but the plain shapes (-a APP, --app APP, --app=APP, --no-tty...):
    help, abbreviations, joined short options, values that look like options or are empty, and
    every mistake are argparse's to read and to explain."""
    options = RunOptions()
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--no-tty" and command == "run":
            options.no_tty = True
            index += 1
            continue
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        field = _VALUE_OPTIONS.get(name)
        if field is None:
            return None
        if equals:
            index += 1
        elif index + 1 < len(argv):
            value = argv[index + 1]
            index += 2
        else:
            return None
        if not value or value.startswith("-"):
            return None
        if field == "env":
            options.env.append(value)
        else:
            setattr(options, field, value)
    return options


# The characters shlex.quote leaves unquoted (its [\w@%+=:,./-], ASCII only).
_SHELL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")


def shell_join(words: list[str]) -> str:
    """``shlex.join(words)``, without importing shlex and the ``re`` it brings."""
    return " ".join(_shell_quote(word) for word in words)


def _shell_quote(word: str) -> str:
    if not word:
        return "''"
    if _SHELL_SAFE.issuperset(word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def _parser(ctx: Context, command: str, description: str) -> CommandParser:
    parser = ctx.parser(command, description)
    parser.add_argument("-s", "--size", help="dyno size (default: standard-1X)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="'K=V;K2=V2'",
                        help="extra environment for this dyno, ';'-separated, repeatable")
    if command == "run":
        parser.add_argument("--no-tty", action="store_true", help="never allocate a terminal")
    return parser


def parse_env(values: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in values:
        for pair in value.split(";"):
            if not pair.strip():
                continue
            name, sep, setting = pair.partition("=")
            if not sep or not name.strip():
                raise UserError(f"Invalid -e value {pair!r}: write it as NAME=value (';' between several).")
            env[name.strip()] = setting
    return env


def run_detached(ctx: Context, argv: list[str]) -> int:
    args, command = split_command(ctx, "run:detached", argv, "Run a one-off dyno, its output to the logs.")
    env = parse_env(args.env)
    app = ctx.app(args)
    ctx.progress(f"Running {command} on {app}... ")
    dyno = ctx.client().run_detached(app, command, args.size, env)
    ctx.out(f"done, {dyno['name']} ({dyno['size']})")
    ctx.out(f"Run dynoctl logs --app {app} --ps {dyno['name']} to view the output.")
    return 0


def run(ctx: Context, argv: list[str]) -> int:
    args, command = split_command(ctx, "run", argv, "Run a one-off dyno attached to this terminal.")
    env = parse_env(args.env)
    app = ctx.app(args)
    stdin_fd, stdout_fd, stderr_fd = ctx.fds
    use_tty = not args.no_tty and os.isatty(stdin_fd)
    rows, cols = _terminal_size(stdin_fd) if use_tty else (24, 80)
    ctx.stdout.flush()
    session = ctx.client().run_attached(app, command, size=args.size, env=env, tty=use_tty,
                                        rows=rows, cols=cols)
    with session:
        return _pump(session, stdin_fd, stdout_fd, stderr_fd, use_tty)


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return size.lines or 24, size.columns or 80


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump(session: AttachSession, stdin_fd: int, stdout_fd: int, stderr_fd: int, use_tty: bool) -> int:
    if use_tty:  # only a terminal needs them: pipes start without
        import termios
        import tty

    saved_mode = termios.tcgetattr(stdin_fd) if use_tty else None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    resize_handled = False
    previous_wakeup = -1
    previous_handler = None
    try:
        if use_tty:
            try:
                # A Python-level handler must exist for SIGWINCH to interrupt select at all;
                # the wake-up fd carries the news into the loop.
                previous_handler = signal.signal(signal.SIGWINCH, lambda signum, frame: None)
                previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
                resize_handled = True
            except ValueError:
                pass  # not the main thread (an embedding program): no resize, the rest works
            tty.setraw(stdin_fd)
        size = _terminal_size(stdin_fd) if use_tty else None
        stdin_open = True

        def output(kind: FrameType, data: bytes) -> None:
            _write_all(stderr_fd if kind == FrameType.STDERR else stdout_fd, data)

        while True:
            session.flush()
            if not session.has_ready_frames:
                readers: list[object] = [session]
                if stdin_open and session.queued < MAX_QUEUED:
                    readers.append(stdin_fd)
                if resize_handled:
                    readers.append(wake_r)
                writers = [session] if session.queued else []
                ready, _, _ = select.select(readers, writers, [])
                if wake_r in ready:
                    _drain(wake_r)
                    new_size = _terminal_size(stdin_fd)
                    if new_size != size:
                        size = new_size
                        session.resize(*size)
                if stdin_fd in ready:
                    data = os.read(stdin_fd, 64 * 1024)
                    if data:
                        session.send_stdin(data)
                    else:
                        stdin_open = False
                        session.close_stdin()
                if session not in ready:
                    continue
            frames = session.receive()
            if frames is None:
                raise UserError("dynod closed the attach stream before the dyno exited; see its log.")
            for frame in frames:
                try:
                    code = handle_server_frame(frame, output)
                except BrokenPipeError:
                    return EXIT_BROKEN_PIPE  # closing the session makes dynod stop the dyno
                if code is not None:
                    return code
    finally:
        if saved_mode is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_mode)
        if resize_handled:
            signal.set_wakeup_fd(previous_wakeup)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL if previous_handler is None else previous_handler)
        os.close(wake_r)
        os.close(wake_w)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
