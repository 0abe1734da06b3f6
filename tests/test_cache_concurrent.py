"""Two backups started together on a machine whose files cache is new (a first backup to two
destinations at once, as the agent may start them): each opens the cache and switches it to
its write-ahead log. SQLite refused one of them at once ("database is locked", no waiting),
and that backup ended in a traceback (seen in CI, 1 round in ~10 here)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3
from pathlib import Path
from typing import Any

from coffre.repository.cache import RepoCache

ROUNDS = 40
OPENERS = 3


def _open(root: str, barrier: multiprocessing.synchronize.Barrier, errors: Any) -> None:
    barrier.wait()
    try:
        RepoCache(bytes(32), Path(root)).db.close()
    except Exception as exc:  # reported to the test, whatever it is
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for n in range(ROUNDS):
        root = tmp_path / f"cache-{n}"
        barrier = ctx.Barrier(OPENERS)
        procs = [ctx.Process(target=_open, args=(str(root), barrier, errors)) for _ in range(OPENERS)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
            assert proc.exitcode == 0
        assert errors.empty(), errors.get()
        db = sqlite3.connect(root / bytes(32).hex() / "cache.sqlite")
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()
