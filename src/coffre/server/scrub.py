"""Keyless scrubbing: the server re-reads what it stores and proves each object still matches
its name, without ever holding a key.

Every object but `config` is named by the SHA-256 of its bytes, so re-hashing a stored
object tells whether the storage still holds what the client sent. The scrub walks the
`objects` table (live and recycle-bin rows alike: both are still stored) in id order and, for
each row, reads the object from the tenant's backend and checks:

- `config` (not named by a hash): present, and of the recorded size;
- every other kind: the recorded size, then SHA-256(bytes) == name.

A problem becomes a row of `scrub_findings` (tenant, repository, kind, name, problem, when
found): `missing`, `size`, `mismatch` (bytes no longer match the name), `unreadable` (the
storage refused or failed to give them). A later clean check of the same object marks its
finding resolved; so does the object's row disappearing (purged from the recycle bin).

Orphans: objects present in storage without a row (an upload cut between storing the bytes
and committing the row, objects_api's order) are invisible to clients. The scrub lists each
repository's storage after the walk and reports those older than ORPHAN_AGE_S in the `state`
table (`scrub.orphans:<repository id>`, replaced at each sweep of that repository; not as
findings: they are the provider's housekeeping, no risk to the tenant, and the fleet view
counts findings). It does **not** remove them. Removal cannot be proven safe without the
upload path's help: a client re-uploading the same object finds the old bytes already there
(save is a no-op on identical bytes), then commits its row; a removal between those two
steps would lose an acknowledged object, and no lock spans both. A removed orphan also gains
nothing a provider must have (it is not counted in any quota). Partial uploads (`.tmp-*`
files older than ORPHAN_AGE_S, never referenced by anything) are removed.

Pace: reads pass through a `storage.pacing.Pacer` at `settings.scrub_rate` bytes/s, piece by
piece, so a scrub never reads faster than that, whatever the object sizes. The background
scrub (`periodic`, run by housekeeping every PERIOD_S) works in slices of at most SLICE_S
seconds and keeps its place in the `state` table (`scrub.cursor`), so it resumes where it was,
across restarts and instances. A pass starts every `settings.scrub_interval_s` (counted from
the previous pass's start); when the stored bytes cannot be read within that interval at the
configured rate, the pass is marked late (and a warning logged) rather than read faster: the
rate is what protects backups. `scrub_now(ctx)` runs one whole pass at once.

Several instances: whoever scrubs holds a lease in `state` (`scrub.lease`: holder id and
expiry by the server's clock), renewed while working and released after each slice; the
others skip their turn. An instance that dies mid-slice loses the lease after LEASE_S (at
once for a process of the same machine, whose death can be seen).

Finding problems, for the readers of `scrub_findings` (fleet, the CLI): DAMAGE (the tenant's
stored data is hurt), REPLICA (the second site differs: replication.py writes those)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.errors import (
    CoffreError,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
)
from coffre.core.i18n import _
from coffre.server.context import ServerContext
from coffre.server.db import Database, tables
from coffre.storage.base import KINDS, Backend, Handle
from coffre.storage.pacing import BLOCK as PACED_BLOCK
from coffre.storage.pacing import Pacer, Schedule

log = logging.getLogger("coffre.server")

PERIOD_S = 15.0          # housekeeping calls periodic() this often...
SLICE_S = 10.0           # ...and each call works at most this long (then lets the others run)
LEASE_S = 120.0          # a lease not renewed for this long is free again
ORPHAN_AGE_S = 86400.0   # an object without a row, older than this, is an orphan
BATCH = 200              # rows read at once; the cursor is saved after each batch
TRANSIENT_TRIES = 3      # a storage that does not answer: tries per object before giving up

LEASE_KEY = "scrub.lease"
CURSOR_KEY = "scrub.cursor"  # the background pass in progress
LAST_KEY = "scrub.last"    # the last complete pass (background or scrub_now)

DAMAGE = ("mismatch", "missing", "unreadable", "size")
ORPHANS_PREFIX = "scrub.orphans:"  # + repository id: that repository's orphans
ORPHANS_KEPT = 1000         # orphans named per repository (all are counted)
REPLICA = ("replica-missing", "replica-differs")


# -- the state table -----------------------------------------------------------------------

def read_state(conn: Connection, key: str) -> dict[str, Any] | None:
    """The JSON object stored under `key`, or None (absent or unreadable: a damaged value is
    treated as absent, its owner writes it again)."""
    value = conn.execute(sa.select(tables.state.c.value).where(tables.state.c.key == key)).scalar()
    if value is None:
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def write_state(db: Database, conn: Connection, key: str, value: dict[str, Any]) -> None:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    conn.execute(db.insert(tables.state).values(key=key, value=text).on_conflict_do_update(
        index_elements=["key"], set_={"value": text}))


def delete_state(conn: Connection, key: str) -> None:
    conn.execute(tables.state.delete().where(tables.state.c.key == key))


# -- leases --------------------------------------------------------------------------------

def new_holder() -> str:
    """An id for one worker: host, process, and a random part (two workers in one process)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """Whether a holder id names a process of this machine that no longer runs (a command
    killed while holding a lease: its successor need not wait for the expiry)."""
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname()[:80] or not parts[1].isdigit():
        return False
    if int(parts[1]) == os.getpid():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class LeaseLost(Exception):
    """Another worker took the lease (ours had expired): stop working at once."""


