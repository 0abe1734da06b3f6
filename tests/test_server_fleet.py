"""The fleet: agents' status records (`POST /v1/status`) validated as untrusted input, stored
with the server's receipt time and journaled; the ranking of tenants by risk with an injected
clock; the provider's alerts through a real SMTP sink and HTTP receiver (problem after the
delay, reminder, back to normal, a broken channel retried); `coffre server fleet`; and the real
agent posting its run's record after `coffre run` (docs/server.md, "Fleet status")."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import urllib3
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from alert_servers import SMTP_PASSWORD, SMTP_USER, HttpReceiver, SmtpSink
from coffre.core.clock import FixedClock
from coffre.core.errors import UsageError
from coffre.server import fleet, fleet_alerts, reports_api, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.http import Refusal, refusal_response
from server_support import T0, add_tenant, admin_token, free_port, make_context, serving

from conftest import Coffre

H = 3600.0
NS = 10**9
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=20))


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return refusal_response(exc)


def app_of(ctx: ServerContext) -> Starlette:
    return Starlette(routes=reports_api.routes(ctx), exception_handlers={Refusal: _refused})


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ServerContext]:
    c = make_context(tmp_path / "server", clock=FixedClock(T0))
    yield c
    c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerContext]:
    """A context on SQLite, then on PostgreSQL (what several instances share)."""
    url = ""
    if request.param == "postgresql":
        from dbservers import DB_PASSWORD, DB_USER

        postgres = request.getfixturevalue("postgres")
        name = "fleet_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
        postgres.psql(f"CREATE DATABASE {name}")
        url = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{name}"
    c = make_context(tmp_path / "server", clock=FixedClock(T0), db_url=url)
    yield c
    c.close()


@pytest.fixture
def served(ctx: ServerContext) -> Iterator[str]:
    with serving(app_of(ctx)) as url:
        yield url


def record(job: str = "officine", outcome: str = "ok", sent: float | None = None,
           **extra: Any) -> dict[str, Any]:
    """A valid record from an agent whose clock reads `sent` (default: the server's T0)."""
    sent = T0 / NS if sent is None else sent
    body: dict[str, Any] = {
        "version": 1, "site": "comptoir", "job": job, "trigger": "schedule", "outcome": outcome,
        "sent": sent, "started": sent - 600, "finished": sent - 60, "next_due": sent + 6 * H, "window": 2 * H,
        "sizes": {"bytes_read": 10_000, "bytes_sent": 2_000, "files_total": 30, "files_changed": 3,
                  "warnings": 0, "databases": 1, "database_bytes": 50_000},
        "medium": {"used": 10, "total": 100},
        "verified": {"check": {"ok": True, "subset": "5%"}, "verify": {"ok": True, "files": 3}},
        "drill": {"ok": True},
        "copies": [{"name": "hors-site", "state": "ok"}],
        "steps": [{"name": "backup", "ok": True, "exit_code": 0, "seconds": 12.5},
                  {"name": "copy:hors-site", "ok": True, "exit_code": 0, "seconds": 3.0}],
        "agent": {"version": "0.1.0"},
    }
    body.update(extra)
    return body


def post(url: str, token: str | None, body: Any, raw: bytes | None = None) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    return HTTP.request("POST", url + "/v1/status", body=data, headers=headers)


def reports(ctx: ServerContext) -> list[Any]:
    with ctx.db.read() as conn:
        return list(conn.execute(sa.select(tables.status_reports).order_by(tables.status_reports.c.id)))


def journal(ctx: ServerContext, tenant_id: int) -> list[tuple[str, str]]:
    a = tables.audit_entries
    with ctx.db.read() as conn:
        return [(r.operation, r.outcome) for r in conn.execute(
            sa.select(a.c.operation, a.c.outcome).where(a.c.tenant_id == tenant_id).order_by(a.c.seq))]


def tenant_id(ctx: ServerContext, name: str) -> int:
    with ctx.db.read() as conn:
        t = tenants.by_name(conn, name)
    assert t is not None
    return t.id


# --------------------------------------------------------------------------- POST /v1/status


def test_a_record_is_stored_with_the_receipt_time_journaled_and_answered(ctx: ServerContext,
                                                                          served: str) -> None:
    tok = add_tenant(ctx, "pharmacie-du-port", quota_soft=1000, quota_hard=10**9)
    # The agent's clock is one hour behind the server's: its times are moved onto the server's.
    agent_now = T0 / NS - H
    res = post(served, tok["backup"], record(sent=agent_now))
    assert res.status == 201, res.data
    answer = res.json()
    tid = tenant_id(ctx, "pharmacie-du-port")
    [row] = reports(ctx)
    assert (row.tenant_id, row.site, row.job, row.outcome) == (tid, "comptoir", "officine", "ok")
    assert row.received_ns == T0 and row.token_id == tokens.token_id_of(tok["backup"])
    assert row.next_due_ns == T0 + int(6 * H * NS)  # the agent's "in 6 h", by the server's clock
    assert row.started_ns == T0 - 600 * NS
    assert json.loads(row.body)["copies"] == [{"name": "hors-site", "state": "ok"}]
    # Journaled in the tenant's chain, and the answer shows the head after that entry.
    assert journal(ctx, tid)[-1] == ("report", "ok")
    with ctx.db.read() as conn:
        head = conn.execute(sa.select(tables.audit_heads).where(tables.audit_heads.c.tenant_id == tid)).one()
    assert answer["audit"] == {"tenant": "pharmacie-du-port", "seq": head.seq, "head": head.entry_hash}
    assert answer["tenant"] == "pharmacie-du-port" and answer["received_ns"] == T0
    assert answer["quota"]["state"] == "ok" and answer["quota"]["hard"] == 10**9
    assert answer["fleet"] == {"light": "green", "reasons": []}
    assert "X-Coffre-Quota-Warning" not in res.headers
    # Past the soft quota: said in the answer and in the header every tenant response carries.
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid).values(stored_bytes=1500))
    res = post(served, tok["backup"], record())
    assert res.status == 201 and res.json()["quota"]["state"] == "near"
    assert res.json()["fleet"] == {"light": "orange", "reasons": ["quota_near"]}
    assert res.headers["X-Coffre-Quota-Warning"] == ("used=1500; stored=1500; binned=0; soft=1000; "
                                                     "hard=1000000000")


