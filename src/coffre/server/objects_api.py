"""The object protocol: a tenant's repositories and their objects over HTTP (docs/server.md).

Every request goes through two stages, as in rest-server. The first (`settle`) settles who
calls (bearer token), which tenant and repository the request is about, and whether the
caller's role and the tenant's state allow the operation at all. The second knows only
kinds and names: it validates them strictly (a kind of storage.base.KINDS; a name of 64
lower-case hex digits, or `config`), then does the work.

- Uploads are hashed while they are received and refused unless the name is the SHA-256 of
  the bytes (`config` excepted): an append-only client cannot plant objects under the names
  of future content (rest-server #175). They are stored with the storage backend's atomic,
  fsynced save, THEN recorded (the objects row, the tenant's usage, the audit entry and the
  metering, in one transaction), THEN acknowledged. An object stored without a row is
  invisible: an orphan the scrub reports.
- Nothing is ever overwritten: the same bytes again is success (idempotent retries), other
  bytes under an existing name (`config`) are refused. An upload under a name in the
  recycle bin takes it back out (same bytes, by construction).
- Deletions move objects into the tenant's recycle bin (`binned_ns`), counted as binned
  bytes until purged; lock objects are removed for good, by the token that wrote them or a
  token with the DELETE privilege. `config` is removed by nobody but an admin with a motive.
- Tenants never see each other: a token names no tenant in its URLs, so another tenant's
  repositories and objects are simply not there (404, as any absent object).
- The provider's admin tokens reach a tenant's objects under
  `/v1/admin/tenants/{tenant}/repos/...` (read, list, delete) with a required
  `X-Coffre-Motive` header, journaled with the motive.
- Limits: bodies up to `max_object_bytes`, with their Content-Length declared; bodies held in
  memory at once bounded by `max_inflight_bytes` (a request waits, then 503); a body slower
  than `min_upload_rate` once `body_grace_s` has passed is cut (408, slowloris).

Writes and refusals are appended to the audit journal in the transaction that records them;
reads are counted in `ctx.tally` and journaled at its next flush.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
)
from coffre.core.human import human_size
from coffre.core.i18n import _
from coffre.server import audit, metering, quota, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import Database, tables
from coffre.server.http import Refusal, authenticate, client_address, in_thread
from coffre.server.roles import Principal, Privilege
from coffre.storage.base import KINDS, Backend, Handle

log = logging.getLogger("coffre.server")

OBJECT_NAME = re.compile(r"^[0-9a-f]{64}$")
MOTIVE = re.compile(r"^[^\x00-\x1f\x7f]{3,500}$")
PIECE = 4 * 1024 * 1024          # bytes read from storage at a time for a download
WAIT_FOR_MEMORY_S = 60.0         # an upload waits this long for room among in-flight bodies
ORPHAN_AGE_NS = 10 * 60 * 10**9  # a stored object without a row, older than this, is debris
TOUCH_EVERY_S = 60.0             # tokens.last_used_ns is written at most this often
RECEIVED_HEADER = "X-Coffre-Received-Ns"
MOTIVE_HEADER = "X-Coffre-Motive"


class Received(Refusal):
    """A refusal with machine-readable fields beside error and message (quota figures)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(status, code, message, headers)
        self.extra = extra


@dataclass(frozen=True)
class Target:
    """What the first stage settled: caller, tenant, repository (None: not created yet)."""

    principal: Principal
    tenant_id: int
    tenant_name: str
    repo: str
    repository_id: int | None
    client: str
    motive: str | None         # set: an admin reaching a tenant's objects
    warning: str | None        # X-Coffre-Quota-Warning value

    def op(self, what: str) -> str:
        return f"admin.{what}" if self.motive is not None else what

    def entry(self, what: str, outcome: str = "ok", kind: str = "", nbytes: int = 0,
              detail: str = "") -> audit.Entry:
        if self.motive is not None:
            detail = f"motive: {self.motive}" + (f"; {detail}" if detail else "")
        return audit.Entry(self.tenant_id, self.op(what), outcome, self.principal.token_id, self.client,
                           kind, 1, nbytes, detail[:2000])

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {quota.WARNING_HEADER: self.warning} if self.warning else {}
        return out | (extra or {})


