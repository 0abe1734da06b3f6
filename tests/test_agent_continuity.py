"""Continuous capture run by the agent (`[continuity.NAME]`): a real spool shipped to a real
local repository by the agent's continuity loop, its status recorded and shown by `coffre
status`, the health rules and their alerts (a capture behind when the repository is not
there, a gap, a standby behind or stopped at a gap), recovery notices, the configuration, and
the agent's service starting and stopping the loop. An injected clock moves time; only the
service test waits, for events."""

from __future__ import annotations

import gettext
import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from coffre.agent import continuity as loop
from coffre.agent import standbys
from coffre.agent.alerts.decide import Notice
from coffre.agent.alerts.outbox import Outbox
from coffre.agent.alerts.texts import render
from coffre.agent.config import ConfigError, load_config
from coffre.agent.health import continuity_problems, light
from coffre.agent.model import Config
from coffre.agent.overview import status_report
from coffre.agent.plan import describe
from coffre.agent.records import ContinuityStatus
from coffre.agent.sample import Detected, sample_config
from coffre.agent.scheduler import Agent, Runner, open_store, status_path
from coffre.agent.status import SCHEMA_VERSION, StatusStore
from coffre.cli import cmd_status
from coffre.continuity import standby
from coffre.continuity.spool import Spool
from coffre.core import i18n
from coffre.format.segment import SegmentHeader
from coffre.format.snapshot import DatabaseRecord, Snapshot
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from coffre.web.local import history
from coffre.web.local.contexts import Light

from conftest import agent_toml

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
WAL = 16 * 1024 * 1024
STREAM = "postgres:7412345678901234567"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    i18n.set_language("en")
    yield
    i18n.set_language("en")


def repository(path: Path, pwfile: Path) -> Repository:
    Repository.init(LocalBackend(str(path)), pwfile.read_text().strip())
    return Repository.open(LocalBackend(str(path)), pwfile.read_text().strip())


def write_config(tmp_path: Path, pwfile: Path, entry: str, language: str = "en") -> Config:
    return load_config(agent_toml(tmp_path, tmp_path / "nas", pwfile, entry, language))


def put(spool: Spool, n: int, at: float, gap: bool = False) -> SegmentHeader:
    """WAL segment n of timeline 1, captured at `at`, into the spool (as `coffre wal push`)."""
    payload = b"" if gap else hashlib.sha256(str(n).encode()).digest() * 64
    header = SegmentHeader(stream=STREAM, engine="postgres", kind="log", name=f"{1:08X}{0:08X}{n:08X}",
                           start=n * WAL, end=(n + 1) * WAL, time_ns=int(at * 1e9), size=len(payload),
                           sha256=hashlib.sha256(payload).hexdigest(),
                           extra={"timeline": "1", "segment_size": str(WAL)})
    if gap:
        header = header.as_gap("spool full")
    assert spool.put(header, payload, force=gap)
    return header


@pytest.fixture
def site(tmp_path: Path, pwfile: Path) -> dict[str, object]:
    """A repository on a "NAS" folder, a spool, and an agent configuration shipping one to the
    other."""
    repo = repository(tmp_path / "nas", pwfile)
    spool = Spool(tmp_path / "spool")
    config = write_config(tmp_path, pwfile, f"""
[continuity.officine]
repository = "nas"
spool = "{spool.path}"
""")
    return {"repo": repo, "spool": spool, "config": config, "nas": tmp_path / "nas"}


def entry_for(config: Config, clock: Clock, lines: list[str], name: str = "officine") -> loop.Entry:
    c = config.continuity[name]
    return loop.Entry(c, config.repositories[c.repository], open_store(config), lines.append, clock)


def shown(config: Config, now: float) -> tuple[str, list[dict[str, object]], int]:
    """What `coffre status` prints, its --json continuity lines, and its exit status."""
    with StatusStore(status_path(config)) as store:
        report = status_report(config, store, now)
    doc = cmd_status.report_json(report)["continuity"]
    return cmd_status.render(report), doc, cmd_status.exit_code(report)


def page_light(config: Config, now: float) -> Light:
    """The one light of the pharmacy's page (web/local)."""
    with StatusStore(status_path(config)) as store:
        return history.light_of(status_report(config, store, now), store.runs(), "")


