"""Replication to a second site: every tenant's objects copied to another object store (a
folder, an `s3://…` bucket and prefix: the second centre's storage), verified on arrival,
resumable, never deleting there by default; and the proof that both sites hold the same
objects (`verify_sites`).

Layout on the target: the primary's own, `t<tenant id>/<repository>/…`, so a second server
can serve it as its object store; beside it `coffre-manifest/index/<sha256>`: small JSON
documents naming tenants (ids, names, states, quotas), their repositories and their tokens
(ids, roles and secret hashes only: never a secret), the newest by `written_ns`. `adopt`
builds a second server's database from them and a listing of the target.

Copying: the `objects` table (live and recycle-bin rows: both are stored) is walked in id
order from a cursor kept per target in the `state` table (`replication:<target id>`). Each
object is read from the primary and checked against its name (a damaged source is never
copied: it is recorded as a scrub finding instead), saved on the target, then **read back
from the target and hashed**: bytes that do not match their name are removed (they can be
nothing of value: an object is named by its hash) and written again, up to COPY_TRIES times.
The cursor advances only past rows copied (or deliberately skipped) without a gap, so a run
cut at any point resumes where it stopped, and copies again at most the objects in flight.
On PostgreSQL, row ids are not committed in order (sequences): the cursor also stays behind
rows younger than SETTLE_S, which are copied but looked at again later. On SQLite writers are
serialized, so ids are committed in order; a row id reused after the highest row was purged
is caught by the daily catch-up (a listing comparison that copies whatever is missing).

Never deleting: objects binned or purged on the primary stay on the target. With
`remove_vanished`, an object gone from the primary (no row at all) is removed from the
target once it has been gone for `hold_s` (by the server's clock, from when a catch-up first
saw it gone): a compromised first site cannot empty the second at once. Also give the
replicator credentials on the second site that cannot delete (or enable object lock there):
then even a stolen copy of them cannot.

Verifying (`verify_sites`): per tenant and repository, the rows the cursor has passed are
compared with a listing of the target (names and sizes); then SHA-256 is computed again on
both sides for a sample (`sample` per repository) or for every object (`deep`). Differences
are recorded as scrub findings (problems `replica-missing`, `replica-differs`; resolved by a
later clean verify or a copy), so the fleet view and alerts see them, and the per-tenant
counts are kept in the target's state entry under "verify". Findings name the object, not the
target: with several targets, verify each one in turn.

Also journaled: one audit entry per tenant and round (`replicate`: objects and bytes copied,
the target's location) in the tenant's chain.

Healing (`heal_from`): an object the scrub found damaged or missing here is written again from
the target's copy when that copy hashes to its name.

Credentials: an S3 target uses the usual AWS variables and files, or a named profile of its
own (`Target(..., profile=)`) when this server's objects are in S3 under other keys.

Not done: a target that is another Coffre server (`https://…`): replicate to its object
store instead (its folder or bucket)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
    UsageError,
)
from coffre.core.i18n import _
from coffre.server import audit, scrub
from coffre.server.context import ServerContext
from coffre.server.db import Database, tables
from coffre.server.roles import ROLES
from coffre.server.tenants import STATES, TENANT_NAME, valid_repository_name
from coffre.storage.base import KINDS, Backend, Handle
from coffre.storage.url import is_url, open_backend

log = logging.getLogger("coffre.server")

MANIFEST = "coffre-manifest"
MANIFEST_FORMAT = "coffre-server-replica"
BATCH = 500
CURSOR_SAVE_N = 100       # the cursor is saved after this many objects...
CURSOR_SAVE_S = 2.0       # ...or this many seconds, whichever comes first
SETTLE_S = 300.0          # PostgreSQL: rows younger than this may still have older ids to come
CATCH_UP_S = 86400.0      # a listing comparison at least this often
COPY_TRIES = 3            # a copy that does not read back right: tries before giving up
SAMPLE = 8                # objects re-hashed on both sides per repository by a plain verify
STATE_PREFIX = "replication:"
LEASE_S = 1800.0          # one object on a slow link may take minutes: renewed every LEASE_S/4


# -- the target ----------------------------------------------------------------------------

class Target:
    """A second site: an object-store location (folder or s3://…) and the backends of its
    repositories, laid out like the primary's. `wrap` puts something around each backend
    (retries in the CLI, faults in tests)."""

    def __init__(self, location: str, wrap: Callable[[Backend], Backend] | None = None,
                 profile: str | None = None) -> None:
        scheme = location.split("://", 1)[0].lower() if is_url(location) else ""
        if scheme in ("http", "https"):
            raise UsageError(
                _("replicating to another Coffre server is not supported yet"),
                _("replicate to the second server's object store instead: its folder or its "
                  "s3://HOST/BUCKET/PREFIX"))
        if profile is not None and not scheme.startswith("s3"):
            raise UsageError(_("a credentials profile goes with an s3:// second site"))
        self.profile = profile
        self._client: Any = None
        self.location = location.rstrip("/") or location
        probe = open_backend(self.location)
        self.display = probe.location  # never holds credentials
        probe.close()
        if profile is not None:
            self._s3_with_profile(self.location)  # an unknown profile: said now, not mid-copy
        self.id = hashlib.sha256(self.display.encode()).hexdigest()[:12]
        self.wrap = wrap
        self._backends: dict[tuple[int, str], Backend] = {}
        self._prepared: set[tuple[int, str]] = set()

    def _open(self, path: str) -> Backend:
        backend = self._s3_with_profile(path) if self.profile is not None else open_backend(path)
        return self.wrap(backend) if self.wrap is not None else backend

    def _s3_with_profile(self, path: str) -> Backend:
        """An S3 backend whose credentials come from a named profile (~/.aws/credentials,
        AWS_SHARED_CREDENTIALS_FILE), not from the variables the primary's storage uses:
        the second centre has its own keys. One client for every repository of the target."""
        from coffre.storage.s3 import S3Backend, s3_client
        from coffre.storage.url import parse_s3

        where = parse_s3(path)
        if self._client is None:  # s3credentials.ProfileNotFound (a UsageError) if there is none
            self._client = s3_client(where.endpoint, self.profile)
        return S3Backend(where, client=self._client)

    def backend(self, tenant_id: int, repository: str) -> Backend:
        key = (tenant_id, repository)
        found = self._backends.get(key)
        if found is None:
            found = self._backends[key] = self._open(f"{self.location}/t{tenant_id}/{repository}")
        return found

    def prepare(self, tenant_id: int, repository: str) -> None:
        """Before writing: a local folder must exist for a config object to be saved in it."""
        if not is_url(self.location) and (tenant_id, repository) not in self._prepared:
            Path(f"{self.location}/t{tenant_id}/{repository}").mkdir(parents=True, exist_ok=True)
            self._prepared.add((tenant_id, repository))

    def manifest_backend(self) -> Backend:
        key = (-1, MANIFEST)
        found = self._backends.get(key)
        if found is None:
            if not is_url(self.location):
                Path(f"{self.location}/{MANIFEST}").mkdir(parents=True, exist_ok=True)
            found = self._backends[key] = self._open(f"{self.location}/{MANIFEST}")
        return found

    @property
    def state_key(self) -> str:
        return f"{STATE_PREFIX}{self.id}"

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()


def listing(backend: Backend, kind: str) -> dict[str, int]:
    """{name: size} of one kind; a repository or kind the target never received is empty."""
    try:
        return {info.name: info.size for info in backend.list(kind)}
    except ObjectNotFound:
        return {}


# -- rows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: int
    repository_id: int
    kind: str
    name: str
    size: int
    received_ns: int
    tenant_id: int
    repository: str


def _row_query() -> Any:
    o, r = tables.objects, tables.repositories
    return (sa.select(o.c.id, o.c.repository_id, o.c.kind, o.c.name, o.c.size, o.c.received_ns,
                      r.c.tenant_id, r.c.name.label("repository"))
            .select_from(o.join(r, r.c.id == o.c.repository_id)))


def _rows_after(db: Database, after_id: int, limit: int = BATCH) -> list[Row]:
    o = tables.objects
    with db.read() as conn:
        return [Row(**r._mapping) for r in conn.execute(
            _row_query().where(o.c.id > after_id).order_by(o.c.id).limit(limit))]


def _rows_of(db: Database, repository_id: int) -> list[Row]:
    o = tables.objects
    with db.read() as conn:
        return [Row(**r._mapping) for r in conn.execute(
            _row_query().where(o.c.repository_id == repository_id).order_by(o.c.id))]


def _row_exists(db: Database, row: Row) -> bool:
    o = tables.objects
    with db.read() as conn:
        return conn.execute(sa.select(o.c.id).where(o.c.id == row.id)).first() is not None


def _repositories(db: Database) -> list[tuple[int, int, str, str]]:
    """(repository id, tenant id, repository name, tenant name) of every repository."""
    r, t = tables.repositories, tables.tenants
    with db.read() as conn:
        return [(int(a), int(b), str(c), str(d)) for a, b, c, d in conn.execute(
            sa.select(r.c.id, r.c.tenant_id, r.c.name, t.c.name)
            .select_from(r.join(t, t.c.id == r.c.tenant_id)).order_by(t.c.name, r.c.name))]


# -- the target's state --------------------------------------------------------------------

def target_state(db: Database, target: Target) -> dict[str, Any]:
    with db.read() as conn:
        found = scrub.read_state(conn, target.state_key) or {}
    found.setdefault("location", target.display)
    after = found.get("after_id")
    found["after_id"] = after if isinstance(after, int) and after >= 0 else 0
    return found


def _update_state(db: Database, target: Target, **changes: Any) -> None:
    with db.begin() as conn:
        current = scrub.read_state(conn, target.state_key) or {}
        current.update(changes, location=target.display)
        scrub.write_state(db, conn, target.state_key, current)


def all_targets(db: Database) -> list[dict[str, Any]]:
    """The state of every target replicated to from this server: location, cursor, totals,
    last round, last verify ({"divergent": bool, "tenants": {...}})."""
    st = tables.state
    out = []
    with db.read() as conn:
        for key, value in conn.execute(sa.select(st.c.key, st.c.value).where(
                st.c.key.like(f"{STATE_PREFIX}%")).order_by(st.c.key)):
            if key.count(":") != 1:
                continue  # leases and notes of vanished objects
            try:
                found = json.loads(value)
            except ValueError:
                continue
            if isinstance(found, dict):
                out.append(found | {"id": key.removeprefix(STATE_PREFIX)})
    return out


# -- the manifest --------------------------------------------------------------------------

def manifest_document(db: Database) -> dict[str, Any]:
    """Tenants, repositories and tokens (hashes only): what a second server needs, besides
    the objects, to serve the same tenants with the same tokens."""
    t, r, k = tables.tenants, tables.repositories, tables.tokens
    with db.read() as conn:
        tenants = [dict(row._mapping) for row in conn.execute(
            sa.select(t.c.id, t.c.name, t.c.display_name, t.c.contact, t.c.state, t.c.quota_soft,
                      t.c.quota_hard, t.c.created_ns).order_by(t.c.id))]
        repositories = [dict(row._mapping) for row in conn.execute(
            sa.select(r.c.id, r.c.tenant_id, r.c.name, r.c.created_ns).order_by(r.c.id))]
        tokens = [dict(row._mapping) for row in conn.execute(
            sa.select(k.c.id, k.c.tenant_id, k.c.role, k.c.label, k.c.secret_sha256, k.c.created_ns,
                      k.c.expires_ns, k.c.revoked_ns).where(k.c.tenant_id.is_not(None)).order_by(k.c.id))]
    return {"format": MANIFEST_FORMAT, "version": 1, "tenants": tenants,
            "repositories": repositories, "tokens": tokens}


def read_manifest(target: Target) -> dict[str, Any] | None:
    """The newest valid manifest on the target, or None."""
    backend = target.manifest_backend()
    best: dict[str, Any] | None = None
    for name in listing(backend, "index"):
        try:
            data = backend.load(Handle("index", name))
        except ObjectNotFound:
            continue
        if hashlib.sha256(data).hexdigest() != name:
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            continue
        if not isinstance(doc.get("written_ns"), int):
            continue
        if best is None or doc["written_ns"] > best["written_ns"]:
            best = doc
    return best


def manifest_digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(db: Database, target: Target, now_ns: int, check: bool = False) -> bool:
    """Write the manifest when it changed since the last one written (kept in the target's
    state; with `check`, or when that is unknown, the target's newest is read instead: a
    manifest removed there is written again). True when written."""
    doc = manifest_document(db)
    digest = manifest_digest(doc)
    if not check and target_state(db, target).get("manifest") == digest:
        return False
    newest = read_manifest(target)
    if newest is not None and manifest_digest(
            {k: v for k, v in newest.items() if k != "written_ns"}) == digest:
        _update_state(db, target, manifest=digest)
        return False
    data = json.dumps(doc | {"written_ns": now_ns}, sort_keys=True, separators=(",", ":")).encode()
    name = hashlib.sha256(data).hexdigest()
    backend = target.manifest_backend()
    backend.save(Handle("index", name), data)
    if hashlib.sha256(backend.load(Handle("index", name))).hexdigest() != name:
        raise TransientStorageError(_("the manifest written to {location} did not read back "
                                      "right").format(location=target.display))
    _update_state(db, target, manifest=digest)
    return True


# -- copying -------------------------------------------------------------------------------

@dataclass
class RoundSummary:
    target: str
    started_ns: int
    finished_ns: int | None = None
    copied: int = 0                # objects written and verified on the target
    copied_bytes: int = 0
    present: int = 0               # already there with the same bytes
    repaired: int = 0              # bad copies on the target removed and written again
    source_damaged: int = 0        # not copied: the primary's bytes do not match their name
    config_differs: int = 0        # the target holds another config: left as it is
    caught_up: bool = False        # a listing comparison ran
    vanished: int = 0              # objects on the target that the primary no longer has
    vanished_removed: int = 0
    after_id: int = 0              # the cursor when the round ended
    pending: int = 0               # rows behind the cursor (copied but not yet settled)
    manifest_written: bool = False
    error: str | None = None       # why the round stopped early (it resumes there)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LeaseHeld(CoffreError):
    """Another replicator to the same target is working."""


class _Skip(Exception):
    """This row needs no copy (gone from the primary, damaged there, a different config on
    the target): the cursor may pass it."""


class Replicator:
    """Copies one server's objects to one target. `remove_vanished` with `hold_s`: see the
    module's docstring. `progress` hears the running summary every few seconds."""

    def __init__(self, ctx: ServerContext, target: Target, remove_vanished: bool = False,
                 hold_s: float | None = None, holder: str | None = None,
                 progress: Callable[[RoundSummary], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.target = target
        self.remove_vanished = remove_vanished
        self.hold_s = float(ctx.settings.recycle_days * 86400 if hold_s is None else hold_s)
        self.lease = scrub.Lease(ctx.db, f"{target.state_key}:lease", holder or scrub.new_holder(),
                                 ttl_s=LEASE_S)
        self._renewed = 0.0
        self.progress = progress
        self.monotonic = monotonic
        self.settle_ns = 0 if ctx.db.dialect == "sqlite" else int(SETTLE_S * 1e9)
        self._done: set[int] = set()  # rows past the cursor already copied by this process
        self._told = 0.0
        self._per_tenant: dict[int, list[int]] = {}

    # -- a round -------------------------------------------------------------------------
    def round(self, catch_up: bool | None = None) -> RoundSummary:
        """Copy what is new; then, when due (or asked), compare listings and copy what is
        missing. A storage error ends the round early with `error` set (the cursor stays at
        the last object copied without a gap); a lease held by another replicator to the same
        target raises CoffreError."""
        now = self.ctx.clock.now_ns()
        summary = RoundSummary(target=self.target.display, started_ns=now)
        if not self.lease.acquire(now):
            held = self.lease.held_by()
            raise LeaseHeld(
                _("another replication to {location} is running ({holder})").format(
                    location=self.target.display, holder=held[0] if held else "?"),
                _("let it finish, or try again in {seconds} s if it was stopped").format(
                    seconds=int(LEASE_S)))
        self._per_tenant = {}
        self._told = self.monotonic()
        try:
            state = target_state(self.ctx.db, self.target)
            summary.after_id = state["after_id"]
            try:
                self._renewed = self.monotonic()
                summary.manifest_written = write_manifest(self.ctx.db, self.target, now)
                self._repair_findings(summary)
                self._follow(state["after_id"], summary)
                last = state.get("last_catch_up_ns")
                if not isinstance(last, int) and state["after_id"] == 0:
                    last = now  # the first round walked every row: as good as a catch-up
                    summary.caught_up = True
                due = not isinstance(last, int) or now - last >= CATCH_UP_S * 1e9
                if catch_up or (catch_up is None and due):
                    self._catch_up(summary)
                    summary.caught_up = True
            except scrub.LeaseLost:
                summary.error = _("another replicator took over this target (this one was too slow "
                                  "to renew its lease)")
            except StorageError as exc:
                summary.error = exc.message
                log.warning(_("replication to {location} stopped: {error}; it resumes there")
                            .format(location=self.target.display, error=exc.message))
            summary.finished_ns = self.ctx.clock.now_ns()
            self._save(summary)
            return summary
        finally:
            self.lease.release()

    def _save(self, summary: RoundSummary) -> None:
        state = target_state(self.ctx.db, self.target)
        changes: dict[str, Any] = {
            "after_id": summary.after_id,
            "copied": int(state.get("copied", 0)) + summary.copied,
            "copied_bytes": int(state.get("copied_bytes", 0)) + summary.copied_bytes,
            "last_round_ns": summary.finished_ns,
            "last_error": summary.error,
        }
        if summary.error is None:
            changes["last_good_round_ns"] = summary.finished_ns
        if summary.caught_up:
            changes["last_catch_up_ns"] = summary.started_ns
        _update_state(self.ctx.db, self.target, **changes)
        if self._per_tenant:
            with self.ctx.db.begin() as conn:
                for tenant_id, (n, nbytes) in sorted(self._per_tenant.items()):
                    audit.append(self.ctx.db, conn, audit.Entry(
                        tenant_id, "replicate", count=n, bytes=nbytes,
                        detail=self.target.display[:500]), self.ctx.clock.now_ns())

    def _tell(self, summary: RoundSummary) -> None:
        if self.progress is not None and self.monotonic() - self._told >= 5.0:
            self._told = self.monotonic()
            self.progress(summary)

    def _follow(self, after_id: int, summary: RoundSummary) -> None:
        """The new rows, from the cursor; the cursor saved every CURSOR_SAVE_S or
        CURSOR_SAVE_N objects (a cut then costs at most that much work again: objects found
        on the target with the right bytes are not written again)."""
        scan = cursor = saved = after_id
        settled_before = self.ctx.clock.now_ns() - self.settle_ns
        blocked = False  # a row not yet settled: the cursor stops there
        saved_at, since = self.monotonic(), 0
        try:
            while True:
                rows = _rows_after(self.ctx.db, scan)
                if not rows:
                    break
                for row in rows:
                    if row.id not in self._done:
                        self._copy_row(row, summary)
                        self._done.add(row.id)
                    scan = row.id
                    if not blocked and row.received_ns <= settled_before:
                        cursor = row.id
                        self._done.discard(row.id)
                    else:
                        blocked = True
                        summary.pending += 1
                    self._tell(summary)
                    since += 1
                    if cursor != saved and (since >= CURSOR_SAVE_N
                                            or self.monotonic() - saved_at >= CURSOR_SAVE_S):
                        _update_state(self.ctx.db, self.target, after_id=cursor)
                        saved, saved_at, since = cursor, self.monotonic(), 0
        finally:
            summary.after_id = cursor

    def _count(self, row: Row) -> None:
        tally = self._per_tenant.setdefault(row.tenant_id, [0, 0])
        tally[0] += 1
        tally[1] += row.size

    def _keep(self) -> None:
        if self.monotonic() - self._renewed < LEASE_S / 4:
            return
        if not self.lease.acquire(self.ctx.clock.now_ns()):
            raise scrub.LeaseLost
        self._renewed = self.monotonic()

    def _copy_row(self, row: Row, summary: RoundSummary) -> None:
        self._keep()
        try:
            outcome = self.copy(row)
        except _Skip:
            return  # purged while being copied
        if outcome == "copied":
            summary.copied += 1
            summary.copied_bytes += row.size
            self._count(row)
        elif outcome == "present":
            summary.present += 1
        elif outcome == "repaired":
            summary.repaired += 1
            summary.copied_bytes += row.size
            self._count(row)
        elif outcome == "source-damaged":
            summary.source_damaged += 1
        elif outcome == "config-differs":
            summary.config_differs += 1

    def copy(self, row: Row) -> str:
        """Copy one object and prove it arrived: "copied", "present" (the same bytes were
        there), "repaired" (bad bytes there were replaced), "source-damaged" (not copied),
        "config-differs" (another config is there: left alone, recorded)."""
        handle = Handle(row.kind, row.name)
        now = self.ctx.clock.now_ns()
        problem: str | None = None
        try:
            data = self.ctx.store.backend(row.tenant_id, row.repository).load(handle)
        except ObjectNotFound:
            data, problem = b"", "missing"
        except TransientStorageError:
            raise
        except StorageError:
            data, problem = b"", "unreadable"
        if problem is None and len(data) != row.size:
            problem = "size"
        elif problem is None and row.kind != "config" and hashlib.sha256(data).hexdigest() != row.name:
            problem = "mismatch"
        if problem is not None:
            if not _row_exists(self.ctx.db, row):
                raise _Skip
            scrub.record_finding(self.ctx.db, row.tenant_id, row.repository_id, row.kind, row.name,
                                 problem, now, scrub.DAMAGE)
            log.warning(_("not replicated: {kind}/{name} of tenant {tenant} is damaged on this "
                          "server ({problem})").format(kind=row.kind, name=row.name,
                                                      tenant=row.tenant_id, problem=problem))
            return "source-damaged"
        self.target.prepare(row.tenant_id, row.repository)
        dst = self.target.backend(row.tenant_id, row.repository)
        if self._arrived(dst, handle, data):  # already there (a copy cut before its cursor moved)
            scrub.resolve_findings(self.ctx.db, row.repository_id, row.kind, row.name, scrub.REPLICA, now)
            return "present"
        bad_there = retried = False
        for _attempt in range(COPY_TRIES):
            existed = False
            try:
                dst.save(handle, data)
            except ObjectExists:
                existed = True
                if row.kind == "config":
                    scrub.record_finding(self.ctx.db, row.tenant_id, row.repository_id, row.kind,
                                         row.name, "replica-differs", now, scrub.REPLICA)
                    return "config-differs"
            if self._arrived(dst, handle, data):
                scrub.resolve_findings(self.ctx.db, row.repository_id, row.kind, row.name,
                                       scrub.REPLICA, now)
                return "repaired" if bad_there else "copied"
            if row.kind == "config":
                scrub.record_finding(self.ctx.db, row.tenant_id, row.repository_id, row.kind,
                                     row.name, "replica-differs", now, scrub.REPLICA)
                return "config-differs"
            # Bytes that do not match their name are worthless: away with them, write again.
            if existed and not retried:
                bad_there = True
                log.warning(_("{kind}/{name} on {location} did not match its name: replaced")
                            .format(kind=row.kind, name=row.name, location=self.target.display))
            else:
                log.warning(_("{kind}/{name} did not read back right from {location}: written again")
                            .format(kind=row.kind, name=row.name, location=self.target.display))
            try:
                dst.remove(handle)
            except ObjectNotFound:
                pass
            retried = True
        raise TransientStorageError(
            _("{kind}/{name} could not be written to {location} so that it reads back right "
              "({tries} tries)").format(kind=row.kind, name=row.name, location=self.target.display,
                                        tries=COPY_TRIES),
            _("check the second site's storage"))

    @staticmethod
    def _arrived(dst: Backend, handle: Handle, data: bytes) -> bool:
        """Whether the target now holds exactly these bytes, read back and hashed."""
        try:
            if handle.kind == "config":
                return dst.load(handle) == data
            digest, size = scrub.hash_stored(dst, handle, len(data))
        except ObjectNotFound:
            return False
        return size == len(data) and digest == handle.name

    # -- repairs and catch-up ------------------------------------------------------------
    def _repair_findings(self, summary: RoundSummary) -> None:
        """Objects a verify found missing or different on the target: copy them (a bad copy
        is replaced, a good one resolves the finding)."""
        open_ = scrub.open_keys(self.ctx.db, scrub.REPLICA)
        if not open_:
            return
        o = tables.objects
        for (repository_id, kind, name) in sorted(open_):
            with self.ctx.db.read() as conn:
                found = conn.execute(_row_query().where(
                    o.c.repository_id == repository_id, o.c.kind == kind, o.c.name == name)).first()
            if found is None:
                continue
            self._copy_row(Row(**found._mapping), summary)

    def _catch_up(self, summary: RoundSummary) -> None:
        """Per repository: the rows the cursor passed that the target lacks (or holds with
        another size) are copied; objects the primary no longer has are counted, and removed
        after the hold with remove_vanished."""
        now = self.ctx.clock.now_ns()
        summary.manifest_written |= write_manifest(self.ctx.db, self.target, now, check=True)
        for repository_id, tenant_id, name, _tenant in _repositories(self.ctx.db):
            diff = compare(self.ctx, self.target, repository_id, tenant_id, name, summary.after_id)
            for row in diff.missing + diff.differs:
                self._copy_row(row, summary)
                self._tell(summary)
            summary.vanished += len(diff.extra)
            if self.remove_vanished:
                summary.vanished_removed += self._vanished(tenant_id, name, diff.extra, now)

    def _vanished(self, tenant_id: int, repository: str, extra: list[tuple[str, str]], now: int) -> int:
        """Note when each object was first seen gone; remove those gone for the hold."""
        prefix = f"{self.target.state_key}:gone:t{tenant_id}/{repository}/"
        st = tables.state
        with self.ctx.db.read() as conn:
            notes = {k.removeprefix(prefix): v for k, v in conn.execute(
                sa.select(st.c.key, st.c.value).where(st.c.key.like(prefix.replace("_", r"\_") + "%",
                                                                     escape="\\")))}
        wanted = {f"{kind}/{name}" for kind, name in extra}
        removed = 0
        dst = self.target.backend(tenant_id, repository)
        with self.ctx.db.begin() as conn:
            for rest in notes.keys() - wanted:  # back on the primary, or gone from the target
                conn.execute(st.delete().where(st.c.key == prefix + rest))
        for kind, name in extra:
            rest = f"{kind}/{name}"
            since = _int(notes.get(rest))
            if since is None:
                with self.ctx.db.begin() as conn:
                    scrub.write_state(self.ctx.db, conn, prefix + rest, {"since_ns": now})
                continue
            if now - since < self.hold_s * 1e9:
                continue
            try:
                dst.remove(Handle(kind, name))
            except ObjectNotFound:
                pass
            with self.ctx.db.begin() as conn:
                conn.execute(st.delete().where(st.c.key == prefix + rest))
            removed += 1
        return removed


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        found = json.loads(value).get("since_ns")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, int) else None


def replicate_once(ctx: ServerContext, target: Target, **options: Any) -> RoundSummary:
    """One round: copy what is new (and catch up when due), see Replicator."""
    return Replicator(ctx, target, **options).round()


# -- comparing both sites ------------------------------------------------------------------

@dataclass
class RepoDiff:
    rows: list[Row]                                  # the rows the cursor passed
    missing: list[Row] = field(default_factory=list)
    differs: list[Row] = field(default_factory=list)  # another size on the target
    same: list[Row] = field(default_factory=list)     # same name and size
    extra: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) only on the target
    pending: int = 0                                  # rows not replicated yet (past the cursor)


def compare(ctx: ServerContext, target: Target, repository_id: int, tenant_id: int,
            repository: str, cursor: int) -> RepoDiff:
    """One repository's rows (up to the cursor) against a listing of the target."""
    dst = target.backend(tenant_id, repository)
    listed = {kind: listing(dst, kind) for kind in KINDS}
    all_rows = _rows_of(ctx.db, repository_id)  # after the listing: see scrub._sweep
    diff = RepoDiff(rows=[r for r in all_rows if r.id <= cursor])
    diff.pending = len(all_rows) - len(diff.rows)
    known = {(r.kind, r.name) for r in all_rows}
    for row in diff.rows:
        size = listed[row.kind].get(row.name)
        if size is None:
            diff.missing.append(row)
        elif size != row.size:
            diff.differs.append(row)
        else:
            diff.same.append(row)
    diff.extra = sorted((kind, name) for kind, names in listed.items() for name in names
                        if (kind, name) not in known)
    return diff


@dataclass
class TenantDiff:
    tenant_id: int
    tenant: str
    objects: int = 0        # rows compared
    missing: list[str] = field(default_factory=list)   # "repo/kind/name"
    differs: list[str] = field(default_factory=list)
    primary_damaged: list[str] = field(default_factory=list)
    extra: int = 0          # only on the target (purged here, kept there)
    pending: int = 0        # not replicated yet
    hashed: int = 0         # objects re-hashed on both sides

    @property
    def divergent(self) -> bool:
        return bool(self.missing or self.differs)


@dataclass
class VerifyReport:
    target: str
    verified_ns: int
    deep: bool
    tenants: list[TenantDiff]

    @property
    def divergent(self) -> bool:
        return any(t.divergent for t in self.tenants)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "verified_ns": self.verified_ns, "deep": self.deep,
                "divergent": self.divergent,
                "tenants": [asdict(t) | {"divergent": t.divergent} for t in self.tenants]}


