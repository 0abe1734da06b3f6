"""SQLite: SQLite's own online backup API, streamed page by page; never a copy of the live
file and its -wal.

The backup runs inside one read transaction of the source, which also counts the rows, so the
pages and the counts are one committed state. In WAL mode writers go on meanwhile; in
rollback-journal mode they wait until the copy ends (SQLite's locking; busy timeouts apply).

The copy's destination is a virtual file (an apsw VFS): SQLite writes pages 2..N in order,
and they are streamed as they come; page 1, which SQLite writes again at the end, is kept apart
(Captured.head) and goes first in the stored file. SQLite skips the page holding its lock
bytes (at 1 GiB); it is stored as zeros. A write out of that order fails the backup instead
of storing a wrong file.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, TypeVar

import apsw

from coffre.core.errors import CoffreError
from coffre.core.human import human_duration
from coffre.core.i18n import _
from coffre.sources.databases.base import Captured, Check, CountedTarget, Database, Target

T = TypeVar("T")
BUSY_TIMEOUT = 120.0  # seconds a writer's lock is waited for (COFFRE_SQLITE_BUSY_TIMEOUT)
HANDOFF = 1 << 20  # pages travel to the reader in batches of about this size
LOCK_BYTE_OFFSET = 0x40000000  # the page starting here is SQLite's lock-byte page
_VFS_NAME = "coffre-stream"
_sinks: dict[str, _Sink] = {}
_sinks_lock = threading.Lock()
_vfs: apsw.VFS | None = None


class _Sink:
    """Pages written by SQLite into the virtual file, handed to a reader."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.head = b""
        self.next_offset = page_size
        self.written = 0
        self.error: BaseException | None = None
        self._buf = bytearray()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._pending = b""
        self._done = False
        self.aborted = False

    # -- SQLite's side (the backup thread) --
    def write(self, data: bytes, offset: int) -> None:
        if self.aborted:
            raise OSError("the backup was abandoned")
        if offset == 0:
            self.head = bytes(data)
            return
        if offset == self.next_offset + self.page_size and self.next_offset == LOCK_BYTE_OFFSET:
            # SQLite never writes the page holding its lock bytes (databases over 1 GiB); its
            # content is unused: zeros keep the following pages at their offsets.
            self._buf += bytes(self.page_size)
            self.next_offset += self.page_size
        if offset != self.next_offset:
            raise OSError(f"SQLite wrote at offset {offset}, expected {self.next_offset}")
        self._buf += data
        self.next_offset += len(data)
        if len(self._buf) >= HANDOFF:
            self._queue.put(bytes(self._buf))
            self._buf.clear()

    def size(self) -> int:
        return self.next_offset if self.next_offset > self.page_size or self.head else 0

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        if self._buf and error is None:
            self._queue.put(bytes(self._buf))
        self._buf.clear()
        self._queue.put(None)

    # -- the reader's side --
    def read(self, size: int = -1) -> bytes:
        while not self._pending and not self._done:
            got = self._queue.get()
            if got is None:
                self._done = True
            else:
                self._pending = got
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def drain(self) -> None:
        """Stop the copy (if the reader gave up early) and let the writer finish."""
        self.aborted = not self._done
        while not self._done:
            if self._queue.get() is None:
                self._done = True


class _StreamFile(apsw.VFSFile):
    # Not the base's __init__: this file is not opened through the default VFS.
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def xRead(self, amount: int, offset: int) -> bytes:
        if offset == 0 and self.sink.head:
            return self.sink.head[:amount]
        if offset >= self.sink.size():
            return b""
        raise OSError("SQLite read back a page already streamed")

    def xWrite(self, data: bytes, offset: int) -> None:
        self.sink.write(data, offset)

    def xFileSize(self) -> int:
        return self.sink.size()

    def xTruncate(self, size: int) -> None:
        if size < self.sink.size():
            raise OSError("SQLite truncated the streamed copy")

    def xSync(self, flags: int) -> None: ...
    def xClose(self) -> None: ...
    def xLock(self, level: int) -> None: ...
    def xUnlock(self, level: int) -> None: ...

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return 0