def screen(config: Config) -> list[str]:
    """The alerts' screen messages (oldest first): what every channel would have been sent."""
    return [m.subject for m in reversed(Outbox(status_path(config)).messages())]


# -- shipping --------------------------------------------------------------------------------


def test_pieces_are_shipped_and_the_status_shows_it(site: dict[str, object]) -> None:
    config, spool, repo = site["config"], site["spool"], site["repo"]
    assert isinstance(config, Config) and isinstance(spool, Spool) and isinstance(repo, Repository)
    assert config.continuity["officine"].every == 1.0  # a local path: a pass every second
    clock, lines = Clock(T0), []
    sent = [put(spool, n, T0 - 5 + n) for n in (1, 2, 3)]
    st = entry_for(config, clock, lines).pass_once()
    assert (st.pieces, st.bytes, st.waiting, st.oldest_ns, st.error) == (3, 3 * 2048, 0, None, None)
    assert spool.pending() == []
    stored = segments.listing(repo)
    assert [s.header.name for s in stored] == [h.name for h in sent]
    assert all(segments.load(repo, s) == hashlib.sha256(str(n).encode()).digest() * 64
               for n, s in zip((1, 2, 3), stored, strict=True))
    # Recorded in the agent's status store, where `coffre status` (another process) reads it.
    with StatusStore(status_path(config)) as store:
        assert store.continuity()["officine"].pieces == 3
    text, doc, code = shown(config, T0 + 3)
    assert "OK        Continuous capture officine: up to date (3 s ago)" in text
    assert text.endswith("Everything is OK.") and code == 0
    assert doc[0]["pieces"] == 3 and doc[0]["waiting"] == 0 and doc[0]["light"] == "ok"


def test_idle_passes_do_not_write_the_status_every_second(site: dict[str, object]) -> None:
    config = site["config"]
    assert isinstance(config, Config)
    clock, lines = Clock(T0), []
    entry = entry_for(config, clock, lines)
    db = sqlite3.connect(status_path(config))

    def updated() -> float:
        return float(db.execute("SELECT updated FROM continuity WHERE name = 'officine'").fetchone()[0])

    entry.pass_once()
    first = updated()
    for _ in range(20):  # twenty idle seconds: the row stays as it was
        clock.now += 1
        entry.pass_once()
    assert updated() == first
    clock.now += 15  # past the heartbeat: written again, so `coffre status` sees a live loop
    entry.pass_once()
    assert updated() == clock.now
    spool = site["spool"]
    assert isinstance(spool, Spool)
    put(spool, 9, clock.now)
    clock.now += 1
    entry.pass_once()  # something shipped: written at once
    assert updated() == clock.now
    db.close()


# -- an unreachable repository -----------------------------------------------------------------


def test_an_absent_repository_lets_the_backlog_grow_alerts_after_max_backlog_and_recovers(
        site: dict[str, object]) -> None:
    config, spool, nas = site["config"], site["spool"], site["nas"]
    assert isinstance(config, Config) and isinstance(spool, Spool) and isinstance(nas, Path)
    away = nas.with_name("nas-unmounted")
    clock, lines = Clock(T0), []
    runner = Runner(config, open_store(config), lines.append, clock=clock)
    entry = entry_for(config, clock, lines)
    nas.rename(away)  # the NAS share is not mounted when the agent starts
    put(spool, 1, T0)
    st = entry.pass_once()
    assert st.error and "cannot be reached" in st.error and st.waiting == 1
    nas.mkdir()  # an empty mount point: not a repository, nothing is stored into it
    clock.now = T0 + 1
    st = entry.pass_once()
    assert st.waiting == 1 and list(nas.iterdir()) == []
    nas.rmdir()
    runner.evaluate()
    assert screen(config) == []  # one second behind: nothing to say yet
    clock.now = T0 + 200
    put(spool, 2, T0 + 200)
    entry.pass_once()
    runner.evaluate()
    assert screen(config) == []
    # The oldest piece has waited longer than max_backlog (300 s): alerted, and shown.
    clock.now = T0 + 301
    st = entry.pass_once()
    assert (st.waiting, st.oldest_ns) == (2, int(T0 * 1e9))
    runner.evaluate()
    assert screen(config) == ["Continuous capture behind: officine"]
    text, doc, code = shown(config, clock.now)
    assert "to check  Continuous capture officine: behind, 2 pieces waiting for 5 min 01 s" in text
    assert "    → the pieces are not getting through to nas: the repository nas cannot be reached" in text
    assert code == 1 and doc[0]["light"] == "warning" and doc[0]["oldest_age"] == 301
    light_ = page_light(config, clock.now)  # the pharmacy's page says it too
    assert light_.color == "orange"
    assert light_.headline.startswith("To check: Continuous capture officine: behind, 2 pieces waiting")
    assert light_.advice[0].startswith("Check that nas is switched on and reachable")
    # The share is mounted again: the next pass ships everything, and the alert says so.
    away.rename(nas)
    clock.now = T0 + 302
    st = entry.pass_once()
    assert (st.pieces, st.waiting, st.error) == (2, 0, None)
    assert len(segments.listing(site["repo"])) == 2  # type: ignore[arg-type]
    runner.evaluate()
    assert screen(config) == ["Continuous capture behind: officine",
                              "Back to normal – Continuous capture behind: officine"]
    assert shown(config, clock.now)[2] == 0
    assert any("shipping again" in line for line in lines)


