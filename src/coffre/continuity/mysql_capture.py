"""`coffre wal mysql`: MariaDB's binary log, captured as it is written.

`mariadb-binlog --read-from-remote-server --raw --stop-never` (or mysqlbinlog) follows the
server as a replica would and copies its binary log files into a run folder of Coffre's own
work folder. Every `interval` seconds Coffre puts what was appended to the current file since
the last piece into the spool, as one piece (`kind="log"`, named `FILE:OFFSET`, positions as
binlog.position). Only whole events are put: the common header of each event gives its
length, and an event whose end has not arrived yet waits for the next pass (a torn last event
is never shipped; an impossible header stops the capture). When the reader moves on to the
next file, the finished one is closed by an empty piece whose end is the next file's start, so
the pieces of a stream join end to end across files.

State (work folder, `state.json`, written after each piece is durable in the spool): the file
and offset to ship next, and the hash of the last event shipped. A restart asks the server for
that file from that last event, checks that it is the same event (the log was not replaced),
and goes on from its end. A crash between the spool and the state puts a piece again (same
name and start; restore takes any piece that covers the next byte). If the file is no longer
on the server (purged while the capture was stopped), a gap is recorded from that place to the
oldest file left, and the capture starts there: a point-in-time recovery across it is refused
until the next base backup. A log that went backwards (RESET MASTER) stops the capture.

Bounds: the reader only holds the server's file it is reading (the server may purge every
older one); shipped bytes are released from the run folder's copy (hole punching, where the
file system has it) and a finished file is deleted, so the work folder holds little more than
what is not spooled yet; the spool has its own bound (when full, a gap is recorded instead of a
piece). The reader dies with Coffre (PR_SET_PDEATHSIG on Linux), and the server drops an older
reader that registered with the same replica id.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coffre.continuity.spool import Spool
from coffre.core import posix
from coffre.core.clock import Clock
from coffre.core.errors import CoffreError, FormatError
from coffre.core.i18n import _
from coffre.format.segment import EMPTY_SHA256, SegmentHeader
from coffre.sources.databases import binlog
from coffre.sources.databases.command import exit_reason, file_tail, find_program
from coffre.sources.databases.mysql import Connection

ENGINE = "mysql"
STATE = "state.json"
LOCK = "lock"
RUN = "run-"
READER_LOG = "reader.log"
PIECE_LIMIT = 64 * 1024 * 1024  # a larger transaction is cut at event boundaries
DEFAULT_WORK = ".mysql-capture"  # the capture's own folder, in the spool unless told otherwise
REPLICA_ID = 4_133_000_000  # --stop-never-slave-server-id: no real replica of a pharmacy uses it
PURGED = "purged from the server before it was captured"
_HEAD = 64 * 1024  # where a reader's first file shows where it starts


@dataclass
class State:
    stream: str
    file: str
    offset: int = 0  # the next byte of `file` to put in the spool (0: from its start)
    last_start: int = 0  # where the last event put starts (0: none of this file yet)
    last_sha256: str = ""  # that event's bytes, to check the log is the same on a restart

    @property
    def position(self) -> int:
        return binlog.position(self.file, self.offset)


def load_state(path: Path) -> State | None:
    try:
        d = json.loads(path.read_text())
        state = State(stream=str(d["stream"]), file=str(d["file"]), offset=int(d["offset"]),
                      last_start=int(d["last_start"]), last_sha256=str(d["last_sha256"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CoffreError(_("the capture's state {path} cannot be read: {reason}").format(
            path=path, reason=exc)) from None
    if not binlog.is_name(state.file) or state.offset < 0:
        raise CoffreError(_("the capture's state {path} is damaged").format(path=path))
    return state


def save_state(path: Path, state: State) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(asdict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    posix.fsync_dir(path.parent)


@dataclass
class Progress:
    pieces: int = 0
    bytes: int = 0
    gaps: list[str] = field(default_factory=list)
    restarts: int = 0
    files: int = 0  # binary log files finished


class Discontinuity(CoffreError):
    """The log is not the one captured so far (reset, replaced, damaged copy): capture stops."""


def _release(path: Path, offset: int, length: int) -> None:
    """Give back the disk blocks of bytes already spooled (the file keeps its size and offsets).
    Where the file system cannot punch holes, nothing happens: the copy is deleted when its
    file is finished."""
    if length <= 0 or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_WRONLY)
        try:
            keep_size_punch_hole = 0x01 | 0x02
            libc.fallocate(fd, keep_size_punch_hole, ctypes.c_int64(offset), ctypes.c_int64(length))
        finally:
            os.close(fd)


def _die_with_parent() -> Callable[[], None] | None:
    """What the reader runs before its program (Linux): to end when Coffre ends, even by
    SIGKILL (PR_SET_PDEATHSIG). The C function is found here, before the fork: the child only
    calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def child() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return child


