"""A job run as the agent runs it: real `coffre` child processes on real repositories, a
rotating disk set (two folders standing for disks), a live SQLite database."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from coffre.agent.jobs import backup_args, retention_args, run_job
from coffre.agent.media import present_disks, repository_id
from coffre.agent.model import Agent, Config, Job, MediaSet, Repository, Retention, Schedule, Verification
from coffre.agent.records import DiskSighting

from conftest import Coffre


def _init(coffre: Coffre, path: Path) -> str:
    coffre.ok("init", "--repo", str(path), repo=False, env={"COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
    rid = repository_id(path)
    assert rid is not None
    return rid


@pytest.fixture
def site(tmp_path: Path, coffre: Coffre, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A pharmacy: documents, a live SQLite base, a NAS repository, two disks (A plugged in)."""
    for k, v in coffre.env.items():
        if k.startswith("COFFRE_"):
            monkeypatch.setenv(k, v)
    docs = tmp_path / "officine" / "documents"
    docs.mkdir(parents=True)
    (docs / "ordonnance-001.pdf").write_bytes(b"%PDF scan " * 1000)
    base = tmp_path / "officine" / "base.sqlite"
    with sqlite3.connect(base) as db:
        db.execute("create table ventes(id integer primary key, produit text)")
        db.executemany("insert into ventes(produit) values (?)", [(f"p{i}",) for i in range(500)])
    mounts = tmp_path / "media"
    disk_a, disk_b = mounts / "COFFRE-A" / "coffre", mounts / "COFFRE-B" / "coffre"
    ids = {"A": _init(coffre, disk_a), "B": _init(coffre, disk_b)}
    nas = tmp_path / "nas"
    _init(coffre, nas)
    # Disk B is on the shelf: out of the search folder.
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (mounts / "COFFRE-B").rename(shelf / "COFFRE-B")
    config = Config(
        path=str(tmp_path / "coffre.toml"),
        agent=Agent(state_dir=str(tmp_path / "agent"), nice=0, ionice="none", language="en"),
        repositories={"nas": Repository("nas", str(nas), password_file=str(coffre.pwfile))},
        media_sets={"disques": MediaSet("disques", ids, search=(str(mounts),),
                                        password_file=str(coffre.pwfile))},
        jobs={"officine": Job("officine", "nas", paths=(str(docs),), sqlite=(str(base),),
                              copies=("disques",), schedule=Schedule(),
                              retention=Retention(keep_last=2),
                              verification=Verification(check_subset="100%", verify_sample=1.0,
                                                        drill_every=86400.0))},
    )
    return {"config": config, "docs": docs, "mounts": mounts, "shelf": shelf, "ids": ids, "nas": nas}


def _run(config: Config, **kw: object) -> object:
    lines: list[str] = []
    record = run_job(config, "officine", trigger="manual", started=1.0e9, slot=None,
                     cancel=threading.Event(), log=lines.append, **kw)  # type: ignore[arg-type]
    return record