def test_a_share_unmounted_after_the_agent_opened_it_keeps_the_pieces_in_the_spool(
        site: dict[str, object]) -> None:
    config, spool, nas = site["config"], site["spool"], site["nas"]
    assert isinstance(config, Config) and isinstance(spool, Spool) and isinstance(nas, Path)
    clock, lines = Clock(T0), []
    entry = entry_for(config, clock, lines)
    put(spool, 1, T0)
    assert entry.pass_once().pieces == 1  # opened and shipped
    nas.rename(nas.with_name("elsewhere"))
    nas.mkdir()  # what an unmounted share leaves: an empty folder on the machine's own disk
    put(spool, 2, T0 + 1)
    clock.now = T0 + 2
    st = entry.pass_once()
    assert st.error and "is not there" in st.error
    assert st.waiting == 1 and list(nas.iterdir()) == []  # still in the spool, nothing written there


def test_an_s3_repository_is_reached_with_its_own_profile(tmp_path: Path, pwfile: Path, seaweedfs: object,
                                                          s3_env: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`aws_profile` reaches the agent's own process without AWS_PROFILE (which every other
    repository would then use): the profile's keys write, the default ones only read."""
    from coffre.storage.s3 import S3Backend
    from coffre.storage.url import parse_s3
    from servers import ACCESS_KEY, READER_KEY, SECRET_KEY

    credentials = tmp_path / "aws-credentials"
    credentials.write_text("".join(
        f"[{profile}]\naws_access_key_id = {key}\naws_secret_access_key = {SECRET_KEY}\n"
        for profile, key in (("default", READER_KEY), ("coffre", ACCESS_KEY))))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    url = seaweedfs.url("continuity", f"t{os.getpid()}-{time.time_ns()}")  # type: ignore[attr-defined]
    Repository.init(S3Backend(parse_s3(url), profile="coffre"), pwfile.read_text().strip())
    spool = Spool(tmp_path / "spool")
    config = write_config(tmp_path, pwfile, f"""
[repositories.hors-site]
url = "{url}"
password_file = "{pwfile}"
aws_profile = "coffre"

[repositories.lecture]
url = "{url}"
password_file = "{pwfile}"

[continuity.profil]
repository = "hors-site"
spool = "{spool.path}"

[continuity.defaut]
repository = "lecture"
spool = "{tmp_path / 'other-spool'}"
""")
    assert config.continuity["profil"].every == 10.0  # a remote repository
    put(spool, 1, T0)
    put(Spool(tmp_path / "other-spool"), 1, T0)
    clock = Clock(T0)
    assert entry_for(config, clock, [], "profil").pass_once().pieces == 1
    refused = entry_for(config, clock, [], "defaut").pass_once()
    assert refused.pieces == 0 and refused.waiting == 1 and refused.error


# -- gaps --------------------------------------------------------------------------------------