class Lease:
    """A lease row in `state`: one holder at a time, until `expires_ns` by the server's clock.
    Taking it is a write transaction that locks the row (FOR UPDATE on PostgreSQL; SQLite's
    IMMEDIATE transactions serialize writers), so two instances never both hold it."""

    def __init__(self, db: Database, key: str, holder: str, ttl_s: float = LEASE_S) -> None:
        self.db, self.key, self.holder, self.ttl_s = db, key, holder, ttl_s

    def acquire(self, now_ns: int) -> bool:
        """Take or renew the lease; False when another holder has it and it has not expired."""
        st = tables.state
        with self.db.begin() as conn:
            conn.execute(self.db.insert(st).values(
                key=self.key, value='{"expires_ns":0,"holder":""}').on_conflict_do_nothing(
                index_elements=["key"]))
            conn.execute(self.db.for_update(sa.select(st.c.value).where(st.c.key == self.key)))
            current = read_state(conn, self.key) or {}
            holder, expires = str(current.get("holder", "")), current.get("expires_ns", 0)
            if (holder not in ("", self.holder) and isinstance(expires, int) and expires > now_ns
                    and not _dead_here(holder)):
                return False
            write_state(self.db, conn, self.key,
                        {"holder": self.holder, "expires_ns": now_ns + int(self.ttl_s * 1e9)})
            return True

    def release(self) -> None:
        st = tables.state
        with self.db.begin() as conn:
            conn.execute(self.db.for_update(sa.select(st.c.value).where(st.c.key == self.key)))
            current = read_state(conn, self.key) or {}
            if current.get("holder") == self.holder:
                write_state(self.db, conn, self.key, {"holder": "", "expires_ns": 0})

    def held_by(self) -> tuple[str, int] | None:
        """(holder, expiry) of a lease someone holds, or None."""
        with self.db.read() as conn:
            current = read_state(conn, self.key) or {}
        holder, expires = current.get("holder"), current.get("expires_ns")
        if not holder or not isinstance(expires, int):
            return None
        return str(holder), expires


# -- findings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    id: int
    tenant_id: int
    tenant: str
    repository_id: int
    repository: str
    kind: str
    name: str
    problem: str
    found_ns: int
    resolved_ns: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def record_finding(db: Database, tenant_id: int, repository_id: int, kind: str, name: str,
                   problem: str, now_ns: int, family: tuple[str, ...]) -> bool:
    """Record `problem` for an object unless the same problem is already open; another open
    problem of the same family (DAMAGE or REPLICA) is resolved by the new one.
    True when a new finding was written."""
    f = tables.scrub_findings
    with db.begin() as conn:
        open_rows = conn.execute(sa.select(f.c.id, f.c.problem).where(
            f.c.repository_id == repository_id, f.c.kind == kind, f.c.name == name,
            f.c.resolved_ns.is_(None), f.c.problem.in_(family))).all()
        if any(p == problem for _i, p in open_rows):
            return False
        if open_rows:
            conn.execute(f.update().where(f.c.id.in_([i for i, _p in open_rows])).values(
                resolved_ns=now_ns))
        conn.execute(f.insert().values(tenant_id=tenant_id, repository_id=repository_id, kind=kind,
                                       name=name, found_ns=now_ns, problem=problem))
        return True


