"""`POST /v1/status`: the status record an agent posts after each run, validated as the
untrusted input it is, stored with the server's receipt time, journaled, and answered with
what the server knows that the agent may want to keep (docs/server.md, "Fleet status").

What a record may hold (version 1) is `validate`'s schema, nothing else: the site (host
name), the job, the outcome, times, sizes and counts, what was verified and how, the drill's
result, each copy's state, each step's name and exit status. No file name, no database name,
no error text (those can name files): a key the schema does not know is refused, as is a
wrong type, an oversized value or a body over 64 KiB.

The tenant is the token's, never the body's. Times in a record are the agent's clock: they
are moved onto the server's by the offset between the record's `sent` and the receipt, so a
site whose clock is wrong is judged on the server's time (every time decision uses the
server's receipt time).

The answer (201) carries the tenant's quota and its state, how the fleet view sees the
tenant now, and the head of the tenant's audit chain after this report's own entry: agents
keep the heads they were shown, so a chain rewritten later no longer matches what they hold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from coffre.core.i18n import _, ngettext
from coffre.server import audit, fleet, quota, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.http import Refusal, authenticate, client_address, in_thread
from coffre.server.roles import Principal, Privilege

MAX_BODY = 64 * 1024
BODY_TIMEOUT_S = 30.0
VERSION = 1
OUTCOMES = ("ok", "warning", "failed", "running")
TRIGGERS = ("schedule", "catch-up", "realtime", "manual")
COPY_STATES = ("ok", "diverges", "failed", "no_disk", "unchecked")
MAX_COPIES = 32
MAX_STEPS = 64
MAX_INT = 2**63 - 1
DAY_S = 86400.0
EPOCH_MIN = 946_684_800.0    # 2000-01-01: an agent's clock before this is not a clock
EPOCH_MAX = 4_102_444_800.0  # 2100-01-01
SKEW_S = 300.0               # started/finished may run this far past `sent` (clocks step)
MAX_AGE_S = 400 * DAY_S      # a run older than this is history, not status
MAX_WINDOW_S = 30 * DAY_S

_JOB = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STEP = re.compile(r"[A-Za-z0-9_:.-]{1,80}")
_SUBSET = re.compile(r"\d{1,3}(\.\d{1,6})?%|\d{1,6}/\d{1,6}")
_VERSION_TEXT = re.compile(r"[A-Za-z0-9.+_-]{1,40}")


class BadReport(ValueError):
    """The record does not fit the schema; `problems` says where and why (for the agent)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Report:
    """A validated record, its times still on the agent's clock (seconds)."""

    site: str
    job: str
    outcome: str
    sent: float
    started: float
    finished: float | None
    next_due: float | None
    record: dict[str, Any]  # the whole validated record, as stored


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(f"{path}: {what}")

    def table(self, value: object, path: str, keys: Mapping[str, Callable[[object, str], Any]],
              required: tuple[str, ...] = ()) -> dict[str, Any]:
        """The converted values of a JSON object's known keys; a problem for each unknown key,
        missing required key and bad value."""
        if not isinstance(value, dict):
            self.bad(path or _("the record"), _("expected a JSON object"))
            return {}
        out: dict[str, Any] = {}
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            convert = keys.get(name)
            if convert is None:
                self.bad(where[:120], _("unknown key"))
                continue
            try:
                out[name] = convert(item, where)
            except ValueError as exc:
                self.bad(where, str(exc))
        for name in required:
            if name not in value:
                self.bad(f"{path}.{name}" if path else name, _("missing (required)"))
        return out


