"""Run the engines' own programs: stream a dump out of one, feed a dump into one, run a short
query; fail with the program's own message. The programs inherit Coffre's environment, where
the engines' passwords are (PGPASSWORD, MYSQL_PWD): never in a command line."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, BinaryIO, TypeVar

from coffre.core import posix
from coffre.core.errors import CoffreError
from coffre.core.human import human_duration, human_size
from coffre.core.i18n import _
from coffre.core.posix import Account

T = TypeVar("T")
ERROR_TAIL = 4000  # characters of a program's error output kept for the message


def find_program(*names: str, extra_dirs: Iterable[str] = ()) -> str:
    """The first of `names` found in PATH or in `extra_dirs`."""
    for d in extra_dirs:
        for n in names:
            p = os.path.join(d, n)
            if os.access(p, os.X_OK):
                return p
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    raise CoffreError(_("{program} is not installed").format(program=names[0]),
                      _("install the package that provides {program}").format(program=names[0]))


def exit_reason(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return _("was killed by signal {number} ({name})").format(number=-status, name=name)
    return _("failed with exit status {status}").format(status=status)


class _Tail:
    """Read a program's error output in a thread, keeping its end."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.data = b""
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in iter(lambda: self._stream.read(65536), b""):
            self.data = (self.data + line)[-ERROR_TAIL * 4:]

    def text(self) -> str:
        self._thread.join()
        return self.data.decode("utf-8", "replace").strip()[-ERROR_TAIL:]


class _Whole(_Tail):
    """Read a program's output in a thread, all of it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._parts: list[bytes] = []  # before the thread starts
        super().__init__(stream)

    def _read(self) -> None:
        for part in iter(lambda: self._stream.read(65536), b""):
            self._parts.append(part)

    def text(self) -> str:
        self._thread.join()
        return b"".join(self._parts).decode("utf-8", "replace")


def _failure(what: str, status: int, stderr: str, after: str) -> CoffreError:
    return CoffreError(f"{what} {exit_reason(status)}{after}" + (f"\n{stderr}" if stderr else ""))


def stream_command(
    argv: list[str], consume: Callable[[BinaryIO], T], what: str,
    after: str | None = None,
) -> T:
    """Run `argv`, hand its output to `consume` (which reads it to the end), and fail with the
    program's own error message if it does not exit with 0."""
    proc = _start(argv, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout
    if after is None:
        after = _("; no snapshot was written")
    return _while_running(proc, lambda: consume(stdout), what, _Tail(proc.stderr), after)  # type: ignore[arg-type]


def _while_running(proc: subprocess.Popen[bytes], work: Callable[[], T], what: str, err: _Tail,
                   after: str = "") -> T:
    """`work` (reading or feeding `proc`) while it runs: `proc` is killed if `work` fails, and
    fails with its own message if it exits with anything but 0."""
    try:
        result = work()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    status = proc.wait()
    if status != 0:
        raise _failure(what, status, err.text(), after)
    return result


def feed_command(
    argv: list[str], chunks: Iterable[bytes], what: str, env: dict[str, str] | None = None,
) -> str:
    """Run `argv` with `chunks` as its input; its output, or its own error message. `env`:
    the program's whole environment (default: Coffre's)."""
    proc = _start(argv, stdin=subprocess.PIPE, merge=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    out, stdin = _Tail(proc.stdout), proc.stdin

    def feed() -> bool:
        """True if the program stopped reading (its exit status and message say why)."""
        try:
            for c in chunks:
                stdin.write(c)
            stdin.close()
        except BrokenPipeError:
            return True
        return False

    stopped_reading = _while_running(proc, feed, what, out)
    text = out.text()
    if stopped_reading:
        raise CoffreError(_("{what} stopped reading before the end of the dump").format(what=what)
                          + (f"\n{text}" if text else ""))
    return text


def as_account(account: Account | None) -> dict[str, Any]:
    """subprocess arguments that run a program as `account` (None: as Coffre), with none of
    Coffre's groups, from the root folder."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "cwd": "/"}


HEAD_LIMIT = 1 << 30  # a dump's table of contents is far smaller


def read_head(argv: list[str], chunks: Iterable[bytes], what: str,
              limit: int = HEAD_LIMIT) -> tuple[str, Iterator[bytes]]:
    """Run `argv` on the start of the stream `chunks`, for a program that reads what it needs
    and exits (pg_restore --list reads a dump's table of contents); its output, and the whole
    stream again: the chunks it was given, then the rest."""
    it = iter(chunks)
    seen: list[bytes] = []
    proc = _start(argv, stdin=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, stdin = _Whole(proc.stdout), proc.stdin
    _while_running(proc, lambda: _feed_until_done(stdin, it, seen, limit, what), what, _Tail(proc.stderr))
    return out.text(), itertools.chain(seen, it)


def _feed_until_done(stdin: IO[bytes], chunks: Iterator[bytes], seen: list[bytes], limit: int,
                     what: str) -> None:
    """Write chunks (each kept in `seen`) until the reader stops reading or they run out."""
    size = 0
    try:
        for c in chunks:
            seen.append(c)
            size += len(c)
            if size > limit:
                raise CoffreError(_("{what} read {size} of the dump without finishing").format(
                    what=what, size=human_size(size)))
            view = memoryview(c)
            while view:  # unbuffered: a write may take part of it
                view = view[stdin.write(view) or 0:]
    except BrokenPipeError:
        pass  # it has read what it needed and exited
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def run_tool(argv: list[str], what: str, account: Account | None = None,
             timeout: float | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command to its end (as `account` if given); its output, or a CoffreError with its
    own message. No timeout by default: checking a big database takes what it takes. `env`:
    the program's whole environment (default: Coffre's)."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False, env=env, **as_account(account))
    except OSError as exc:
        raise CoffreError(_("cannot run {program}: {reason}").format(
            program=argv[0], reason=exc.strerror)) from None
    except subprocess.TimeoutExpired:
        raise CoffreError(_("{what} did not finish in {duration}").format(
            what=what, duration=human_duration(timeout or 0))) from None
    if done.returncode != 0:
        err = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-ERROR_TAIL:]
        raise _failure(what, done.returncode, err, "")
    out: bytes = done.stdout
    return out.decode("utf-8", "replace")


def _start(argv: list[str], stdin: int, merge: bool = False,
           env: dict[str, str] | None = None, bufsize: int = -1) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, bufsize=bufsize,
                                stderr=subprocess.STDOUT if merge else subprocess.PIPE, env=env)
    except OSError as exc:
        raise CoffreError(_("cannot run {program}: {reason}").format(
            program=repr(argv[0]), reason=exc.strerror)) from None


def service_account(*names: str) -> Account | None:
    """Database servers refuse to run as root: the engine's own account, for a data folder
    restored for production (restore-db --pgdata; the first of `names` that exists, else
    nobody), or None when not root. Drills never use it: see throwaway.drill_account."""
    if not posix.is_root():
        return None
    for n in (*names, "nobody"):
        try:
            return posix.account(n)
        except KeyError:
            continue
    raise CoffreError(_("no unprivileged account to run a throwaway database server as"),
                      _("create one, e.g. 'useradd --system postgres'"))


def file_tail(path: str, size: int = 2000) -> str:
    """The end of a server's log, for an error message (empty if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "\n" + f.read()[-size:]
    except OSError:
        return ""