def test_a_gap_raises_the_red_alert_until_a_newer_base_backup_covers_it(site: dict[str, object]) -> None:
    config, spool, repo = site["config"], site["spool"], site["repo"]
    assert isinstance(config, Config) and isinstance(spool, Spool) and isinstance(repo, Repository)
    clock, lines = Clock(T0), []
    runner = Runner(config, open_store(config), lines.append, clock=clock)
    entry = entry_for(config, clock, lines)
    put(spool, 1, T0 - 2)
    gap = put(spool, 2, T0 - 1, gap=True)  # the spool was full: the piece was not kept
    st = entry.pass_once()
    assert [g.name for g in st.gaps] == [gap.name] and st.gaps_total == 1
    assert any(f"gap recorded for {gap.name}" in line for line in lines)
    runner.evaluate()
    assert screen(config) == ["Gap in the continuous capture: officine"]
    text, doc, code = shown(config, T0 + 1)
    assert "failing   Continuous capture officine: up to date (1 s ago)" in text
    assert (f"    → a gap was recorded ({gap.name}): point-in-time recovery across it is impossible; "
            "take a new base backup") in text
    assert code == 1 and doc[0]["gaps"] == [gap.name] and doc[0]["light"] == "failed"
    assert page_light(config, T0 + 1).color == "red"
    # A cluster base backup taken before the gap does not cover it (one that records no
    # position, by its time); one whose replay starts past the gap does.
    for started, extra in ((T0 - 10, {}), (T0 + 50, {"stream": STREAM, "stream_from": str(2 * WAL)}),
                           (T0 + 100, {"stream": STREAM, "stream_from": str(3 * WAL)})):
        repo.save_snapshot(Snapshot(
            time_ns=int(started * 1e9), hostname="officine", username="root", paths=[], tree=b"\0" * 32,
            databases=[DatabaseRecord("postgres-cluster", "main", "main.tar", "pg_basebackup tar", 1,
                                      extra=extra)]))
        clock.now += loop.HEAL_EVERY + 1
        st = entry.pass_once()
        runner.evaluate()
        assert bool(st.gaps) == (started < T0 + 100)
    assert screen(config)[-1] == "Back to normal – Gap in the continuous capture: officine"
    assert shown(config, clock.now)[2] == 0


def test_a_new_generation_of_a_sqlite_database_covers_its_gap(site: dict[str, object]) -> None:
    """SQLite's capture starts a new generation (a whole copy, kind "base") after a break: the
    gap of the old generation is then behind a restorable start."""
    config, spool = site["config"], site["spool"]
    assert isinstance(config, Config) and isinstance(spool, Spool)

    def piece(kind: str, generation: str, database: str = "0123456789abcdef", at: float = T0) -> None:
        payload = b"" if kind == "gap" else b"SQLite format 3\0" * 64
        header = SegmentHeader(stream=f"sqlite:{database}:{generation}", engine="sqlite",
                               kind="log" if kind == "gap" else kind, name=f"{kind}-0.100-0.200",
                               start=100, end=200, time_ns=int(at * 1e9), size=len(payload),
                               sha256=hashlib.sha256(payload).hexdigest())
        assert spool.put(header.as_gap("spool full") if kind == "gap" else header, payload, force=True)

    clock, lines = Clock(T0), []
    entry = entry_for(config, clock, lines)
    piece("gap", "0001")
    assert len(entry.pass_once().gaps) == 1
    piece("base", "0002", database="fedcba9876543210", at=T0 + 1)  # another database: no help
    clock.now += 2
    assert len(entry.pass_once().gaps) == 1
    piece("base", "0002", at=T0 + 3)  # the same database starts again from a whole copy
    clock.now += 2
    assert entry.pass_once().gaps == ()
    assert any("a new whole copy of the database covers the gaps" in line for line in lines)


# -- the standby -------------------------------------------------------------------------------


def standby_state(newest: float, **changes: object) -> standby.StandbyState:
    state = standby.StandbyState(pgdata="/srv/secours/pgdata", stream=STREAM, start_lsn=0, start_timeline=1,
                                 base_snapshot="0" * 64, staged=["000000010000000000000001"],
                                 newest_ns=int(newest * 1e9), last_pass_ns=int(T0 * 1e9))
    for k, v in changes.items():
        setattr(state, k, v)
    return state


def followed(newest: float, pieces: int = 0, gap: str = "", promoted: bool = False) -> standbys.Followed:
    return standbys.Followed(int(newest * 1e9), pieces, pieces * WAL, 5, gap, promoted)


STANDBY = """
[continuity.secours]
repository = "nas"
standby_pgdata = "/srv/secours/pgdata"
max_lag = "5min"
"""