def resolve_findings(db: Database, repository_id: int, kind: str, name: str,
                     problems: tuple[str, ...], now_ns: int) -> int:
    """Mark the open findings of one object among `problems` resolved; how many were."""
    f = tables.scrub_findings
    with db.begin() as conn:
        result = conn.execute(f.update().where(
            f.c.repository_id == repository_id, f.c.kind == kind, f.c.name == name,
            f.c.resolved_ns.is_(None), f.c.problem.in_(problems)).values(resolved_ns=now_ns))
        return int(result.rowcount or 0)


def open_keys(db: Database, problems: tuple[str, ...]) -> dict[tuple[int, str, str], str]:
    """{(repository id, kind, name): problem} of the open findings among `problems`."""
    f = tables.scrub_findings
    with db.read() as conn:
        return {(r, k, n): p for r, k, n, p in conn.execute(
            sa.select(f.c.repository_id, f.c.kind, f.c.name, f.c.problem).where(
                f.c.resolved_ns.is_(None), f.c.problem.in_(problems)))}


def findings(db: Database, problems: tuple[str, ...] | None = None,
             include_resolved: bool = False) -> list[Finding]:
    """Findings with their tenant's and repository's names, oldest first."""
    f, t, r = tables.scrub_findings, tables.tenants, tables.repositories
    query = (sa.select(f.c.id, f.c.tenant_id, sa.func.coalesce(t.c.name, "").label("tenant"),
                       f.c.repository_id, sa.func.coalesce(r.c.name, "").label("repository"), f.c.kind,
                       f.c.name, f.c.problem, f.c.found_ns, f.c.resolved_ns)
             .select_from(f.outerjoin(t, t.c.id == f.c.tenant_id)
                          .outerjoin(r, r.c.id == f.c.repository_id))
             .order_by(f.c.found_ns, f.c.id))
    if problems is not None:
        query = query.where(f.c.problem.in_(problems))
    if not include_resolved:
        query = query.where(f.c.resolved_ns.is_(None))
    with db.read() as conn:
        return [Finding(**row._mapping) for row in conn.execute(query)]


# -- reading and hashing one object --------------------------------------------------------

def piece_size(backend: Backend) -> int:
    """How much to read at once: small pieces keep the pace even on a local disk; a remote
    storage answers each piece with a request, so it gets larger ones."""
    return 4 * 1024 * 1024 if backend.remote else 1024 * 1024


def hash_stored(backend: Backend, handle: Handle, expected_size: int,
                pacer: Pacer | None = None, between: Callable[[], None] | None = None) -> tuple[str, int]:
    """(SHA-256 hex, size) of a stored object, read piece by piece through `pacer`; reading
    stops one byte past `expected_size` (a longer object is wrong whatever follows, and a
    damaged size field must not make the server read a huge file). `between` runs between
    pieces (lease renewal)."""
    digest = hashlib.sha256()
    piece = piece_size(backend)
    offset, limit = 0, expected_size + 1
    while offset < limit:
        want = min(piece, limit - offset)
        data = backend.load(handle, offset, want)
        if pacer is not None:
            for at in range(0, len(data), PACED_BLOCK):  # a slow pace still renews the lease
                pacer.take(min(PACED_BLOCK, len(data) - at))
                if between is not None:
                    between()
        digest.update(data)
        offset += len(data)
        if len(data) < want:
            break
        if between is not None:
            between()
    return digest.hexdigest(), offset