BAD: dict[str, Any] = {
    "unknown_key": record(files=["/srv/officine/ordonnance.pdf"]),
    "unknown_nested_key": record(sizes={"bytes_read": 1, "paths": ["/srv"]}),
    "tenant_in_body": record(tenant="pharmacie-b"),
    "error_text": record(error="cannot read /srv/officine/patient-dupont.pdf"),
    "string_for_number": record(sizes={"bytes_read": "10"}),
    "bool_for_number": record(sizes={"bytes_read": True}),
    "negative": record(sizes={"bytes_sent": -1}),
    "float_count": record(sizes={"files_total": 1.5}),
    "bad_outcome": record(outcome="interrupted"),
    "bad_job": record(job="../../etc"),
    "long_site": record(site="x" * 201),
    "control_in_site": record(site="comptoir\nBcc: x@example.org"),
    "future_start": record(started=T0 / NS + 2 * H),
    "ancient_start": record(started=T0 / NS - 500 * 86400),
    "finished_before_start": record(finished=T0 / NS - 3600),
    "not_a_time": record(sent=1e20),
    "wrong_version": record(version=2),
    "missing_outcome": {k: v for k, v in record().items() if k != "outcome"},
    "too_many_steps": record(steps=[{"name": "check", "ok": True}] * 65),
    "bad_copy_state": record(copies=[{"name": "nas", "state": "fine"}]),
    "list_not_object": [record()],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_record_is_refused_with_the_reason_and_journaled(ctx: ServerContext, served: str,
                                                                case: str) -> None:
    tok = add_tenant(ctx, "pharmacie-du-port")
    res = post(served, tok["backup"], BAD[case])
    assert res.status == 400, res.data
    assert res.json()["error"] == "bad_request" and res.json()["message"]
    assert reports(ctx) == []
    assert journal(ctx, tenant_id(ctx, "pharmacie-du-port"))[-1] == ("report", "bad_request")


@pytest.mark.parametrize("raw", [b"{not json", b'{"version": 1, "version": 1}', b'{"version": NaN}',
                                 "é".encode("latin-1"), b"[" * 10_000])
def test_what_is_not_one_json_object_is_refused(ctx: ServerContext, served: str, raw: bytes) -> None:
    tok = add_tenant(ctx, "pharmacie-du-port")
    res = post(served, tok["backup"], None, raw=raw)
    assert res.status == 400, res.data
    assert reports(ctx) == []


def test_an_oversized_record_is_refused_whatever_length_it_declares(ctx: ServerContext, served: str) -> None:
    tok = add_tenant(ctx, "pharmacie-du-port")
    big = json.dumps(record(site="x" * 100, agent={"version": "1"}, padding="y" * 70_000)).encode()
    res = post(served, tok["backup"], None, raw=big)
    assert res.status == 413 and res.json()["error"] == "too_large"
    # Declared small but sent in chunks: counted while read.
    chunks = iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"])
    res = HTTP.request("POST", served + "/v1/status", body=chunks, chunked=True,
                       headers={"Authorization": f"Bearer {tok['backup']}"})
    assert res.status == 413
    assert reports(ctx) == []
    assert journal(ctx, tenant_id(ctx, "pharmacie-du-port"))[-2:] == [("report", "too_large")] * 2


def test_who_may_post_and_for_whom(ctx: ServerContext, served: str) -> None:
    port = add_tenant(ctx, "pharmacie-du-port")
    other = add_tenant(ctx, "pharmacie-b")
    # The read role (a standby machine's agent) reports too.
    assert post(served, port["read"], record(job="secours")).status == 201
    # No token, a malformed one, an admin token: refused.
    assert post(served, None, record()).status == 401
    assert post(served, port["backup"][:-2] + "xx", record()).status == 401
    res = post(served, admin_token(ctx), record())
    assert res.status == 403 and res.json()["error"] == "forbidden"
    # The tenant is the token's: the other tenant's record lands in its own rows, whatever it says.
    assert post(served, other["backup"], record(site="pharmacie-du-port")).status == 201
    rows = reports(ctx)
    assert [(r.tenant_id, r.job) for r in rows] == [(tenant_id(ctx, "pharmacie-du-port"), "secours"),
                                                    (tenant_id(ctx, "pharmacie-b"), "officine")]
    # A disabled tenant's token, a revoked token: refused.
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.name == "pharmacie-b")
                     .values(state="disabled"))
        tokens.revoke(conn, tokens.token_id_of(port["prune"]), T0)
    assert post(served, other["backup"], record()).status == 401
    assert post(served, port["prune"], record()).status == 401
    assert len(reports(ctx)) == 2


