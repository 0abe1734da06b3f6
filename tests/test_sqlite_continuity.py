"""Continuous capture of SQLite databases (WAL frames), against real SQLite only.

The first test is the one that matters (Litestream found corrupted replicas only through
such a test, PR #1337): a writer process commits numbered transactions and logs when each
began and returned, a second process checkpoints at random moments in every mode (as
pharmacy software does), the monitor follows, the shipper ships into a real repository; then
restores to many instants must each pass PRAGMA integrity_check and hold exactly the
transactions committed by then.

In this process the live database is opened only through apsw, the SQLite the monitor uses:
a second SQLite library closing its own descriptors on the same file would drop the
monitor's locks (see sqlite_monitor.py).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw
import pytest

from coffre.continuity import shipper
from coffre.continuity import sqlite_names as names
from coffre.continuity.retention import sqlite_floor
from coffre.continuity.spool import Spool
from coffre.continuity.sqlite_monitor import SqliteMonitor
from coffre.continuity.sqlite_restore import SqliteRestored, restore_sqlite
from coffre.core.errors import CoffreError
from coffre.format.segment import SegmentHeader
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.sources.databases import sqlite_wal as wal
from coffre.storage.local import LocalBackend

PASSWORD = "sqlite-continuity-test"
SRC = str(Path(__file__).resolve().parent.parent / "src")

# The simulated pharmacy software: numbered transactions, a row each, a counter, deletions
# every 10th, a VACUUM now and then (the database shrinks: commit frames truncate it).
WRITER = r"""
import os, random, sqlite3, sys, time
db, log, stop, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rnd = random.Random(seed)
c = sqlite3.connect(db, isolation_level=None, timeout=30)
txid = 0
with open(log, "a", buffering=1) as out:
    while not os.path.exists(stop):
        txid += 1
        began = time.time_ns()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO log(txid, body) VALUES (?, randomblob(?))",
                  (txid, rnd.choice([10, 300, 3000, 9000])))
        c.execute("UPDATE counter SET v = ? WHERE k = 1", (txid,))
        if txid % 10 == 0:
            c.execute("DELETE FROM log WHERE txid <= ? AND txid % 3 = 0", (txid - 50,))
        c.execute("COMMIT")
        out.write(f"{txid} {began} {time.time_ns()}\n")
        if txid % 150 == 0:
            c.execute("VACUUM")
        time.sleep(rnd.random() * 0.01)