def test_a_standby_is_behind_when_pieces_wait_or_its_passes_fail_not_when_the_primary_is_quiet(
        tmp_path: Path, pwfile: Path) -> None:
    """Pieces waiting longer than max_lag, or passes failing that long, or no pass recorded:
    behind. A repository with nothing newer (a closed pharmacy writes no log) is no alert."""
    config = write_config(tmp_path, pwfile, STANDBY)

    def problems(passes: list[tuple[float, standbys.Followed, str | None]]) -> list[tuple[str, float]]:
        sb = None
        for at, state, error in passes:
            sb = loop.standby_status(state, sb, at, error)
        status = ContinuityStatus("secours", "nas", first_seen=T0 - 3600, standby=sb)
        return [(p.kind, p.since) for p in continuity_problems(config, {"secours": status}, passes[-1][0])]

    quiet = [(T0 + n * 60, followed(T0 - 36000), None) for n in range(60)]  # ten hours with nothing new
    assert problems(quiet) == []
    waiting = [(T0, followed(T0 - 10), None), (T0 + 200, followed(T0 - 10, pieces=3), None),
               (T0 + 400, followed(T0 - 10, pieces=2), None)]
    assert problems(waiting[:2]) == []
    assert problems([*waiting, (T0 + 600, followed(T0 - 10, pieces=2), None)]) == [
        ("standby_behind", T0 + 500)]  # pieces have waited since T0 + 200
    assert problems([*waiting, (T0 + 600, followed(T0 + 300), None)]) == []  # caught up
    failing = [(T0, followed(T0 - 10), None), (T0 + 100, followed(T0 - 10), "the NAS cannot be reached"),
               (T0 + 450, followed(T0 - 10), "the NAS cannot be reached")]
    assert problems(failing) == [("standby_behind", T0 + 300 + 30)]  # fed last at T0, the status every 30 s
    assert problems([(T0, followed(T0 - 10, gap="000000010000000000000005"), None)]) == [
        ("standby_gap", T0)]  # the gap explains the lag: said once
    assert problems([(T0, followed(T0 - 1000, pieces=4, promoted=True), None)]) == []  # the primary now
    status = ContinuityStatus("secours", "nas", first_seen=T0 - 3600, standby=loop.standby_status(
        followed(T0 - 1000, gap="000000010000000000000005"), None, T0))
    assert light(continuity_problems(config, {"secours": status}, T0)) == "failed"
    never = ContinuityStatus("secours", "nas", first_seen=T0 - 3600)  # no pass recorded for an hour
    assert [p.kind for p in continuity_problems(config, {"secours": never}, T0)] == ["standby_behind"]


def test_the_agent_follows_a_standby_and_alerts_when_it_cannot_be_fed(tmp_path: Path, pwfile: Path) -> None:
    """The agent's loop on a standby machine: the state file `coffre standby init` wrote; a
    repository with nothing newer all night is no alert; a repository gone is, after max_lag."""
    repository(tmp_path / "nas", pwfile)
    pgdata = tmp_path / "secours" / "pgdata"
    pgdata.mkdir(parents=True)
    folder = standby.state_folder(pgdata)
    (folder / standby.STAGING).mkdir(parents=True)
    state = standby_state(T0 - 60)
    state.pgdata = str(pgdata)
    state.save(folder)
    config = write_config(tmp_path, pwfile, STANDBY.replace("/srv/secours/pgdata", str(pgdata)),
                          language="fr")
    clock, lines = Clock(T0), []
    runner = Runner(config, open_store(config), lines.append, clock=clock)
    entry = entry_for(config, clock, lines, "secours")
    sb = entry.pass_once().standby
    assert sb is not None and sb.error is None and sb.newest_ns == int((T0 - 60) * 1e9)
    assert standby.StandbyState.load(folder).last_pass_ns > state.last_pass_ns  # follow ran
    text, doc, code = shown(config, T0)
    assert "OK        Standby secours: up to date with the repository (0 s ago); the newest piece was " \
           "captured 1 min 00 s ago" in text and code == 0
    for minute in range(1, 61):  # an hour with nothing new: the pharmacy is closed
        clock.now = T0 + minute * 60
        entry.pass_once()
    runner.evaluate()
    assert screen(config) == []
    text, doc, code = shown(config, clock.now)
    assert code == 0 and doc[0]["behind_seconds"] == 0 and doc[0]["newest_age"] == 3660
    (tmp_path / "nas").rename(tmp_path / "nas-gone")  # the NAS is switched off
    entry.repo = None  # as after the agent's restart: the repository is opened again
    for minute in range(61, 68):
        clock.now = T0 + minute * 60
        assert entry.pass_once().standby.error  # type: ignore[union-attr]
    runner.evaluate()
    assert screen(config) == ["Poste de secours en retard : secours"]
    text, doc, code = shown(config, clock.now)
    assert "to check  Standby secours: up to date with the repository (7 min 00 s ago)" in text
    assert "    → the standby is not being fed: the repository nas cannot be reached" in text
    assert code == 1 and doc[0]["behind_seconds"] == 420 and doc[0]["role"] == "standby"
    assert any("standby secours: the PostgreSQL standby " in line and "trying again" in line
               for line in lines)