# --------------------------------------------------------------------------- the ranking


def store_report(ctx: ServerContext, name: str, body: dict[str, Any]) -> None:
    """A record as the route stores it (the route itself is tested above)."""
    tid = tenant_id(ctx, name)
    with ctx.db.read() as conn:
        token = next(t.id for t in tokens.listing(conn, tid) if t.role == "backup")
    principal = tokens_principal(ctx, tid, token)
    reports_api.store(ctx, principal, "127.0.0.1", reports_api.validate(json.dumps(body).encode()), 100)


def tokens_principal(ctx: ServerContext, tid: int, token_id: str) -> Any:
    from coffre.server.roles import Principal

    with ctx.db.read() as conn:
        t = tenants.by_id(conn, tid)
    assert t is not None
    return Principal(token_id, "backup", tid, t.name, t.state)


def assess(ctx: ServerContext) -> dict[str, fleet.TenantRisk]:
    with ctx.db.read() as conn:
        rows = fleet.assess(conn, ctx.clock.now_ns())
    return {r.tenant: r for r in rows}


def order(ctx: ServerContext) -> list[str]:
    with ctx.db.read() as conn:
        return [r.tenant for r in fleet.assess(conn, ctx.clock.now_ns())]


def test_tenants_are_ranked_by_risk_with_their_reasons(any_ctx: ServerContext) -> None:
    ctx = any_ctx
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    now = T0 / NS
    for name in ("green", "failing", "late", "quota-near", "quota-full", "scrubbed", "diverging", "never",
                 "gone"):
        add_tenant(ctx, name, ("backup",), quota_soft=800 if name == "quota-near" else None,
                   quota_hard=1000 if name in ("quota-near", "quota-full") else None)
    for name in ("green", "late", "quota-near", "quota-full", "scrubbed", "gone"):
        store_report(ctx, name, record())
    store_report(ctx, "late", record(job="compta", next_due=now + H, window=0))  # due in 1 h, no window
    store_report(ctx, "failing", record())
    clock.advance(60)
    store_report(ctx, "failing", record(outcome="failed", sent=now + 60, steps=[
        {"name": "backup", "ok": False, "exit_code": 1}]))
    store_report(ctx, "diverging", record(copies=[{"name": "hors-site", "state": "diverges"}]))
    with ctx.db.begin() as conn:
        for name, used in (("quota-near", 850), ("quota-full", 1000)):
            conn.execute(tables.tenants.update().where(tables.tenants.c.name == name)
                         .values(stored_bytes=used))
        conn.execute(tables.tenants.update().where(tables.tenants.c.name == "gone").values(state="disabled"))
        for problem in ("mismatch", "mismatch", "missing"):
            conn.execute(tables.scrub_findings.insert().values(
                tenant_id=tenant_id(ctx, "scrubbed"), repository_id=1, kind="data", name="ab" * 32,
                found_ns=T0, problem=problem))
        conn.execute(tables.scrub_findings.insert().values(  # already resolved: counts for nothing
            tenant_id=tenant_id(ctx, "green"), repository_id=1, kind="data", name="cd" * 32, found_ns=T0,
            problem="mismatch", resolved_ns=T0 + 1))

    seen = assess(ctx)
    assert "gone" not in seen  # disabled: not watched
    codes = {name: [r.code for r in row.reasons] for name, row in seen.items()}
    assert codes == {"green": [], "failing": ["failing"], "late": [], "quota-near": ["quota_near"],
                     "quota-full": ["quota_full"], "scrubbed": ["scrub"], "diverging": ["copies"],
                     "never": ["never"]}
    assert seen["failing"].reasons[0].since_ns == T0 + 60 * NS
    assert seen["failing"].reasons[0].detail["steps"] == ["backup"]
    assert seen["scrubbed"].reasons[0].detail["count"] == 3
    assert seen["green"].light == "green" and seen["never"].light == "orange"

    # Late only once its due time, its window and the margin have gone by, by the server's clock.
    clock.advance(H + fleet.LATE_MARGIN_S - 120)
    assert [r.code for r in assess(ctx)["late"].reasons] == []
    clock.advance(120)
    late = assess(ctx)["late"]
    assert [r.code for r in late.reasons] == ["late"] and late.reasons[0].detail["job"] == "compta"
    assert late.reasons[0].since_ns == T0 + int((H + fleet.LATE_MARGIN_S) * NS)
    # Red first (the longest in trouble first), then orange, then green.
    # Red first, the longest in trouble first (a quota has no history: since now), then orange,
    # then green.
    ranked = order(ctx)
    assert ranked[:5] == ["scrubbed", "diverging", "failing", "late", "quota-full"]
    assert ranked[5:] == ["never", "quota-near", "green"]
    # A success after failures: green again; a replica difference written by replication counts
    # as copies diverging.
    store_report(ctx, "failing", record(sent=clock.now_ns() / NS))
    with ctx.db.begin() as conn:
        conn.execute(tables.scrub_findings.insert().values(
            tenant_id=tenant_id(ctx, "green"), repository_id=1, kind="data", name="ef" * 32, found_ns=T0,
            problem="replica_missing"))
    seen = assess(ctx)
    assert seen["failing"].light == "green"
    assert [r.code for r in seen["green"].reasons] == ["copies"] and seen["green"].light == "red"


