"""The status of each run, posted to the provider's hosting server (`[server]` in the
configuration; `POST /v1/status`, docs/server.md): what the provider's fleet view ranks
sites by, without the key and without the pharmacy's data.

What a record holds (`record_body`): the site (this machine's name), the job, the outcome,
the run's times, the next due time of the job's schedule and its window, sizes and counts,
what was verified and how (the check's subset, how many files were compared), the drill's
result, the state of each copy, each step's name, exit status and duration. Never a file
name, a database name, an error message (they can name files) nor any content. An
interrupted run is not reported (the agent was stopped; the next run will be).

Delivery never fails a job: each record is first stored in the agent's SQLite file, then
posted; a record that could not be posted is tried again at later runs and at each health
evaluation (every minute in the agent), after 1 min, 5 min, 30 min, then hourly (hourly at
once when the server refused the token or the address is wrong: the configuration may get
fixed), and given up after 7 days. A record the server refused as malformed (400) is not
sent again. Oldest first, so the server's latest is the agent's latest.

The server answers with the tenant's quota, how its fleet view sees the tenant, and the
head of the tenant's audit chain: the agent keeps every head it was shown (`heads()`), so a
journal rewritten later on the server no longer matches what the pharmacy holds.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coffre import __version__
from coffre.agent.alerts.outbox import connect
from coffre.agent.model import Config, Server
from coffre.agent.records import RunRecord
from coffre.core.i18n import _
from coffre.core.private import open_to_others
from coffre.notify.text import clean
from coffre.policy.schedule import next_run

RETRY_PAUSES = (60.0, 300.0, 1800.0)  # after the 1st, 2nd, 3rd failed attempt
HOURLY = 3600.0
GIVE_UP_AFTER = 7 * 86400.0
MAX_PER_FLUSH = 20  # records posted by one call; the rest waits for the next
MAX_ANSWER = 64 * 1024
USER_AGENT = "coffre-agent"
_HEAD = "0123456789abcdef"
_FLUSH_LOCK = threading.Lock()  # two runs ending together post each record once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_reports (
    id INTEGER PRIMARY KEY, job TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    last_error TEXT, permanent INTEGER NOT NULL DEFAULT 0, done_at REAL);
CREATE INDEX IF NOT EXISTS server_reports_status ON server_reports(status, id);
CREATE TABLE IF NOT EXISTS server_heads (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, server TEXT NOT NULL, tenant TEXT NOT NULL,
    seq INTEGER NOT NULL, head TEXT NOT NULL, received_ns INTEGER NOT NULL);
"""