# -- the words -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("kind", ["capture_behind", "capture_gap", "standby_behind", "standby_gap"])
def test_every_continuity_alert_says_what_happened_what_it_means_and_what_to_do(kind: str, lang: str) -> None:
    detail = {"waiting": 3, "age": 420.0, "lag": 900.0, "gaps": ["000000010000000000000002"],
              "gap": "000000010000000000000002", "error": "the repository nas cannot be reached"}
    for event, audience in (("problem", "pharmacist"), ("escalation", "provider"),
                            ("resolved", "pharmacist")):
        subject, body = render(Notice(event, audience, f"{kind}:officine:nas", kind, "officine", "nas",
                                      T0, T0 + 3600, detail), lang)
        assert "{" not in subject + body and "officine" in subject
        if event != "resolved":
            assert ("Ce qu'il faut faire" if lang == "fr" else "What to do") in body
    notice = Notice("problem", "pharmacist", "k", kind, "officine", "nas", T0, T0, detail)
    subject, body = render(notice, lang)
    gap = "000000010000000000000002"
    expected = {
        ("capture_behind", "fr"): ("Capture continue en retard", "(3 en attente)", "depuis 7 minutes"),
        ("capture_gap", "fr"): ("Trou dans la capture continue", f"« {gap} »",
                                "nouvelle sauvegarde complète"),
        ("standby_behind", "fr"): ("Poste de secours en retard", "de 15 minutes",
                                   "Poste de secours : officine"),
        ("standby_gap", "fr"): ("Poste de secours arrêté", "coffre standby init", f"« {gap} »"),
        ("capture_behind", "en"): ("Continuous capture behind", "(3 waiting)", "for 7 minutes"),
        ("capture_gap", "en"): ("Gap in the continuous capture", "new full backup", f"\"{gap}\""),
        ("standby_behind", "en"): ("Standby behind", "by 15 minutes", "Standby: officine"),
        ("standby_gap", "en"): ("Standby stopped", "coffre standby init", f"\"{gap}\""),
    }[(kind, lang)]
    assert subject.startswith(expected[0]) and all(e in body for e in expected[1:])


FRAGMENT = Path("/work/fr/agent-continuity.po")  # until the integrator merges it into the catalogue


@pytest.fixture
def french(tmp_path: Path) -> Iterator[None]:
    i18n.set_language("fr")
    if FRAGMENT.exists():
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        with FRAGMENT.open("rb") as f:
            catalog = read_po(f)
        mo = tmp_path / "fragment.mo"
        with mo.open("wb") as f:
            write_mo(f, catalog)
        with mo.open("rb") as f:
            layered = gettext.GNUTranslations(f)
        layered.add_fallback(i18n._translation)
        i18n._translation = layered
    yield
    i18n.set_language("en")


def test_status_in_french(site: dict[str, object], french: None) -> None:
    config, spool = site["config"], site["spool"]
    assert isinstance(config, Config) and isinstance(spool, Spool)
    put(spool, 1, T0 - 1)
    entry_for(config, Clock(T0), []).pass_once()
    assert "OK          Capture continue officine : à jour (il y a 3 s)" in shown(config, T0 + 3)[0]
    put(spool, 2, T0 + 10, gap=True)
    entry_for(config, Clock(T0 + 11), []).pass_once()
    text = shown(config, T0 + 11)[0]
    assert "en échec    Capture continue officine : à jour (il y a 0 s)" in text
    assert "trou enregistré" in text and "nouvelle sauvegarde complète de la base" in text