def check_object(backend: Backend, handle: Handle, size: int, pacer: Pacer | None = None,
                 between: Callable[[], None] | None = None) -> tuple[str | None, int]:
    """(problem or None, bytes read) for one stored object. Raises TransientStorageError
    when the storage did not answer (nothing can be said of the object then)."""
    try:
        if handle.kind == "config":
            info = backend.stat(handle)
            return (None if info.size == size else "size"), 0
        digest, read = hash_stored(backend, handle, size, pacer, between)
    except ObjectNotFound:
        return "missing", 0
    except TransientStorageError:
        raise
    except StorageError:
        return "unreadable", 0
    if read != size:
        return "size", read
    return (None if digest == handle.name else "mismatch"), read


# -- the pass ------------------------------------------------------------------------------

@dataclass(order=True)
class Orphan:
    tenant_id: int
    repository: str
    kind: str
    name: str
    size: int
    mtime_ns: int


@dataclass
class ScrubSummary:
    started_ns: int
    finished_ns: int | None = None
    objects: int = 0               # rows checked
    bytes: int = 0                 # bytes read and hashed
    found: int = 0                 # new findings written during this run
    resolved: int = 0              # findings resolved during this run
    orphans: list[Orphan] = field(default_factory=list)
    temporaries_removed: int = 0
    complete: bool = False         # the whole pass ran (scrub_now), or this slice ended one
    late: bool = False             # the stored bytes do not fit in one interval at the rate
    problems: list[Finding] = field(default_factory=list)  # open damage findings when done

    def to_json(self) -> dict[str, Any]:
        return {
            "started_ns": self.started_ns, "finished_ns": self.finished_ns,
            "objects": self.objects, "bytes": self.bytes, "found": self.found,
            "resolved": self.resolved, "complete": self.complete, "late": self.late,
            "temporaries_removed": self.temporaries_removed,
            "orphans": [asdict(o) for o in self.orphans],
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class _Position:
    """Where a pass is: what is persisted between slices (`scrub.cursor`)."""
    started_ns: int
    phase: str = "objects"   # objects, then orphans
    after_id: int = 0        # last objects.id checked
    repo_after: int = 0      # last repositories.id swept for orphans
    objects: int = 0
    bytes: int = 0
    late: bool = False

    @classmethod
    def parse(cls, value: dict[str, Any] | None) -> _Position | None:
        if value is None:
            return None
        try:
            pos = cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})
        except TypeError:
            return None
        ints = (pos.started_ns, pos.after_id, pos.repo_after, pos.objects, pos.bytes)
        if not all(isinstance(i, int) for i in ints) or pos.phase not in ("objects", "orphans"):
            return None
        return pos


class _Stop(Exception):
    """The slice's time is up, or the storage stopped answering: the position is kept."""


@dataclass
class _Row:
    id: int
    repository_id: int
    kind: str
    name: str
    size: int
    tenant_id: int
    repository: str


