"""The alerts' memory and post office, in the agent's SQLite file (beside the status store's
tables, hence `CREATE TABLE IF NOT EXISTS`, WAL and short transactions).

`Outbox.process(config, problems, now)` runs `decide`, stores the new open-problem state and
the notices (written for people by `texts`) in one transaction, then delivers on every
configured channel. A delivery is marked done only after the channel said so: a crash in
between sends it again (the mail's Message-ID stays the same), it never loses it. A failed
delivery is retried by later calls after 1 min, 5 min, 30 min, then hourly (hourly at once for
a permanent error: the configuration may get fixed), given up after `GIVE_UP_AFTER`; every
attempt is a row. Each notice to the pharmacist is also a screen message (`messages()`), the
channel `coffre status` and the dashboard show. Nothing here raises out of `process`."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from coffre.agent.alerts.channel import Channel, DeliveryError, ProblemLike
from coffre.agent.alerts.decide import Notice, OpenProblem, decide
from coffre.agent.alerts.mail import EmailChannel
from coffre.agent.alerts.texts import clean, with_text
from coffre.agent.alerts.webhook import WebhookChannel
from coffre.agent.health import Problem
from coffre.agent.model import Config
from coffre.core.i18n import _
from coffre.core.sqlite_wal import use_wal

RETRY_PAUSES = (60.0, 300.0, 1800.0)  # after the 1st, 2nd, 3rd failed attempt
HOURLY = 3600.0  # after that, and after a permanent error
BUSY_S = 30.0  # how long a connection waits for the status store's writers
GIVE_UP_AFTER = 7 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_open (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, job TEXT NOT NULL, target TEXT NOT NULL,
    since REAL NOT NULL, detail TEXT NOT NULL, opened REAL NOT NULL, last_notice REAL NOT NULL,
    escalated REAL, provider_last REAL);
CREATE TABLE IF NOT EXISTS alert_notices (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, event TEXT NOT NULL, audience TEXT NOT NULL,
    kind TEXT NOT NULL, job TEXT NOT NULL, target TEXT NOT NULL, since REAL NOT NULL,
    at REAL NOT NULL, detail TEXT NOT NULL, subject TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY, notice_id INTEGER NOT NULL REFERENCES alert_notices(id),
    channel TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, next_at REAL NOT NULL, last_error TEXT,
    permanent INTEGER NOT NULL DEFAULT 0, done_at REAL);
CREATE INDEX IF NOT EXISTS alert_deliveries_status ON alert_deliveries(status, channel);
CREATE TABLE IF NOT EXISTS alert_attempts (
    id INTEGER PRIMARY KEY, delivery_id INTEGER NOT NULL, channel TEXT NOT NULL, key TEXT NOT NULL,
    event TEXT NOT NULL, audience TEXT NOT NULL, attempt INTEGER NOT NULL, ok INTEGER NOT NULL,
    error TEXT, permanent INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alert_messages (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL, kind TEXT NOT NULL,
    job TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL, subject TEXT NOT NULL,
    text TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DeliveryResult:
    """One delivery attempt made by `process` (or its failure to run at all: channel "outbox")."""

    channel: str
    key: str
    event: str
    audience: str
    attempt: int
    ok: bool
    error: str | None = None
    permanent: bool = False


@dataclass(frozen=True)
class FailedDelivery:
    """A notice a channel has not delivered yet, after at least one failed attempt."""

    channel: str
    key: str
    event: str
    audience: str
    attempts: int
    first_at: float  # when the notice was queued
    next_at: float
    error: str
    permanent: bool


# A channel that fails to deliver is a problem of kind "delivery_failed":
# `Outbox.failure_problems()` gives them to pass to `process` with the others, so the
# pharmacist hears of it through the channels that work and on screen.
DeliveryProblem = Problem


@dataclass(frozen=True)
class ScreenMessage:
    at: float
    event: str
    kind: str
    job: str
    target: str
    key: str
    subject: str
    text: str


def channels_for(config: Config) -> list[Channel]:
    """The channels the configuration sets up (the screen messages are not one: they are
    written by the outbox itself)."""
    out: list[Channel] = []
    if config.alerts.email is not None:
        out.append(EmailChannel(config.alerts.email))
    out.extend(WebhookChannel(w) for w in config.alerts.webhooks)
    return out


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the agent's SQLite file, as every table kept there wants it (WAL,
    synchronous writes, waiting on the status store's writers)."""
    db = sqlite3.connect(path, timeout=BUSY_S, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_S * 1000)}")
        use_wal(db, BUSY_S)
        db.execute("PRAGMA synchronous = FULL")
        yield db
    finally:
        db.close()