# -- the configuration -------------------------------------------------------------------------


def test_continuity_entries_are_checked_with_their_dotted_keys(tmp_path: Path, pwfile: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, pwfile, """
[media_sets.disques]
password_file = "/etc/coffre/pw"
[media_sets.disques.disks]
a = "0123456789abcdef0123456789abcdef"

[continuity.a]
repository = "disques"
spool = "relative/spool"

[continuity.b]
repository = "nass"

[continuity.c]
repository = "nas"
spool = "/var/spool/coffre"
every = "10min"

[continuity.d]
repository = "nas"
spool = "/var/spool/coffre/"
max_lag = "1h"

[continuity.e]
repository = "nas"
sqlite = "/srv/officine/caisse.db"
mysql = "mysql://root:secret@localhost"
standby_pgdata = "/srv/secours/pgdata"
standby_sqlite = "/srv/secours/caisse.db"

[continuity.f]
repository = "nas"
spool = "/var/spool/f"
mysql = "postgres://localhost"
standby_mysql = "/srv/secours/pgdata"
""")
    problems = [p.split(": ", 1)[1] for p in caught.value.message.splitlines()[1:]]
    assert problems == [
        "continuity.a.repository: 'disques' is a set of removable disks, which come and go: continuous "
        "capture goes to a repository (the NAS, off site)",
        "continuity.a.spool: 'relative/spool' is not an absolute path (starting with /)",
        "continuity.b: nothing to do: give spool (the folder 'coffre wal push' fills), or standby_pgdata, "
        "standby_sqlite, standby_mysql or files_target on a standby machine",
        "continuity.b.repository: no repository is named 'nass' (did you mean nas?)",
        "continuity.c.every: max_backlog (5min) must be longer than every (10min), or every pass would alert",
        "continuity.d.spool: /var/spool/coffre is already the spool of continuity.c",
        "continuity.d.max_lag: max_lag is for a standby: give standby_pgdata, standby_sqlite, standby_mysql "
        "or files_target too",
        "continuity.e.sqlite: sqlite is captured into a spool: give spool too",
        "continuity.e.mysql: a password in the MariaDB/MySQL connection string would show in the process "
        "list (put it in MYSQL_PWD or ~/.my.cnf)",
        "continuity.e.standby_sqlite: one standby per entry: give standby_sqlite its own [continuity.NAME]",
        "continuity.f.mysql: the MariaDB/MySQL connection string is not valid (e.g. "
        "mysql://coffre@localhost/officine (password in MYSQL_PWD or ~/.my.cnf))",
        "continuity.f.standby_mysql: /srv/secours/pgdata is already the standby_pgdata of continuity.e",
    ]
    lines = [p.split(": ", 1)[0] for p in caught.value.message.splitlines()[1:]]
    assert lines[0].endswith("coffre.toml:17") and lines[-1].endswith("coffre.toml:44")


def test_config_check_says_what_each_capture_and_standby_does(tmp_path: Path, pwfile: Path) -> None:
    config = write_config(tmp_path, pwfile, """
[continuity.caisse]
repository = "nas"
spool = "/var/spool/coffre/caisse"
sqlite = "/srv/officine/caisse.db"
mysql = "mysql://coffre_wal@127.0.0.1:3306"

[continuity.secours-caisse]
repository = "nas"
standby_sqlite = "/srv/secours/caisse.db"

[continuity.secours-mariadb]
repository = "nas"
standby_mysql = "/var/lib/coffre/mysql-standby/officine.json"
max_lag = "10min"
""")
    plan = "\n".join(describe(config, T0))
    assert "follows the SQLite database /srv/officine/caisse.db into /var/spool/coffre/caisse, a pass " \
           "every second" in plan
    assert "follows the binary log of mysql://coffre_wal@127.0.0.1:3306 into /var/spool/coffre/caisse" in plan
    assert "feeds the SQLite standby /srv/secours/caisse.db from nas (" in plan
    assert "feeds the MariaDB standby of /var/lib/coffre/mysql-standby/officine.json from nas (" in plan
    assert "alerts when pieces wait longer than 10 min 00 s or its passes fail that long" in plan
    assert config.continuity["secours-caisse"].standby == "/srv/secours/caisse.db"


