"""Databases in snapshots: restore one into a live server, drill them all in throwaway
instances, and follow their sizes from snapshot to snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import pairwise

from coffre.core.errors import CoffreError
from coffre.format.snapshot import DatabaseRecord, Snapshot
from coffre.ops.common import Reporter, find_node, find_snapshot, quiet
from coffre.policy.timeline import choose_latest, future_warning
from coffre.repository.repo import Repository
from coffre.sources.databases.base import Check, Target

Throwaways = Callable[[str], AbstractContextManager[Target]]


def find_with_databases(repo: Repository, ref: str, engine: str | None = None,
                        report: Reporter = quiet) -> Snapshot:
    """A snapshot by id; 'latest' is the newest that holds a database (of this engine): the
    last snapshot may be one of files only."""
    if ref != "latest":
        return find_snapshot(repo, ref, report=report)
    damaged: list[str] = []
    held = [s for s in repo.snapshots(errors=damaged)
            if any(engine in (None, d.engine) for d in s.databases)]
    for d in damaged:
        report(f"warning: {d} (skipped)")
    if not held:
        raise CoffreError(f"no snapshot holds a {engine + ' ' if engine else ''}database",
                          "back up with --postgres, --postgres-cluster, --mysql or --sqlite")
    now = repo.clock.now_ns()
    choice = choose_latest(held, now)  # as find_snapshot: not one dated in the future
    if choice.future:
        report(future_warning(choice.future, now, choice.chosen, total=len(held)))
    return choice.chosen


def pick(snap: Snapshot, engine: str, name: str | None) -> DatabaseRecord:
    """The snapshot's database of this engine (named, when it holds several)."""
    found = [d for d in snap.databases if d.engine == engine]
    if name is not None:
        found = [d for d in found if name in (d.name, d.file)]
    if not found:
        held = ", ".join(f"{d.engine} {d.name}" for d in snap.databases) or "none"
        raise CoffreError(f"snapshot {snap.id[:8]} holds no {engine} database"
                          + (f" named {name!r}" if name else "") + f" (it holds: {held})")
    if len(found) > 1:
        raise CoffreError(f"snapshot {snap.id[:8]} holds several {engine} databases",
                          "choose one with --database: " + ", ".join(d.name for d in found))
    return found[0]


def dump_chunks(repo: Repository, snap: Snapshot, record: DatabaseRecord) -> Iterator[bytes]:
    """The stored dump, piece by piece, each checked against its id as it is read."""
    node = find_node(repo, snap.tree, record.path.encode())
    if node is None or node.type != "file":
        raise CoffreError(f"snapshot {snap.id[:8]}: the dump {record.path} is missing from its tree")
    sent = 0
    for blob_id in node.content:
        data = repo.load_blob(blob_id)
        sent += len(data)
        yield data
    if sent != node.size:
        raise CoffreError(f"the dump {record.path} has {sent} bytes, {node.size} expected")


def restore_database(repo: Repository, snap: Snapshot, record: DatabaseRecord, target: Target,
                     force: bool = False, report: Reporter = quiet) -> None:
    if not force and not target.is_empty():
        raise CoffreError(f"{target.describe()} is not empty; nothing was changed",
                          target.replace_hint)
    privileged = target.too_privileged()
    if privileged:
        report(f"warning: {privileged}: the dump's functions, triggers and constraints (the "
               "backed-up database's own code) run with rights over the whole server; restore "
               "as the database's owner, an account without them (docs/databases.md)")
    target.restore(dump_chunks(repo, snap, record), force, record.extra)


@dataclass
class DrillResult:
    record: DatabaseRecord
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def drill(repo: Repository, snap: Snapshot, throwaway: Throwaways, report: Reporter = quiet,
          clock: Callable[[], float] = time.monotonic) -> list[DrillResult]:
    """Restore each database of the snapshot into a throwaway instance of its engine, run the
    engine's integrity check, and compare row counts with those recorded at backup time."""
    if not snap.databases:
        raise CoffreError(f"snapshot {snap.id[:8]} holds no database to drill",
                          "back up with --postgres, --mysql or --sqlite")
    results = []
    for record in snap.databases:
        result = DrillResult(record)
        start = clock()
        report(f"drill: restoring {record.engine} {record.name} into a throwaway instance")
        # A drill reports what went wrong, whatever the engine raised, and goes on with the
        # next database.
        step = "throwaway instance"
        try:
            with throwaway(record.engine) as target:
                step = "restore"
                target.restore(dump_chunks(repo, snap, record), False, record.extra)
                result.checks.append(Check("restore", True, f"{record.file} loaded"))
                step = "checks"
                result.checks += target.drill_checks(record.tables)
        except Exception as exc:
            result.checks.append(Check(step, False, _message(exc)))
        result.seconds = clock() - start
        results.append(result)
    return results


def _message(exc: Exception) -> str:
    if isinstance(exc, CoffreError):
        return exc.message
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]


@dataclass
class SizePoint:
    snapshot: str
    time_ns: int
    size: int
    rows: int


def database_sizes(snaps: list[Snapshot]) -> dict[tuple[str, str], list[SizePoint]]:
    """(engine, name) -> its size in each snapshot that holds it, oldest first."""
    out: dict[tuple[str, str], list[SizePoint]] = {}
    for s in sorted(snaps, key=lambda s: s.time_ns):
        for d in s.databases:
            out.setdefault((d.engine, d.name), []).append(
                SizePoint(s.id, s.time_ns, d.size, sum(d.tables.values())))
    return out


def unusual_growth(points: list[SizePoint]) -> bool:
    """The last growth is more than three times the usual one, and over 5 % of the size."""
    steps = [b.size - a.size for a, b in pairwise(points)]
    if len(steps) < 3:
        return False
    last, before = steps[-1], sorted(abs(x) for x in steps[:-1])
    usual = before[len(before) // 2]
    return last > 3 * usual and last > 0.05 * points[-2].size