class Reader:
    """One run of mariadb-binlog copying the server's files into `folder`, from `start` in
    `first` (4: the whole file). Its copy of `first` holds the file's own bytes when it starts
    at 4; otherwise the magic, an artificial format description, then the events from
    `start`: `shift` says where the server's offsets are in it."""

    def __init__(self, conn: Connection, folder: Path, first: str, start: int, follow: bool,
                 replica_id: int) -> None:
        self.folder, self.first, self.start = folder, first, start
        self.program = os.path.basename(find_program("mariadb-binlog", "mysqlbinlog"))
        self.shift: int | None = None  # found from the copy's first real event
        program = find_program("mariadb-binlog", "mysqlbinlog")
        argv = [program, *conn.options(database=False), "--read-from-remote-server", "--raw",
                f"--result-file={folder}{os.sep}", f"--start-position={start}"]
        argv += (["--stop-never", f"--stop-never-slave-server-id={replica_id}"] if follow
                 else ["--to-last-log"])
        folder.mkdir(mode=0o700)
        self.log = folder / READER_LOG
        with open(self.log, "wb") as err:
            try:
                self.proc = subprocess.Popen([*argv, first], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err, env=conn.env,
                                             preexec_fn=_die_with_parent())
            except OSError as exc:
                raise CoffreError(_("cannot run {program}: {reason}").format(
                    program=program, reason=exc.strerror)) from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def problem(self) -> str:
        status = self.proc.poll()
        reason = exit_reason(status or 0)
        return _("{program} {reason}").format(program=self.program, reason=reason) + file_tail(str(self.log))

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def files(self) -> list[str]:
        """The server's files it has begun to copy, in order."""
        names = [e.name for e in os.scandir(self.folder) if binlog.is_name(e.name)]
        return sorted(names, key=binlog.sequence)