def test_the_failing_streak_begins_at_its_first_failure(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie", ("backup",))
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    store_report(ctx, "pharmacie", record(outcome="failed"))
    clock.advance(3600)
    store_report(ctx, "pharmacie", record())
    clock.advance(3600)
    first = clock.now_ns()
    store_report(ctx, "pharmacie", record(outcome="failed", sent=first / NS))
    clock.advance(3600)
    store_report(ctx, "pharmacie", record(outcome="failed", sent=clock.now_ns() / NS))
    [reason] = assess(ctx)["pharmacie"].reasons
    assert reason.code == "failing" and reason.since_ns == first


def test_one_instance_per_round_and_old_records_forgotten_but_each_jobs_latest(ctx: ServerContext) -> None:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    assert fleet._take_round(ctx, T0) and not fleet._take_round(ctx, T0 + NS)  # another instance: skips
    assert fleet._take_round(ctx, T0 + int(fleet.PERIOD_S * NS))
    add_tenant(ctx, "pharmacie", ("backup",))
    for job in ("officine", "officine", "compta"):
        store_report(ctx, "pharmacie", record(job=job))
    clock.advance(fleet.KEEP_DAYS * 86400 + 60)
    store_report(ctx, "pharmacie", record(job="officine", sent=clock.now_ns() / NS))
    fleet.periodic(ctx, clock.now_ns())
    kept = [(r.job, r.received_ns) for r in reports(ctx)]
    assert kept == [("compta", T0), ("officine", clock.now_ns())]


# --------------------------------------------------------------------------- alerts to the provider


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "smtp") as s:
        yield s


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as h:
        yield h


