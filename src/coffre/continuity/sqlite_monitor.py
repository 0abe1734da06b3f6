"""The SQLite monitor: continuous capture of one database in WAL mode (Litestream's approach),
so that a restore can reach any moment to within about one pass (`interval`, 1 s).

Each pass reads the frames SQLite appended to the database's -wal file since the last pass,
keeps the whole committed transactions among them (sources/databases/sqlite_wal.py: salts
and checksums chained as SQLite checks them) and puts them in the spool as one `log` piece:
the payload is the WAL header (32 bytes) followed by the raw frames, so a restore checks the
same chain again before applying a page. A **generation** starts with a `base` piece, a
consistent copy of the whole database (SQLite's online backup API, inside a read
transaction) at an exact position of the log (sqlite_names.py: positions, streams, names).

**The hold.** A checkpoint copies frames into the database; once every frame is copied and
no reader uses the log, the next writer restarts the WAL at its beginning, over the old
frames. A reader's snapshot stops both: no checkpoint copies a frame past the end of a
current reader's snapshot, and no restart happens while a reader uses the log. The monitor
therefore always holds a read transaction, and moves it forward without ever letting go: it
has three connections; after copying the frames it begins a read transaction on a second
connection and only then ends the first one's. Every frame a checkpoint may have copied and
a restart may have overwritten was, at that moment, already in a piece. (Litestream holds one
long read transaction and lets go of it, behind a write lock on its own table, only to
checkpoint; moving the hold forward keeps the pharmacy software's own checkpoints useful and
needs no table of ours in its database.) Consequence, stated and tested: **a restart of the
WAL seen while the monitor held its snapshot continuously is no break** (whoever checkpointed):
the next frames are a new *run* of the same generation, at a higher position.

**Continuity, on every pass**, against the position copied: the WAL header (magic, page
size, checkpoint sequence, salts) unchanged, the file not shorter than the position, and the
checksum recorded in the last copied frame still the one copied. A mismatch when the hold was
not continuous (the monitor was stopped, its connections failed), a truncated WAL or a
changed frame under the same header, a database file replaced by another: the reason is
reported and a new generation starts with a fresh base. A gap is never papered over.

**The base's position** must be exact: a base that holds a transaction the log then applies
again is harmless, one that misses a transaction the log skips is not. The monitor takes
SQLite's write lock (BEGIN IMMEDIATE on a spare connection) for as long as it takes to begin
the base's read transaction and read the end of the log (milliseconds: the log was scanned
before), then lets writers go on while the copy itself runs. Software with no busy timeout at
all could see "database is locked" at that moment (once per generation and per scheduled
base).

**Its own checkpoints.** When the current run of the log passes `checkpoint_pages` frames
(1000, as SQLite's own autocheckpoint and Litestream), the monitor runs a PASSIVE checkpoint
(it never waits for nor blocks anyone) on a spare connection, then copies and moves its hold
at once: if the checkpoint reached the end, the new snapshot reads from the database alone,
and the next writer restarts the WAL (a new run, as above). Without this the log would grow
for as long as the monitor runs, since its snapshot keeps other programs' checkpoints from
ever reaching the end.

**Scheduled bases.** Every `base_every_ns` (1 day) a new base is taken inside the same
generation (retention can then drop what precedes it; a restore replays less).

**The spool.** Pieces go to the spool (continuity/spool.py) and nowhere else; the shipper
sends them later. When the spool is full the piece is replaced by a gap record, the
generation ends there, and the next generation starts once the spool has room for a base.

**State.** The position copied is kept in `<spool>/.sqlite/<database id>.json` (written after
each piece is durable), so a restarted monitor continues the same generation when the checks
above pass. A lock file beside it keeps a second monitor of the same database away.

One SQLite library per process: the monitor uses apsw's, as the snapshot backup does
(sources/databases/sqlite.py). A second copy of SQLite in the same process opening the same
database would drop the monitor's locks when it closes its files (POSIX locks are per
process): its hold would silently stop protecting the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from coffre.continuity import sqlite_names as names
from coffre.continuity.spool import Spool
from coffre.core import posix
from coffre.core.clock import Clock, SystemClock
from coffre.core.errors import CoffreError
from coffre.core.human import human_size
from coffre.core.i18n import _
from coffre.format.segment import MAX_PAYLOAD, SegmentHeader
from coffre.ops.common import Reporter, quiet
from coffre.sources.databases import sqlite_wal as wal
from coffre.sources.databases.sqlite import sqlite_name

DEFAULT_INTERVAL = 1.0  # seconds between passes: the restore granularity, and the most lost
CHECKPOINT_PAGES = 1000  # frames in the current run before the monitor checkpoints (0: never)
BASE_EVERY_NS = 24 * 3600 * 1_000_000_000
PIECE_BYTES = 64 * 1024 * 1024  # a log piece holds whole transactions, about this much at most
BASE_RETRY_NS = 15 * 60 * 1_000_000_000  # a scheduled base that found no room is tried again then
READ_BUSY_MS = 5000
WRITE_LOCK_MS = 2000
STATE_DIR = ".sqlite"
_BASE_TMP = ".coffre-base-"
_CONNECTIONS = 3

# Why a generation started (English, kept in the base's extra["reason"] and in the logs).
FIRST = "first capture"
UNWATCHED = "WAL reset while not watched"
TRUNCATED = "WAL shorter than the position copied"
FRAME_CHANGED = "last copied frame changed"
REPLACED = "database file replaced"
LOST = "pieces lost (spool full)"
TOO_LARGE = "transaction too large for one piece"
SCHEDULED = "scheduled"


class _Break(Exception):
    """Continuity is broken: a new generation starts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class _Lost(Exception):
    """A piece could not be kept (the spool is full): a gap was recorded."""