class Capture:
    def __init__(self, conn: Connection, spool: Spool, work: Path, clock: Clock,
                 report: Callable[[str], None], replica_id: int = REPLICA_ID,
                 piece_limit: int = PIECE_LIMIT, started: Callable[[], None] = lambda: None) -> None:
        """`started`: called each time the log's reader is up (the agent clears its error)."""
        self.conn, self.spool, self.work, self.clock, self.report = conn, spool, work, clock, report
        self.replica_id, self.piece_limit, self.started = replica_id, piece_limit, started
        self.state_path = work / STATE
        self.state: State | None = None
        self.reader: Reader | None = None
        self.done = Progress()
        self._runs = 0

    # The server's side.

    def _server_files(self) -> list[tuple[str, int]]:
        rows = self.conn.query("SHOW BINARY LOGS", _("listing the binary logs"))
        out = [(r[0], int(r[1])) for r in rows if len(r) >= 2 and binlog.is_name(r[0]) and r[1].isdigit()]
        if not out:
            raise CoffreError(_("the server writes no binary log"),
                              _("set log_bin, binlog_format=ROW and server_id (docs/continuity.md)"))
        return sorted(out, key=lambda f: binlog.sequence(f[0]))

    def _begin(self) -> State:
        """Where to read from now: the state's place, or the newest file's start for a first
        capture; a gap when the place was purged from the server."""
        stream = self.conn.stream()
        files = self._server_files()
        state = self.state or load_state(self.state_path)
        if state is None:
            state = State(stream, files[-1][0])
        elif state.stream != stream:
            raise Discontinuity(_("the work folder {folder} follows {old}, not this server ({new})").format(
                folder=self.work, old=state.stream, new=stream),
                _("give each server its own work folder (--work)"))
        sizes = dict(files)
        if state.file in sizes:
            if sizes[state.file] < state.offset:
                raise self._reset(state)
        elif binlog.sequence(files[0][0]) > binlog.sequence(state.file):
            oldest = files[0][0]
            gap = SegmentHeader(stream=stream, engine=ENGINE, kind="gap", name=f"{state.file}:{state.offset}",
                                start=state.position, end=binlog.position(oldest, 0),
                                time_ns=self.clock.now_ns(), size=0, sha256=EMPTY_SHA256,
                                extra={"file": state.file, "reason": PURGED})
            self.spool.put(gap, b"", force=True)
            self.done.gaps.append(gap.name)
            self.report(_("the binary log from {name} on was purged from the server before it was captured: "
                          "a gap is recorded; take a new backup of the databases").format(name=gap.name))
            state = State(stream, oldest)
        else:
            raise self._reset(state)
        save_state(self.state_path, state)
        return state

    def _reset(self, state: State) -> Discontinuity:
        return Discontinuity(
            _("the server's binary log no longer holds {file} as it was captured (up to offset {offset}): "
              "was it reset (RESET MASTER)?").format(file=state.file, offset=state.offset),
            _("take a new backup of the databases, then start the capture with a new work folder"))

    def _start_reader(self, follow: bool) -> None:
        state = self.state = self._begin()
        for e in os.scandir(self.work):
            if e.name.startswith(RUN) and e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
        self._runs += 1
        start = state.last_start if state.offset else 4
        self.reader = Reader(self.conn, self.work / f"{RUN}{self._runs}", state.file, max(start, 4), follow,
                             self.replica_id)

    # Coffre's side.

    def _copy(self, name: str) -> Path:
        assert self.reader is not None
        return self.reader.folder / name

    def _find_shift(self, path: Path) -> int | None:
        """Where the server's offsets are in the reader's copy of its first file, from its first
        real event (which must be the event at `start`, and when the capture resumes, the last
        event it put: the same log, not a replaced one). None until that event is whole."""
        assert self.reader is not None and self.state is not None
        state, start = self.state, self.reader.start
        size = _HEAD
        while True:
            data = self._read(path, 0, size)
            seen = 0
            try:
                for e in binlog.events(data, 0, placed=False):
                    seen = e.end
                    if e.log_pos == 0:
                        continue  # the artificial format description sent before a place inside a file
                    if e.log_pos - e.length != start:
                        raise Discontinuity(_("{program} did not start at offset {offset} of {file}").format(
                            program="mariadb-binlog", offset=start, file=state.file))
                    if state.offset and (start != state.last_start or hashlib.sha256(
                            data[e.offset:e.end]).hexdigest() != state.last_sha256):
                        raise self._reset(state)
                    return e.offset - start
            except FormatError as exc:
                raise Discontinuity(_("the copy of {file} is damaged: {reason}").format(
                    file=state.file, reason=exc.message)) from None
            need = binlog.first_length(data[seen:], seen)
            if need is None or seen + need <= size or len(data) < size:
                return None  # not written yet
            size = seen + need

    def step(self) -> bool:
        """Put one piece, or close a finished file. False when there is nothing to do now."""
        assert self.reader is not None and self.state is not None
        reader, state = self.reader, self.state
        path = self._copy(state.file)
        if not path.exists():
            return False
        # Once the reader has begun the next file, this one is whole in its copy.
        following = [n for n in reader.files() if binlog.sequence(n) > binlog.sequence(state.file)]
        if reader.shift is None:
            reader.shift = self._find_shift(path)
            if reader.shift is None:
                return False
        now = self.clock.now_ns()
        at = state.offset + reader.shift
        data = self._read(path, at, self.piece_limit)
        need = binlog.first_length(data, state.offset)
        if need is not None and need > len(data) == self.piece_limit:
            data = self._read(path, at, need)  # one event larger than a piece
        last: binlog.Event | None = None
        try:
            for e in binlog.events(data, state.offset):
                last = e
        except FormatError as exc:
            raise Discontinuity(_("the copy of {file} is damaged: {reason}").format(
                file=state.file, reason=exc.message)) from None
        if last is not None:
            piece = data[:last.end - state.offset]
            self._put(state, piece, now)
            event = piece[last.offset - state.offset:]
            self.state = State(state.stream, state.file, last.end, last.offset,
                               hashlib.sha256(event).hexdigest())
            save_state(self.state_path, self.state)
            _release(path, at, len(piece))
            return True
        if not following:
            return False
        if data:
            raise Discontinuity(_("{file} ends with an incomplete event").format(file=state.file))
        self._close(state, min(following, key=binlog.sequence), now)
        return True

    @staticmethod
    def _read(path: Path, at: int, size: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(at)
            return f.read(size)

    def _put(self, state: State, piece: bytes, now: int) -> None:
        end = state.offset + len(piece)
        header = SegmentHeader(stream=state.stream, engine=ENGINE, kind="log",
                               name=f"{state.file}:{state.offset}",
                               start=state.position, end=binlog.position(state.file, end), time_ns=now,
                               size=len(piece), sha256=hashlib.sha256(piece).hexdigest(),
                               extra={"file": state.file})
        if self.spool.put(header, piece):
            self.done.pieces += 1
            self.done.bytes += len(piece)
            return
        self.spool.put(header.as_gap("spool full"), b"", force=True)
        self.done.gaps.append(header.name)
        self.report(_("the spool {folder} is full: {name} is not kept and a gap is recorded; take a new "
                      "backup of the databases once the repository is reachable").format(
                          folder=self.spool.path, name=header.name))

    def _close(self, state: State, following: str, now: int) -> None:
        """`state.file` is finished: an empty piece joins its end to the next file's start."""
        header = SegmentHeader(stream=state.stream, engine=ENGINE, kind="log",
                               name=f"{state.file}:{state.offset}",
                               start=state.position, end=binlog.position(following, 0), time_ns=now, size=0,
                               sha256=EMPTY_SHA256, extra={"file": state.file, "next": following})
        self.spool.put(header, b"", force=True)
        self._copy(state.file).unlink(missing_ok=True)
        assert self.reader is not None
        self.reader.shift = 0  # the following files are copied whole
        self.state = State(state.stream, following)
        save_state(self.state_path, self.state)
        self.done.files += 1

    def drain(self) -> None:
        while self.step():
            pass

    def run(self, interval: float = 1.0, once: bool = False, stop: threading.Event | None = None) -> Progress:
        """Capture until `stop` is set (or, `once`, up to the server's current end)."""
        stop = stop or threading.Event()
        self.work.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spool.create()
        lock = os.open(self.work / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not posix.try_lock_exclusive(lock, str(self.work / LOCK)):
                raise CoffreError(_("another capture uses the work folder {folder}").format(folder=self.work))
            self._run(interval, once, stop)
        finally:
            if self.reader is not None:
                self.reader.stop()
            os.close(lock)
        return self.done

    def _run(self, interval: float, once: bool, stop: threading.Event) -> None:
        failures, first = 0, True
        while True:
            if self.reader is None or not self.reader.alive():
                if self.reader is not None:
                    self.drain()
                    problem = self.reader.problem() if self.reader.proc.returncode else ""
                    self.reader = None
                    if once:
                        if problem:
                            raise CoffreError(problem)
                        return
                    failures += 1
                    self.report(_("the binary log reader stopped ({problem}); starting it again").format(
                        problem=problem.strip() or _("end of its input")))
                    if stop.wait(min(30.0, interval * 2 ** min(failures, 5))):
                        return
                try:
                    self._start_reader(follow=not once)
                except Discontinuity:
                    raise
                except CoffreError as exc:
                    if first:
                        raise  # a setting or a right is missing
                    self.report(exc.message)
                    failures += 1
                    if stop.wait(min(30.0, interval * 2 ** min(failures, 5))):
                        return
                    continue
                self.done.restarts += 0 if first else 1
                first = False
                self.started()
            self.drain()
            if stop.wait(interval):
                if self.reader is not None:
                    self.reader.stop()
                self.drain()
                return
            if self.reader is not None and self.reader.alive():
                failures = 0
