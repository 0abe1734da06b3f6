"""Switching a SQLite file to its write-ahead log, for every SQLite file Coffre keeps (the
files cache, the agent's status and alerts, the hosting server's database).

The mode is kept in the file, so only the first connection to a new file really switches it.
When two processes do that at the same moment (two first backups started together, the agent
and a command opening a new status file), SQLite answers "database is locked" to one of them at
once, without waiting out its busy timeout. The mode is then read back, and the switch tried
again until one of them made it.
"""

from __future__ import annotations

import sqlite3
import time

RETRY_S = 0.05


def use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """PRAGMA journal_mode=WAL, waiting up to `timeout` seconds for another process's switch."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(RETRY_S)
