"""Continuous capture of SQLite databases (WAL frames), against real SQLite only."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from coffre.continuity.spool import Spool
from coffre.format.segment import SegmentHeader
from coffre.sources.databases import sqlite_wal as wal

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