def _same_bytes(ctx: ServerContext, target: Target, row: Row) -> tuple[bool, bool]:
    """(primary good, target good) after reading and hashing both copies."""
    handle = Handle(row.kind, row.name)

    def good(backend: Backend) -> bool:
        try:
            if row.kind == "config":
                return backend.stat(handle).size == row.size
            digest, size = scrub.hash_stored(backend, handle, row.size)
        except ObjectNotFound:
            return False
        return size == row.size and digest == row.name

    primary = good(ctx.store.backend(row.tenant_id, row.repository))
    replica = good(target.backend(row.tenant_id, row.repository))
    if row.kind == "config" and primary and replica:
        src = ctx.store.backend(row.tenant_id, row.repository).load(handle)
        replica = target.backend(row.tenant_id, row.repository).load(handle) == src
    return primary, replica


def verify_sites(ctx: ServerContext, target: Target, deep: bool = False, sample: int = SAMPLE,
                 rng: random.Random | None = None) -> VerifyReport:
    """Whether the target holds every object the cursor has passed, per tenant: names and
    sizes by listing; SHA-256 on both sides for `sample` objects per repository (and every
    object a finding is open for), or all with `deep`. Differences become findings
    (replica-missing, replica-differs) and the per-tenant counts go to the target's state."""
    rng = rng or random.Random()  # noqa: S311 (a sample, not a secret)
    now = ctx.clock.now_ns()
    cursor = target_state(ctx.db, target)["after_id"]
    opened = scrub.open_keys(ctx.db, scrub.REPLICA)
    tenants: dict[int, TenantDiff] = {}
    for repository_id, tenant_id, name, tenant_name in _repositories(ctx.db):
        td = tenants.setdefault(tenant_id, TenantDiff(tenant_id, tenant_name))
        diff = compare(ctx, target, repository_id, tenant_id, name, cursor)
        td.objects += len(diff.rows)
        td.extra += len(diff.extra)
        td.pending += diff.pending
        missing, differs = list(diff.missing), list(diff.differs)
        chosen = diff.same if deep else _sample(diff.same, sample, rng, opened)
        for row in chosen:
            td.hashed += 1
            primary, replica = _same_bytes(ctx, target, row)
            if not primary and _row_exists(ctx.db, row):
                td.primary_damaged.append(f"{name}/{row.kind}/{row.name}")
                scrub.record_finding(ctx.db, row.tenant_id, row.repository_id, row.kind, row.name,
                                     "mismatch", now, scrub.DAMAGE)
            if not replica:
                differs.append(row)
        bad = {r.id for r in missing + differs}
        for row in missing:
            td.missing.append(f"{name}/{row.kind}/{row.name}")
            scrub.record_finding(ctx.db, tenant_id, repository_id, row.kind, row.name,
                                 "replica-missing", now, scrub.REPLICA)
        for row in differs:
            td.differs.append(f"{name}/{row.kind}/{row.name}")
            scrub.record_finding(ctx.db, tenant_id, repository_id, row.kind, row.name,
                                 "replica-differs", now, scrub.REPLICA)
        hashed = {r.id for r in chosen}
        for row in diff.same:
            key = (repository_id, row.kind, row.name)
            problem = opened.get(key)
            if problem is None or row.id in bad:
                continue
            if problem == "replica-missing" or row.id in hashed:
                scrub.resolve_findings(ctx.db, repository_id, row.kind, row.name, scrub.REPLICA, now)
    _resolve_replica_vanished(ctx.db, now)
    report = VerifyReport(target.display, now, deep, sorted(tenants.values(), key=lambda t: t.tenant))
    _update_state(ctx.db, target, verify={
        "verified_ns": now, "deep": deep, "divergent": report.divergent,
        "tenants": {str(t.tenant_id): {"tenant": t.tenant, "objects": t.objects,
                                       "missing": len(t.missing), "differs": len(t.differs),
                                       "primary_damaged": len(t.primary_damaged), "extra": t.extra,
                                       "pending": t.pending, "hashed": t.hashed}
                    for t in report.tenants}})
    return report