def test_a_standby_machine_needs_no_job_and_remote_repositories_pass_every_ten_seconds(
        tmp_path: Path, pwfile: Path) -> None:
    path = tmp_path / "coffre.toml"
    path.write_text(f"""
[repositories.hors-site]
url = "sftp://coffre@sauvegarde.example/pharmacie"
password_file = "{pwfile}"

[continuity.secours]
repository = "hors-site"
standby_pgdata = "/srv/secours/pgdata"
""")
    config = load_config(path)
    assert config.jobs == {}
    entry = config.continuity["secours"]
    assert (entry.every, entry.max_backlog, entry.max_lag, entry.spool) == (10.0, 300.0, 300.0, None)
    plan = "\n".join(describe(config, T0))
    assert "feeds the PostgreSQL standby /srv/secours/pgdata from hors-site (sftp://" in plan


def test_the_samples_continuity_section_validates_once_uncommented(tmp_path: Path) -> None:
    for language in ("fr", "en"):
        text = sample_config(Detected(), language)
        start = text.index("# [continuity.officine]")
        end = text.index("\n\n", start)
        section = "\n".join(line[2:] for line in text[start:end].splitlines() if line.startswith("# ")
                            and ("=" in line or line.startswith("# [")))
        path = tmp_path / f"{language}.toml"
        path.write_text(text + "\n" + section + "\n")
        entry = load_config(path).continuity["officine"]
        assert entry.repository == "nas" and entry.spool and entry.standby_pgdata


# -- the status store ---------------------------------------------------------------------------


def test_a_status_file_of_the_previous_version_gains_the_continuity_table(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite"
    with StatusStore(path) as store:
        store.start_run("officine", "nas", "schedule", T0)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE continuity")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with StatusStore(path) as store:
        assert len(store.runs()) == 1
        status = ContinuityStatus("officine", "nas", first_seen=T0, pieces=4)
        store.record_continuity(status, T0)
        assert store.continuity() == {"officine": status}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    # A damaged state is reported, never a crash.
    db.execute("UPDATE continuity SET state = '{\"first_seen\": \"soon\"}'")
    db.commit()
    db.close()
    with StatusStore(path) as store:
        assert store.continuity() == {} and store.damage[0].column == "continuity:officine"


# -- the agent's service -----------------------------------------------------------------------


def test_the_agent_runs_the_capture_and_sigterm_stops_it_cleanly(site: dict[str, object]) -> None:
    """`coffre agent` (its serve loop, in this process) with a continuity entry: pieces put in
    the spool are shipped by the agent's own thread; SIGTERM ends it, the thread included."""
    config, spool, repo = site["config"], site["spool"], site["repo"]
    assert isinstance(config, Config) and isinstance(spool, Spool) and isinstance(repo, Repository)
    lines: list[str] = []
    agent = Agent(config.path, lines.append)
    for n in range(1, 4):
        put(spool, n, time.time())

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with StatusStore(status_path(config)) as store:
                st = store.continuity().get("officine")
            if st is not None and st.pieces == 3:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert agent.serve() == 0
    watcher.join()
    assert len(segments.listing(repo)) == 3 and spool.pending() == []
    assert agent.continuity.names() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("continuity-")]
    assert "continuous capture officine: started, ships " in "\n".join(lines)
    assert lines[-1] == "agent stopped"


def test_a_reload_restarts_only_the_entries_that_changed(site: dict[str, object], pwfile: Path,
                                                         tmp_path: Path) -> None:
    config = site["config"]
    assert isinstance(config, Config)
    lines: list[str] = []
    service = loop.ContinuityService(open_store(config), lines.append)
    try:
        service.apply(config)
        [first] = service._running.values()
        service.apply(load_config(config.path))  # the same file again: left running
        assert list(service._running.values()) == [first]
        changed = replace(config, continuity={"officine": replace(config.continuity["officine"], every=2.0)})
        service.apply(changed)
        [second] = service._running.values()
        [old_thread], [new_thread] = first[2], second[2]  # a spool: one thread (no capture of its own)
        assert second[1] is not first[1] and not old_thread.is_alive() and new_thread.is_alive()
        service.apply(replace(config, continuity={}))
        assert service.names() == [] and not new_thread.is_alive()
    finally:
        service.stop()
    assert json.dumps(lines)  # every line is text