"""

CHECKPOINTER = r"""
import json, os, random, sqlite3, sys, time
db, stop, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
c = sqlite3.connect(db, isolation_level=None, timeout=0.3)
done = {}
while not os.path.exists(stop):
    time.sleep(rnd.uniform(0.01, 0.25))
    mode = rnd.choice(["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
    try:
        busy, log, ckpt = c.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        key = mode + (" busy" if busy else " ok")
    except sqlite3.OperationalError:
        key = mode + " error"
    done[key] = done.get(key, 0) + 1
print(json.dumps(done))
"""


def expected_rows(n: int) -> set[int]:
    limit = n // 10 * 10 - 50
    return {i for i in range(1, n + 1) if not (i % 3 == 0 and i <= limit)}


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    Repository.init(LocalBackend(str(tmp_path / "repo")), PASSWORD)
    return Repository.open(LocalBackend(str(tmp_path / "repo")), PASSWORD)


def make_database(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE log(txid INTEGER PRIMARY KEY, body BLOB); "
                 "CREATE TABLE counter(k INTEGER PRIMARY KEY, v INTEGER); "
                 "INSERT INTO counter VALUES (1, 0)")
    conn.close()


def read_restored(path: str) -> tuple[int, set[int]]:
    """(the counter, the rows) of a restored file, after PRAGMA integrity_check."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        n = conn.execute("SELECT v FROM counter WHERE k = 1").fetchone()[0]
        return n, {r[0] for r in conn.execute("SELECT txid FROM log")}
    finally:
        conn.close()


def writer_log(path: Path) -> dict[int, tuple[int, int]]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[int(parts[0])] = (int(parts[1]), int(parts[2]))
    return out


def check_exact(result: SqliteRestored, log: dict[int, tuple[int, int]]) -> int:
    """The restored file holds the transactions 1..n and nothing else, n committed before the
    moment reached, and every transaction that returned before `since_ns` is in."""
    n, rows = read_restored(result.target)
    assert rows == expected_rows(n)
    assert n <= max(log, default=0)
    returned_before = [i for i, (_began, returned) in log.items() if returned <= result.since_ns]
    assert n >= max(returned_before, default=0)
    if n:
        assert log[n][0] <= result.point_ns  # it had begun committing before that moment
    return n


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Running:
    monitor: SqliteMonitor
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]


@pytest.fixture
def follow() -> Iterator[Callable[..., Running]]:
    """Run a monitor on its own thread (pass after pass, a last pass once stopped)."""
    started: list[Running] = []

    def start(monitor: SqliteMonitor, interval: float) -> Running:
        stop = threading.Event()
        errors: list[BaseException] = []

        def body() -> None:
            try:
                monitor.run(interval, stop)
                monitor.step()
            except BaseException as exc:  # handed to the test
                errors.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        running = Running(monitor, stop, thread, errors)
        started.append(running)
        thread.start()
        return running

    yield start
    for r in started:
        r.stop.set()
        r.thread.join(60)


def test_concurrent_writes_checkpoints_and_restores(
        tmp_path: Path, repository: Repository, follow: Callable[..., Running]) -> None:
    db = tmp_path / "caisse.db"
    make_database(db)
    spool = Spool(tmp_path / "spool")
    reports: list[str] = []
    monitor = SqliteMonitor(db, spool, report=reports.append, checkpoint_pages=100,
                            base_every_ns=2_000_000_000, piece_bytes=256 * 1024)
    monitor.open()
    first = monitor.step()
    assert first.new_generation and first.base
    running = follow(monitor, 0.2)
    ship_stop = threading.Event()
    shipped_errors: list[BaseException] = []
    one_shipper = threading.Lock()  # one shipper per spool, as the agent runs it

    def ship() -> None:
        with one_shipper:
            shipper.ship(repository, spool)

    def ship_loop() -> None:
        try:
            while not ship_stop.wait(0.3):
                ship()
        except BaseException as exc:
            shipped_errors.append(exc)

    ship_thread = threading.Thread(target=ship_loop, daemon=True)
    ship_thread.start()
    stop_file = tmp_path / "stop"
    log_path = tmp_path / "writer.log"
    # The writer's and checkpointer's moments, and the instants restored, come from one seed:
    # printed (pytest shows it with a failure) and taken from COFFRE_TEST_SEED to replay one.
    seed = int(os.environ.get("COFFRE_TEST_SEED") or random.randrange(1 << 30))
    print(f"seed {seed} (COFFRE_TEST_SEED={seed} replays its choices)")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(log_path), str(stop_file),
                               str(seed)])
    checkpointer = subprocess.Popen([sys.executable, "-c", CHECKPOINTER, str(db), str(stop_file), str(seed)],
                                    stdout=subprocess.PIPE, text=True)
    try:
        # Long enough for restarts followed in the generation and a scheduled base.
        wait_for(lambda: monitor.restarts >= 3 and len(writer_log(log_path)) >= 600
                 and writer.poll() is None and checkpointer.poll() is None, 90, "transactions and restarts")
        # A restore of the latest moment while the writer goes on.
        ship()
        asked = time.time_ns()
        live = restore_sqlite(repository, str(db), tmp_path / "live.db")
        lag = (asked - live.since_ns) / 1e9
        wait_for(lambda: len(writer_log(log_path)) >= 800, 90, "more transactions")
    finally:
        stop_file.touch()
        writer.wait(60)
        out, _err = checkpointer.communicate(timeout=60)
    assert writer.returncode == 0 and checkpointer.returncode == 0
    running.stop.set()
    running.thread.join(60)
    ship_stop.set()
    ship_thread.join(60)
    assert not running.errors and not shipped_errors
    shipper.ship(repository, spool)
    monitor.close()
    assert spool.pending() == []

    log = writer_log(log_path)
    check_exact(live, log)
    checkpoints = json.loads(out)
    assert checkpoints.get("TRUNCATE ok", 0) + checkpoints.get("RESTART ok", 0) > 0
    # Every WAL restart, whoever checkpointed, was followed inside the one generation.
    assert monitor.generations == 1, reports
    listed = segments.listing(repository)
    kinds = [s.header.kind for s in listed]
    assert kinds.count("base") >= 2 and "gap" not in kinds
    assert len({names.split_position(s.header.end)[0] for s in listed}) >= 4  # runs

    # The latest moment: every transaction (the monitor made a last pass after the writer).
    latest = restore_sqlite(repository, str(db), tmp_path / "latest.db")
    assert check_exact(latest, log) == max(log)
    # Chosen instants: random ones, the exact capture times, just before and after them.
    times = sorted(s.header.time_ns for s in listed if s.header.kind == "log")
    first_base = min(s.header.time_ns for s in listed if s.header.kind == "base")
    rnd = random.Random(seed)
    instants = [rnd.randrange(first_base, times[-1]) for _ in range(8)]
    for t in rnd.sample(times, 4):
        instants += [t - 1, t, t + 1]
    # Just after each base: the first piece replayed on it (a base whose position is not
    # exactly its snapshot's shows there, before later frames rewrite the same pages).
    for base in (s.header for s in listed if s.header.kind == "base"):
        instants += [min((t for t in times if t > base.time_ns), default=times[-1])]
    reached = set()
    for k, until in enumerate(instants):
        result = restore_sqlite(repository, str(db), tmp_path / f"at-{k}.db", until_ns=until)
        assert result.point_ns <= until
        reached.add(check_exact(result, log))
    assert len(reached) >= 8  # instants spread over the run: different states
    print(f"\nconcurrency: {len(log)} transactions, {len(times)} log pieces, {checkpoints}, "
          f"latest restore {lag:.2f} s behind the writer while it ran")