class PostError(Exception):
    """A record not posted. `message` is for a person (never the token); `permanent`: trying
    again soon will not help; `refused`: the server said the record itself is wrong."""

    def __init__(self, message: str, permanent: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.refused = refused


@dataclass(frozen=True)
class PostResult:
    job: str
    attempt: int
    ok: bool
    error: str | None = None
    answer: dict[str, Any] | None = None
    retried: bool = True  # a failed post: tried again later (False: the server refused the record)


@dataclass(frozen=True)
class Head:
    """An audit chain head the server showed: seq entries, the last one's hash."""

    at: float
    server: str
    tenant: str
    seq: int
    head: str
    received_ns: int


@dataclass(frozen=True)
class Pending:
    job: str
    created: float
    attempts: int
    next_at: float
    last_error: str | None


# --------------------------------------------------------------------------- the record


def site_name() -> str:
    return clean(socket.gethostname(), 200) or "?"


def record_body(config: Config, record: RunRecord, now: float) -> dict[str, Any] | None:
    """The status record of a finished run (None for one that is not reported)."""
    if record.outcome not in ("ok", "warning", "failed"):
        return None
    job = config.jobs.get(record.job)
    body: dict[str, Any] = {
        "version": 1, "site": site_name(), "job": record.job, "trigger": record.trigger,
        "outcome": record.outcome, "sent": now, "started": record.started,
        "finished": record.ended if record.ended is not None else now,
        "sizes": {"bytes_read": _n(record.bytes_read), "bytes_sent": _n(record.bytes_sent),
                  "files_total": _n(record.files_total), "files_changed": _n(record.files_changed),
                  "warnings": len(record.warnings), "databases": len(record.db_sizes),
                  "database_bytes": sum(_n(v) for v in record.db_sizes.values())},
        "steps": [{"name": s.name[:80], "ok": s.ok, "exit_code": min(max(s.exit_code, 0), 255),
                   "seconds": min(max(s.ended - s.started, 0.0), 86400.0)} for s in record.steps[:64]],
        "agent": {"version": __version__},
    }
    if job is not None:
        s = job.schedule
        due = next_run(s.times, s.days, s.every, config.agent.timezone, now, anchor=record.slot)
        body["next_due"] = due
        body["window"] = min(s.window, 30 * 86400.0)
        body["copies"] = _copies(job.copies, record)
    if record.medium is not None:
        used, total = _n(record.medium[0]), _n(record.medium[1])
        body["medium"] = {"used": used, "total": max(used, total)}
    verified: dict[str, Any] = {}
    check = record.verified.get("check")
    if isinstance(check, dict) and isinstance(check.get("ok"), bool):
        verified["check"] = {"ok": check["ok"]}
        if isinstance(check.get("subset"), str):
            verified["check"]["subset"] = check["subset"]
    verify = record.verified.get("verify")
    if isinstance(verify, dict) and isinstance(verify.get("ok"), bool):
        verified["verify"] = {"ok": verify["ok"], "files": _n(verify.get("files"))}
    body["verified"] = verified
    if record.drill is not None and isinstance(record.drill.get("ok"), bool):
        body["drill"] = {"ok": record.drill["ok"]}
    return body


def _n(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _copies(names: tuple[str, ...], record: RunRecord) -> list[dict[str, str]]:
    out = []
    for name in names[:32]:
        copied = record.step(f"copy:{name}")
        against = record.verified.get(f"against:{name}")
        if copied is None:
            media = [s for s in record.steps if s.name == "media" and s.target == name]
            state = "no_disk" if media else "failed"
        elif not copied.ok:
            state = "failed"
        elif against is False:
            state = "diverges"
        elif against is True:
            state = "ok"
        else:
            state = "unchecked"
        out.append({"name": name, "state": state})
    return out


# --------------------------------------------------------------------------- posting


def read_token(path: str) -> str:
    """The token in `path`; refused when group or others may read the file."""
    try:
        with open(path, "rb") as f:
            if open_to_others(os.fstat(f.fileno())):
                raise PostError(_("the token file {path} may be read by others: make it readable by its "
                                  "owner only (chmod 600)").format(path=path), permanent=True)
            raw = f.read(4096)
    except OSError as exc:
        raise PostError(_("cannot read the token file {path}: {reason}").format(
            path=path, reason=exc.strerror or type(exc).__name__), permanent=True) from None
    token = raw.decode("ascii", errors="replace").strip()
    if not token or any(c.isspace() for c in token):
        raise PostError(_("the token file {path} does not hold one token").format(path=path), permanent=True)
    return token


def post(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """POST one record; the server's answer, or PostError."""
    import urllib3

    host = clean(urlsplit(server.url).hostname or "?", 80)
    if server.url.lower().startswith("http://") and not server.insecure_http:
        raise PostError(_("http:// sends the token in clear: use https://"), permanent=True)
    token = read_token(server.token_file)
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=server.ca_file, retries=False,
                               timeout=urllib3.Timeout(total=server.timeout))
    data = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    try:
        response = pool.request("POST", server.url + "/v1/status", body=data, redirect=False,
                                preload_content=False,
                                headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT,
                                         "Content-Type": "application/json"})
        try:
            raw = response.read(MAX_ANSWER + 1)
        finally:
            response.release_conn()
    except urllib3.exceptions.SSLError as exc:
        raise PostError(_("the certificate of the hosting server {host} is not trusted: {reason}").format(
            host=host, reason=clean(exc, 160)), permanent=True) from None
    except urllib3.exceptions.TimeoutError:
        raise PostError(_("the hosting server {host} did not answer within {seconds} s").format(
            host=host, seconds=f"{server.timeout:g}")) from None
    except urllib3.exceptions.HTTPError as exc:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        text = getattr(reason, "strerror", None) or type(reason).__name__
        raise PostError(_("cannot reach the hosting server {host}: {reason}").format(
            host=host, reason=clean(text, 120))) from None
    finally:
        pool.clear()
    status = response.status
    if status == 201:
        try:
            answer = json.loads(raw[:MAX_ANSWER].decode("utf-8"))
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) else {}
    message = _server_message(raw)
    if status == 400 or status == 413:
        raise PostError(_("the hosting server {host} refused the record: {message}").format(
            host=host, message=message), permanent=True, refused=True)
    if status in (401, 403):
        raise PostError(_("the hosting server {host} refused the token (HTTP {code})").format(
            host=host, code=status), permanent=True)
    if status == 404:
        raise PostError(_("the hosting server {host} answered HTTP 404: is url its address, without a "
                          "repository's name?").format(host=host), permanent=True)
    raise PostError(_("the hosting server {host} answered HTTP {code}").format(host=host, code=status),
                    permanent=not (status >= 500 or status in (408, 429)))