class Scrubber:
    """One worker of the scrub: its lease holder id, its pace (the clock and the pause are
    injected, so tests do not wait)."""

    def __init__(self, ctx: ServerContext, holder: str | None = None, rate: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ctx = ctx
        self.holder = holder or new_holder()
        self.rate = float(ctx.settings.scrub_rate if rate is None else rate)
        self.monotonic, self.sleep = monotonic, sleep
        self.pacer = Pacer(Schedule((), self.rate if self.rate > 0 else None),
                           monotonic=monotonic, sleep=sleep)
        self.lease = Lease(ctx.db, LEASE_KEY, self.holder)
        self._renewed = 0.0

    # -- entry points ------------------------------------------------------------------
    def slice(self, now_ns: int, budget_s: float = SLICE_S) -> ScrubSummary | None:
        """At most `budget_s` of the background pass; None when there was nothing to do (no
        pass due) or another instance holds the lease."""
        if not self.lease.acquire(now_ns):
            return None
        self._renewed = self.monotonic()
        try:
            with self.ctx.db.read() as conn:
                pos = _Position.parse(read_state(conn, CURSOR_KEY))
                last = read_state(conn, LAST_KEY) or {}
            if pos is None:
                last_start = last.get("started_ns")
                interval_ns = int(self.ctx.settings.scrub_interval_s * 1e9)
                if isinstance(last_start, int) and now_ns - last_start < interval_ns:
                    return None
                pos = self._begin(now_ns, background=True)
            summary = ScrubSummary(started_ns=pos.started_ns, late=pos.late)
            deadline = self.monotonic() + budget_s
            try:
                self._work(pos, summary, deadline, persist=True)
            except _Stop:
                return summary
            self._finish(pos, summary, background=True)
            return summary
        finally:
            self.lease.release()

    def whole_pass(self, wait_s: float = 60.0) -> ScrubSummary:
        """One complete pass now (the background pass keeps its own place). Waits up to
        `wait_s` for another instance's slice to end; raises CoffreError if it does not."""
        deadline = self.monotonic() + wait_s
        while not self.lease.acquire(self.ctx.clock.now_ns()):
            if self.monotonic() >= deadline:
                held = self.lease.held_by()
                raise CoffreError(
                    _("another server instance is scrubbing ({holder})").format(
                        holder=held[0] if held else "?"),
                    _("try again later; its lease ends within {seconds} s unless it keeps working")
                    .format(seconds=int(LEASE_S)))
            self.sleep(1.0)
        self._renewed = self.monotonic()
        try:
            pos = self._begin(self.ctx.clock.now_ns(), background=False)
            summary = ScrubSummary(started_ns=pos.started_ns, late=pos.late)
            try:
                self._work(pos, summary, None, persist=False)
            except _Stop as stop:
                raise CoffreError(
                    _("the scrub stopped: the object store did not answer ({reason})").format(
                        reason=str(stop) or "?"),
                    _("check the object store, then run the scrub again")) from None
            self._finish(pos, summary, background=False)
            return summary
        finally:
            self.lease.release()

    # -- the walk ----------------------------------------------------------------------
    def _begin(self, now_ns: int, background: bool) -> _Position:
        o = tables.objects
        with self.ctx.db.read() as conn:
            total = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(o.c.size), 0))).scalar() or 0)
        pos = _Position(started_ns=now_ns)
        # The background reads during SLICE_S of every PERIOD_S, at the rate.
        speed = self.rate * (SLICE_S / PERIOD_S if background else 1.0)
        if speed > 0 and total / speed > self.ctx.settings.scrub_interval_s:
            pos.late = True
            log.warning(_("the scrub cannot read the {total} bytes stored within its interval of "
                          "{interval} s at {rate} bytes/s: raise the scrub rate or the interval")
                        .format(total=total, interval=int(self.ctx.settings.scrub_interval_s),
                                rate=int(self.rate)))
        if background:
            self._save(pos)
        return pos

    def _save(self, pos: _Position) -> None:
        with self.ctx.db.begin() as conn:
            write_state(self.ctx.db, conn, CURSOR_KEY, asdict(pos))

    def _keep(self) -> None:
        """Renew the lease when a quarter of it has passed (between pieces and objects)."""
        if self.monotonic() - self._renewed < LEASE_S / 4:
            return
        if not self.lease.acquire(self.ctx.clock.now_ns()):
            raise LeaseLost
        self._renewed = self.monotonic()

    def _rows(self, after_id: int) -> list[_Row]:
        o, r = tables.objects, tables.repositories
        with self.ctx.db.read() as conn:
            return [_Row(*row) for row in conn.execute(
                sa.select(o.c.id, o.c.repository_id, o.c.kind, o.c.name, o.c.size, r.c.tenant_id, r.c.name)
                .select_from(o.join(r, r.c.id == o.c.repository_id))
                .where(o.c.id > after_id).order_by(o.c.id).limit(BATCH))]

    def _work(self, pos: _Position, summary: ScrubSummary, deadline: float | None,
              persist: bool) -> None:
        opened = open_keys(self.ctx.db, DAMAGE)
        try:
            while pos.phase == "objects":
                rows = self._rows(pos.after_id)
                if not rows:
                    pos.phase = "orphans"
                    break
                try:
                    for row in rows:
                        if deadline is not None and self.monotonic() >= deadline:
                            raise _Stop
                        self._keep()
                        pos.bytes += self._check(row, summary, opened)
                        pos.after_id = row.id
                        pos.objects += 1
                finally:
                    if persist:
                        self._save(pos)
            while pos.phase == "orphans":
                repo = self._next_repository(pos.repo_after)
                if repo is None:
                    pos.phase = "done"
                    break
                if deadline is not None and self.monotonic() >= deadline:
                    raise _Stop
                self._keep()
                self._sweep(repo, summary)
                pos.repo_after = repo[0]
                if persist:
                    self._save(pos)
        finally:
            summary.objects, summary.bytes = pos.objects, pos.bytes

    def _check(self, row: _Row, summary: ScrubSummary,
               opened: dict[tuple[int, str, str], str]) -> int:
        """Check one row, record or resolve its finding; the bytes read."""
        problem, read = self._read(row)
        key = (row.repository_id, row.kind, row.name)
        now = self.ctx.clock.now_ns()
        if problem is None:
            if key in opened:
                summary.resolved += resolve_findings(self.ctx.db, *key, DAMAGE, now)
                del opened[key]
            return read
        if not self._still_there(row):
            return read  # purged (or a lock removed) while it was being read: nothing to report
        if record_finding(self.ctx.db, row.tenant_id, row.repository_id, row.kind, row.name,
                          problem, now, DAMAGE):
            summary.found += 1
            log.warning(_("scrub: {kind}/{name} of tenant {tenant}, repository {repository}: {problem}")
                        .format(kind=row.kind, name=row.name, tenant=row.tenant_id,
                                repository=row.repository, problem=problem))
        opened[key] = problem
        return read

    def _read(self, row: _Row) -> tuple[str | None, int]:
        """check_object, tried again when the storage does not answer; _Stop after
        TRANSIENT_TRIES (the position stays before this object)."""
        backend = self.ctx.store.backend(row.tenant_id, row.repository)
        handle = Handle(row.kind, row.name)
        attempt = 0
        while True:
            try:
                return check_object(backend, handle, row.size, self.pacer, self._keep)
            except TransientStorageError as exc:
                attempt += 1
                if attempt >= TRANSIENT_TRIES:
                    log.warning(_("the scrub stopped at {kind}/{name}: {error}; it resumes there")
                                .format(kind=row.kind, name=row.name, error=exc.message))
                    raise _Stop(exc.message) from exc
                self.sleep(2.0 ** attempt)

    def _still_there(self, row: _Row) -> bool:
        o = tables.objects
        with self.ctx.db.read() as conn:
            return conn.execute(sa.select(o.c.id).where(
                o.c.id == row.id, o.c.repository_id == row.repository_id, o.c.kind == row.kind,
                o.c.name == row.name)).first() is not None

    def _next_repository(self, after: int) -> tuple[int, int, str] | None:
        r = tables.repositories
        with self.ctx.db.read() as conn:
            found = conn.execute(sa.select(r.c.id, r.c.tenant_id, r.c.name).where(r.c.id > after)
                                 .order_by(r.c.id).limit(1)).first()
        return (int(found[0]), int(found[1]), str(found[2])) if found else None

    def _sweep(self, repo: tuple[int, int, str], summary: ScrubSummary) -> None:
        """Orphans and stale partial uploads of one repository."""
        repository_id, tenant_id, name = repo
        now = self.ctx.clock.now_ns()
        older = now - int(ORPHAN_AGE_S * 1e9)
        backend = self.ctx.store.backend(tenant_id, name)
        try:
            summary.temporaries_removed += backend.clean_temporaries(older)
            # The storage is listed before the rows are read: an object committed meanwhile
            # is then seen with its row (the other order would report it).
            listed = {kind: list(backend.list(kind)) for kind in KINDS}
        except StorageError as exc:
            log.warning(_("the scrub could not list repository {repository} of tenant {tenant}: {error}")
                        .format(repository=name, tenant=tenant_id, error=exc.message))
            return
        o = tables.objects
        with self.ctx.db.read() as conn:
            known = {(k, n) for k, n in conn.execute(
                sa.select(o.c.kind, o.c.name).where(o.c.repository_id == repository_id))}
        orphans = sorted(Orphan(tenant_id, name, kind, info.name, info.size, info.mtime_ns)
                         for kind, infos in listed.items() for info in infos
                         if (kind, info.name) not in known and info.mtime_ns < older)
        summary.orphans.extend(orphans)
        key = f"{ORPHANS_PREFIX}{repository_id}"
        with self.ctx.db.begin() as conn:
            if orphans:
                write_state(self.ctx.db, conn, key, {
                    "found_ns": now, "count": len(orphans), "bytes": sum(o.size for o in orphans),
                    "orphans": [asdict(o) for o in orphans[:ORPHANS_KEPT]]})
            else:
                delete_state(conn, key)

    def _finish(self, pos: _Position, summary: ScrubSummary, background: bool) -> None:
        now = self.ctx.clock.now_ns()
        summary.resolved += _resolve_vanished(self.ctx.db, now)
        summary.finished_ns = now
        summary.complete = True
        summary.problems = findings(self.ctx.db, DAMAGE)
        with self.ctx.db.begin() as conn:
            write_state(self.ctx.db, conn, LAST_KEY, {
                "started_ns": pos.started_ns, "finished_ns": now, "objects": pos.objects,
                "bytes": pos.bytes, "problems": len(summary.problems),
                "orphans": len(summary.orphans), "late": pos.late,
                "background": background})
            if background:
                delete_state(conn, CURSOR_KEY)