@dataclass
class _State:
    generation: str
    run: int
    header: wal.WalHeader | None  # of the current run; None while the WAL is empty
    offset: int  # in the -wal file: just after the last commit copied
    checksum: wal.Checksum  # the running checksum at `offset`
    base_ns: int  # when the generation's newest base was taken
    dev: int
    ino: int

    @property
    def position(self) -> int:
        return names.position(self.run, self.offset)

    def to_json(self, database: str) -> str:
        return json.dumps({"v": 1, "database": database, "generation": self.generation, "run": self.run,
                           "wal_header": self.header.raw.hex() if self.header else "",
                           "offset": self.offset, "checksum": list(self.checksum), "base_ns": self.base_ns,
                           "dev": self.dev, "ino": self.ino})

    @classmethod
    def from_json(cls, text: str, database: str) -> _State | None:
        try:
            d = json.loads(text)
            if d.get("v") != 1 or d.get("database") != database:
                return None
            header = wal.parse_header(bytes.fromhex(d["wal_header"])) if d["wal_header"] else None
            if d["wal_header"] and header is None:
                return None
            c1, c2 = (int(x) for x in d["checksum"])
            return cls(str(d["generation"]), int(d["run"]), header, int(d["offset"]), (c1, c2),
                       int(d["base_ns"]), int(d["dev"]), int(d["ino"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class PassResult:
    """What one pass did."""

    pieces: int = 0
    bytes: int = 0
    new_generation: str = ""  # the reason, when one started
    base: bool = False  # a base was put in the spool
    gap: bool = False
    restarts: int = 0  # WAL restarts followed inside the generation
    checkpointed: bool = False
    waiting: bool = False  # no generation: the spool has no room for a base, or the lock was busy


class SqliteMonitor:
    """Continuous capture of one SQLite database into a spool. open() (or `with`), then
    step() once per pass (or run()), close()."""

    def __init__(self, database: str | os.PathLike[str], spool: Spool, clock: Clock | None = None,
                 report: Reporter = quiet, checkpoint_pages: int = CHECKPOINT_PAGES,
                 base_every_ns: int = BASE_EVERY_NS, piece_bytes: int = PIECE_BYTES) -> None:
        self.path = os.path.abspath(database)
        self.db_id = names.database_id(self.path)
        self.spool = spool
        self.clock = clock or SystemClock()
        self.report = report
        self.checkpoint_pages = checkpoint_pages
        self.base_every_ns = base_every_ns
        self.piece_bytes = max(piece_bytes, 1)
        self._conns: list[Any] = []
        self._holder: int | None = None
        self._held = False  # the holder's snapshot protects everything past the state's position
        self._state: _State | None = None
        self._why = FIRST  # why the next generation starts
        self._lock_fd: int | None = None
        self._identity = (0, 0)
        self._waiting_said = False
        self._since_ns = 0  # every transaction committed before it is in the spool
        self._base_retry_ns = 0  # a scheduled base that found no room waits until then
        self.generations = 0  # started by this monitor
        self.restarts = 0  # WAL restarts followed inside a generation

    # -- life --

    def __enter__(self) -> SqliteMonitor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state_file(self) -> Path:
        return self.spool.path / STATE_DIR / f"{self.db_id}.json"

    @property
    def generation(self) -> str | None:
        return self._state.generation if self._state else None

    @property
    def stream(self) -> str | None:
        return names.stream(self.db_id, self._state.generation) if self._state else None

    def open(self) -> None:
        if not os.path.isfile(self.path):
            raise CoffreError(_("{path}: no such database file").format(path=self.path))
        self.spool.create()
        folder = self.spool.path / STATE_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f"{self.db_id}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        if not posix.try_lock_exclusive(fd, str(folder)):
            os.close(fd)
            raise CoffreError(_("another monitor is already capturing {path} into {spool}").format(
                path=self.path, spool=self.spool.path))
        self._lock_fd = fd
        for e in os.scandir(self.spool.path):
            if e.name.startswith(_BASE_TMP):  # a copy a crash left behind
                shutil.rmtree(e.path, ignore_errors=True)
        try:
            self._connect()
            self._state = self._load_state()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._release_hold()
        for c in self._conns:
            with contextlib.suppress(apsw.Error):
                c.close()
        self._conns = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self) -> None:
        real = os.path.realpath(self.path)
        with sqlite_name(real) as name:
            try:
                for _i in range(_CONNECTIONS):
                    c = apsw.Connection(name, flags=apsw.SQLITE_OPEN_READWRITE)
                    c.set_busy_timeout(READ_BUSY_MS)
                    c.wal_autocheckpoint(0)
                    self._conns.append(c)
                mode = str(self._conns[0].execute("PRAGMA journal_mode").fetchone()[0]).lower()
            except apsw.Error as exc:
                raise CoffreError(_("{path} cannot be opened: {reason}").format(
                    path=self.path, reason=exc)) from None
        if mode != "wal":
            raise CoffreError(_("{path} is not in WAL mode (journal mode {mode}): its changes cannot be "
                                "followed").format(path=self.path, mode=mode),
                              _("back it up with scheduled snapshots, or have the software that owns it "
                                "use PRAGMA journal_mode=WAL"))
        st = os.stat(real)
        self._identity = (st.st_dev, st.st_ino)

    def _load_state(self) -> _State | None:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        state = _State.from_json(text, self.path)
        if state is None:
            self.report(_("{path}: the record of what was captured cannot be read; a new generation "
                          "starts").format(path=self.path))
        return state

    def _save_state(self) -> None:
        assert self._state is not None
        tmp = self.state_file.with_name(f".tmp-{self.db_id}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(self._state.to_json(self.path))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.state_file)
        posix.fsync_dir(self.state_file.parent)

    def _forget_state(self, why: str) -> None:
        self._state = None
        self._why = why
        self.state_file.unlink(missing_ok=True)
        self._release_hold()

    # -- the hold --

    def _begin_read(self, i: int) -> None:
        c = self._conns[i]
        try:
            c.execute("BEGIN")
            c.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()  # the snapshot starts here
            if c.txn_state("main") != apsw.SQLITE_TXN_READ:
                raise apsw.SQLError("SQLite did not start a read transaction")
        except apsw.Error:
            self._end_read(i)
            raise

    def _end_read(self, i: int) -> None:
        with contextlib.suppress(apsw.Error):
            if self._conns[i].in_transaction:
                self._conns[i].execute("ROLLBACK")

    def _spare(self, *besides: int | None) -> int:
        return next(i for i in range(_CONNECTIONS) if i != self._holder and i not in besides)

    def _hold(self) -> None:
        """Begin holding (the state's position is not protected until a copy checks it)."""
        if self._holder is not None:
            if self._conns[self._holder].txn_state("main") == apsw.SQLITE_TXN_READ:
                return
            self._release_hold()
        i = self._spare()
        self._begin_read(i)
        self._holder = i

    def _move_hold(self, to: int | None = None) -> None:
        """A new snapshot on a spare connection, then the old one ends: never a moment without."""
        i = self._spare() if to is None else to
        self._begin_read(i)
        old, self._holder = self._holder, i
        if old is not None:
            self._end_read(old)

    def _release_hold(self) -> None:
        if self._holder is not None:
            self._end_read(self._holder)
        self._holder = None
        self._held = False

    @contextlib.contextmanager
    def _write_lock(self, i: int) -> Any:
        """SQLite's write lock on connection i (writers wait meanwhile); yields False when it
        stayed busy."""
        c = self._conns[i]
        c.set_busy_timeout(WRITE_LOCK_MS)
        try:
            c.execute("BEGIN IMMEDIATE")
            got = True
        except apsw.BusyError:
            got = False
        finally:
            c.set_busy_timeout(READ_BUSY_MS)
        try:
            yield got
        finally:
            if got:
                self._end_read(i)

    # -- reading the log --

    def _wal_path(self) -> bytes:
        return os.fsencode(os.path.realpath(self.path)) + b"-wal"

    def _read(self, offset: int, length: int) -> tuple[int, bytes, bytes]:
        """(size of the -wal file, its first 32 bytes, `length` bytes from `offset`)."""
        try:
            f = open(self._wal_path(), "rb")  # noqa: SIM115 - several reads
        except FileNotFoundError:
            return 0, b"", b""
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(wal.HEADER_SIZE)
            if length <= 0 or offset >= size:
                return size, head, b""
            f.seek(offset)
            return size, head, f.read(length)

    def _scan(self, header: wal.WalHeader, start: int, seed: wal.Checksum) -> tuple[int, wal.Checksum]:
        """How far the committed frames reach from `start` (no piece is made)."""
        step = max(self.piece_bytes, header.frame_size * 64)
        end, running = start, seed
        while True:
            _size, _head, data = self._read(end, step)
            got = wal.committed(data, header, end, running)
            if got.end == end:
                if len(data) < step:
                    return end, running
                step *= 2  # one transaction larger than the step
                continue
            end, running = got.end, got.checksum

    def _check_same_run(self, state: _State, size: int) -> bool:
        """The checks of a pass against the state's position, under the same header. False:
        the WAL restarted between two reads (look again)."""
        header = state.header
        assert header is not None
        if size < state.offset:
            raise _Break(TRUNCATED, _("{path}: the WAL file is shorter than what was already copied "
                                      "(truncated by another program?)").format(path=self.path))
        if state.offset > wal.HEADER_SIZE:
            _size, head, last = self._read(state.offset - header.frame_size, wal.FRAME_HEADER_SIZE)
            if len(last) == wal.FRAME_HEADER_SIZE and wal.stored_checksum(last) == state.checksum:
                return True
            if head != header.raw and self._held:
                return False
            raise _Break(FRAME_CHANGED, _("{path}: the last frame copied from the WAL is no longer the "
                                          "same").format(path=self.path))
        return True

    def _copy(self, result: PassResult) -> None:
        """Put every transaction committed since the state's position in the spool."""
        state = self._state
        assert state is not None
        unwatched = _Break(UNWATCHED, _("{path}: the WAL was reset while its changes were not being "
                                        "followed (a checkpoint by another program, or the monitor "
                                        "stopped)").format(path=self.path))
        for _attempt in range(3):
            since = self.clock.now_ns()
            size, head, _data = self._read(0, 0)
            current = wal.parse_header(head)
            if state.header is not None and current is not None and current.raw == state.header.raw:
                if not self._check_same_run(state, size):
                    continue  # restarted meanwhile: look again
                self._follow(state, current, state.run, state.offset, state.checksum, since, result)
                if not self._held and self._read(0, 0)[1] != head:
                    # Not yet protected, and restarted while being read: frames may be lost.
                    raise unwatched
            elif not self._held:
                raise unwatched
            elif current is not None:
                # A restart while the snapshot was held: every frame of the old run was copied.
                self._follow(state, current, state.run + 1, wal.HEADER_SIZE, current.checksum, since, result)
            # The holder began before this read: what it protects is now all in the spool.
            self._held = True
            return

    def _follow(self, state: _State, header: wal.WalHeader, run: int, offset: int, seed: wal.Checksum,
                since: int, result: PassResult) -> None:
        step = max(self.piece_bytes, header.frame_size * 64)
        while True:
            _size, _head, data = self._read(offset, step)
            got = wal.committed(data, header, offset, seed)
            if got.end == offset:
                if len(data) < step:
                    return
                if step >= MAX_PAYLOAD // 2:
                    raise _Break(TOO_LARGE, _("{path}: one transaction is larger than a log piece may "
                                              "hold").format(path=self.path))
                step *= 2  # one transaction larger than a piece
                continue
            start = state.position
            end = names.position(run, got.end)
            payload = header.raw + bytes(data[:got.end - offset])
            # Everything committed before `since` is in the file as read: in this piece only if
            # this read went to the end of the file, else in the next (the previous pass's bound).
            complete = len(data) < step
            piece_since = since if complete else self._since_ns
            piece = SegmentHeader(
                stream=names.stream(self.db_id, state.generation), engine=names.ENGINE, kind="log",
                name=names.log_name(start, end), start=start, end=end, time_ns=self.clock.now_ns(),
                size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                extra={"database": self.path, "since_ns": str(piece_since), "commits": str(got.commits)})
            if not self.spool.put(piece, payload):
                self.spool.put(piece.as_gap("spool full"), b"", force=True)
                raise _Lost(piece.name)
            if run != state.run:
                result.restarts += 1
                self.restarts += 1
            state.run, state.header, state.offset, state.checksum = run, header, got.end, got.checksum
            self._save_state()
            result.pieces += 1
            result.bytes += len(payload)
            if complete:
                self._since_ns = since
            offset, seed = got.end, got.checksum
            step = max(self.piece_bytes, header.frame_size * 64)

    # -- bases --

    def _copy_database(self, i: int) -> bytes:
        """The whole database as connection i's read transaction sees it."""
        folder = tempfile.mkdtemp(prefix=_BASE_TMP, dir=self.spool.path)
        try:
            dst = apsw.Connection(os.path.join(folder, "base.db"))
            try:
                # One statement per call: apsw stops at the first one that returns a row.
                dst.execute("PRAGMA journal_mode=OFF").fetchall()
                dst.execute("PRAGMA synchronous=OFF").fetchall()
                with dst.backup("main", self._conns[i], "main") as b:
                    b.step(-1)  # every page, in the source's read transaction
            finally:
                dst.close()
            size = os.path.getsize(os.path.join(folder, "base.db"))
            if size > MAX_PAYLOAD:
                raise CoffreError(_("{path} is too large ({size}) to be captured continuously").format(
                    path=self.path, size=human_size(size)),
                                  _("back it up with scheduled snapshots"))
            with open(os.path.join(folder, "base.db"), "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _base_header(self, generation: str, pos: int, header: wal.WalHeader | None,
                     checksum: wal.Checksum, payload: bytes, since: int, taken: int,
                     reason: str) -> SegmentHeader:
        page_size = int.from_bytes(payload[16:18], "big") if len(payload) >= 100 else 0
        return SegmentHeader(
            stream=names.stream(self.db_id, generation), engine=names.ENGINE, kind="base",
            name=names.base_name(pos), start=pos, end=pos, time_ns=taken, size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            extra={"database": self.path, "reason": reason, "since_ns": str(since),
                   "page_size": str(65536 if page_size == 1 else page_size),
                   "wal_header": header.raw.hex() if header else "",
                   "checksum": f"{checksum[0]:08x}{checksum[1]:08x}"})

    def _room_for_base(self) -> bool:
        c = self._conns[self._spare()]
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        size = pages * int(c.execute("PRAGMA page_size").fetchone()[0])
        return self.spool.used() + size <= self.spool.limit

    def _start_generation(self, result: PassResult) -> None:
        why = self._why
        self._release_hold()
        if not self._room_for_base():
            if not self._waiting_said:
                self.report(_("{path}: the spool {spool} has no room for a copy of the database; the "
                              "capture waits for the shipper").format(path=self.path, spool=self.spool.path))
                self._waiting_said = True
            result.waiting = True
            return
        # Scanned before the lock, so that the lock is held only for what was appended since.
        size, head, _data = self._read(0, 0)
        early = wal.parse_header(head)
        early_end, early_sum = (self._scan(early, wal.HEADER_SIZE, early.checksum) if early
                                else (0, (0, 0)))
        writer = self._spare()
        reader = self._spare(writer)
        with self._write_lock(writer) as locked:
            if not locked:
                self.report(_("{path}: the database stayed locked by a writer; the capture starts at the "
                              "next pass").format(path=self.path))
                result.waiting = True
                return
            since = self.clock.now_ns()
            self._move_hold(reader)  # its snapshot is the log's end: no writer can commit now
            taken = self.clock.now_ns()
            size, head, _data = self._read(0, 0)
            header = wal.parse_header(head)
            if header is None:
                end, checksum = 0, (0, 0)
            elif early is not None and header.raw == early.raw and early_end <= size and (
                    early_end == wal.HEADER_SIZE or wal.stored_checksum(
                        self._read(early_end - header.frame_size, wal.FRAME_HEADER_SIZE)[2]) == early_sum):
                end, checksum = self._scan(header, early_end, early_sum)
            else:
                end, checksum = self._scan(header, wal.HEADER_SIZE, header.checksum)
        st = os.stat(os.path.realpath(self.path))
        generation = names.new_generation(taken)
        pos = names.position(0, end)
        payload = self._copy_database(reader)
        base = self._base_header(generation, pos, header, checksum, payload, since, taken, why)
        if not self.spool.put(base, payload):  # no generation yet: nothing is lost, nothing to record
            self._release_hold()
            result.waiting = True
            self.report(_("{path}: the spool {spool} is full: the copy that starts a generation was not "
                          "kept").format(path=self.path, spool=self.spool.path))
            return
        self._waiting_said = False
        self._state = _State(generation, 0, header, end, checksum, taken, st.st_dev, st.st_ino)
        self._identity = (st.st_dev, st.st_ino)
        self._held = True  # the hold began before the log was read
        self._since_ns = since
        self._save_state()
        self.generations += 1
        result.new_generation = why
        result.base = True
        result.bytes += len(payload)
        self.report(_("{path}: generation {generation} begins ({reason}) with a copy of {size}").format(
            path=self.path, generation=generation, reason=_reason_text(why), size=human_size(len(payload))))

    def _scheduled_base(self, result: PassResult) -> None:
        state = self._state
        assert state is not None
        writer = self._spare()
        reader = self._spare(writer)
        with self._write_lock(writer) as locked:
            if not locked:
                return  # tried again at the next pass
            since = self.clock.now_ns()
            self._copy(result)
            self._move_hold(reader)
            taken = self.clock.now_ns()
        payload = self._copy_database(reader)
        base = self._base_header(state.generation, state.position, state.header, state.checksum, payload,
                                 since, taken, SCHEDULED)
        if self.spool.put(base, payload):
            state.base_ns = taken
            self._save_state()
            result.base = True
            result.bytes += len(payload)
        else:
            self._base_retry_ns = taken + min(self.base_every_ns, BASE_RETRY_NS)
            self.report(_("{path}: the spool {spool} has no room for the scheduled copy; it is tried again "
                          "later").format(path=self.path, spool=self.spool.path))

    def _checkpoint(self) -> bool:
        """A PASSIVE checkpoint once the current run is long (never waits, never blocks)."""
        state = self._state
        if not self.checkpoint_pages or state is None or state.header is None:
            return False
        if state.offset < wal.HEADER_SIZE + self.checkpoint_pages * state.header.frame_size:
            return False
        try:
            self._conns[self._spare()].wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error:
            return False
        return True

    # -- passes --

    def step(self) -> PassResult:
        """One pass: check continuity, copy what was committed, move the hold forward; start a
        generation when there is none, or at once when continuity broke."""
        result = PassResult()
        if self._guarded(self._pass, result):
            self._guarded(self._start_generation, result)
        return result

    def _pass(self, result: PassResult) -> None:
        real = os.stat(os.path.realpath(self.path))
        if (real.st_dev, real.st_ino) != self._identity or (
                self._state is not None and (self._state.dev, self._state.ino) != self._identity):
            self._reopen()
            raise _Break(REPLACED, _("{path}: the database file was replaced").format(path=self.path))
        if self._state is None:
            self._start_generation(result)
            return
        self._hold()
        self._copy(result)
        self._move_hold()
        if self._checkpoint():
            result.checkpointed = True
            self._copy(result)
            self._move_hold()
        now = self.clock.now_ns()
        if now >= self._state.base_ns + self.base_every_ns and now >= self._base_retry_ns:
            self._scheduled_base(result)

    def _guarded(self, work: Callable[[PassResult], None], result: PassResult) -> bool:
        """Run part of a pass; what goes wrong is reported and leaves nothing half done. True
        when continuity broke (the state is forgotten: a generation starts)."""
        try:
            work(result)
        except _Break as exc:
            self.report(_("{reason}; a new generation starts").format(reason=exc.message))
            self._forget_state(exc.reason)
            return True
        except _Lost as exc:
            result.gap = True
            self.report(_("{path}: the spool {spool} is full: the log piece {name} was not kept (a gap is "
                          "recorded); a new generation starts once there is room").format(
                              path=self.path, spool=self.spool.path, name=exc.args[0]))
            self._forget_state(LOST)
        except FileNotFoundError as exc:
            if not os.path.exists(self.path):
                raise CoffreError(_("{path}: no such database file").format(path=self.path)) from None
            self._trouble(exc.strerror or str(exc))
        except OSError as exc:  # the spool's disk is full, or cannot be written
            self._trouble(exc.strerror or str(exc))
        except apsw.Error as exc:
            self.report(_("{path}: {reason}; checked again at the next pass").format(path=self.path,
                                                                                    reason=exc))
            if self._holder is None or self._conns[self._holder].txn_state("main") != apsw.SQLITE_TXN_READ:
                self._release_hold()  # the next pass trusts only what it can check again
        return False

    def _trouble(self, reason: str) -> None:
        """Nothing can be kept: let the log go (holding it would make it grow); the next pass
        checks continuity again, and starts a generation if it broke meanwhile."""
        self.report(_("{path}: {reason}; checked again at the next pass").format(path=self.path,
                                                                                reason=reason))
        self._release_hold()

    def _reopen(self) -> None:
        self._release_hold()
        for c in self._conns:
            with contextlib.suppress(apsw.Error):
                c.close()
        self._conns = []
        self._connect()

    def run(self, interval: float = DEFAULT_INTERVAL, stop: threading.Event | None = None) -> None:
        """Pass after pass until `stop` is set (checked between passes)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            began = time.monotonic()
            self.step()
            stop.wait(max(0.0, interval - (time.monotonic() - began)))


def _reason_text(reason: str) -> str:
    return {
        FIRST: _("first capture"),
        UNWATCHED: _("the WAL was reset while not watched"),
        TRUNCATED: _("the WAL was truncated"),
        FRAME_CHANGED: _("the WAL changed under the copied position"),
        REPLACED: _("the database file was replaced"),
        LOST: _("pieces were lost before"),
        TOO_LARGE: _("a transaction was too large"),
    }.get(reason, reason)