def alerts_file(tmp_path: Path, sink: SmtpSink, hook: HttpReceiver, port: int | None = None,
                language: str = "fr") -> Path:
    password = tmp_path / "smtp-password"
    password.write_text(SMTP_PASSWORD + "\n")
    password.chmod(0o600)
    secret = tmp_path / "webhook.key"
    secret.write_text("webhook-hmac-key\n")
    path = tmp_path / "alerts.toml"
    path.write_text(f"""\
[alerts]
delay = "2h"
reminder_every = "1d"
language = "{language}"
timezone = "Europe/Paris"

[alerts.email]
server = "127.0.0.1"
port = {port or sink.port}
security = "starttls"
username = "{SMTP_USER}"
password_file = "{password}"
sender = "coffre-server@prestataire.example"
to = ["astreinte@prestataire.example"]
ca_file = "{sink.ca_file}"
timeout = "10s"

[[alerts.webhooks]]
url = "{hook.url}/coffre"
secret_file = "{secret}"
""", encoding="utf-8")
    return path


def subject(mail: Any) -> str:
    """The subject as read (a long one is folded, and decoding may double a space)."""
    return " ".join(str(mail.message["Subject"]).split())


def with_alerts(ctx: ServerContext, path: Path) -> ServerContext:
    from dataclasses import replace

    settings = replace(ctx.settings, extra={fleet_alerts.SETTINGS_KEY: str(path)})
    return ServerContext(settings, ctx.db, ctx.store, ctx.clock, ctx.tally)