# -- the WAL parser, against WAL files written by Python's sqlite3 (its own files only) --


def wal_database(folder: Path, transactions: int, cache_pages: int = 2000) -> sqlite3.Connection:
    """A database in WAL mode with autocheckpoint off, `transactions` committed after the
    table's creation; the connection stays open (closing it would checkpoint)."""
    conn = sqlite3.connect(folder / "w.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA cache_size={cache_pages}")
    conn.execute("CREATE TABLE t(i INTEGER PRIMARY KEY, body BLOB)")
    for i in range(transactions):
        conn.execute("INSERT INTO t VALUES (?, randomblob(?))", (i, 100 + 1500 * (i % 4)))
    return conn


def wal_bytes(folder: Path) -> bytes:
    return (folder / "w.db-wal").read_bytes()


def scan(data: bytes) -> wal.Committed:
    header = wal.parse_header(data)
    assert header is not None
    return wal.committed(data[wal.HEADER_SIZE:], header, wal.HEADER_SIZE, header.checksum)


def test_wal_header_and_committed_transactions(tmp_path: Path) -> None:
    conn = wal_database(tmp_path, 30)
    data = wal_bytes(tmp_path)
    header = wal.parse_header(data)
    assert header is not None
    assert header.page_size == conn.execute("PRAGMA page_size").fetchone()[0]
    assert not header.big_endian if sys.byteorder == "little" else header.big_endian
    found = scan(data)
    assert found.commits == 31 and found.end == len(data)  # CREATE TABLE and 30 inserts
    assert found.frames == (len(data) - wal.HEADER_SIZE) // header.frame_size
    assert found.db_size == conn.execute("PRAGMA page_count").fetchone()[0]
    assert found.checksum == wal.stored_checksum(data[len(data) - header.frame_size:])
    # Transaction by transaction, the same frames.
    txs = list(wal.transactions(data[wal.HEADER_SIZE:], header, wal.HEADER_SIZE, header.checksum))
    assert len(txs) == 31
    assert all(tx[-1].commit_size and not any(f.commit_size for f in tx[:-1]) for tx in txs)
    # Reading on from a commit in the middle, with the checksum recorded there.
    middle = txs[10][-1].offset + header.frame_size
    rest = wal.committed(data[middle:], header, middle, txs[10][-1].checksum)
    assert rest.commits == 20 and rest.end == len(data)
    with pytest.raises(ValueError):
        wal.committed(data[middle + 8:], header, middle + 8, txs[10][-1].checksum)
    conn.close()


def test_wal_only_whole_commits_count(tmp_path: Path) -> None:
    conn = wal_database(tmp_path, 5, cache_pages=10)
    committed_end = scan(wal_bytes(tmp_path)).end
    # A large transaction spills pages into the WAL before it commits: they are not counted.
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200) "
                 "INSERT INTO t SELECT 1000 + x, randomblob(3000) FROM n")
    spilled = wal_bytes(tmp_path)
    assert len(spilled) > committed_end  # frames were written...
    assert scan(spilled).end == committed_end  # ...but they commit nothing
    conn.execute("ROLLBACK")
    assert scan(wal_bytes(tmp_path)).end == committed_end  # rolled back: left over, ignored
    conn.execute("INSERT INTO t VALUES (5000, x'00')")  # written over them
    now = wal_bytes(tmp_path)
    assert scan(now).end > committed_end and scan(now).commits == 7
    # Cut in the middle of the last frame, or of the last transaction: the one before counts.
    header = wal.parse_header(now)
    assert header is not None
    last_end = scan(now).end
    assert scan(now[:last_end - 100]).end < last_end
    assert scan(now[:last_end - 100]).commits == 6
    # A damaged byte in a page: the chain stops before that frame.
    damaged = bytearray(now)
    damaged[wal.HEADER_SIZE + header.frame_size * 3 + 500] ^= 0x40
    assert scan(bytes(damaged)).end <= wal.HEADER_SIZE + header.frame_size * 3
    # Another file, or a damaged header: no log at all.
    assert wal.parse_header(b"SQLite format 3\0" + bytes(16)) is None
    assert wal.parse_header(now[:31]) is None
    bad = bytearray(now[:32])
    bad[20] ^= 1
    assert wal.parse_header(bytes(bad)) is None
    conn.close()