def _resolve_vanished(db: Database, now_ns: int) -> int:
    """Resolve the open damage findings of objects whose row is gone (purged)."""
    f, o = tables.scrub_findings, tables.objects
    exists = sa.exists().where(o.c.repository_id == f.c.repository_id, o.c.kind == f.c.kind,
                               o.c.name == f.c.name)
    with db.begin() as conn:
        result = conn.execute(f.update().where(f.c.resolved_ns.is_(None), f.c.problem.in_(DAMAGE),
                                               ~exists).values(resolved_ns=now_ns))
        return int(result.rowcount or 0)


def orphans(db: Database) -> tuple[list[Orphan], int, int]:
    """The orphans the last sweep of each repository found: (named ones, count, bytes)."""
    st = tables.state
    named: list[Orphan] = []
    count = total = 0
    with db.read() as conn:
        rows = conn.execute(sa.select(st.c.value).where(st.c.key.like(f"{ORPHANS_PREFIX}%"))).all()
    for (value,) in rows:
        try:
            doc = json.loads(value)
            named += [Orphan(**o) for o in doc.get("orphans", [])]
            count += int(doc.get("count", 0))
            total += int(doc.get("bytes", 0))
        except (ValueError, TypeError, AttributeError):
            continue  # a damaged entry: the next sweep writes it again
    return sorted(named), count, total