def _server_message(raw: bytes) -> str:
    try:
        value = json.loads(raw[:MAX_ANSWER].decode("utf-8"))
    except ValueError:
        return "-"
    return clean(value.get("message", "-") if isinstance(value, dict) else "-", 300)


# --------------------------------------------------------------------------- the queue


class Reporter:
    """The records waiting to be posted and the heads the server showed, in the agent's
    SQLite file (beside the status store's tables)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    def queue(self, config: Config, record: RunRecord, now: float) -> bool:
        """Store the record of a finished run for posting; False when it is not reported."""
        body = record_body(config, record, now)
        if body is None:
            return False
        with self._db() as db:
            db.execute("INSERT INTO server_reports (job, body, created, status, next_at) VALUES (?,?,?,?,?)",
                       (record.job, json.dumps(body, sort_keys=True), now, "pending", now))
        return True

    def flush(self, server: Server, now: float, limit: int = MAX_PER_FLUSH,
              force: bool = False) -> list[PostResult]:
        """Post what is due (`force`: all that waits, as after a new run: the server may be
        back), oldest first; stop at the first failure that is not the record's own (the
        server is away: the others would fail the same way). Never raises."""
        try:
            with _FLUSH_LOCK:
                return self._flush(server, now, limit, force)
        except Exception as exc:  # the agent's own store: reported, never raised into a run
            reason = exc.args[0] if isinstance(exc, sqlite3.Error) and exc.args else type(exc).__name__
            return [PostResult("", 0, False, _("the status records could not be processed: {reason}").format(
                reason=clean(reason, 200)))]

    def _flush(self, server: Server, now: float, limit: int, force: bool) -> list[PostResult]:
        with self._db() as db:
            db.execute("UPDATE server_reports SET status = 'abandoned', done_at = ? WHERE status = 'pending'"
                       " AND created < ?", (now, now - GIVE_UP_AFTER))
            rows = db.execute("SELECT id, job, body, attempts, next_at FROM server_reports WHERE status ="
                              " 'pending' ORDER BY id LIMIT ?", (limit,)).fetchall()
        results: list[PostResult] = []
        for rid, job, text, attempts, next_at in rows:
            if not force and now < next_at <= now + HOURLY:  # not yet (beyond an hour: the clock went back)
                break  # the older one waits: the newer ones wait behind it
            body = json.loads(text)
            body["sent"] = now  # the server moves the record's times onto its clock by this
            attempt = attempts + 1
            try:
                answer = post(server, body)
            except PostError as exc:
                pause = HOURLY if exc.permanent else (
                    RETRY_PAUSES[attempt - 1] if attempt <= len(RETRY_PAUSES) else HOURLY)
                with self._db() as db:
                    db.execute("UPDATE server_reports SET attempts = ?, next_at = ?, last_error = ?,"
                               " permanent = ?, status = ?, done_at = ? WHERE id = ?",
                               (attempt, now + pause, exc.message, int(exc.permanent),
                                "refused" if exc.refused else "pending", now if exc.refused else None, rid))
                results.append(PostResult(job, attempt, False, exc.message, retried=not exc.refused))
                if exc.refused:
                    continue
                break
            with self._db() as db:
                db.execute("UPDATE server_reports SET attempts = ?, status = 'sent', done_at = ?,"
                           " last_error = NULL WHERE id = ?", (attempt, now, rid))
                head = _head(answer)
                if head is not None:
                    db.execute("INSERT INTO server_heads (at, server, tenant, seq, head, received_ns)"
                               " VALUES (?,?,?,?,?,?)", (now, clean(server.url, 300), *head))
            results.append(PostResult(job, attempt, True, answer=answer))
        return results

    def pending(self) -> list[Pending]:
        """The records not posted yet, oldest first."""
        with self._db() as db:
            rows = db.execute("SELECT job, created, attempts, next_at, last_error FROM server_reports"
                              " WHERE status = 'pending' ORDER BY id").fetchall()
        return [Pending(*r) for r in rows]

    def heads(self, limit: int = 100) -> list[Head]:
        """The audit heads the server showed, newest first."""
        with self._db() as db:
            rows = db.execute("SELECT at, server, tenant, seq, head, received_ns FROM server_heads"
                              " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [Head(*r) for r in rows]

    def prune(self, now: float, keep_days: float = 400) -> None:
        """Forget posted, refused and abandoned records older than `keep_days` (the heads are
        kept: they are the pharmacy's proof of the journal it was shown)."""
        with self._db() as db:
            db.execute("DELETE FROM server_reports WHERE status != 'pending' AND created < ?",
                       (now - keep_days * 86400.0,))


def _head(answer: dict[str, Any]) -> tuple[str, int, str, int] | None:
    """(tenant, seq, head, received_ns) from the server's answer, checked (it is input)."""
    a = answer.get("audit")
    received = answer.get("received_ns")
    if not isinstance(a, dict) or not isinstance(received, int):
        return None
    seq, head, tenant = a.get("seq"), a.get("head"), a.get("tenant", answer.get("tenant"))
    if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(head, str)
            or len(head) != 64 or any(c not in _HEAD for c in head) or not isinstance(tenant, str)):
        return None
    return clean(tenant, 64), seq, head, received


def after_run(config: Config, record: RunRecord, now: float, db_path: str | Path) -> list[PostResult]:
    """Queue the run's record and post all that waits, oldest first (a new run is a good
    moment to try again). Never raises."""
    if config.server is None:
        return []
    try:
        reporter = Reporter(db_path)
        reporter.queue(config, record, now)
    except Exception as exc:  # never into the run: the record is lost, the next one will tell
        reason = exc.args[0] if isinstance(exc, sqlite3.Error) and exc.args else type(exc).__name__
        return [PostResult(record.job, 0, False, _("the status record could not be stored: {reason}").format(
            reason=clean(reason, 200)), retried=False)]
    return reporter.flush(config.server, now, force=True)


def retry_due(config: Config, now: float, db_path: str | Path) -> list[PostResult]:
    """Post the records still waiting whose time came (the agent calls it every minute)."""
    if config.server is None:
        return []
    try:
        reporter = Reporter(db_path)
    except Exception:
        return []
    return reporter.flush(config.server, now)