def _sample(rows: list[Row], k: int, rng: random.Random,
            opened: dict[tuple[int, str, str], str]) -> list[Row]:
    """k rows at random, plus every row with an open finding (to confirm or resolve it)."""
    flagged = [r for r in rows if (r.repository_id, r.kind, r.name) in opened]
    rest = [r for r in rows if (r.repository_id, r.kind, r.name) not in opened]
    return flagged + rng.sample(rest, min(k, len(rest)))


def _resolve_replica_vanished(db: Database, now_ns: int) -> None:
    f, o = tables.scrub_findings, tables.objects
    exists = sa.exists().where(o.c.repository_id == f.c.repository_id, o.c.kind == f.c.kind,
                               o.c.name == f.c.name)
    with db.begin() as conn:
        conn.execute(f.update().where(f.c.resolved_ns.is_(None), f.c.problem.in_(scrub.REPLICA),
                                      ~exists).values(resolved_ns=now_ns))


# -- healing the primary from the replica ---------------------------------------------------

@dataclass
class HealSummary:
    target: str
    repaired: list[str] = field(default_factory=list)              # "tenant/repo/kind/name"
    unrepaired: list[tuple[str, str]] = field(default_factory=list)  # (object, why)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "repaired": self.repaired,
                "unrepaired": [{"object": o, "reason": r} for o, r in self.unrepaired]}