class Outbox:
    def __init__(self, db_path: str | Path, host: str | None = None,
                 channels: Callable[[Config], Sequence[Channel]] = channels_for) -> None:
        self.path = Path(db_path)
        self.host = socket.gethostname() if host is None else host
        self._channels = channels
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- the whole round ------------------------------------------------------------------

    def process(self, config: Config, problems: Sequence[ProblemLike], now: float) -> list[DeliveryResult]:
        """Decide, record, deliver what is due. Never raises: a failure of the outbox itself
        comes back as one result of channel "outbox"."""
        try:
            channels = {c.name: c for c in self._channels(config)}
            self._queue(config, problems, now, channels)
            return self._deliver(channels, now)
        except Exception as exc:  # an alert problem must never stop a backup or the agent
            reason = exc.args[0] if isinstance(exc, sqlite3.Error) and exc.args else type(exc).__name__
            return [DeliveryResult("outbox", "", "", "", 0, False,
                                   _("the alerts could not be processed: {reason}").format(
                                       reason=clean(reason, 200)))]

    def _queue(self, config: Config, problems: Sequence[ProblemLike], now: float,
               channels: Mapping[str, Channel]) -> None:
        email = config.alerts.email
        escalate_after = email.escalate_after if email is not None and email.provider else None
        with self._tx() as db:
            state = _load_state(db)
            notices, new_state = decide(state, problems, now, config.alerts.reminder_every, escalate_after)
            for key in state.keys() - new_state.keys():
                db.execute("DELETE FROM alert_open WHERE key = ?", (key,))
            for o in new_state.values():
                if state.get(o.key) != o:
                    db.execute("INSERT OR REPLACE INTO alert_open VALUES (?,?,?,?,?,?,?,?,?,?)",
                               (o.key, o.kind, o.job, o.target, o.since, _json(o.detail), o.opened,
                                o.last_notice, o.escalated, o.provider_last))
            for n in notices:
                n = with_text(n, config.agent.language, config.agent.timezone, self.host)
                cur = db.execute(
                    "INSERT INTO alert_notices (key, event, audience, kind, job, target, since, at, detail,"
                    " subject, text) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (n.key, n.event, n.audience, n.kind, n.job, n.target, n.since, n.at, _json(n.detail),
                     n.subject, n.text))
                if n.audience == "pharmacist" or n.event == "escalation":
                    db.execute("INSERT INTO alert_messages (at, event, kind, job, target, key, subject, text)"
                               " VALUES (?,?,?,?,?,?,?,?)",
                               (n.at, n.event, n.kind, n.job, n.target, n.key, n.subject, n.text))
                for name, channel in channels.items():
                    if not channel.wants(n):
                        continue
                    if n.event == "reminder":  # it says all the older ones would: send it instead
                        db.execute(
                            "UPDATE alert_deliveries SET status = 'superseded', done_at = ? WHERE status ="
                            " 'pending' AND channel = ? AND notice_id IN (SELECT id FROM alert_notices"
                            " WHERE key = ? AND audience = ? AND event != 'resolved')",
                            (now, name, n.key, n.audience))
                    db.execute("INSERT INTO alert_deliveries (notice_id, channel, status, created, next_at)"
                               " VALUES (?, ?, 'pending', ?, ?)", (cur.lastrowid, name, now, now))
            abandon = ("UPDATE alert_deliveries SET status = 'abandoned', done_at = ?"
                       " WHERE status = 'pending' AND ")
            db.execute(abandon + "created < ?", (now, now - GIVE_UP_AFTER))
            for (name,) in db.execute("SELECT DISTINCT channel FROM alert_deliveries WHERE status = 'pending'"
                                      ).fetchall():
                if name not in channels:  # no longer in the configuration
                    db.execute(abandon + "channel = ?", (now, name))

    def _deliver(self, channels: Mapping[str, Channel], now: float) -> list[DeliveryResult]:
        with self._db() as db:
            rows = db.execute(
                "SELECT d.id, d.channel, d.attempts, d.next_at, n.key, n.event, n.audience, n.kind, n.job,"
                " n.target, n.since, n.at, n.detail, n.subject, n.text FROM alert_deliveries d JOIN"
                " alert_notices n ON n.id = d.notice_id WHERE d.status = 'pending' ORDER BY d.id").fetchall()
        results: list[DeliveryResult] = []
        waiting: set[tuple[str, str]] = set()  # (channel, key): an older notice goes first
        failed: set[str] = set()  # a channel that failed now is not tried again before next time
        for (did, name, attempts, next_at, key, event, audience, kind, job, target, since, at, detail,
             subject, text) in rows:
            # next_at more than the longest pause ahead: the clock went back; try now.
            if (name, key) in waiting or name in failed or now < next_at <= now + HOURLY:
                waiting.add((name, key))
                continue
            notice = Notice(event=event, audience=audience, key=key, kind=kind, job=job, target=target,
                            since=since, at=at, detail=json.loads(detail), subject=subject, text=text)
            attempt = attempts + 1
            error: str | None = None
            permanent = False
            try:
                channels[name].send(notice)
            except DeliveryError as exc:
                error, permanent = exc.message, exc.permanent
            except Exception as exc:  # a channel's bug must not stop the others
                error = _("unexpected error: {reason}").format(reason=type(exc).__name__)
            ok = error is None
            if not ok:
                failed.add(name)
                waiting.add((name, key))
            pause = HOURLY if permanent else (RETRY_PAUSES[attempt - 1] if attempt <= len(RETRY_PAUSES)
                                              else HOURLY)
            with self._tx() as db:
                db.execute("INSERT INTO alert_attempts (delivery_id, channel, key, event, audience, attempt,"
                           " ok, error, permanent, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (did, name, key, event, audience, attempt, int(ok), error, int(permanent), now))
                if ok:
                    db.execute("UPDATE alert_deliveries SET status = 'delivered', attempts = ?, done_at = ?,"
                               " last_error = NULL WHERE id = ?", (attempt, now, did))
                else:
                    db.execute("UPDATE alert_deliveries SET attempts = ?, next_at = ?, last_error = ?,"
                               " permanent = ? WHERE id = ?",
                               (attempt, now + pause, error, int(permanent), did))
            results.append(DeliveryResult(name, key, event, audience, attempt, ok, error, permanent))
        return results

    # -- what others read -----------------------------------------------------------------

    def pending_failures(self) -> list[FailedDelivery]:
        """The notices not delivered yet after at least one failed attempt, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT d.channel, n.key, n.event, n.audience, d.attempts, d.created, d.next_at,"
                " d.last_error, d.permanent FROM alert_deliveries d JOIN alert_notices n ON"
                " n.id = d.notice_id WHERE d.status = 'pending' AND d.attempts > 0 ORDER BY d.id").fetchall()
        return [FailedDelivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or "", bool(r[8]))
                for r in rows]

    def failure_problems(self) -> list[DeliveryProblem]:
        """One "delivery_failed" problem per channel that has undelivered notices, since the
        oldest of them, with the last error."""
        by_channel: dict[str, list[FailedDelivery]] = {}
        for f in self.pending_failures():
            by_channel.setdefault(f.channel, []).append(f)
        return [DeliveryProblem("delivery_failed", "", name, min(f.first_at for f in fs),
                                {"channel": name, "error": fs[-1].error, "undelivered": len(fs)})
                for name, fs in sorted(by_channel.items())]

    def open_problems(self) -> dict[str, OpenProblem]:
        with self._db() as db:
            return _load_state(db)

    def messages(self, limit: int = 20) -> list[ScreenMessage]:
        """The latest screen messages, newest first."""
        with self._db() as db:
            rows = db.execute("SELECT at, event, kind, job, target, key, subject, text FROM alert_messages"
                              " ORDER BY at DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [ScreenMessage(*r) for r in rows]

    def attempts(self, limit: int = 100) -> list[DeliveryResult]:
        """The latest delivery attempts, newest first."""
        with self._db() as db:
            rows = db.execute("SELECT channel, key, event, audience, attempt, ok, error, permanent FROM"
                              " alert_attempts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [DeliveryResult(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], bool(r[7])) for r in rows]

    def prune(self, now: float, keep_days: float = 400) -> None:
        """Forget attempts, messages and finished notices older than `keep_days`."""
        before = now - keep_days * 86400.0
        with self._tx() as db:
            db.execute("DELETE FROM alert_attempts WHERE at < ?", (before,))
            db.execute("DELETE FROM alert_messages WHERE at < ?", (before,))
            db.execute("DELETE FROM alert_deliveries WHERE status != 'pending' AND created < ?", (before,))
            db.execute("DELETE FROM alert_notices WHERE at < ? AND id NOT IN"
                       " (SELECT notice_id FROM alert_deliveries)", (before,))


def _load_state(db: sqlite3.Connection) -> dict[str, OpenProblem]:
    rows = db.execute("SELECT key, kind, job, target, since, detail, opened, last_notice, escalated,"
                      " provider_last FROM alert_open").fetchall()
    return {r[0]: OpenProblem(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9])
            for r in rows}


def _json(detail: Mapping[str, object]) -> str:
    return json.dumps(dict(detail), sort_keys=True, default=str)