def last_pass(db: Database) -> dict[str, Any] | None:
    """The last complete pass ({started_ns, finished_ns, objects, bytes, problems, orphans,
    late}), or None; and the background pass in progress under "in_progress"."""
    with db.read() as conn:
        last = read_state(conn, LAST_KEY)
        current = read_state(conn, CURSOR_KEY)
    if last is None and current is None:
        return None
    out = dict(last or {})
    if current is not None:
        out["in_progress"] = current
    return out


# -- housekeeping --------------------------------------------------------------------------

_workers: dict[int, Scrubber] = {}
_workers_lock = threading.Lock()


def _worker(ctx: ServerContext) -> Scrubber:
    """This context's background scrubber (one holder id and one pace per running server)."""
    with _workers_lock:
        found = _workers.get(id(ctx))
        if found is None or found.ctx is not ctx:
            found = _workers[id(ctx)] = Scrubber(ctx)
            weakref.finalize(ctx, _workers.pop, id(ctx), None)
        return found


def periodic(ctx: ServerContext, now_ns: int) -> None:
    """A slice of the background scrub (at most SLICE_S seconds of reading)."""
    try:
        _worker(ctx).slice(now_ns)
    except LeaseLost:
        log.warning(_("the scrub's lease was taken by another instance; it stopped"))


def scrub_now(ctx: ServerContext, rate: float | None = None) -> ScrubSummary:
    """One whole pass now, at `rate` bytes/s (default: the settings' scrub rate)."""
    return Scrubber(ctx, rate=rate).whole_pass()
