"""Databases in snapshots: restore one into a live server, drill them all in throwaway
instances, and follow their sizes from snapshot to snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import pairwise

from coffre.core.errors import CoffreError
from coffre.core.i18n import N_, _
from coffre.core.progress import NULL_PROGRESS, Progress
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
        report(_("warning: {problem} (skipped)").format(problem=d))
    if not held:
        raise CoffreError(_("no snapshot holds a {engine} database").format(engine=engine) if engine
                          else _("no snapshot holds a database"),
                          _("back up with --postgres, --postgres-cluster, --mysql or --sqlite"))
    now = repo.clock.now_ns()
    choice = choose_latest(held, now)  # as find_snapshot: not one dated in the future
    if choice.future:
        report(future_warning(choice.future, now, choice.chosen, total=len(held)))
    return choice.chosen


def backup_end_ns(snap: Snapshot) -> int:
    """When a snapshot's backup ended: its databases (dumps, base backups) are consistent at
    or before this moment (what a point-in-time restore starting from it can reach first)."""
    return snap.time_ns + int(snap.summary.get("duration_ns", 0))


def pick(snap: Snapshot, engine: str, name: str | None) -> DatabaseRecord:
    """The snapshot's database of this engine (named, when it holds several)."""
    found = [d for d in snap.databases if d.engine == engine]
    if name is not None:
        found = [d for d in found if name in (d.name, d.file)]
    if not found:
        held = ", ".join(f"{d.engine} {d.name}" for d in snap.databases) or _("none")
        if name:
            raise CoffreError(_("snapshot {id} holds no {engine} database named {name} (it holds: "
                                "{held})").format(id=snap.id[:8], engine=engine, name=repr(name), held=held))
        raise CoffreError(_("snapshot {id} holds no {engine} database (it holds: {held})").format(
            id=snap.id[:8], engine=engine, held=held))
    if len(found) > 1:
        raise CoffreError(_("snapshot {id} holds several {engine} databases").format(
            id=snap.id[:8], engine=engine),
            _("choose one with --database: {names}").format(names=", ".join(d.name for d in found)))
    return found[0]


def dump_chunks(repo: Repository, snap: Snapshot, record: DatabaseRecord,
                progress: Progress = NULL_PROGRESS) -> Iterator[bytes]:
    """The stored dump, piece by piece, each checked against its id as it is read (and
    counted in `progress`, whose byte total it sets)."""
    node = find_node(repo, snap.tree, record.path.encode())
    if node is None or node.type != "file":
        raise CoffreError(_("snapshot {id}: the dump {path} is missing from its tree").format(
            id=snap.id[:8], path=record.path))
    progress.add_total(nbytes=node.size)
    progress.total_known()
    sent = 0
    for blob_id in node.content:
        data = repo.load_blob(blob_id)
        sent += len(data)
        progress.advance(0, len(data))
        yield data
    if sent != node.size:
        raise CoffreError(_("the dump {path} has {size} bytes, {expected} expected").format(
            path=record.path, size=sent, expected=node.size))


def restore_database(repo: Repository, snap: Snapshot, record: DatabaseRecord, target: Target,
                     force: bool = False, report: Reporter = quiet,
                     progress: Progress = NULL_PROGRESS) -> None:
    if not force and not target.is_empty():
        raise CoffreError(_("{target} is not empty; nothing was changed").format(target=target.describe()),
                          target.replace_hint)
    privileged = target.too_privileged()
    if privileged:
        report(_("warning: {problem}: the dump's functions, triggers and constraints (the "
                 "backed-up database's own code) run with rights over the whole server; restore "
                 "as the database's owner, an account without them (docs/databases.md)").format(
                     problem=privileged))
    progress.phase(N_("restoring the dump"), unit=N_("databases"))
    progress.advance(current=f"{record.engine} {record.name}")
    target.restore(dump_chunks(repo, snap, record, progress), force, record.extra)


@dataclass
class DrillResult:
    record: DatabaseRecord
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def drill(repo: Repository, snap: Snapshot, throwaway: Throwaways, report: Reporter = quiet,
          clock: Callable[[], float] = time.monotonic,
          progress: Progress = NULL_PROGRESS) -> list[DrillResult]:
    """Restore each database of the snapshot into a throwaway instance of its engine, run the
    engine's integrity check, and compare row counts with those recorded at backup time."""
    if not snap.databases:
        raise CoffreError(_("snapshot {id} holds no database to drill").format(id=snap.id[:8]),
                          _("back up with --postgres, --mysql or --sqlite"))
    results = []
    count = len(snap.databases)

    def stage(name: str, done: int, current: str) -> None:
        """A step of one database's drill; the count of databases drilled goes on."""
        progress.phase(name, files_total=count, known=True, unit=N_("databases"))
        progress.advance(done, current=current)

    for done, record in enumerate(snap.databases):
        result = DrillResult(record)
        start = clock()
        current = f"{record.engine} {record.name}"
        report(_("drill: restoring {engine} {name} into a throwaway instance").format(
            engine=record.engine, name=record.name))
        # A drill reports what went wrong, whatever the engine raised, and goes on with the
        # next database.
        step = "throwaway instance"
        stage(N_("starting a throwaway server"), done, current)
        try:
            with throwaway(record.engine) as target:
                step = "restore"
                stage(N_("restoring the dump"), done, current)
                target.restore(dump_chunks(repo, snap, record, progress), False, record.extra)
                result.checks.append(Check("restore", True, _("{file} loaded").format(file=record.file)))
                step = "checks"
                stage(N_("checking the restored database"), done, current)
                result.checks += target.drill_checks(record.tables)
        except Exception as exc:
            result.checks.append(Check(step, False, _message(exc)))
        result.seconds = clock() - start
        results.append(result)
        progress.advance(1)
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