def test_a_job_backs_up_keeps_copies_and_verifies_them(site: dict[str, object], coffre: Coffre) -> None:
    config = site["config"]
    assert isinstance(config, Config)
    seen: list[DiskSighting] = []
    record = _run(config, sight=seen.append)
    names = [s.name for s in record.steps]  # type: ignore[attr-defined]
    assert record.outcome == "ok", record  # type: ignore[attr-defined]
    assert names == ["backup", "forget", "copy:disques", "forget:disques", "against:disques", "check",
                     "verify", "drill", "stats"]
    assert record.snapshot and record.files_total >= 1  # type: ignore[attr-defined]
    assert record.disk is None and record.medium is not None  # type: ignore[attr-defined]
    assert record.drill and record.drill["ok"]  # type: ignore[attr-defined]
    assert list(record.db_sizes) and all(v > 0 for v in record.db_sizes.values())  # type: ignore[attr-defined]
    assert [s.disk_name for s in seen] == ["A"]
    # The copy really is on disk A, readable with the pharmacy's password.
    ids = site["ids"]
    assert isinstance(ids, dict)
    disk_a = site["mounts"] / "COFFRE-A" / "coffre"  # type: ignore[operator]
    listed = coffre.ok("snapshots", "--json", "--repo", str(disk_a), repo=False,
                       env={"COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
    assert len(json.loads(listed.out)) == 1
    # A drill is not repeated within its period.
    again = _run(config, last_drill=1.0e9 - 3600, clock=lambda: 1.0e9)
    assert "drill" not in [s.name for s in again.steps]  # type: ignore[attr-defined]


def test_the_disk_plugged_in_is_the_one_written(site: dict[str, object]) -> None:
    config = site["config"]
    assert isinstance(config, Config)
    mounts, shelf = site["mounts"], site["shelf"]
    assert isinstance(mounts, Path) and isinstance(shelf, Path)
    (mounts / "COFFRE-A").rename(shelf / "COFFRE-A")  # both on the shelf: no disk
    record = _run(config)
    assert record.outcome == "failed"  # type: ignore[attr-defined]
    media = [s for s in record.steps if s.name == "media"]  # type: ignore[attr-defined]
    assert media and media[0].summary == {"reason": "no_disk"} and media[0].target == "disques"
    assert record.snapshot  # the backup itself still happened  # type: ignore[attr-defined]
    (shelf / "COFFRE-B").rename(mounts / "COFFRE-B")  # disk B swapped in
    seen: list[DiskSighting] = []
    record = _run(config, sight=seen.append)
    assert record.outcome == "ok", record  # type: ignore[attr-defined]
    assert [s.disk_name for s in seen] == ["B"]
    assert [d.disk_name for d in present_disks(config.media_sets["disques"])] == ["B"]


def test_a_planted_folder_is_not_taken_for_a_disk(tmp_path: Path, site: dict[str, object]) -> None:
    mounts = site["mounts"]
    assert isinstance(mounts, Path)
    fake = mounts / "CLE-USB" / "coffre"
    fake.mkdir(parents=True)
    (fake / "config").write_text(json.dumps({"format": "coffre-repository", "id": "../../etc"}))
    config = site["config"]
    assert isinstance(config, Config)
    assert [d.disk_name for d in present_disks(config.media_sets["disques"])] == ["A"]


def test_an_unreachable_destination_is_retried_then_declared_failed(site: dict[str, object]) -> None:
    config = site["config"]
    assert isinstance(config, Config)
    nas = site["nas"]
    assert isinstance(nas, Path)
    nas.rename(nas.with_name("nas-away"))
    pauses: list[float] = []

    def sleep(seconds: float) -> bool:
        pauses.append(seconds)
        return False

    job = config.jobs["officine"]
    quick = Config(config.path, config.agent, config.repositories, config.media_sets,
                   {"officine": Job(**{**vars(job), "retries": 2, "retry_pause": 0.01})})
    record = _run(quick, sleep=sleep, clock=lambda: 1.0e9)
    assert record.outcome == "failed"  # type: ignore[attr-defined]
    assert pauses == [0.01, 0.04]  # growing pauses
    assert [s.name for s in record.steps] == ["backup"]  # type: ignore[attr-defined]
    assert record.error  # type: ignore[attr-defined]


def test_command_lines_carry_no_secret() -> None:
    job = Job("j", "nas", paths=("/srv/officine",), exclude=("*.tmp",),
              postgres=("postgresql://coffre@localhost/officine",))
    args = backup_args(job)
    assert args[:2] == ["backup", "/srv/officine"] and "--postgres" in args
    assert retention_args(Retention(keep_daily=7, keep_within="30d")) == [
        "--keep-daily", "7", "--keep-within", "30d", "--prune"]


def test_a_fault_of_the_agent_during_a_run_is_recorded_as_a_failure(
        site: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the job runner must not leave the run "running" forever nor kill the agent:
    the run is recorded as failed with the reason, which the health rules then report."""
    from coffre.agent import jobs
    from coffre.agent.health import assess
    from coffre.agent.scheduler import Runner, open_store

    config = site["config"]
    assert isinstance(config, Config)

    def broken(*args: object, **kw: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "run_job", broken)
    lines: list[str] = []
    store = open_store(config)
    record = Runner(config, store, lines.append).run("officine", "manual", None, threading.Event())
    assert record is not None and record.outcome == "failed"
    assert record.error and "RuntimeError: a bug" in record.error
    stored = store.runs(job="officine")
    assert [r.outcome for r in stored] == ["failed"]
    assert [p.kind for p in assess(config, stored, record.ended or 0.0, ())] == ["failed"]


def test_the_agent_forgets_history_beyond_its_days_but_keeps_the_last_good_run(tmp_path: Path) -> None:
    from coffre.agent.records import RunRecord
    from coffre.agent.scheduler import Runner, open_store

    day = 86400.0
    config = Config(str(tmp_path / "coffre.toml"), agent=Agent(state_dir=str(tmp_path / "agent")),
                    jobs={"officine": Job("officine", "nas", paths=("/srv",))})
    store = open_store(config)
    for started, outcome in ((0.0, "ok"), (10 * day, "failed"), (500 * day, "failed"),
                             (600 * day, "failed")):
        run_id = store.start_run("officine", "nas", "schedule", started, started)
        store.finish_run(run_id, RunRecord("officine", "nas", "schedule", started, started + 60,
                                           outcome, started))
    lines: list[str] = []
    Runner(config, store, lines.append, clock=lambda: 601 * day).forget_old()
    kept = [(r.started / day, r.outcome) for r in store.runs(job="officine")]
    # 400 days back from day 601 is day 201: day 10 goes; day 0 stays, the last good run.
    assert kept == [(0.0, "ok"), (500.0, "failed"), (600.0, "failed")]
    assert lines == ["1 record older than 400 days forgotten"]


def test_a_step_failing_while_the_agent_stops_is_an_interruption(tmp_path: Path) -> None:
    """SIGINT reaching a step in its first milliseconds (Python still starting) ends it with
    status 1, not 130: since the agent is stopping, the run is interrupted, not failed (no
    alert about a failure that never was)."""
    from coffre.agent.steps import Outcome

    config = Config(path=str(tmp_path / "coffre.toml"),
                    agent=Agent(state_dir=str(tmp_path / "agent"), nice=0, ionice="none"),
                    repositories={"nas": Repository("nas", str(tmp_path / "nas"), password_file="/x")},
                    jobs={"officine": Job("officine", "nas", paths=(str(tmp_path),))})
    cancel = threading.Event()

    def step(args: list[str], env: dict[str, str]) -> Outcome:
        cancel.set()  # the agent got SIGTERM while this step was starting
        return Outcome(1, {}, "KeyboardInterrupt", 1.0e9, 1.0e9)

    record = run_job(config, "officine", trigger="schedule", started=1.0e9, slot=None, cancel=cancel,
                     log=lambda line: None, step=step)
    assert record.outcome == "interrupted", record

    def failing(args: list[str], env: dict[str, str]) -> Outcome:
        return Outcome(1, {}, "no such repository", 1.0e9, 1.0e9)

    record = run_job(config, "officine", trigger="schedule", started=1.0e9, slot=None,
                     cancel=threading.Event(), log=lambda line: None, step=failing)
    assert record.outcome == "failed"  # a real failure stays one
