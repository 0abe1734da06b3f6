"""Continuous capture of SQLite databases (WAL frames), against real SQLite only."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from coffre.continuity.spool import Spool
from coffre.format.segment import SegmentHeader


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
