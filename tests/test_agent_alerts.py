"""The agent's alerts: when a notice goes to whom (pure, over simulated days), what it says
(French and English, no secret, no header injection), and its delivery through a real SMTP
server (STARTTLS or TLS, AUTH), a real webhook receiver and heartbeat pings, with failures
recorded and retried and never stopping the other channels."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from alert_servers import SMTP_PASSWORD, SMTP_USER, HttpReceiver, SmtpSink, free_port
from coffre.agent.alerts.decide import Notice, decide
from coffre.agent.alerts.heartbeat import ping, ping_url
from coffre.agent.alerts.outbox import GIVE_UP_AFTER, Outbox
from coffre.agent.alerts.texts import clean, redact, render
from coffre.agent.health import Problem
from coffre.agent.model import Agent, Alerts, Config, Email, Heartbeat, Webhook

DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
KINDS = ("failed", "late", "no_disk", "not_rotated", "medium_full", "copy_diverges", "check_failed",
         "drill_failed", "db_growth", "many_changes", "delivery_failed")


FAILED = Problem("failed", "officine", "nas", T0 - HOUR, {"error": "cannot reach the NAS"})


# -- decide: pure, over simulated days ------------------------------------------------------


def simulate(problems_at, start: float, end: float, step: float = MINUTE,
             reminder_every: float = DAY, escalate_after: float | None = 2 * DAY) -> list[Notice]:
    """Checks every `step` from start to end (as the agent does), the problems given by
    `problems_at(now)`; all the notices in order."""
    state: dict = {}
    out: list[Notice] = []
    now = start
    while now <= end:
        notices, state = decide(state, problems_at(now), now, reminder_every, escalate_after)
        out += notices
        now += step
    return out


def test_a_problem_seen_every_minute_for_days_gives_one_notice_reminders_one_escalation_then_resolved():
    end_of_problem = T0 + 3 * DAY + 5 * HOUR
    notices = simulate(lambda now: [FAILED] if now < end_of_problem else [], T0, T0 + 5 * DAY)
    got = [(n.event, n.audience, round((n.at - T0) / HOUR)) for n in notices]
    assert got == [
        ("problem", "pharmacist", 0),
        ("reminder", "pharmacist", 24),
        ("reminder", "pharmacist", 48),
        ("escalation", "provider", 48),
        ("reminder", "pharmacist", 72),
        ("reminder", "provider", 72),
        ("resolved", "pharmacist", 77),
        ("resolved", "provider", 77),
    ]
    assert all(n.key == FAILED.key for n in notices)


def test_nothing_is_said_when_all_is_well_nor_on_a_first_success():
    assert simulate(lambda now: [], T0, T0 + 3 * DAY, step=10 * MINUTE) == []


def test_a_short_problem_is_not_escalated_and_the_provider_hears_nothing():
    notices = simulate(lambda now: [FAILED] if now < T0 + 6 * HOUR else [], T0, T0 + DAY)
    assert [(n.event, n.audience) for n in notices] == [("problem", "pharmacist"), ("resolved", "pharmacist")]


def test_without_a_provider_nothing_is_escalated():
    notices = simulate(lambda now: [FAILED], T0, T0 + 4 * DAY, step=HOUR, escalate_after=None)
    assert {n.audience for n in notices} == {"pharmacist"}
    assert [n.event for n in notices] == ["problem", "reminder", "reminder", "reminder", "reminder"]


def test_two_problems_are_told_apart_and_duplicates_count_once():
    late = Problem("late", "documents", "nas", T0)
    notices, state = decide({}, [FAILED, late, replace(FAILED, detail={"error": "other"})], T0, DAY, None)
    assert sorted(n.key for n in notices) == sorted([FAILED.key, late.key])
    notices, state = decide(state, [late], T0 + MINUTE, DAY, None)
    assert [(n.event, n.key) for n in notices] == [("resolved", FAILED.key)]
    assert list(state) == [late.key]


def test_a_clock_that_jumps_backwards_delays_reminders_and_never_repeats_them():
    _, state = decide({}, [FAILED], T0, DAY, 2 * DAY)
    notices, state = decide(state, [FAILED], T0 - 3 * DAY, DAY, 2 * DAY)  # back three days
    assert notices == []
    # Every minute from there: one reminder a day after the jump, not three days of silence.
    notices = []
    now = T0 - 3 * DAY
    while now <= T0 - 3 * DAY + 25 * HOUR:
        new, state = decide(state, [FAILED], now, DAY, 2 * DAY)
        notices += new
        now += MINUTE
    assert [(n.event, round((n.at - (T0 - 3 * DAY)) / HOUR)) for n in notices] == [("reminder", 24)]


def test_the_notice_carries_the_latest_detail_of_the_problem():
    _, state = decide({}, [FAILED], T0, DAY, None)
    worse = replace(FAILED, detail={"error": "disk full"})
    notices, state = decide(state, [worse], T0 + DAY, DAY, None)
    assert notices[0].event == "reminder" and notices[0].detail == {"error": "disk full"}


# -- texts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_event_has_a_subject_and_a_body_saying_what_it_means_and_what_to_do(kind, lang):
    for event, audience in (("problem", "pharmacist"), ("reminder", "pharmacist"), ("escalation", "provider"),
                            ("reminder", "provider"), ("resolved", "pharmacist")):
        n = Notice(event, audience, f"{kind}:officine:nas", kind, "officine", "nas", T0, T0 + 2 * DAY)
        subject, text = render(n, lang, "Europe/Paris", "srv-pharma")
        assert subject and "\n" not in subject and "{" not in subject
        assert "{" not in text and "officine" in subject + text
        if event != "resolved":
            assert ("Ce qu'il faut faire :" if lang == "fr" else "What to do:") in text
            assert ("Ce que cela veut dire :" if lang == "fr" else "What it means:") in text
    assert len({render(Notice("problem", "pharmacist", "k", k, "j", "t", T0, T0), lang)[0].split(":")[0]
                for k in KINDS}) == len(KINDS)  # each kind its own words


def test_french_texts_for_the_pharmacist():
    n = Notice("problem", "pharmacist", "k", "failed", "officine", "nas", T0, T0)
    subject, text = render(n, "fr", "Europe/Paris")
    assert subject == "Sauvegarde en échec : officine"
    assert "Depuis le 01/01/2026 à 01:00." in text  # Paris time
    n = Notice("problem", "pharmacist", "k", "not_rotated", "", "disques", T0, T0,
               {"disk": "lundi", "days": 9.3})
    subject, text = render(n, "fr")
    assert subject == "Changez de disque de sauvegarde : disques"
    assert "branchez l'autre disque et rangez celui-ci hors de la pharmacie" in text
    assert "le même disque « lundi » est branché depuis 9 jours." in text
    # The detail shapes of health.py (Part B).
    n = Notice("problem", "pharmacist", "k", "late", "officine", "nas", T0, T0, {"last_ok": None})
    assert "Aucune sauvegarde réussie n'est connue." in render(n, "fr")[1]
    n = replace(n, detail={"last_ok": T0 - DAY})
    assert "Dernière sauvegarde réussie : le 31/12/2025 à 01:00." in render(n, "fr")[1]
    n = Notice("problem", "pharmacist", "k", "db_growth", "officine", "nas", T0, T0,
               {"databases": [{"engine": "postgres", "name": "lgpi", "size": 9, "growth": 5}]})
    assert "la base de données « lgpi » a grossi" in render(n, "fr")[1]
    n = Notice("problem", "pharmacist", "k", "medium_full", "officine", "nas", T0, T0,
               {"used": 93, "total": 100, "share": 0.93, "days_left": 5.5})
    assert "presque pleine (remplie à 93 %, pleine dans 5 jours environ)" in render(n, "fr")[1]
    n = Notice("problem", "pharmacist", "k", "many_changes", "docs", "nas", T0, T0,
               {"share": 0.42, "usual": 0.02})
    assert "42 % des fichiers modifiés" in render(n, "fr")[1] and "(2 % d'habitude)" in render(n, "fr")[1]
    n = Notice("resolved", "pharmacist", "k", "failed", "officine", "nas", T0, T0 + DAY)
    subject, text = render(n, "fr")
    assert subject == "Retour à la normale – Sauvegarde en échec : officine"
    assert "tout est revenu à la normale" in text
    n = Notice("escalation", "provider", "k", "failed", "officine", "nas", T0, T0 + 2 * DAY + HOUR)
    subject, text = render(n, "fr", host="srv-pharma")
    assert subject == "À traiter par le prestataire : Sauvegarde en échec : officine [srv-pharma]"
    assert "dure depuis 2 jours" in text


def test_names_cannot_inject_headers_and_secrets_are_stripped():
    job = "officine\r\nBcc: victim@example.org\x00"
    error = ("cannot reach s3://AKIAKEY:topsecret@s3.example.org/bucket and "
             "https://hooks.example.org/x?token=abc123&mode=1\nline two")
    n = Notice("problem", "pharmacist", "k", "failed", job, "nas", T0, T0, {"error": error})
    subject, text = render(n, "fr")
    assert "\r" not in subject and "\n" not in subject and "\x00" not in subject + text
    assert "topsecret" not in text and "AKIAKEY" not in text and "abc123" not in text
    assert "s3://s3.example.org/bucket" in text and "token=***&mode=1" in text
    assert "\nBcc:" not in text and "\nline two" not in text
    assert redact("ftp://user:pw@host/p") == "ftp://host/p"
    assert clean("a\u2028b\tc") == "a b c"


# -- delivery through real servers ---------------------------------------------------------


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "smtp") as s:
        yield s


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


def secret_files(tmp_path: Path, password: str = SMTP_PASSWORD) -> tuple[Path, Path]:
    pw, secret = tmp_path / "smtp-password", tmp_path / "webhook-secret"
    pw.write_text(password + "\n")
    secret.write_text("webhook-hmac-key\n")
    return pw, secret


def make_config(tmp_path: Path, sink: SmtpSink | None, hook_url: str | None,
                password_file: Path | None = None, hook_timeout: float = 5.0) -> Config:
    pw, secret = secret_files(tmp_path)
    email = None
    if sink is not None:
        email = Email(server="127.0.0.1", port=sink.port, security="tls" if sink.implicit_tls else "starttls",
                      username=SMTP_USER, password_file=str(password_file or pw),
                      sender="coffre@pharmacie.example", to=("pharmacien@pharmacie.example",),
                      provider=("support@prestataire.example",), escalate_after=2 * DAY, timeout=5.0,
                      ca_file=sink.ca_file)
    hooks = (Webhook(url=hook_url, secret_file=str(secret), timeout=hook_timeout),) if hook_url else ()
    return Config(path=str(tmp_path / "coffre.toml"), agent=Agent(language="fr"),
                  alerts=Alerts(email=email, webhooks=hooks, reminder_every=DAY))


def test_mail_and_webhook_from_problem_to_escalation_to_back_to_normal(tmp_path, sink, hook):
    config = make_config(tmp_path, sink, hook.url + "/hook")
    outbox = Outbox(tmp_path / "agent.db", host="srv-pharma")

    results = outbox.process(config, [FAILED], T0)
    assert [(r.channel.split(":")[0], r.event, r.ok) for r in results] == [("email", "problem", True),
                                                                          ("webhook", "problem", True)]
    [mail] = sink.messages()
    assert mail.rcpt_tos == ["pharmacien@pharmacie.example"] and mail.login == SMTP_USER
    assert mail.message["Subject"] == "Sauvegarde en échec : officine"
    assert mail.message["To"] == "pharmacien@pharmacie.example"
    assert mail.message["From"] == "coffre@pharmacie.example"
    assert mail.message["Message-ID"].endswith("@pharmacie.example>") and mail.message["Date"]
    assert mail.message.get_content_type() == "text/plain" and mail.message.get_content_charset() == "utf-8"
    assert "Ce qu'il faut faire : vérifiez que le serveur" in mail.body
    assert "cannot reach the NAS" in mail.body
    assert SMTP_PASSWORD.encode() not in mail.raw and b"webhook-hmac-key" not in mail.raw

    [post] = hook.received()
    assert post.method == "POST" and post.path == "/hook"
    assert post.headers["X-Coffre-Signature"] == "sha256=" + hmac.new(b"webhook-hmac-key", post.body,
                                                                      hashlib.sha256).hexdigest()
    body = json.loads(post.body)
    assert {k: body[k] for k in ("event", "kind", "job", "target", "since", "at")} == {
        "event": "problem", "kind": "failed", "job": "officine", "target": "nas", "since": FAILED.since,
        "at": T0}
    assert body["subject"] == "Sauvegarde en échec : officine" and "vérifiez" in body["text"]
    assert SMTP_PASSWORD not in post.body.decode()

    # Seen at every check: no storm.
    for i in range(1, 60):
        assert outbox.process(config, [FAILED], T0 + i * MINUTE) == []
    assert len(sink.messages()) == 1 and len(hook.received()) == 1

    # Two days later, the provider is told (and the pharmacist reminded).
    results = outbox.process(config, [FAILED], T0 + 2 * DAY)
    assert all(r.ok for r in results)
    mails = sink.messages()[1:]
    assert [(m.rcpt_tos, m.message["Subject"]) for m in mails] == [
        (["pharmacien@pharmacie.example"], "Rappel : Sauvegarde en échec : officine"),
        (["support@prestataire.example"],
         "À traiter par le prestataire : Sauvegarde en échec : officine [srv-pharma]"),
    ]
    assert "prestataire informatique de la pharmacie" in mails[1].body
    assert [json.loads(p.body)["event"] for p in hook.received()] == ["problem", "reminder", "escalation"]

    # Back to normal: both are told, once.
    results = outbox.process(config, [], T0 + 2 * DAY + HOUR)
    assert all(r.ok for r in results)
    assert outbox.process(config, [], T0 + 2 * DAY + 2 * HOUR) == []
    mails = sink.messages()[3:]
    assert sorted(m.rcpt_tos[0] for m in mails) == ["pharmacien@pharmacie.example",
                                                    "support@prestataire.example"]
    assert sorted(m.message["Subject"] for m in mails) == [
        "Retour à la normale – Sauvegarde en échec : officine",
        "Retour à la normale – Sauvegarde en échec : officine [srv-pharma]"]
    assert "Bonne nouvelle : tout est revenu à la normale." in mails[0].body
    assert outbox.open_problems() == {}

    # Every notice to the pharmacist (and the escalation) is a screen message too.
    screen = outbox.messages(limit=20)
    assert [m.event for m in screen] == ["resolved", "escalation", "reminder", "problem"]
    assert screen[-1].subject == "Sauvegarde en échec : officine"
    assert [m.event for m in outbox.messages(limit=2)] == ["resolved", "escalation"]
    assert SMTP_PASSWORD not in (tmp_path / "agent.db").read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_auth_mechanisms_and_implicit_tls(tmp_path, mechanism):
    with SmtpSink(tmp_path / "smtp", implicit_tls=mechanism == "PLAIN", mechanisms=(mechanism,)) as sink:
        config = make_config(tmp_path, sink, None)
        [result] = Outbox(tmp_path / "agent.db").process(config, [FAILED], T0)
        assert result.ok, result.error
        assert sink.logins == [(mechanism, True)]
        assert len(sink.messages()) == 1


def test_password_from_a_command_run_without_a_shell(tmp_path, sink):
    pw, _ = secret_files(tmp_path)
    config = make_config(tmp_path, sink, None, password_file=pw)
    config = replace(config, alerts=replace(config.alerts, email=replace(
        config.alerts.email, password_file=None, password_command=f"cat '{pw}'")))
    [result] = Outbox(tmp_path / "agent.db").process(config, [FAILED], T0)
    assert result.ok, result.error and len(sink.messages()) == 1


def test_a_refused_login_is_recorded_and_retried_hourly_and_the_webhook_still_delivers(tmp_path, sink, hook):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-either\n")
    config = make_config(tmp_path, sink, hook.url, password_file=wrong)
    outbox = Outbox(tmp_path / "agent.db")

    results = outbox.process(config, [FAILED], T0)
    by_channel = {r.channel.split(":")[0]: r for r in results}
    assert by_channel["webhook"].ok and len(hook.received()) == 1
    failed = by_channel["email"]
    assert not failed.ok and failed.permanent
    assert failed.error == f"the mail server 127.0.0.1:{sink.port} refused the login (535)"
    assert "not-the-password-either" not in failed.error and sink.messages() == []
    [pending] = outbox.pending_failures()
    assert (pending.channel, pending.key, pending.attempts, pending.permanent) == (
        "email", FAILED.key, 1, True)

    # A permanent error is not hammered: nothing before an hour, then one more attempt.
    assert outbox.process(config, [FAILED], T0 + 30 * MINUTE) == []
    [again] = outbox.process(config, [FAILED], T0 + HOUR)
    assert (again.channel, again.attempt, again.ok) == ("email", 2, False)

    # The failing channel becomes a problem the working ones (and the screen) report.
    [problem] = outbox.failure_problems()
    assert (problem.kind, problem.target, problem.since) == ("delivery_failed", "email", T0)
    outbox.process(config, [FAILED, problem], T0 + HOUR + MINUTE)
    assert json.loads(hook.received()[-1].body)["kind"] == "delivery_failed"
    assert outbox.messages(1)[0].subject == "Les alertes ne partent plus : email"

    # The provider fixes the password: the waiting mails go out, oldest first, and the
    # failure is over.
    fixed = make_config(tmp_path, sink, hook.url)
    results = outbox.process(fixed, [FAILED, problem], T0 + 2 * HOUR + MINUTE)
    assert [(r.channel, r.ok) for r in results] == [("email", True), ("email", True)]
    assert [m.message["Subject"] for m in sink.messages()] == ["Sauvegarde en échec : officine",
                                                               "Les alertes ne partent plus : email"]
    assert outbox.pending_failures() == [] and outbox.failure_problems() == []
    attempts = outbox.attempts()
    assert [(a.channel, a.ok) for a in attempts if a.channel == "email"] == [
        ("email", True), ("email", True), ("email", False), ("email", False), ("email", False)]


def test_an_unreachable_mail_server_is_retried_with_growing_pauses(tmp_path):
    config = make_config(tmp_path, None, None)
    config = replace(config, alerts=replace(config.alerts, email=Email(
        server="127.0.0.1", port=free_port(), security="none", to=("pharmacien@pharmacie.example",),
        timeout=2)))
    outbox = Outbox(tmp_path / "agent.db")
    tried: list[float] = []
    now = T0
    while now <= T0 + 3 * HOUR:
        for r in outbox.process(config, [FAILED], now):
            assert not r.ok and not r.permanent and "cannot reach the mail server" in r.error
            tried.append((now - T0) / MINUTE)
        now += MINUTE
    assert tried == [0, 1, 6, 36, 96, 156]
    # Given up after a week: no longer pending.
    outbox.process(config, [FAILED], T0 + GIVE_UP_AFTER + DAY)
    assert [p.event for p in outbox.pending_failures()] == ["reminder"]


def test_a_webhook_that_never_answers_times_out_quickly_and_the_mail_still_goes(tmp_path, sink):
    with HttpReceiver(hang=True) as slow:
        config = make_config(tmp_path, sink, slow.url, hook_timeout=0.5)
        started = time.monotonic()
        results = Outbox(tmp_path / "agent.db").process(config, [FAILED], T0)
        assert time.monotonic() - started < 4
    by_channel = {r.channel.split(":")[0]: r for r in results}
    assert by_channel["email"].ok and len(sink.messages()) == 1
    hook = by_channel["webhook"]
    assert not hook.ok and not hook.permanent
    assert hook.error == "the webhook at 127.0.0.1 did not answer within 0.5 s"


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (429, False), (404, True)])
def test_webhook_errors_are_classified(tmp_path, status, permanent):
    with HttpReceiver(status=status) as bad:
        config = make_config(tmp_path, None, bad.url + "/x?token=sekret")
        [r] = Outbox(tmp_path / "agent.db").process(config, [FAILED], T0)
    assert not r.ok and r.permanent is permanent and f"HTTP {status}" in r.error
    assert "sekret" not in r.channel + r.error


def test_a_removed_channel_stops_being_retried(tmp_path):
    config = make_config(tmp_path, None, f"http://127.0.0.1:{free_port()}/gone")
    outbox = Outbox(tmp_path / "agent.db")
    [r] = outbox.process(config, [FAILED], T0)
    assert not r.ok and len(outbox.pending_failures()) == 1
    assert outbox.process(replace(config, alerts=Alerts()), [FAILED], T0 + HOUR) == []
    assert outbox.pending_failures() == []


def test_the_outbox_shares_the_agent_database_and_never_raises(tmp_path):
    import sqlite3

    db = tmp_path / "agent.db"
    with sqlite3.connect(db) as c:  # the status store's own table, already there
        c.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT)")
        c.execute("INSERT INTO runs (job) VALUES ('officine')")
    outbox = Outbox(db)
    outbox.process(make_config(tmp_path, None, None), [FAILED], T0)
    assert outbox.messages()[0].kind == "failed"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT job FROM runs").fetchall() == [("officine",)]
        c.execute("DROP TABLE alert_open")  # a damaged file
    [r] = outbox.process(make_config(tmp_path, None, None), [FAILED], T0 + MINUTE)
    assert (r.channel, r.ok) == ("outbox", False) and "alert_open" in r.error


# -- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_pings_start_success_and_fail_and_never_raises(hook):
    hb = Heartbeat(url=hook.url + "/ping/abc-123", timeout=2)
    assert ping(hb, "start").ok and ping(hb, "success").ok and ping(hb, "fail", body="backup: disk full").ok
    got = [(r.method, r.path, r.body) for r in hook.received()]
    assert got == [("GET", "/ping/abc-123/start", b""), ("GET", "/ping/abc-123", b""),
                   ("POST", "/ping/abc-123/fail", b"backup: disk full")]
    assert ping_url("https://hc.example/p/x?rid=1", "fail") == "https://hc.example/p/x/fail?rid=1"
    down = ping(Heartbeat(url=f"http://u:pw@127.0.0.1:{free_port()}/p", timeout=1), "start")
    assert not down.ok and "cannot reach the heartbeat at 127.0.0.1" in down.error and "pw" not in down.error
    assert not ping(Heartbeat(url="file:///etc/passwd"), "success").ok
    with HttpReceiver(hang=True) as slow:
        started = time.monotonic()
        r = ping(Heartbeat(url=slow.url, timeout=0.3), "success")
        assert not r.ok and "did not answer" in r.error and time.monotonic() - started < 3


def test_a_pending_delivery_is_retried_at_once_when_the_clock_went_back(tmp_path):
    config = make_config(tmp_path, None, f"http://127.0.0.1:{free_port()}/down")
    outbox = Outbox(tmp_path / "agent.db")
    [first] = outbox.process(config, [FAILED], T0)
    assert not first.ok
    assert outbox.process(config, [FAILED], T0 + 30) == []  # within its one-minute pause
    [again] = outbox.process(config, [FAILED], T0 - 2 * DAY)  # not two days of silence
    assert again.attempt == 2