class _StreamVFS(apsw.VFS):
    def __init__(self) -> None:
        super().__init__(_VFS_NAME, "")

    def xOpen(self, name: Any, flags: list[int]) -> _StreamFile:
        key = name.filename() if hasattr(name, "filename") else str(name)
        with _sinks_lock:
            sink = _sinks.get(key)
        if sink is None:
            raise apsw.CantOpenError(f"no stream for {key}")
        return _StreamFile(sink)

    def xAccess(self, pathname: str, flags: int) -> bool:
        return False

    def xDelete(self, filename: str, syncdir: bool) -> None: ...

    def xFullPathname(self, name: str) -> str:
        return name


def _register() -> None:
    global _vfs
    with _sinks_lock:
        if _vfs is None:
            _vfs = _StreamVFS()


def _busy_timeout() -> float:
    text = os.environ.get("COFFRE_SQLITE_BUSY_TIMEOUT", "")
    try:
        return max(0.0, float(text)) if text else BUSY_TIMEOUT
    except ValueError:
        raise CoffreError(_("COFFRE_SQLITE_BUSY_TIMEOUT={value}: give seconds").format(
            value=repr(text))) from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(conn: Any) -> list[str]:
    """Tables whose rows are counted: every stored table (virtual tables are counted through
    the tables that hold their data)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _counts(conn: Any) -> dict[str, int]:
    query = "SELECT count(*) FROM {}"  # a quoted table name: no value is spliced in
    return {t: int(conn.execute(query.format(_quote(t))).fetchone()[0]) for t in _tables(conn)}


@contextlib.contextmanager
def sqlite_name(path: str) -> Iterator[str]:
    """A name SQLite can open for path. SQLite takes names as UTF-8: a path that is not (a
    Latin-1 'caisse-\xe9t\xe9.db' on an old system) is opened through a symlink with a plain
    name in a private folder. SQLite follows it, and its -wal and -shm files stay beside the
    real database."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    folder = tempfile.mkdtemp(prefix="coffre-sqlite-")
    link = os.path.join(folder, "db")
    try:
        os.symlink(os.fsencode(path), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_only_uri(name: str) -> str:
    return f"file:{urllib.parse.quote(name)}?mode=ro"  # a '?' or '#' in a name is not a query


class SQLiteDatabase(Database):
    engine = "sqlite"
    suffix = ".db"
    fixed = True

    def __init__(self, path: str) -> None:
        self.name = os.path.abspath(path)

    def describe(self) -> str:
        return _("SQLite database {path}").format(path=self.name)

    def stored_at(self) -> list[str]:
        """The database file and those SQLite keeps beside it while it works."""
        return [self.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]

    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        if not os.path.isfile(self.name):
            raise CoffreError(_("{database}: no such file; no snapshot was written").format(
                database=self.describe()))
        _register()
        with sqlite_name(self.name) as name:
            return self._dump(name, consume)

    def _dump(self, name: str, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        src = self._open(name)
        try:
            src.execute("BEGIN")
            counts = _counts(src)  # the read transaction starts here: pages and counts agree
            page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
            pages = int(src.execute("PRAGMA page_count").fetchone()[0])
            mode = str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            sink = _Sink(page_size)
            key = f"coffre-{id(sink):x}-{threading.get_ident():x}.db"
            with _sinks_lock:
                _sinks[key] = sink
            worker = threading.Thread(target=self._copy, args=(src, key, sink), daemon=True)
            worker.start()
            try:
                result = consume(sink)  # type: ignore[arg-type]
            finally:
                sink.drain()
                worker.join()
                with _sinks_lock:
                    _sinks.pop(key, None)
            if sink.error is not None:
                raise self._error(sink.error)
            pages = max(pages, 1)  # an empty (0-byte) database is copied as one page
            if len(sink.head) != page_size or sink.next_offset != pages * page_size:
                raise CoffreError(_("{database}: the copy is incomplete ({copied} of {size} bytes); no "
                                    "snapshot "
                                    "was written").format(database=self.describe(), copied=sink.next_offset,
                                                          size=pages * page_size))
        except apsw.Error as exc:
            raise self._error(exc) from None
        finally:
            with contextlib.suppress(apsw.Error):
                src.close()
        return result, Captured(
            size=pages * page_size, tables=counts, server=f"SQLite {apsw.sqlite_lib_version()}",
            format="SQLite online backup (page image)", head=sink.head,
            extra={"journal_mode": mode, "page_size": str(page_size)},
        )

    def _open(self, name: str) -> Any:
        try:
            # Read-write without create: a hot journal left by a crash is rolled back first,
            # and a missing file is an error rather than a new empty database.
            src = apsw.Connection(name, flags=apsw.SQLITE_OPEN_READWRITE)
            src.set_busy_timeout(int(_busy_timeout() * 1000))
            return src
        except apsw.Error as exc:
            raise self._error(exc) from None

    @staticmethod
    def _copy(src: Any, key: str, sink: _Sink) -> None:
        error: BaseException | None = None
        try:
            dst = apsw.Connection(key, vfs=_VFS_NAME)
            try:
                for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8192"):
                    # One at a time: apsw stops a script at a statement that returns a row (the
                    # journal mode does) until it is read, and would leave the others unrun.
                    dst.execute(f"PRAGMA {pragma}").fetchall()
                with dst.backup("main", src, "main") as b:
                    b.step(-1)  # all pages within the source's read transaction
            finally:
                dst.close()
            src.execute("COMMIT")
        except BaseException as exc:  # handed to the reader's thread
            error = exc
        sink.finish(error)

    def _error(self, exc: BaseException) -> CoffreError:
        if isinstance(exc, CoffreError):
            return exc
        if isinstance(exc, apsw.BusyError):
            why = _("it stayed locked by another program for {duration}").format(
                duration=human_duration(_busy_timeout()))
        elif isinstance(exc, apsw.NotADBError):
            why = _("it is not a SQLite database")
        else:
            why = str(exc) or type(exc).__name__
        return CoffreError(_("{database} could not be backed up: {reason}; no snapshot was written").format(
            database=self.describe(), reason=why))


class SQLiteTarget(CountedTarget):
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def describe(self) -> str:
        return _("SQLite database {path}").format(path=self.path)

    def is_empty(self) -> bool:
        try:
            return os.path.getsize(self.path) == 0
        except FileNotFoundError:
            return True

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise CoffreError(_("{folder}: no such folder").format(folder=folder))
        leftovers = [self.path + s for s in ("-wal", "-shm", "-journal") if os.path.exists(self.path + s)]
        if leftovers and not force:
            # SQLite would replay an old -wal or -journal into the restored file.
            raise CoffreError(_("{path} exists: it belongs to the old database").format(path=leftovers[0]),
                              _("stop the program that uses it, then add --force to remove it"))
        fd, tmp = tempfile.mkstemp(prefix=".coffre-restore-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                for c in chunks:
                    f.write(c)
                f.flush()
                os.fsync(f.fileno())
            if extra.get("journal_mode") == "wal":
                with sqlite_name(tmp) as name, contextlib.closing(sqlite3.connect(name)) as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
            for p in leftovers:
                os.unlink(p)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with sqlite_name(self.path) as name, contextlib.closing(
                sqlite3.connect(_read_only_uri(name), uri=True)) as conn:
            yield conn

    def row_counts(self) -> dict[str, int]:
        with self._connect() as conn:
            return _counts(conn)

    def integrity(self) -> Check:
        try:
            with self._connect() as conn:
                rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            return Check("PRAGMA integrity_check", False, str(exc))
        ok = rows == ["ok"]
        return Check("PRAGMA integrity_check", ok, _("ok") if ok else "; ".join(map(str, rows[:10])))


@contextlib.contextmanager
def throwaway_sqlite(work_dir: str | None = None) -> Iterator[Target]:
    with tempfile.TemporaryDirectory(prefix="coffre-drill-", dir=work_dir) as d:
        yield SQLiteTarget(os.path.join(d, "drill.db"))