def heal_from(ctx: ServerContext, target: Target) -> HealSummary:
    """Repair the objects the scrub found damaged or missing here from the second site's
    copy, when that copy hashes to the name: the bad bytes here are removed (they match no
    name, so they are nothing of value) and the good ones written, read back and hashed.
    A `config` is never replaced (nothing proves which one is right). Each repair is
    journaled in the tenant's chain (`admin.repair`)."""
    summary = HealSummary(target.display)
    for f in scrub.findings(ctx.db, scrub.DAMAGE):
        label = f"{f.tenant}/{f.repository}/{f.kind}/{f.name}"
        o = tables.objects
        with ctx.db.read() as conn:
            found = conn.execute(_row_query().where(
                o.c.repository_id == f.repository_id, o.c.kind == f.kind, o.c.name == f.name)).first()
        if found is None:
            continue  # purged meanwhile: the scrub resolves it
        row = Row(**found._mapping)
        if row.kind == "config":
            summary.unrepaired.append((label, _("a config is not named by its hash: compare both "
                                                "copies by hand")))
            continue
        handle = Handle(row.kind, row.name)
        try:
            data = target.backend(row.tenant_id, row.repository).load(handle)
        except ObjectNotFound:
            summary.unrepaired.append((label, _("not on the second site")))
            continue
        if len(data) != row.size or hashlib.sha256(data).hexdigest() != row.name:
            summary.unrepaired.append((label, _("damaged on the second site too")))
            continue
        here = ctx.store.backend(row.tenant_id, row.repository)
        problem, _read = scrub.check_object(here, handle, row.size)
        if problem is None:  # repaired by someone else meanwhile
            scrub.resolve_findings(ctx.db, row.repository_id, row.kind, row.name, scrub.DAMAGE,
                                   ctx.clock.now_ns())
            continue
        if problem != "missing":
            try:
                here.remove(handle)
            except ObjectNotFound:
                pass
        here.save(handle, data)
        problem, _read = scrub.check_object(here, handle, row.size)
        if problem is not None:
            summary.unrepaired.append((label, _("written again, but it does not read back right "
                                                "({problem})").format(problem=problem)))
            continue
        now = ctx.clock.now_ns()
        scrub.resolve_findings(ctx.db, row.repository_id, row.kind, row.name, scrub.DAMAGE, now)
        with ctx.db.begin() as conn:
            audit.append(ctx.db, conn, audit.Entry(row.tenant_id, "admin.repair", kind=row.kind,
                                                   bytes=row.size, detail=target.display[:500]), now)
        summary.repaired.append(label)
    return summary