def test_the_provider_is_told_when_a_site_stays_red_reminded_and_told_when_it_is_back(
        tmp_path: Path, any_ctx: ServerContext, sink: SmtpSink, hook: HttpReceiver) -> None:
    ctx = any_ctx
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    add_tenant(ctx, "pharmacie-du-port", ("backup",))
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.name == "pharmacie-du-port").values(
            display_name="Pharmacie du Port", contact="M. Martin, 04 00 00 00 00"))
    add_tenant(ctx, "pharmacie-calme", ("backup",))
    month = 30 * 86400  # next due times far ahead: no site becomes late during the test
    store_report(ctx, "pharmacie-calme", record(next_due=T0 / NS + month))
    store_report(ctx, "pharmacie-du-port", record(outcome="failed", next_due=T0 / NS + month, steps=[
        {"name": "backup", "ok": True, "exit_code": 0},
        {"name": "copy:hors-site", "ok": False, "exit_code": 1}]))
    c = with_alerts(ctx, alerts_file(tmp_path, sink, hook))

    def round_(advance: float) -> None:
        clock.advance(advance)
        fleet.periodic(c, clock.now_ns())

    round_(0)  # red, but not for 2 h yet: nothing said
    round_(3600)
    assert sink.messages() == [] and hook.received() == []
    round_(3600)
    [mail] = sink.messages()
    assert mail.rcpt_tos == ["astreinte@prestataire.example"] and mail.login == SMTP_USER
    assert subject(mail) == "Coffre : Pharmacie du Port (pharmacie-du-port) en échec"
    assert "la sauvegarde « officine » de comptoir a échoué" in mail.body
    assert "étapes en échec : copy:hors-site" in mail.body and "M. Martin" in mail.body
    assert SMTP_PASSWORD not in mail.raw.decode(errors="replace")
    [request] = hook.received()
    payload = json.loads(request.body)
    assert payload["event"] == "problem" and payload["tenant"] == "pharmacie-du-port"
    assert payload["problems"] == ["failing"] and payload["audience"] == "provider"
    expected = "sha256=" + hmac.new(b"webhook-hmac-key", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Coffre-Signature"] == expected
    assert request.headers["User-Agent"] == "coffre-server"
    with ctx.db.read() as conn:
        [row] = conn.execute(sa.select(tables.fleet_alerts)).all()
    assert (row.problem, row.since_ns, row.cleared_ns) == ("failing", T0, None)
    assert row.notified_ns == T0 + 2 * 3600 * NS

    round_(3600)  # told: nothing more until the reminder
    round_(20 * 3600)
    assert len(sink.messages()) == 1
    round_(3 * 3600)  # a day after the notice
    assert len(sink.messages()) == 2 and subject(sink.messages()[1]).endswith("toujours en échec")
    assert json.loads(hook.received()[1].body)["event"] == "reminder"

    now = clock.now_ns() / NS
    store_report(ctx, "pharmacie-du-port", record(sent=now, next_due=now + month))
    round_(600)
    assert len(sink.messages()) == 3
    back = sink.messages()[2]
    assert subject(back) == "Coffre : Pharmacie du Port (pharmacie-du-port) revenu à la normale"
    assert "les sauvegardes réussissent de nouveau" in back.body
    assert json.loads(hook.received()[2].body)["event"] == "resolved"
    round_(86400 * 2)
    assert len(sink.messages()) == 3 and len(hook.received()) == 3  # the quiet site was never mentioned


def test_a_notice_no_channel_could_deliver_is_sent_at_a_later_round(tmp_path: Path, ctx: ServerContext,
                                                                     sink: SmtpSink) -> None:
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    add_tenant(ctx, "pharmacie", ("backup",))
    store_report(ctx, "pharmacie", record(outcome="failed"))
    with HttpReceiver(status=503) as down:
        path = alerts_file(tmp_path, sink, down, port=free_port(), language="en")  # nobody listens there
        c = with_alerts(ctx, path)
        clock.advance(3 * 3600)
        results = fleet_alerts.run(c, clock.now_ns(), fleet_alerts.load(str(path)))
        assert [r.ok for r in results] == [False, False] and len(down.received()) == 1
        assert "cannot reach the mail server" in (results[0].error or "")
        with ctx.db.read() as conn:
            assert conn.execute(sa.select(tables.fleet_alerts.c.notified_ns)).scalar() is None
    # Mended (the file is read again at each round): the same notice goes out.
    with HttpReceiver() as up:
        alerts_file(tmp_path, sink, up, language="en")
        clock.advance(fleet.PERIOD_S)
        fleet.periodic(c, clock.now_ns())
        assert json.loads(up.received()[0].body)["event"] == "problem"
    [mail] = sink.messages()
    assert subject(mail) == "Coffre: pharmacie failing"
    assert "the backup \"officine\" of comptoir failed" in mail.body


def test_a_broken_alerts_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text("""\
[alerts]
delay = "soon"
langue = "fr"

[alerts.email]
server = "mail.example"
security = "none"
username = "x"
to = "astreinte@example"
""", encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        fleet_alerts.load(str(path))
    text = caught.value.message
    for where in ("alerts.delay:", "alerts.langue: unknown key", "alerts.email.to:", "alerts.email.username:",
                  "alerts.email.security:"):
        assert f"{path}: {where}" in text, text


def test_the_serving_command_checks_the_alerts_file_at_start(tmp_path: Path, sink: SmtpSink,
                                                               hook: HttpReceiver,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from coffre.cli import server_fleet

    parser = argparse.ArgumentParser()
    server_fleet.add_alerts_option(parser)
    monkeypatch.delenv(fleet_alerts.ENV, raising=False)
    assert server_fleet.alerts_extra(parser.parse_args([])) == {}
    good = alerts_file(tmp_path, sink, hook)
    assert server_fleet.alerts_extra(parser.parse_args(["--alerts", str(good)])) == {
        fleet_alerts.SETTINGS_KEY: str(good)}
    monkeypatch.setenv(fleet_alerts.ENV, str(good))
    assert server_fleet.alerts_extra(parser.parse_args([]))[fleet_alerts.SETTINGS_KEY] == str(good)
    broken = tmp_path / "broken.toml"
    broken.write_text("[alerts]\nreminder = \"1d\"\n")
    with pytest.raises(UsageError, match=r"alerts\.reminder: unknown key"):
        server_fleet.alerts_extra(parser.parse_args(["--alerts", str(broken)]))


# --------------------------------------------------------------------------- coffre server fleet


def run_coffre(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coffre", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "LANG": "C", **(env or {})}, check=False)


def test_the_fleet_command_lists_tenants_by_risk_and_exits_1_unless_all_are_green(tmp_path: Path) -> None:
    data = tmp_path / "server"
    ctx = make_context(data, clock=FixedClock(time.time_ns()))
    try:
        add_tenant(ctx, "pharmacie-verte", ("backup",))
        add_tenant(ctx, "pharmacie-rouge", ("backup",))
        now = time.time()
        store_report(ctx, "pharmacie-verte", record(sent=now))
        store_report(ctx, "pharmacie-rouge", record(outcome="failed", sent=now))
    finally:
        ctx.close()
    res = run_coffre("server", "--data", str(data), "fleet")
    assert res.returncode == 1, res
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["FAILING", "pharmacie-rouge"]
    assert "the backup \"officine\" of comptoir failed" in lines[1]
    assert lines[2].split()[:2] == ["OK", "pharmacie-verte"] and "last report" in lines[2]
    assert "2 tenants: 1 failing, 0 to check, 1 OK" in res.stdout
    fr = run_coffre("--lang", "fr", "server", "--data", str(data), "fleet")
    assert fr.returncode == 1 and fr.stdout.startswith("EN ÉCHEC"), fr
    assert "la sauvegarde « officine » de comptoir a échoué" in fr.stdout
    report = json.loads(run_coffre("server", "--data", str(data), "fleet", "--json").stdout)
    assert report["ok"] is False
    assert [(t["tenant"], t["light"]) for t in report["tenants"]] == [("pharmacie-rouge", "red"),
                                                                      ("pharmacie-verte", "green")]
    assert report["tenants"][0]["reasons"][0]["code"] == "failing"

    ctx = make_context(data, clock=FixedClock(time.time_ns()))
    try:
        store_report(ctx, "pharmacie-rouge", record(sent=time.time()))
    finally:
        ctx.close()
    res = run_coffre("server", "--data", str(data), "fleet")
    assert res.returncode == 0, res
    assert "2 tenants: 0 failing, 0 to check, 2 OK" in res.stdout


# --------------------------------------------------------------------------- the agent posting


def agent_config(tmp_path: Path, coffre: Coffre, url: str, token: str, mode: int = 0o600) -> Path:
    src = tmp_path / "officine"
    src.mkdir(exist_ok=True)
    for i in range(3):
        (src / f"ordonnance-dupont-{i}.txt").write_text(f"ordonnance {i}\n" * 50)
    if not (Path(coffre.repo) / "config").exists():
        coffre.ok("init")
    token_file = tmp_path / "jeton-serveur"
    token_file.write_text(token + "\n")
    token_file.chmod(mode)
    config = tmp_path / "coffre.toml"
    config.write_text(f"""\
[agent]
state_dir = "{tmp_path / 'agent-state'}"
nice = 0
ionice = "none"

[repositories.local]
url = "{coffre.repo}"
password_file = "{coffre.pwfile}"

[jobs.officine]
repository = "local"
paths = ["{src}"]

[jobs.officine.verification]
check_subset = "10%"

[server]
url = "{url}"
token_file = "{token_file}"
insecure_http = true
timeout = "5s"
""", encoding="utf-8")
    return config


def agent_heads(tmp_path: Path) -> list[tuple[Any, ...]]:
    import sqlite3

    db = sqlite3.connect(tmp_path / "agent-state" / "agent.sqlite")
    try:
        return db.execute("SELECT tenant, seq, head FROM server_heads ORDER BY id").fetchall()
    finally:
        db.close()


def test_the_agent_posts_each_run_and_retries_when_the_server_was_away(tmp_path: Path,
                                                                       coffre: Coffre) -> None:
    ctx = make_context(tmp_path / "server", clock=FixedClock(time.time_ns()))
    try:
        tok = add_tenant(ctx, "pharmacie-du-port", ("backup",))
        tid = tenant_id(ctx, "pharmacie-du-port")
        with HttpReceiver(status=503) as away:
            config = agent_config(tmp_path, coffre, away.url, tok["backup"])
            check = coffre("config", "check", "--config", str(config), repo=False)
            assert check.code == 0, check
            assert f"hosting server: {away.url} is sent the status of each run" in check.out

            # The server is away (503): the backup succeeds all the same, the record waits.
            run = coffre("run", "officine", "--config", str(config), repo=False)
            assert run.code == 0, run
            assert "status not sent to the hosting server, tried again later" in run.err
            assert tok["backup"] not in run.err and len(away.received()) == 1

        with serving(app_of(ctx)) as url:
            config = agent_config(tmp_path, coffre, url, tok["backup"])
            # The next run posts what waited first, then its own.
            run = coffre("run", "officine", "--config", str(config), repo=False)
            assert run.code == 0, run
            assert run.err.count("status sent to the hosting server") == 2, run.err
        rows = reports(ctx)
        assert [(r.tenant_id, r.job, r.outcome) for r in rows] == [(tid, "officine", "ok")] * 2
        assert rows[0].started_ns < rows[1].started_ns  # oldest first
        body = json.loads(rows[1].body)
        assert body["verified"]["check"] == {"ok": True, "subset": "10%"}
        assert body["sizes"]["files_total"] == 3 and body["next_due"] is not None
        assert [s["name"] for s in body["steps"]][:2] == ["backup", "check"]
        # Never a file name: not the folder, not a file.
        everything = " ".join(r.body for r in rows)
        assert "ordonnance" not in everything and str(tmp_path) not in everything
        # The agent keeps each audit head it was shown, the last one the server's current head.
        heads = agent_heads(tmp_path)
        h = tables.audit_heads
        with ctx.db.read() as conn:
            head = conn.execute(sa.select(h).where(h.c.tenant_id == tid)).one()
        assert len(heads) == 2 and heads[-1] == ("pharmacie-du-port", head.seq, head.entry_hash)
    finally:
        ctx.close()


def test_the_agent_refuses_a_token_file_others_can_read(tmp_path: Path, coffre: Coffre) -> None:
    ctx = make_context(tmp_path / "server", clock=FixedClock(time.time_ns()))
    try:
        tok = add_tenant(ctx, "pharmacie", ("backup",))
        with serving(app_of(ctx)) as url:
            config = agent_config(tmp_path, coffre, url, tok["backup"], mode=0o644)
            run = coffre("run", "officine", "--config", str(config), repo=False)
        assert run.code == 0, run
        assert "may be read by others" in run.err and tok["backup"] not in run.err
        assert reports(ctx) == []
    finally:
        ctx.close()


def test_the_server_section_is_validated_like_every_other(tmp_path: Path) -> None:
    from coffre.agent.config import ConfigError, load_config

    path = tmp_path / "coffre.toml"
    path.write_text("""\
[repositories.local]
url = "/srv/depot"
password_file = "/etc/coffre/mot-de-passe"

[jobs.officine]
repository = "local"
paths = ["/srv/officine"]

[server]
url = "http://sauvegarde.example"
token_file = "jeton"
tokn = "x"
""", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = caught.value.message
    assert f"{path}:11: server.token_file: 'jeton' is not an absolute path" in text, text
    assert f"{path}:12: server.tokn: unknown key" in text
    assert f"{path}:10: server.url: http:// sends the token in clear" in text


def test_the_agents_queue_backs_off_and_never_sends_a_refused_record_again(tmp_path: Path, ctx: ServerContext,
                                                                           served: str) -> None:
    import sqlite3

    from coffre.agent import model
    from coffre.agent.records import RunRecord, StepResult
    from coffre.agent.report import Reporter

    tok = add_tenant(ctx, "pharmacie", ("backup",))
    token_file = tmp_path / "jeton"
    token_file.write_text(tok["backup"])
    token_file.chmod(0o600)
    config = model.Config(path="coffre.toml", repositories={"nas": model.Repository("nas", "/mnt/nas")},
                          jobs={"officine": model.Job("officine", "nas", paths=("/srv/officine",),
                                                      copies=("nas2",))})
    now = time.time()
    run = RunRecord("officine", "nas", "schedule", now - 60, now - 1, "ok", steps=(
        StepResult("backup", "nas", True, 0, now - 60, now - 30),
        StepResult("copy:nas2", "nas2", True, 0, now - 30, now - 20)), verified={"against:nas2": False})
    reporter = Reporter(tmp_path / "agent.sqlite")
    assert reporter.queue(config, run, now)
    assert not reporter.queue(config, RunRecord("officine", "nas", "manual", now, now, "interrupted"), now)
    with HttpReceiver(status=503) as away:
        down = model.Server(away.url, str(token_file), insecure_http=True)
        [failed] = reporter.flush(down, now)
        assert not failed.ok and failed.retried and "HTTP 503" in (failed.error or "")
        assert reporter.flush(down, now + 30) == [] and len(away.received()) == 1  # not before 1 min
    up = model.Server(served, str(token_file), insecure_http=True)
    # A record the server refuses (here, one written by a newer agent) is not sent again.
    db = sqlite3.connect(tmp_path / "agent.sqlite")
    db.execute("INSERT INTO server_reports (job, body, created, status, next_at) VALUES (?,?,?,?,?)",
               ("officine", json.dumps(record(sent=now, kernel="6.1")), now, "pending", now))
    db.commit()
    db.close()
    results = reporter.flush(up, now + 61)
    assert [(r.ok, r.retried) for r in results] == [(True, True), (False, False)]
    assert "unknown key" in (results[1].error or "")
    assert reporter.flush(up, now + 4000) == [] and reporter.pending() == []
    [row] = reports(ctx)
    body = json.loads(row.body)
    assert body["copies"] == [{"name": "nas2", "state": "diverges"}] and body["outcome"] == "ok"
    assert len(reporter.heads()) == 1 and reporter.heads()[0].tenant == "pharmacie"