def test_wal_restart_leaves_old_frames_that_do_not_count(tmp_path: Path) -> None:
    conn = wal_database(tmp_path, 40)
    before = wal_bytes(tmp_path)
    old = wal.parse_header(before)
    assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0  # everything copied
    conn.execute("INSERT INTO t VALUES (999, x'01')")  # the next writer restarts the log
    after = wal_bytes(tmp_path)
    new = wal.parse_header(after)
    assert old is not None and new is not None
    assert len(after) == len(before)  # not truncated: the old frames are still there...
    assert new.salts != old.salts and new.raw != old.raw
    found = scan(after)
    assert found.commits == 1 and found.end < len(after)  # ...and do not count
    conn.close()


def resign(data: bytes, big_endian: bool) -> bytes:
    """The same WAL with its checksums in the other byte order (as another machine writes)."""
    header = wal.parse_header(data)
    assert header is not None
    magic = wal.MAGIC_BIG if big_endian else wal.MAGIC_LITTLE
    head = magic.to_bytes(4, "big") + data[4:24]
    running = wal.checksum(head, big_endian)
    out = bytearray(head + b"".join(x.to_bytes(4, "big") for x in running))
    for frame in wal.frames(data[wal.HEADER_SIZE:], header, wal.HEADER_SIZE, header.checksum):
        at = frame.offset
        first8 = data[at:at + 8]
        running = wal.checksum(data[at + wal.FRAME_HEADER_SIZE:at + header.frame_size], big_endian,
                               wal.checksum(first8, big_endian, running))
        out += first8 + data[at + 8:at + 16] + b"".join(x.to_bytes(4, "big") for x in running) + frame.data
    return bytes(out)


def test_wal_checksums_in_both_byte_orders_as_sqlite_reads_them(tmp_path: Path) -> None:
    conn = wal_database(tmp_path, 20)
    rows = conn.execute("SELECT i, body FROM t ORDER BY i").fetchall()
    database = (tmp_path / "w.db").read_bytes()  # no checkpoint yet: the log holds everything
    data = wal_bytes(tmp_path)
    for big in (True, False):
        other = resign(data, big)
        header = wal.parse_header(other)
        assert header is not None and header.big_endian == big
        assert scan(other).commits == 21
        # SQLite itself finds the same transactions in it.
        folder = tmp_path / f"copy-{big}"
        folder.mkdir()
        (folder / "w.db").write_bytes(database)
        (folder / "w.db-wal").write_bytes(other)
        copy = sqlite3.connect(folder / "w.db")
        assert copy.execute("SELECT i, body FROM t ORDER BY i").fetchall() == rows
        copy.close()
    conn.close()


def test_spool_keeps_a_temporary_file_being_written(tmp_path: Path) -> None:
    """The shipper cleans what a crash left half written, never what capture (another
    process or thread) is writing right now."""
    spool = Spool(tmp_path / "spool")
    spool.create()
    live = spool.path / ".tmp-being-written"
    live.write_bytes(b"x")
    old = spool.path / ".tmp-left-by-a-crash"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    spool.clean_temporaries()
    assert live.exists() and not old.exists()
    header = SegmentHeader(stream="sqlite:a:b", engine="sqlite", kind="log", name="p", start=0, end=1,
                           time_ns=1, size=0, sha256="0" * 64)
    stop = threading.Event()

    def clean() -> None:
        while not stop.is_set():
            spool.clean_temporaries()

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    try:
        for _ in range(100):
            assert spool.put(header, os.urandom(20000))
    finally:
        stop.set()
        cleaner.join()


# -- step by step: one monitor, writes from an apsw connection of this process --