def _count(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(_("expected a whole number"))
    if not 0 <= value <= MAX_INT:
        raise ValueError(_("out of range"))
    return value


def _exit_code(value: object, path: str) -> int:
    code = _count(value, path)
    if code > 255:
        raise ValueError(_("out of range"))
    return code


def _instant(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(_("expected a time (seconds since 1970)"))
    if not EPOCH_MIN <= value <= EPOCH_MAX:
        raise ValueError(_("not a plausible time"))
    return float(value)


def _instant_or_null(value: object, path: str) -> float | None:
    return None if value is None else _instant(value, path)


def _seconds(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(_("expected a number of seconds"))
    if not 0 <= value <= MAX_WINDOW_S:
        raise ValueError(_("out of range"))
    return float(value)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(_("expected true or false"))
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def convert(value: object, path: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(_("expected one of {choices}").format(choices=", ".join(choices)))
        return value
    return convert


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[object, str], str]:
    def convert(value: object, path: str) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(what)
        return value
    return convert


def _site(value: object, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise ValueError(_("expected a host name of 1 to 200 characters"))
    if not value.isprintable() or value != value.strip():
        raise ValueError(_("expected a host name without control characters or surrounding spaces"))
    return value


class _Record:
    """The checkers of each part of the record, sharing one list of problems."""

    def __init__(self, c: _Checker) -> None:
        self.c = c

    def sizes(self, value: object, path: str) -> dict[str, Any]:
        keys = ("bytes_read", "bytes_sent", "files_total", "files_changed", "warnings", "databases",
                "database_bytes")
        return self.c.table(value, path, dict.fromkeys(keys, _count))

    def medium(self, value: object, path: str) -> dict[str, Any] | None:
        if value is None:
            return None
        out = self.c.table(value, path, {"used": _count, "total": _count}, ("used", "total"))
        if out.get("used", 0) > out.get("total", MAX_INT):
            self.c.bad(path, _("more used than the medium holds"))
        return out

    def verified(self, value: object, path: str) -> dict[str, Any]:
        def check(v: object, p: str) -> dict[str, Any]:
            return self.c.table(v, p, {"ok": _bool, "subset": _pattern(_SUBSET, _("expected a share such as "
                                                                               "\"5%\" or a slice \"2/7\""))},
                                ("ok",))

        def verify(v: object, p: str) -> dict[str, Any]:
            return self.c.table(v, p, {"ok": _bool, "files": _count}, ("ok",))

        return self.c.table(value, path, {"check": check, "verify": verify})

    def drill(self, value: object, path: str) -> dict[str, Any] | None:
        return None if value is None else self.c.table(value, path, {"ok": _bool}, ("ok",))

    def copies(self, value: object, path: str) -> list[dict[str, Any]]:
        return self._list(value, path, MAX_COPIES, lambda v, p: self.c.table(
            v, p, {"name": _pattern(_JOB, _("expected a name of letters, digits, - and _ (at most 64)")),
                   "state": _choice(COPY_STATES)}, ("name", "state")))

    def steps(self, value: object, path: str) -> list[dict[str, Any]]:
        return self._list(value, path, MAX_STEPS, lambda v, p: self.c.table(
            v, p, {"name": _pattern(_STEP, _("expected a step name such as \"backup\" or \"copy:NAME\"")),
                   "ok": _bool, "exit_code": _exit_code, "seconds": _seconds}, ("name", "ok")))

    def agent(self, value: object, path: str) -> dict[str, Any]:
        return self.c.table(value, path, {"version": _pattern(_VERSION_TEXT, _("expected a version"))})

    def _list(self, value: object, path: str, limit: int,
              item: Callable[[object, str], dict[str, Any]]) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValueError(_("expected a list"))
        if len(value) > limit:
            raise ValueError(ngettext("at most {n} item", "at most {n} items", limit).format(n=limit))
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _version(value: object, path: str) -> int:
    if value != VERSION or isinstance(value, bool):
        raise ValueError(_("this server reads version {version} records").format(version=VERSION))
    return VERSION


def validate(data: bytes) -> Report:
    """The record in `data` (UTF-8 JSON), or BadReport listing what is wrong."""
    if len(data) > MAX_BODY:
        raise BadReport([_("the record is larger than {size} bytes").format(size=MAX_BODY)])
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.args[0] if isinstance(exc, _Duplicate) else type(exc).__name__
        raise BadReport([_("not a JSON record ({reason})").format(reason=reason)]) from None
    c = _Checker()
    r = _Record(c)
    keys: dict[str, Callable[[object, str], Any]] = {
        "version": _version, "site": _site,
        "job": _pattern(_JOB, _("expected a name of letters, digits, - and _ (at most 64)")),
        "trigger": _choice(TRIGGERS), "outcome": _choice(OUTCOMES),
        "sent": _instant, "started": _instant, "finished": _instant_or_null, "next_due": _instant_or_null,
        "window": _seconds, "sizes": r.sizes, "medium": r.medium, "verified": r.verified, "drill": r.drill,
        "copies": r.copies, "steps": r.steps, "agent": r.agent,
    }
    record = c.table(raw, "", keys, ("version", "site", "job", "outcome", "sent", "started"))
    if not c.problems:
        _check_times(c, record)
    if c.problems:
        raise BadReport(c.problems)
    return Report(record["site"], record["job"], record["outcome"], record["sent"], record["started"],
                  record.get("finished"), record.get("next_due"), record)


def _check_times(c: _Checker, record: Mapping[str, Any]) -> None:
    sent, started = record["sent"], record["started"]
    finished, next_due = record.get("finished"), record.get("next_due")
    if not sent - MAX_AGE_S <= started <= sent + SKEW_S:
        c.bad("started", _("not within 400 days before the record was sent"))
    if finished is not None and not started <= finished <= sent + SKEW_S:
        c.bad("finished", _("before the start, or after the record was sent"))
    if next_due is not None and not started - SKEW_S <= next_due <= sent + MAX_AGE_S:
        c.bad("next_due", _("before the run, or more than 400 days ahead"))


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(_("the key {key} is given twice").format(key=json.dumps(key[:40])))
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise ValueError(name)  # NaN, Infinity: not JSON


# --------------------------------------------------------------------------- the route


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def post_status(request: Request) -> JSONResponse:
        principal = await authenticate(ctx, request, "report")
        client = client_address(ctx, request)
        if principal.tenant_id is None or not principal.may(Privilege.REPORT):
            await in_thread(_refuse, ctx, principal, client, "forbidden", 0)
            raise Refusal(403, "forbidden", _("this token may not post status records"))
        data = await _body(ctx, request, principal, client)
        try:
            report = validate(data)
        except BadReport as exc:
            await in_thread(_refuse, ctx, principal, client, "bad_request", len(data))
            raise Refusal(400, "bad_request", _("the status record was refused: {problems}").format(
                problems="; ".join(exc.problems))) from None
        answer = await in_thread(store, ctx, principal, client, report, len(data))
        warning = quota_warning(answer["quota"])
        headers = {quota.WARNING_HEADER: warning} if warning else None
        return JSONResponse(answer, status_code=201, headers=headers)

    return [Route("/v1/status", post_status, methods=["POST"])]


async def _body(ctx: ServerContext, request: Request, principal: Principal, client: str) -> bytes:
    """The request body, refused past MAX_BODY (declared or counted) or BODY_TIMEOUT_S."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        await in_thread(_refuse, ctx, principal, client, "too_large", 0)
        raise Refusal(413, "too_large", _("a status record is at most {size} bytes").format(size=MAX_BODY))
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    break
                chunks.append(chunk)
    except TimeoutError:
        await in_thread(_refuse, ctx, principal, client, "timeout", size)
        raise Refusal(408, "timeout", _("the status record did not arrive in time")) from None
    if size > MAX_BODY:
        await in_thread(_refuse, ctx, principal, client, "too_large", size)
        raise Refusal(413, "too_large", _("a status record is at most {size} bytes").format(size=MAX_BODY))
    return b"".join(chunks)


def quota_warning(q: Mapping[str, Any]) -> str | None:
    """The X-Coffre-Quota-Warning value of the answer's quota (the object routes' format)."""
    return quota.Usage(int(q.get("stored") or 0), int(q.get("binned") or 0), q.get("soft"),
                       q.get("hard")).warning()


def _refuse(ctx: ServerContext, principal: Principal, client: str, outcome: str, nbytes: int) -> None:
    tenant = principal.tenant_id if principal.tenant_id is not None else audit.PROVIDER
    with ctx.db.begin() as conn:
        audit.append(ctx.db, conn, audit.Entry(tenant, "report", outcome, principal.token_id, client,
                                               bytes=nbytes), ctx.clock.now_ns())


def _to_server(t: float | None, offset_ns: int) -> int | None:
    return None if t is None else int(t * 1e9) + offset_ns


def store(ctx: ServerContext, principal: Principal, client: str, report: Report,
          nbytes: int) -> dict[str, Any]:
    """Record the report, its journal entry and the token's use in one transaction; the answer."""
    assert principal.tenant_id is not None
    tenant_id = principal.tenant_id
    now = ctx.clock.now_ns()
    offset = now - int(report.sent * 1e9)  # the agent's clock onto the server's
    body = json.dumps(report.record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    with ctx.db.begin() as conn:
        result = conn.execute(tables.status_reports.insert().values(
            tenant_id=tenant_id, token_id=principal.token_id, received_ns=now, site=report.site,
            job=report.job, outcome=report.outcome, started_ns=_to_server(report.started, offset),
            finished_ns=_to_server(report.finished, offset), next_due_ns=_to_server(report.next_due, offset),
            body=body))
        report_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        detail = json.dumps({"site": report.site, "job": report.job, "outcome": report.outcome},
                            sort_keys=True, ensure_ascii=True)
        audit.append(ctx.db, conn, audit.Entry(tenant_id, "report", "ok", principal.token_id, client,
                                               bytes=nbytes, detail=detail), now)
        tokens.touch(conn, principal.token_id, now)
        h = tables.audit_heads
        head = conn.execute(sa.select(h.c.seq, h.c.entry_hash).where(h.c.tenant_id == tenant_id)).one()
        tenant = tenants.by_id(conn, tenant_id)
        assert tenant is not None
        seen = fleet.assess(conn, now, tenant_id=tenant_id)
    light, reasons = (seen[0].light, [r.code for r in seen[0].reasons]) if seen else ("green", [])
    return {
        "received_ns": now, "report": report_id, "tenant": tenant.name,
        "quota": {"soft": tenant.quota_soft, "hard": tenant.quota_hard, "stored": tenant.stored_bytes,
                  "binned": tenant.binned_bytes, "state": fleet.quota_state(tenant)},
        "fleet": {"light": light, "reasons": reasons},
        "audit": {"tenant": tenant.name, "seq": int(head.seq), "head": head.entry_hash},
    }