_writers: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


@contextmanager
def writing(db: Database) -> Iterator[Connection]:
    """A write transaction. On SQLite, this process's writers queue on a lock first: SQLite
    serializes writers anyway, but its busy handler retries with growing sleeps, which under
    load left some uploads waiting seconds while others went through (p99 1.8 s at 120
    uploads/s); queued here they are served in turn. PostgreSQL writers go straight in."""
    if db.dialect != "sqlite":
        with db.begin() as conn:
            yield conn
        return
    with _writers_lock:
        lock = _writers.setdefault(db, threading.Lock())
    with lock, db.begin() as conn:
        yield conn


def journal(ctx: ServerContext, entry: audit.Entry) -> None:
    with writing(ctx.db) as conn:
        audit.append(ctx.db, conn, entry, ctx.clock.now_ns())


class ByteBudget:
    """Upload bodies held in memory at once, bounded: a request waits for room, and gives
    up (503) after WAIT_FOR_MEMORY_S."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.used = 0
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self, n: int, timeout: float) -> int | None:
        """Reserve room for n bytes (capped at the capacity); the amount reserved, or None."""
        n = min(n, self.capacity)
        cond = self._condition()
        async with cond:
            try:
                await asyncio.wait_for(cond.wait_for(lambda: self.used + n <= self.capacity), timeout)
            except TimeoutError:
                return None
            self.used += n
        return n

    async def release(self, n: int) -> None:
        cond = self._condition()
        async with cond:
            self.used -= n
            cond.notify_all()


def _error(status: int, code: str, message: str, t: Target | None = None, **extra: Any) -> Received:
    return Received(status, code, message, t.headers() if t else None, **extra)


def _storage_refusal(exc: StorageError, t: Target) -> Received:
    """A failure of the object store, as the client should see it."""
    if isinstance(exc, StorageFull):
        return _error(507, "storage_full", _("the server's storage is full"), t)
    if isinstance(exc, ObjectNotFound):
        return _error(404, "not_found", _("no such object"), t)
    log.warning("object store failure: %s", exc.message)
    return _error(503, "unavailable", _("the server's storage failed; try again later"), t)


def _handle(kind: str, name: str) -> Handle | None:
    """The object a path names, or None if kind or name is not one the protocol allows."""
    if kind not in KINDS:
        return None
    if kind == "config":
        return Handle("config", "config") if name == "config" else None
    return Handle(kind, name) if OBJECT_NAME.match(name) else None


class ObjectsAPI:
    """The handlers, sharing the context, the in-flight budget and the token-touch times."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.budget = ByteBudget(ctx.settings.max_inflight_bytes)
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()

    # -- stage 1 ---------------------------------------------------------------------------
    async def settle(self, request: Request, what: str, need: Privilege, write: bool = False) -> Target:
        principal = await authenticate(self.ctx, request, what)
        request.state.token_id = principal.token_id
        client = client_address(self.ctx, request)
        params = request.path_params
        motive = request.headers.get(MOTIVE_HEADER.lower())
        if motive is not None:  # headers arrive as latin-1; a motive is written in UTF-8
            motive = motive.encode("latin-1").decode("utf-8", "replace")
        t = await in_thread(self._settle, principal, client, params.get("tenant"), params["repo"],
                            motive, what, need, write)
        request.state.tenant = t.tenant_name
        return t

    def _settle(self, principal: Principal, client: str, tenant_name: str | None, repo: str,
                motive: str | None, what: str, need: Privilege, write: bool) -> Target:
        ctx = self.ctx
        self._touch(principal.token_id)

        def refuse(tenant_id: int, status: int, code: str, message: str,
                   outcome: str | None = None) -> Refusal:
            op = f"admin.{what}" if tenant_name is not None else what
            detail = f"motive: {motive}" if motive else ""
            journal(ctx, audit.Entry(tenant_id, op, outcome or code, principal.token_id, client,
                                     detail=detail[:2000]))
            return Received(status, code, message)

        if tenant_name is not None:  # /v1/admin/tenants/{tenant}/repos/...
            if not principal.may(Privilege.ADMIN):
                motive = None
                raise refuse(principal.tenant_id or audit.PROVIDER, 403, "forbidden",
                             _("this route is for the provider's admin tokens"))
            motive = (motive or "").strip()
            if not MOTIVE.match(motive):
                raise refuse(audit.PROVIDER, 400, "bad_request",
                             _("access to a tenant's objects needs a motive: the {header} header "
                               "(3 to 500 characters)").format(header=MOTIVE_HEADER), "no_motive")
            with ctx.db.read() as conn:
                known = tenants.TENANT_NAME.match(tenant_name)
                tenant = tenants.by_name(conn, tenant_name) if known else None
            if tenant is None:
                raise refuse(audit.PROVIDER, 404, "not_found", _("no such tenant"))
            tenant_id, name, state = tenant.id, tenant.name, tenant.state
        else:
            motive = None
            if principal.tenant_id is None or principal.tenant_name is None:
                raise refuse(audit.PROVIDER, 403, "forbidden",
                             _("an admin token reaches tenants' objects under "
                               "/v1/admin/tenants/TENANT/repos/... with a motive"))
            tenant_id, name = principal.tenant_id, principal.tenant_name
            state = principal.tenant_state or "active"
        if not tenants.valid_repository_name(repo):
            raise refuse(tenant_id, 400, "bad_request", _("invalid repository name"))
        if need not in principal.privileges:
            raise refuse(tenant_id, 403, "forbidden",
                         _("the {role} role may not do this").format(role=principal.role))
        if write and state == "read-only" and motive is None:
            raise refuse(tenant_id, 403, "read_only",
                         _("this tenant is read-only: reads and restores only"))
        with ctx.db.read() as conn:
            repository_id = tenants.repository_id(conn, tenant_id, repo)
            usage = quota.usage(conn, tenant_id)
        warning = usage.warning() if motive is None else None
        return Target(principal, tenant_id, name, repo, repository_id, client, motive, warning)

    def _touch(self, token_id: str) -> None:
        now = time.monotonic()
        with self._touch_lock:
            if now - self._touched.get(token_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        with writing(self.ctx.db) as conn:
            tokens.touch(conn, token_id, self.ctx.clock.now_ns())

    async def refused(self, t: Target, status: int, code: str, message: str, what: str, kind: str = "",
                      nbytes: int = 0, headers: dict[str, str] | None = None, **extra: Any) -> Received:
        """A refusal after stage 1, journaled (its own transaction)."""
        await in_thread(journal, self.ctx, t.entry(what, code, kind, nbytes))
        return Received(status, code, message, t.headers(headers), **extra)

    async def _object_or_refuse(self, t: Target, request: Request, what: str) -> Handle:
        handle = _handle(request.path_params["kind"], request.path_params["name"])
        if handle is None:
            raise await self.refused(t, 400, "bad_request", _("invalid object kind or name"), what)
        return handle

    async def _read(self, t: Target, what: str, kind: str, nbytes: int, outcome: str = "ok") -> None:
        """Count a read for the journal: in the tally (memory), or at once for an admin's
        (with the motive)."""
        if t.motive is not None:
            await in_thread(journal, self.ctx, t.entry(what, outcome, kind, nbytes))
        else:
            self.ctx.tally.add(t.tenant_id, t.principal.token_id, t.client, what, kind, nbytes, outcome)

    # -- routes ----------------------------------------------------------------------------
    async def whoami(self, request: Request) -> Response:
        p = await authenticate(self.ctx, request, "whoami")
        request.state.token_id = p.token_id
        body: dict[str, Any] = {"tenant": p.tenant_name, "role": p.role, "token_id": p.token_id,
                                "quota": None}
        headers = {}
        if p.tenant_id is not None:
            tenant_id = p.tenant_id

            def read() -> quota.Usage:
                with self.ctx.db.read() as conn:
                    return quota.usage(conn, tenant_id)

            u = await in_thread(read)
            body["quota"] = {"soft": u.soft, "hard": u.hard, "stored": u.stored, "binned": u.binned}
            if u.warning():
                headers[quota.WARNING_HEADER] = u.warning() or ""
        return JSONResponse(body, headers=headers)

    async def create_repository(self, request: Request) -> Response:
        t = await self.settle(request, "create", Privilege.WRITE, write=True)
        ctx = self.ctx

        def create() -> bool:
            now = ctx.clock.now_ns()
            with writing(ctx.db) as conn:
                repository_id = tenants.add_repository(conn, t.tenant_id, t.repo, now)
                o = tables.objects
                used = conn.execute(sa.select(o.c.id).where(o.c.repository_id == repository_id)
                                    .limit(1)).first()
                audit.append(ctx.db, conn, t.entry("create", "exists" if used else "ok"), now)
            if used:
                return False
            try:
                ctx.store.backend(t.tenant_id, t.repo).create()
            except StorageError:
                raise
            except CoffreError:
                pass  # debris of an earlier repository there: invisible without rows
            return True

        try:
            created = await in_thread(create)
        except StorageError as exc:
            raise _storage_refusal(exc, t) from None
        if not created:
            raise _error(409, "exists", _("the repository {repo} is not empty").format(repo=t.repo), t)
        return JSONResponse({"repository": t.repo}, status_code=201, headers=t.headers())

    async def listing(self, request: Request) -> Response:
        t = await self.settle(request, "list", Privilege.READ)
        kind = request.path_params["kind"]
        if kind not in KINDS:
            raise await self.refused(t, 400, "bad_request", _("invalid object kind"), "list")
        if t.repository_id is None:
            await self._read(t, "list", kind, 0, "not_found")
            raise _error(404, "not_found", _("no such repository"), t)
        o = tables.objects

        def rows() -> list[list[Any]]:
            with self.ctx.db.read() as conn:
                return [[r.name, r.size, r.received_ns] for r in conn.execute(
                    sa.select(o.c.name, o.c.size, o.c.received_ns)
                    .where(o.c.repository_id == t.repository_id, o.c.kind == kind, o.c.binned_ns.is_(None))
                    .order_by(o.c.name))]

        found = await in_thread(rows)
        await self._read(t, "list", kind, 0)
        return JSONResponse({"objects": found}, headers=t.headers())

    async def object(self, request: Request) -> Response:
        method = request.method
        if method in ("GET", "HEAD"):
            return await self.get(request, head=method == "HEAD")
        if method == "PUT":
            return await self.put(request)
        return await self.delete(request)

    def _live(self, repository_id: int, handle: Handle) -> Any:
        o = tables.objects
        with self.ctx.db.read() as conn:
            return conn.execute(sa.select(o.c.size, o.c.received_ns, o.c.token_id).where(
                o.c.repository_id == repository_id, o.c.kind == handle.kind, o.c.name == handle.name,
                o.c.binned_ns.is_(None))).first()

    # -- GET / HEAD ------------------------------------------------------------------------
    async def get(self, request: Request, head: bool) -> Response:
        what = "head" if head else "get"
        t = await self.settle(request, what, Privilege.READ)
        handle = await self._object_or_refuse(t, request, what)
        row = await in_thread(self._live, t.repository_id, handle) if t.repository_id is not None else None
        if row is None:
            await self._read(t, what, handle.kind, 0, "not_found")
            raise _error(404, "not_found", _("no such object"), t)
        size, received = int(row.size), str(row.received_ns)
        if head:
            await self._read(t, what, handle.kind, 0)
            return Response(status_code=200, headers=t.headers(
                {"Content-Length": str(size), RECEIVED_HEADER: received, "Accept-Ranges": "bytes"}))
        span = _range(request.headers.get("range"), size)
        if span is None:
            raise await self.refused(t, 400, "bad_request", _("invalid Range header"), what, handle.kind)
        start, end = span
        if request.headers.get("range") and start >= size:
            await self._read(t, what, handle.kind, 0)
            return JSONResponse({"error": "range_not_satisfiable",
                                 "message": _("the range starts past the end of the object")},
                                status_code=416, headers=t.headers({"Content-Range": f"bytes */{size}"}))
        backend = self.ctx.store.backend(t.tenant_id, t.repo)
        try:
            first = b""
            if end > start:
                first = await in_thread(backend.load, handle, start, min(PIECE, end - start))
        except StorageError as exc:
            raise _storage_refusal(exc, t) from None
        await self._read(t, what, handle.kind, end - start)
        headers = t.headers({"Content-Length": str(end - start), RECEIVED_HEADER: received,
                             "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        status = 200
        if request.headers.get("range"):
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if end - start <= len(first):
            return Response(first, status_code=status, headers=headers)
        return StreamingResponse(_pieces(backend, handle, first, start, end), status_code=status,
                                 headers=headers)

    # -- PUT -------------------------------------------------------------------------------
    async def put(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        need = Privilege.LOCKS if kind == "locks" else Privilege.WRITE
        t = await self.settle(request, "put", need, write=True)
        handle = await self._object_or_refuse(t, request, "put")
        settings = self.ctx.settings
        declared = request.headers.get("content-length")
        if declared is None:
            raise await self.refused(t, 411, "length_required", _("the Content-Length header is required"),
                                     "put", handle.kind, headers={"Connection": "close"})
        if not declared.isdigit() or len(declared) > 18:
            raise await self.refused(t, 400, "bad_request", _("invalid Content-Length"), "put", handle.kind,
                                     headers={"Connection": "close"})
        size = int(declared)
        if size > settings.max_object_bytes:
            raise await self.refused(
                t, 413, "too_large", _("objects are limited to {size} ({bytes} bytes)").format(
                    size=human_size(settings.max_object_bytes), bytes=settings.max_object_bytes),
                "put", handle.kind, size, headers={"Connection": "close"}, limit=settings.max_object_bytes)
        if t.repository_id is None:
            await in_thread(journal, self.ctx, t.entry("put", "not_found", handle.kind, size))
            raise _error(404, "not_found", _("no such repository"), t)
        before = await in_thread(self._state, t.repository_id, handle)
        room: list[int] = []  # the quota reservation, while it is held
        if before is None:
            # New: room under the hard quota is reserved before a byte is stored, counting the
            # uploads in progress, so refused bytes never reach the storage (out of the bin,
            # it is counted already).
            reservation, usage = await in_thread(self._reserve, t.tenant_id, size)
            if reservation is None and usage.hard is not None:
                raise await self._quota_refusal(t, handle, size, usage)
            room += [reservation] if reservation is not None else []
        try:
            reserved = await self.budget.acquire(size, WAIT_FOR_MEMORY_S)
            if reserved is None:
                raise await self.refused(t, 503, "unavailable", _("the server is busy; try again later"),
                                         "put", handle.kind, size)
            try:
                try:
                    data = await self._receive(request, t, handle, size)
                except _Gone:
                    await in_thread(journal, self.ctx, t.entry("put", "cut", handle.kind, size))
                    raise _error(400, "bad_request", _("the upload was cut short"), t) from None
                return await self._store(t, handle, data, room)
            finally:
                await self.budget.release(reserved)
        finally:
            if room:
                await in_thread(self._unreserve, room[0])

    def _state(self, repository_id: int, handle: Handle) -> tuple[int, int | None] | None:
        """(size, binned_ns) of the object's row, or None."""
        o = tables.objects
        with self.ctx.db.read() as conn:
            row = conn.execute(sa.select(o.c.size, o.c.binned_ns).where(
                o.c.repository_id == repository_id, o.c.kind == handle.kind, o.c.name == handle.name)).first()
        return None if row is None else (int(row.size), row.binned_ns)

    def _reserve(self, tenant_id: int, size: int) -> tuple[int | None, quota.Usage]:
        settings = self.ctx.settings
        now = self.ctx.clock.now_ns()
        # The longest an upload of this size may take (slower ones are cut), and a margin.
        longest_s = settings.body_grace_s + size / max(1, settings.min_upload_rate) + 600
        with writing(self.ctx.db) as conn:
            return quota.reserve(self.ctx.db, conn, tenant_id, size, now, now + int(longest_s * 1e9))

    def _unreserve(self, reservation: int) -> None:
        with writing(self.ctx.db) as conn:
            quota.unreserve(conn, reservation)

    def _usage(self, tenant_id: int) -> quota.Usage:
        with self.ctx.db.read() as conn:
            return quota.usage(conn, tenant_id)

    async def _quota_refusal(self, t: Target, handle: Handle, size: int, usage: quota.Usage) -> Received:
        assert usage.hard is not None
        return await self.refused(
            t, 507, "quota_exceeded", quota.exceeded_message(t.tenant_name, usage, size), "put", handle.kind,
            size, quota_hard=usage.hard, used=usage.used, stored=usage.stored, binned=usage.binned, size=size)

    async def _receive(self, request: Request, t: Target, handle: Handle, size: int) -> memoryview:
        """The body, hashed while it arrives; a client slower than min_upload_rate once
        body_grace_s has passed is cut (408)."""
        settings = self.ctx.settings
        buf = bytearray(size)
        view = memoryview(buf)
        digest = hashlib.sha256()
        got = 0
        started = time.monotonic()
        more = size > 0
        while more:
            rate = max(1, settings.min_upload_rate)
            allowed = started + settings.body_grace_s + got / rate - time.monotonic()
            try:
                with anyio.fail_after(max(allowed, 0.0)):
                    message = await request.receive()
            except TimeoutError:
                log.warning("upload cut: slower than %d bytes/s (%d of %d bytes after %.0f s)",
                            settings.min_upload_rate, got, size, time.monotonic() - started)
                raise await self.refused(
                    t, 408, "timeout", _("the upload was too slow and was cut"), "put", handle.kind, got,
                    headers={"Connection": "close"}) from None
            if message["type"] != "http.request":  # the client went away: nothing stored
                raise _Gone()
            chunk = message.get("body", b"")
            if got + len(chunk) > size:
                raise await self.refused(t, 400, "bad_request",
                                         _("the body is longer than its Content-Length"),
                                         "put", handle.kind, got, headers={"Connection": "close"})
            view[got:got + len(chunk)] = chunk
            digest.update(chunk)
            got += len(chunk)
            more = bool(message.get("more_body", False))
        if got != size:
            raise await self.refused(t, 400, "bad_request", _("the body is shorter than its Content-Length"),
                                     "put", handle.kind, got)
        if handle.kind != "config" and digest.hexdigest() != handle.name:
            raise await self.refused(t, 400, "hash_mismatch",
                                     _("the bytes received do not match the object's name (SHA-256)"),
                                     "put", handle.kind, size)
        return view

    async def _store(self, t: Target, handle: Handle, data: memoryview, room: list[int]) -> Response:
        ctx = self.ctx
        assert t.repository_id is not None
        backend = ctx.store.backend(t.tenant_id, t.repo)
        size = len(data)
        # Saved even when recorded already: a no-op for the same bytes, and it brings back
        # bytes the storage lost.
        try:
            await in_thread(self._save, t.repository_id, backend, handle, data)
        except ObjectExists:
            raise await self.refused(t, 409, "exists", _("a different object with this name exists"),
                                     "put", handle.kind, size) from None
        except _Busy:
            raise await self.refused(t, 503, "unavailable", _("another upload of this object is in "
                                                              "progress; try again later"),
                                     "put", handle.kind, size) from None
        except StorageError as exc:
            refusal = _storage_refusal(exc, t)
            await in_thread(journal, ctx, t.entry("put", refusal.code, handle.kind, size))
            raise refusal from None
        try:
            status, received, usage, unbinned = await in_thread(self._record, t, handle, size, room)
        except _OverQuota as over:
            raise await self._quota_refusal(t, handle, size, over.usage) from None
        if unbinned:
            # It was in the bin (when this upload began, or binned since): a purge may have
            # removed its bytes meanwhile. Store them again (a no-op when they are there).
            try:
                await in_thread(self._save, t.repository_id, backend, handle, data, True)
            except StorageError as exc:
                raise _storage_refusal(exc, t) from None
        warning = usage.warning()
        headers = {RECEIVED_HEADER: str(received)} | ({quota.WARNING_HEADER: warning} if warning else {})
        return Response(status_code=status, headers=headers)

    def _save(self, repository_id: int, backend: Backend, handle: Handle, data: memoryview,
              again: bool = False) -> None:
        """Store the bytes (atomic, fsynced). Different bytes under a recorded name: ObjectExists.
        Different bytes stored without a row are debris of an upload that was never recorded
        (a crash between storing and recording): replaced once old enough to be sure no
        upload of them is still under way.

        `config` is not named by its hash: once recorded, it is never written again. The same
        bytes are success; other bytes, or any bytes when storage lost the recorded ones
        (nothing proves them the same), are ObjectExists. `again`: the same bytes, saved a
        second time after they were found equal to the stored ones (a purge may have removed
        them meanwhile)."""
        if handle.kind == "config" and not again and self._state(repository_id, handle) is not None:
            try:
                same = backend.load(handle) == bytes(data)
            except ObjectNotFound:
                same = False
            if not same:
                raise ObjectExists(_("a different object with this name exists"))
            return
        try:
            backend.save(handle, data)
        except ObjectExists:
            if self._state(repository_id, handle) is not None:
                raise
            try:
                stored = backend.stat(handle)
            except ObjectNotFound:
                backend.save(handle, data)
                return
            if self.ctx.clock.now_ns() - stored.mtime_ns < ORPHAN_AGE_NS:
                raise _Busy() from None
            log.warning("replacing unrecorded debris %s/%s", handle.kind, handle.name)
            backend.remove(handle)
            backend.save(handle, data)

    def _record(self, t: Target, handle: Handle, size: int,
                room: list[int]) -> tuple[int, int, quota.Usage, bool]:
        """The object's row, usage, audit entry and metering, in one transaction: (status,
        received_ns, usage after, whether it was taken out of the recycle bin). _OverQuota if
        the hard quota does not allow it. The quota reservation in `room` is released in the
        same transaction (and emptied)."""
        ctx, db, o = self.ctx, self.ctx.db, tables.objects
        now = ctx.clock.now_ns()
        assert t.repository_id is not None
        where = (o.c.repository_id == t.repository_id, o.c.kind == handle.kind, o.c.name == handle.name)
        with writing(db) as conn:
            # RETURNING, not rowcount: SQLAlchemy's implicit RETURNING on PostgreSQL leaves no
            # reliable rowcount for an INSERT.
            unbinned = False
            inserted = conn.execute(db.insert(o).values(
                repository_id=t.repository_id, kind=handle.kind, name=handle.name, size=size,
                received_ns=now, token_id=t.principal.token_id).on_conflict_do_nothing(
                index_elements=[o.c.repository_id, o.c.kind, o.c.name]).returning(o.c.id)).first() is not None
            if inserted:
                if not quota.charge(conn, t.tenant_id, size):
                    raise _OverQuota(quota.usage(conn, t.tenant_id))
                status, received, detail = 201, now, ""
            else:
                row = conn.execute(db.for_update(sa.select(o.c.id, o.c.size, o.c.received_ns, o.c.binned_ns)
                                                 .where(*where))).one()
                received = int(row.received_ns)
                if row.binned_ns is not None:
                    conn.execute(o.update().where(o.c.id == row.id).values(binned_ns=None, binned_by=None))
                    quota.from_bin(conn, t.tenant_id, int(row.size))
                    status, detail, unbinned = 201, "taken back out of the recycle bin", True
                else:
                    status, detail = 200, "already stored"
            audit.append(db, conn, t.entry("put", "ok", handle.kind, size, detail), now)
            metering.count(db, conn, t.tenant_id, now, uploads=1, uploaded_bytes=size)
            if room:
                quota.unreserve(conn, room[0])
            usage = quota.usage(conn, t.tenant_id)
        room.clear()
        return status, received, usage, unbinned

    # -- DELETE ----------------------------------------------------------------------------
    async def delete(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        need = Privilege.LOCKS if kind == "locks" else Privilege.DELETE
        t = await self.settle(request, "delete", need, write=True)
        handle = await self._object_or_refuse(t, request, "delete")
        if handle.kind == "config" and t.motive is None:
            raise await self.refused(t, 403, "forbidden",
                                     _("the repository's config is removed by the provider only"),
                                     "delete", handle.kind)
        if t.repository_id is None:
            await in_thread(journal, self.ctx, t.entry("delete", "not_found", handle.kind))
            raise _error(404, "not_found", _("no such object"), t)
        outcome = await in_thread(self._delete, t, handle)
        if outcome == "not_found":
            raise _error(404, "not_found", _("no such object"), t)
        if outcome == "forbidden":
            raise _error(403, "forbidden", _("a lock object is removed only by the token that wrote it"), t)
        if outcome == "removed":
            try:
                await in_thread(self.ctx.store.backend(t.tenant_id, t.repo).remove, handle)
            except ObjectNotFound:
                pass
            except StorageError as exc:  # recorded as gone: the bytes are debris for the scrub
                log.warning("removing %s/%s from storage failed: %s", handle.kind, handle.name, exc.message)
        return Response(status_code=204, headers=t.headers())

    def _delete(self, t: Target, handle: Handle) -> str:
        """In one transaction: the row binned (or, for a lock, deleted), usage moved, the
        audit entry. Returns binned, removed, not_found or forbidden (journaled alike)."""
        ctx, db, o = self.ctx, self.ctx.db, tables.objects
        now = ctx.clock.now_ns()
        with writing(db) as conn:
            row = conn.execute(db.for_update(sa.select(o.c.id, o.c.size, o.c.token_id).where(
                o.c.repository_id == t.repository_id, o.c.kind == handle.kind, o.c.name == handle.name,
                o.c.binned_ns.is_(None)))).first()
            size = 0 if row is None else int(row.size)
            if row is None:
                outcome = "not_found"
            elif handle.kind == "locks":
                if row.token_id != t.principal.token_id and not t.principal.may(Privilege.DELETE):
                    outcome = "forbidden"
                else:
                    conn.execute(o.delete().where(o.c.id == row.id))
                    quota.release(conn, t.tenant_id, size)
                    outcome = "removed"
            else:
                conn.execute(o.update().where(o.c.id == row.id).values(
                    binned_ns=now, binned_by=t.principal.token_id))
                quota.to_bin(conn, t.tenant_id, size)
                outcome = "binned"
            result = "ok" if outcome in ("removed", "binned") else outcome
            audit.append(db, conn, t.entry("delete", result, handle.kind, size,
                                           "into the recycle bin" if outcome == "binned" else ""), now)
        return outcome

    # -- anything else ---------------------------------------------------------------------
    async def unknown(self, request: Request) -> Response:
        p = await authenticate(self.ctx, request, "refused")
        request.state.token_id = p.token_id
        segments = request.url.path.split("/")
        path = request.url.path
        dots = any(s in (".", "..") for s in segments) or "\\" in path or "\x00" in path
        code, status = ("bad_request", 400) if dots else ("not_found", 404)
        tenant = p.tenant_id if p.tenant_id is not None else audit.PROVIDER
        await in_thread(journal, self.ctx, audit.Entry(
            tenant, "refused", code, p.token_id, client_address(self.ctx, request),
            detail=f"{request.method} {request.url.path}"[:300]))
        raise Received(status, code, _("invalid path") if dots else _("no such route"))


class _Gone(Exception):
    """The client disconnected during its upload."""


class _Busy(Exception):
    """Unrecorded bytes under this name are too recent to be debris: another upload."""


class _OverQuota(Exception):
    def __init__(self, usage: quota.Usage) -> None:
        super().__init__("over quota")
        self.usage = usage


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a `Range: bytes=A-B | A- | -N` header (the whole object without one);
    None if the header is malformed. A start at or past the end gives start >= end."""
    if not header:
        return 0, size
    m = re.fullmatch(r"bytes=(\d{0,19})-(\d{0,19})", header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        return max(0, size - n), size
    start = int(m[1])
    end = size if not m[2] else min(size, int(m[2]) + 1)
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        return start, start
    return start, end


async def _pieces(backend: Backend, handle: Handle, first: bytes, start: int,
                  end: int) -> AsyncIterator[bytes]:
    yield first
    pos = start + len(first)
    while pos < end:
        piece = await in_thread(backend.load, handle, pos, min(PIECE, end - pos))
        if not piece:
            log.warning("%s/%s is shorter in storage than recorded", handle.kind, handle.name)
            return  # the client sees a transfer cut short
        yield piece
        pos += len(piece)