# -- a second server on the replica --------------------------------------------------------

@dataclass
class AdoptSummary:
    tenants: int
    repositories: int
    tokens: int
    objects: int
    bytes: int
    manifest_written_ns: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def adopt(ctx: ServerContext, target: Target) -> AdoptSummary:
    """Fill an empty server database from a replica: tenants, repositories and tokens from the
    newest manifest (same ids, so the objects' t<id>/ folders match), one row per object the
    target holds (received now: the replica does not keep receipt times). The server serving
    this database must use the replica as its object store (--objects)."""
    doc = read_manifest(target)
    if doc is None:
        raise CoffreError(_("no replica manifest found at {location}").format(location=target.display),
                          _("name the folder or bucket given to 'coffre server replicate --to'"))
    db = ctx.db
    with db.read() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(tables.tenants)).scalar():
            raise UsageError(_("this server's database already has tenants"),
                             _("adopt a replica into a new, empty server ('coffre server init')"))
    now = ctx.clock.now_ns()
    objects = total = 0
    tenant_bytes: dict[int, int] = {}
    try:
        tenants, repositories, tokens = _validated(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise CoffreError(_("the replica manifest at {location} is damaged ({what})").format(
            location=target.display, what=str(exc) or type(exc).__name__)) from None
    rows: list[dict[str, Any]] = []
    for r in repositories:
        backend = target.backend(int(r["tenant_id"]), str(r["name"]))
        for kind in KINDS:
            for name, size in sorted(listing(backend, kind).items()):
                rows.append({"repository_id": r["id"], "kind": kind, "name": name, "size": size,
                             "received_ns": now, "token_id": "replica"})
                tenant_bytes[int(r["tenant_id"])] = tenant_bytes.get(int(r["tenant_id"]), 0) + size
                objects += 1
                total += size
    with db.begin() as conn:
        for t in tenants:
            conn.execute(tables.tenants.insert().values(
                **t, stored_bytes=tenant_bytes.get(int(t["id"]), 0), binned_bytes=0))
            conn.execute(tables.audit_heads.insert().values(
                tenant_id=t["id"], seq=0, entry_hash=audit.GENESIS, first_seq=1,
                first_prev_hash=audit.GENESIS))
        for r in repositories:
            conn.execute(tables.repositories.insert().values(**r))
        for k in tokens:
            conn.execute(tables.tokens.insert().values(**k))
        for chunk in _chunks(rows, 1000):
            conn.execute(tables.objects.insert(), chunk)
        if db.dialect == "postgresql":  # explicit ids given: move the sequences past them
            for table in ("tenants", "repositories", "objects"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 (fixed names)
                    f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
        audit.append(db, conn, audit.Entry(audit.PROVIDER, "admin.adopt", count=objects, bytes=total,
                                           detail=target.display[:500]), now)
    return AdoptSummary(len(tenants), len(repositories), len(tokens), objects, total,
                        int(doc["written_ns"]))


def _validated(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                             list[dict[str, Any]]]:
    """The manifest's tenants, repositories and tokens, every field checked (a replica is
    read like any other input: a repository name becomes a path)."""
    def pick(item: Any, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise TypeError("entry")
        out = {}
        for key, types in fields.items():
            value = item[key]
            if not isinstance(value, types) or isinstance(value, bool):
                raise TypeError(key)
            out[key] = value
        return out

    i, s, n = (int,), (str,), (int, type(None))
    tenants = [pick(t, {"id": i, "name": s, "display_name": s, "contact": s, "state": s,
                        "quota_soft": n, "quota_hard": n, "created_ns": i}) for t in doc["tenants"]]
    repositories = [pick(r, {"id": i, "tenant_id": i, "name": s, "created_ns": i})
                    for r in doc["repositories"]]
    tokens = [pick(k, {"id": s, "tenant_id": i, "role": s, "label": s, "secret_sha256": s,
                       "created_ns": i, "expires_ns": n, "revoked_ns": n}) for k in doc["tokens"]]
    ids = {t["id"] for t in tenants}
    for t in tenants:
        if not TENANT_NAME.match(t["name"]) or t["state"] not in STATES or t["id"] <= 0:
            raise ValueError(t["name"][:64])
    for r in repositories:
        if not valid_repository_name(r["name"]) or r["tenant_id"] not in ids:
            raise ValueError(r["name"][:64])
    for k in tokens:
        if (k["role"] not in ROLES or k["role"] == "admin" or k["tenant_id"] not in ids
                or not re.fullmatch(r"[0-9a-f]{64}", k["secret_sha256"])
                or not re.fullmatch(r"[a-z2-7]{16}", k["id"])):
            raise ValueError(k["id"][:32])
    return tenants, repositories, tokens


def _chunks(items: list[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]