class Pharmacy:
    """The live database and a writer on it (apsw, the monitor's SQLite)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "caisse.db"
        make_database(self.path)
        self.conn = apsw.Connection(str(self.path))
        self.conn.set_busy_timeout(5000)
        self.conn.wal_autocheckpoint(0)
        self.txid = 0

    def commit(self, count: int = 1, size: int = 100) -> int:
        for _ in range(count):
            self.txid += 1
            with self.conn:  # as WRITER does
                self.conn.execute("INSERT INTO log(txid, body) VALUES (?, randomblob(?))", (self.txid, size))
                self.conn.execute("UPDATE counter SET v = ? WHERE k = 1", (self.txid,))
                if self.txid % 10 == 0:
                    self.conn.execute("DELETE FROM log WHERE txid <= ? AND txid % 3 = 0", (self.txid - 50,))
        return self.txid

    def checkpoint(self, mode: str) -> tuple[int, int, int]:
        row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def pharmacy(tmp_path: Path) -> Iterator[Pharmacy]:
    p = Pharmacy(tmp_path)
    yield p
    p.conn.close()


def restored_counter(result: SqliteRestored) -> int:
    n, rows = read_restored(result.target)
    assert rows == expected_rows(n)
    return n


def test_restore_refuses_a_missing_piece_and_names_it(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        for _ in range(4):
            pharmacy.commit(3)
            assert monitor.step().pieces == 1
    shipper.ship(repository, spool)
    logs = [s for s in segments.listing(repository) if s.header.kind == "log"]
    assert len(logs) == 4
    whole = restore_sqlite(repository, str(pharmacy.path), tmp_path / "whole.db")
    assert restored_counter(whole) == 12 and whole.pieces == 4
    segments.remove(repository, logs[2])
    with pytest.raises(CoffreError) as refused:
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "latest.db")
    assert logs[2].header.name in refused.value.message and "missing" in refused.value.message
    assert refused.value.hint and "latest moment that can be restored" in refused.value.hint
    assert not (tmp_path / "latest.db").exists()
    # Up to the piece before it: restorable; the moment right after it was captured: not.
    before = restore_sqlite(repository, str(pharmacy.path), tmp_path / "before.db",
                            until_ns=logs[1].header.time_ns)
    assert restored_counter(before) == 6
    with pytest.raises(CoffreError, match=logs[2].header.name):
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "at.db", until_ns=logs[3].header.time_ns)
    # One generation by its stream, and its database by id, name the same thing.
    by_stream = restore_sqlite(repository, logs[0].header.stream, tmp_path / "s.db",
                               until_ns=logs[0].header.time_ns)
    assert restored_counter(by_stream) == 3
    with pytest.raises(CoffreError, match="no continuous capture"):
        restore_sqlite(repository, str(tmp_path / "other.db"), tmp_path / "o.db")


def test_a_reset_while_not_watched_starts_a_new_generation(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    reports: list[str] = []
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        assert monitor.step().new_generation == "first capture"
        first = monitor.generation
        pharmacy.commit(5)
        monitor.step()
    # Stopped, then started again with nothing reset: the same generation goes on.
    pharmacy.commit(2)
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        again = monitor.step()
        assert not again.new_generation and again.pieces == 1 and monitor.generation == first
        pharmacy.commit(1)
        monitor.step()
    # Stopped; the pharmacy software checkpoints and the log restarts: what happened in
    # between cannot be told from the log any more.
    pharmacy.commit(3)
    assert pharmacy.checkpoint("TRUNCATE")[0] == 0
    pharmacy.commit(2)
    reports.clear()
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        reset = monitor.step()
        assert reset.new_generation == "WAL reset while not watched" and reset.base
        assert monitor.generation != first
        assert any("reset while its changes were not being followed" in r for r in reports)
        assert any("a new generation starts" in r for r in reports)
        pharmacy.commit(1)
        monitor.step()
    shipper.ship(repository, spool)
    bases = [s for s in segments.listing(repository) if s.header.kind == "base"]
    assert [b.header.extra["reason"] for b in sorted(bases, key=lambda b: b.header.time_ns)] == [
        "first capture", "WAL reset while not watched"]
    latest = restore_sqlite(repository, str(pharmacy.path), tmp_path / "latest.db")
    assert restored_counter(latest) == 14
    # Before the reset: the first generation, up to what it had captured (8 transactions).
    older = restore_sqlite(repository, str(pharmacy.path), tmp_path / "older.db",
                           until_ns=max(b.header.time_ns for b in bases) - 1)
    assert restored_counter(older) == 8 and older.stream.endswith(first or "?")


def test_a_changed_frame_under_the_same_header_starts_a_new_generation(
        tmp_path: Path, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    reports: list[str] = []
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        monitor.step()
        pharmacy.commit(3)
        monitor.step()
        offset = monitor._state.offset if monitor._state else 0
    wal_file = Path(f"{pharmacy.path}-wal")
    with open(wal_file, "r+b") as f:  # the checksum recorded in the last frame copied
        f.seek(offset - (wal.FRAME_HEADER_SIZE + 4096) + 16)
        f.write(b"\xff\xff\xff\xff")
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        assert monitor.step().new_generation == "last copied frame changed"
    assert any("no longer the same" in r for r in reports)


def test_restarts_under_the_hold_stay_in_the_generation(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    at: dict[str, int] = {}  # log piece -> the last transaction committed before it was read

    def step(monitor: SqliteMonitor) -> int:
        restarts = monitor.step().restarts
        shipper.ship(repository, spool)
        for s in segments.listing(repository):
            at.setdefault(s.object, pharmacy.txid)
        return restarts

    with SqliteMonitor(pharmacy.path, spool, checkpoint_pages=20) as monitor:
        step(monitor)
        first = monitor.generation
        for _ in range(6):
            pharmacy.commit(10, size=3000)  # past 20 frames: the monitor checkpoints...
            step(monitor)
        assert monitor.restarts >= 2  # ...and the next writer restarted the log each time
        # The pharmacy's own TRUNCATE, when the monitor's snapshot allows it.
        pharmacy.commit(10, size=3000)
        step(monitor)
        assert pharmacy.checkpoint("TRUNCATE") == (0, 0, 0)
        assert os.path.getsize(f"{pharmacy.path}-wal") == 0
        assert step(monitor) == 0  # an empty log: nothing to copy, nothing lost
        pharmacy.commit(2)
        assert step(monitor) == 1
        assert monitor.generation == first and monitor.generations == 1
    listed = segments.listing(repository)
    runs = sorted({names.split_position(s.header.end)[0] for s in listed})
    assert len(runs) >= 4 and runs == list(range(len(runs)))
    assert restored_counter(restore_sqlite(repository, str(pharmacy.path), tmp_path / "r.db")) == 72
    for s in listed:  # every piece's moment, across the runs
        if s.header.kind == "log":
            r = restore_sqlite(repository, str(pharmacy.path), tmp_path / f"{s.object[:8]}.db",
                               until_ns=s.header.time_ns)
            assert r.point_ns == s.header.time_ns and restored_counter(r) == at[s.object]


def test_spool_full_records_a_gap_and_restore_across_it_is_refused(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    pharmacy.commit(5)
    spool = Spool(tmp_path / "spool")
    reports: list[str] = []
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        assert monitor.step().base
        pharmacy.commit(2)
        assert monitor.step().pieces == 1
        spool.limit = spool.used() + 20_000
        pharmacy.commit(40, size=4000)  # more than the spool has room for
        lost = monitor.step()
        assert lost.gap and not lost.pieces and monitor.generation is None
        assert any("a gap is recorded" in r for r in reports)
        pharmacy.commit(1)
        waiting = monitor.step()
        assert waiting.waiting and not waiting.base  # no room for a new base
        assert any("waits for the shipper" in r for r in reports)
        shipped = shipper.ship(repository, spool)
        assert shipped.gaps == [lost_name(reports)]
        spool.limit = 10 * 1024 * 1024
        pharmacy.commit(1)
        again = monitor.step()
        assert again.new_generation == "pieces lost (spool full)" and again.base
    shipper.ship(repository, spool)
    listed = segments.listing(repository)
    gap = next(s.header for s in listed if s.header.kind == "gap")
    assert gap.extra["reason"] == "spool full"
    first_logs = [s.header for s in listed if s.header.kind == "log" and s.header.stream == gap.stream]
    # Before the gap: restorable; at or after it, until the next base: refused, saying why.
    before = restore_sqlite(repository, str(pharmacy.path), tmp_path / "before.db",
                            until_ns=first_logs[-1].time_ns)
    assert restored_counter(before) == 7
    with pytest.raises(CoffreError) as refused:
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "across.db", until_ns=gap.time_ns + 1)
    assert gap.name in refused.value.message and "lost before it could be stored" in refused.value.message
    assert refused.value.hint and "next copy of the database" in refused.value.hint
    latest = restore_sqlite(repository, str(pharmacy.path), tmp_path / "latest.db")
    assert restored_counter(latest) == 49


def lost_name(reports: list[str]) -> str:
    said = next(r for r in reports if "a gap is recorded" in r)
    return said.split("the log piece ")[1].split(" ")[0]


def ship_one_commit(tmp_path: Path, repository: Repository, pharmacy: Pharmacy, rows: int) -> None:
    """The database watched from its start, one transaction of `rows` rows, the log shipped."""
    spool = Spool(tmp_path / "spool")
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        pharmacy.commit(rows)
        monitor.step()
    shipper.ship(repository, spool)


def test_restore_never_replaces_a_file(tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    ship_one_commit(tmp_path, repository, pharmacy, 2)
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"precious")
    with pytest.raises(CoffreError, match="never replaces"):
        restore_sqlite(repository, str(pharmacy.path), taken)
    assert taken.read_bytes() == b"precious"
    beside = tmp_path / "beside.db"
    Path(f"{beside}-wal").write_bytes(b"old log")
    with pytest.raises(CoffreError, match="-wal exists"):
        restore_sqlite(repository, str(pharmacy.path), beside)
    with pytest.raises(CoffreError, match="no such folder"):
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "nowhere" / "x.db")
    with pytest.raises(CoffreError, match="earliest moment"):
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "early.db", until_ns=1)
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file counts as no database, as for restore-db
    assert restored_counter(restore_sqlite(repository, str(pharmacy.path), empty)) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".coffre-restore")) == []


def test_restore_onto_an_exfat_disk_without_hard_links(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy, exfat: Path) -> None:
    """A USB disk's file system has no link(): the database is renamed into place instead,
    still never over a file."""
    ship_one_commit(tmp_path, repository, pharmacy, 3)
    restore_sqlite(repository, str(pharmacy.path), exfat / "officine.db")
    with pytest.raises(CoffreError, match="never replaces"):
        restore_sqlite(repository, str(pharmacy.path), exfat / "officine.db")
    assert sorted(p.name for p in exfat.iterdir()) == ["officine.db"]  # nothing left beside it
    assert read_restored(str(exfat / "officine.db")) == (3, expected_rows(3))  # the first one, whole


def test_monitor_refuses_what_it_cannot_follow(tmp_path: Path, pharmacy: Pharmacy) -> None:
    rollback = tmp_path / "old.db"
    conn = apsw.Connection(str(rollback))
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    spool = Spool(tmp_path / "spool")
    with pytest.raises(CoffreError, match="not in WAL mode"):
        SqliteMonitor(rollback, spool).open()
    with pytest.raises(CoffreError, match="no such database file"):
        SqliteMonitor(tmp_path / "missing.db", spool).open()
    with SqliteMonitor(pharmacy.path, spool), pytest.raises(CoffreError, match="another monitor"):
        SqliteMonitor(pharmacy.path, spool).open()


# -- retention --


def stored(stream: str, kind: str, start: int, end: int, time_ns: int, obj: str,
           engine: str = "sqlite") -> segments.StoredSegment:
    return segments.StoredSegment(obj, SegmentHeader(
        stream=stream, engine=engine, kind=kind, name=f"{kind}-{start}-{end}", start=start, end=end,
        time_ns=time_ns, size=0, sha256="0" * 64))


def test_sqlite_floor_keeps_the_newest_base_before_the_cutoff_and_what_follows() -> None:
    g1, g2, g3 = (names.stream("a" * 16, g) for g in ("g1", "g2", "g3"))
    other = names.stream("b" * 16, "g1")
    listed = [
        stored(g1, "base", 0, 0, 100, "g1-base"), stored(g1, "log", 0, 10, 110, "g1-log1"),
        stored(g1, "gap", 10, 20, 120, "g1-gap"),
        stored(g2, "base", 0, 0, 200, "g2-base"), stored(g2, "log", 0, 5, 210, "g2-log1"),
        stored(g2, "log", 5, 9, 220, "g2-log2"), stored(g2, "base", 9, 9, 300, "g2-base2"),
        stored(g2, "base", 9, 9, 300, "g2-base2-again"), stored(g2, "log", 9, 15, 310, "g2-log3"),
        stored(g2, "log", 15, 20, 320, "g2-log4"),
        # A generation still going when the floor was taken (two monitors, by mistake).
        stored(g3, "base", 0, 0, 150, "g3-base"), stored(g3, "log", 0, 3, 400, "g3-log"),
        stored(other, "base", 0, 0, 500, "b-base"), stored(other, "log", 0, 4, 510, "b-log"),
        stored(other, "log", 4, 8, 90, "b-older-than-its-base"),  # position, not time, decides
        stored("postgres:1", "log", 0, 16, 10, "pg", engine="postgres"),
    ]
    assert sqlite_floor(listed, 50) == []
    assert sqlite_floor(listed, 250) == ["g1-base", "g1-gap", "g1-log1"]
    assert sqlite_floor(listed, 305) == ["g1-base", "g1-gap", "g1-log1", "g2-base", "g2-log1", "g2-log2"]
    # g3 went on after the floor: kept whole; database b has nothing before its only base.
    assert sqlite_floor(listed, 10**6) == sqlite_floor(listed, 305)


def test_what_retention_removes_leaves_every_later_moment_restorable(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    with SqliteMonitor(pharmacy.path, spool, base_every_ns=1) as monitor:  # a base every pass
        monitor.step()
        for _ in range(4):
            pharmacy.commit(2)
            monitor.step()
    shipper.ship(repository, spool)
    listed = segments.listing(repository)
    bases = sorted(s.header.time_ns for s in listed if s.header.kind == "base")
    assert len(bases) == 5
    cutoff = bases[2] + 1
    gone = sqlite_floor(listed, cutoff)
    assert gone and len(gone) < len(listed)
    for s in listed:
        if s.object in gone:
            segments.remove(repository, s)
    kept = segments.listing(repository)
    assert min(s.header.time_ns for s in kept) == bases[2]
    for k, s in enumerate(kept):
        r = restore_sqlite(repository, str(pharmacy.path), tmp_path / f"k{k}.db", until_ns=s.header.time_ns)
        assert restored_counter(r) >= 4
    with pytest.raises(CoffreError, match="earliest moment"):
        restore_sqlite(repository, str(pharmacy.path), tmp_path / "early.db", until_ns=bases[2] - 1)


# -- the command line (cli/wal_sqlite.py, through the real entry point) --

ENTRY = """
import sys
from coffre.cli.entry import main
sys.exit(main())
"""


def coffre(*args: str, password_file: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "LANG": "C.UTF-8", "COFFRE_TEST_WEAK_KDF": "1"}
    if password_file is not None:
        env["COFFRE_PASSWORD_FILE"] = str(password_file)
    return subprocess.Popen([sys.executable, "-c", ENTRY, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cli_once_then_restore(tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = tmp_path / "spool"
    run = ["wal", "sqlite", "--spool", str(spool), "--database", str(pharmacy.path), "--once"]
    pharmacy.commit(1)  # a log to check continuity against (an empty one proves nothing)
    first = coffre(*run)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "1 piece" in out and "generation" in out and "first capture" in err
    pharmacy.commit(3)
    second = coffre(*run)  # a new process goes on with the same generation
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0 and "1 piece" in out and "generation" not in err, err
    shipper.ship(repository, Spool(spool))
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    target = tmp_path / "back.db"
    restore = coffre("wal", "sqlite-restore", "-r", str(repository.backend.location), str(pharmacy.path),
                     str(target), password_file=password)
    out, err = restore.communicate(timeout=60)
    assert restore.returncode == 0, err
    assert "3 transactions" in out and "integrity_check: ok" in out
    assert read_restored(str(target))[0] == 4
    again = coffre("wal", "sqlite-restore", "-r", str(repository.backend.location), str(pharmacy.path),
                   str(target), "--until", "2001-01-01 00:00", password_file=password)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 1 and "earliest moment" in err
    # The same through restore-db, as for the other engines (the only captured database).
    through = coffre("restore-db", "latest", "-r", str(repository.backend.location), "--sqlite",
                     str(tmp_path / "via-restore-db.db"), "--until", "latest", password_file=password)
    out, err = through.communicate(timeout=60)
    assert through.returncode == 0 and "3 transactions" in out, err
    assert read_restored(str(tmp_path / "via-restore-db.db"))[0] == 4
    bad = coffre("wal", "sqlite", "--spool", str(spool), "--database", str(pharmacy.path), "--interval", "0")
    assert bad.wait(60) == 2


def test_cli_sigterm_stops_after_the_pass(tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    monitor = coffre("wal", "sqlite", "--spool", str(spool.path), "--database", str(pharmacy.path),
                     "--interval", "0.1")
    try:
        wait_for(lambda: len(spool.pending()) == 1, 60, "the base")
        pharmacy.commit(4)
        wait_for(lambda: len(spool.pending()) == 2, 60, "a log piece")
    finally:
        monitor.send_signal(15)
        out, err = monitor.communicate(timeout=60)
    assert monitor.returncode == 0, err
    assert "following" in out and "stopped after a pass" in out
    shipper.ship(repository, spool)
    result = restore_sqlite(repository, str(pharmacy.path), tmp_path / "back.db")
    assert restored_counter(result) == 4


def test_a_spool_that_cannot_be_written_loses_nothing(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    reports: list[str] = []
    pharmacy.commit(1)  # a log to check continuity against
    with SqliteMonitor(pharmacy.path, spool, report=reports.append) as monitor:
        monitor.step()
        pharmacy.commit(2)
        put = spool.put

        def full(*args: object, **kwargs: object) -> bool:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(spool, "put", full)
        assert monitor.step().pieces == 0
        assert any("No space left on device" in r for r in reports)
        monkeypatch.setattr(spool, "put", put)
        pharmacy.commit(1)
        again = monitor.step()
        assert again.pieces == 1 and not again.new_generation and monitor.generations == 1
    shipper.ship(repository, spool)
    assert restored_counter(restore_sqlite(repository, str(pharmacy.path), tmp_path / "back.db")) == 4


def test_plan_follows_a_piece_copied_again_after_a_crash() -> None:
    """A monitor that stopped between putting a piece and recording its position copies again
    from the older position: two pieces start there, the longer one leads on."""
    from coffre.continuity.sqlite_restore import plan

    g = names.stream("c" * 16, "g")
    base = stored(g, "base", 32, 32, 100, "base")
    first = stored(g, "log", 32, 100, 110, "first")  # put, not recorded
    again = stored(g, "log", 32, 180, 130, "again")  # copied again, further
    after = stored(g, "log", 180, 250, 140, "after")
    found = [base, first, again, after]
    assert [s.object for s in plan(found, None, "db").pieces] == ["again", "after"]
    assert [s.object for s in plan(found, 120, "db").pieces] == ["first"]  # not "missing"
    with pytest.raises(CoffreError, match=r"wal-0\.250-0\.300"):
        plan([*found, stored(g, "log", 300, 400, 150, "later")], None, "db")
