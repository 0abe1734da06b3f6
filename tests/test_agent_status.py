"""The agent's status store (agent/status.py) and `coffre status` (agent/overview.py,
cli/cmd_status.py): every field kept, crash safety with a real killed writer, 400 days of
history, runs left running by a dead agent, damaged rows reported; the screen in French and
English, the exit status and the --json document."""

from __future__ import annotations

import gettext
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from coffre.agent import overview
from coffre.agent.model import Config, Job, MediaSet, Repository
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.agent.status import (
    ABANDONED_ERROR,
    SCHEMA_VERSION,
    STALE_ERROR,
    StatusStore,
    StatusStoreError,
    store_path,
)
from coffre.cli import cmd_status
from coffre.core import i18n

DAY = 86400.0
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 10, 14, 0, tzinfo=PARIS).timestamp()  # a Tuesday


def at(day: int, hour: int, minute: int = 0) -> float:
    """An instant in March 2026, Paris time."""
    return datetime(2026, 3, day, hour, minute, tzinfo=PARIS).timestamp()


def full_record(**changes: Any) -> RunRecord:
    """A run with every field set to something other than its default."""
    steps = (
        StepResult("backup", "nas", True, 0, at(10, 12, 30), at(10, 12, 31),
                   {"snapshot": "ab12", "files": 3, "nested": {"a": [1, 2.5, None]}}),
        StepResult("copy:s3", "s3", False, 1, at(10, 12, 31), at(10, 12, 35), {}, "l'hôte ne répond pas"),
    )
    record = RunRecord(
        job="officine", target="nas", trigger="catch-up", started=at(10, 12, 30),
        ended=at(10, 12, 40), outcome="warning", slot=at(10, 12, 30), snapshot="ab12cd34",
        bytes_read=123_456_789_012, bytes_sent=42, files_total=10_000, files_changed=17,
        warnings=("fichier illisible : é.txt", "second"), steps=steps,
        verified={"check": "5%", "verify": {"files": 12, "ok": True}},
        drill={"database": "officine", "rows": 1234, "ok": True},
        db_sizes={"officine": 5_000_000_000, "compta": 0}, disk="0123456789abcdef0123456789abcdef",
        medium=(900_000_000_000, 2_000_000_000_000), error="partly",
    )
    return replace(record, **changes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StatusStore]:
    s = StatusStore(tmp_path / "state" / "agent.sqlite")
    yield s
    s.close()


def add(store: StatusStore, record: RunRecord) -> RunRecord:
    run_id = store.start_run(record.job, record.target, record.trigger, record.started, record.slot)
    store.finish_run(run_id, record)
    return replace(record, run_id=run_id)


# -- the store -------------------------------------------------------------------------------


def test_every_field_comes_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.sqlite"
    with StatusStore(path) as s:
        written = add(s, full_record())
        plain = add(s, RunRecord("scans", "disques", "realtime", at(10, 13)))  # the defaults, drill None
    with StatusStore(path) as s:  # read back by another connection, as `coffre status` does
        assert s.runs() == [written, plain]
        assert s.damage == []


def test_a_run_starts_running_and_is_found_by_job_time_and_outcome(store: StatusStore) -> None:
    run_id = store.start_run("officine", "nas", "schedule", at(10, 12, 30), at(10, 12, 30))
    [running] = store.runs()
    assert (running.run_id, running.outcome, running.slot, running.ended) == (
        run_id, "running", at(10, 12, 30), None)
    good = add(store, full_record(started=at(9, 19, 30), outcome="ok"))
    failed = add(store, full_record(started=at(10, 9), outcome="failed"))
    add(store, full_record(job="scans", started=at(8, 12)))
    assert [r.started for r in store.runs("officine")] == [at(9, 19, 30), at(10, 9), at(10, 12, 30)]
    assert [r.run_id for r in store.runs("officine", since=at(10, 0))] == [failed.run_id, run_id]
    assert [r.run_id for r in store.runs(limit=2)] == [failed.run_id, run_id]  # the latest, oldest first
    assert store.last_run("officine") == running
    assert store.last_run("officine", ok_only=True) == good
    assert store.last_run("absent") is None
    with pytest.raises(ValueError):
        store.start_run("officine", "nas", "whenever", NOW)


def test_disk_sightings(store: StatusStore) -> None:
    seen = [DiskSighting("disques", "id-a", "lundi", at(2, 12)),
            DiskSighting("disques", "id-b", "mardi", at(3, 12)),
            DiskSighting("autre", "id-c", "X", at(4, 12))]
    for s in reversed(seen):
        store.record_sighting(s)
    assert store.sightings("disques") == seen[:2]  # oldest first
    assert store.sightings("disques", since=at(3, 0)) == seen[1:2]


def test_the_file_is_private_versioned_and_keeps_other_parts_tables(tmp_path: Path) -> None:
    before = os.umask(0o022)  # as a careless service manager would leave it
    try:
        path = tmp_path / "state" / "agent.sqlite"
        with StatusStore(path) as s:
            add(s, full_record())
    finally:
        os.umask(before)  # the other tests' umask, as it was
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for f in path.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO outbox (body) VALUES ('mail')")
    db.commit()
    db.close()
    with StatusStore(path) as s:
        assert len(s.runs()) == 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT body FROM outbox").fetchall() == [("mail",)]
    db.close()


def test_a_store_from_a_newer_coffre_or_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StatusStoreError, match="newer version"):
        StatusStore(newer)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StatusStoreError, match=r"junk\.sqlite") as info:
        StatusStore(junk)
    assert info.value.hint and "move it aside" in info.value.hint


WRITER = textwrap.dedent("""
    import sys, time
    from coffre.agent.status import StatusStore
    from coffre.agent.records import RunRecord
    store = StatusStore(sys.argv[1])
    for i in range(3):
        run_id = store.start_run("officine", "nas", "schedule", 1000.0 + i)
        if i < 2:
            store.finish_run(run_id, RunRecord("officine", "nas", "schedule", 1000.0 + i, 1010.0 + i, "ok"))
        print("committed", run_id, flush=True)
    with store._write() as db:  # the store's own transaction, left open when the process dies
        for i in range(2000):
            db.execute("INSERT INTO runs (job, target, trigger, started, outcome, steps)"
                       " VALUES ('ghost', 'nas', 'manual', ?, 'ok', ?)", (2000.0 + i, "[]" + " " * 4000))
        db.execute("UPDATE runs SET outcome = 'failed'")
        print("inside", flush=True)
        time.sleep(120)
""")


def test_a_writer_killed_mid_transaction_leaves_the_committed_runs(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.sqlite"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(4)]
        assert lines[-1] == "inside", lines
        # While the writer holds its transaction, a reader (`coffre status`) is not blocked.
        with StatusStore(path) as reader:
            assert [r.outcome for r in reader.runs()] == ["ok", "ok", "running"]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with StatusStore(path) as s:
        assert [(r.run_id, r.outcome) for r in s.runs()] == [(1, "ok"), (2, "ok"), (3, "running")]
        assert s.settle_abandoned(s.running_ids("officine"), NOW) == 1  # as its job's next run does
        [*_, settled] = s.runs()
        assert (settled.outcome, settled.error, settled.ended) == ("interrupted", ABANDONED_ERROR, NOW)
        add(s, full_record())  # and the store takes new writes: no lock was left behind
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM runs WHERE job = 'ghost'").fetchone()[0] == 0
    db.close()


def test_settling_a_job_touches_only_its_running_rows(store: StatusStore) -> None:
    done = add(store, full_record(outcome="ok"))
    store.start_run("officine", "nas", "schedule", at(10, 12, 30))
    store.start_run("officine", "nas", "manual", at(10, 12, 40))
    other = store.start_run("scans", "disques", "realtime", at(10, 13))
    assert store.running_jobs() == ["officine", "scans"]
    assert store.settle_abandoned(store.running_ids("officine"), NOW) == 2
    runs = store.runs()
    assert runs[0] == done
    assert [(r.outcome, r.error, r.ended) for r in runs[1:3]] == [("interrupted", ABANDONED_ERROR, NOW)] * 2
    assert (runs[3].run_id, runs[3].outcome) == (other, "running")
    assert store.running_jobs() == ["scans"]
    assert store.settle_abandoned(store.running_ids("officine"), NOW) == 0
    # Ids read under the job's lock, written after it: a run that ended meanwhile stays as it ended.
    left = store.running_ids("scans")
    store.finish_run(other, full_record(job="scans", outcome="ok"))
    assert store.settle_abandoned(left, NOW) == 0
    assert store.runs(job="scans")[0].outcome == "ok"


def test_prune_keeps_400_days_and_each_jobs_last_good_run(store: StatusStore) -> None:
    old_good = add(store, full_record(started=NOW - 401 * DAY, outcome="ok"))
    add(store, full_record(started=NOW - 420 * DAY, outcome="failed"))
    only_good_b = add(store, full_record(job="b", started=NOW - 900 * DAY, outcome="warning"))
    add(store, full_record(job="b", started=NOW - 800 * DAY, outcome="failed"))
    kept = [add(store, full_record(started=NOW - 399 * DAY, outcome="failed")),
            add(store, full_record(started=NOW - DAY, outcome="ok"))]
    store.record_sighting(DiskSighting("disques", "id-a", "lundi", NOW - 500 * DAY))
    store.record_sighting(DiskSighting("disques", "id-a", "lundi", NOW - 450 * DAY))
    store.record_sighting(DiskSighting("disques", "id-b", "mardi", NOW - DAY))

    assert store.prune(NOW, keep_days=30) == 4  # asked for less than 400 days: 400 are kept
    remaining = store.runs()
    assert remaining == sorted([only_good_b, *kept], key=lambda r: r.started)
    assert old_good not in remaining  # officine has a newer good run
    assert [s.at for s in store.sightings("disques")] == [NOW - 450 * DAY, NOW - DAY]
    assert store.prune(NOW + 2 * DAY, keep_days=400) == 1  # the 399-day run's turn
    assert store.last_run("b", ok_only=True) == only_good_b


def test_threads_write_at_once(store: StatusStore) -> None:
    ids: list[int] = []

    def work(job: str) -> None:
        for i in range(40):
            run_id = store.start_run(job, "nas", "schedule", float(i))
            store.finish_run(run_id, RunRecord(job, "nas", "schedule", float(i), float(i + 1), "ok"))
            ids.append(run_id)

    threads = [threading.Thread(target=work, args=(f"job{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 160
    assert all(r.outcome == "ok" for r in store.runs())


def test_a_damaged_row_is_reported_not_a_crash(store: StatusStore) -> None:
    good = add(store, full_record(started=at(9, 12)))
    steps_gone = add(store, full_record(started=at(9, 19)))
    broken = add(store, full_record(started=at(10, 12)))
    db = sqlite3.connect(store.path)
    db.execute("UPDATE runs SET steps = '[{\"name\": \"backup\"', db_sizes = '{\"x\": -1}' WHERE id = ?",
               (steps_gone.run_id,))
    db.execute("UPDATE runs SET started = 'hier' WHERE id = ?", (broken.run_id,))
    db.commit()
    db.close()
    runs = store.runs()
    assert runs == [good, replace(steps_gone, steps=(), db_sizes={})]
    assert {(d.run_id, d.column) for d in store.damage} == {
        (steps_gone.run_id, "steps"), (steps_gone.run_id, "db_sizes"), (broken.run_id, "row")}
    store.runs()
    assert len(store.damage) == 3  # read again, reported once
    assert store.last_run("officine") == runs[-1]  # the damaged latest row is skipped


def test_the_first_run_after_a_mark_skips_a_damaged_row(store: StatusStore) -> None:
    """The run page's mark (`run_mark`) and the run it then follows (`first_run_after`): by
    id, whatever the times say; a damaged row is passed over, the next run answers."""
    assert store.run_mark("officine") == store.last_run_id("officine") == 0
    before = add(store, full_record(started=at(10, 12)))
    mark = store.run_mark("officine")
    assert mark == before.run_id
    assert store.first_run_after("officine", mark) is None
    broken = add(store, full_record(started=at(9, 0)))  # an earlier time: the clock stepped back
    assert store.first_run_after("officine", mark) == broken
    db = sqlite3.connect(store.path)
    db.execute("UPDATE runs SET started = 'hier' WHERE id = ?", (broken.run_id,))
    db.commit()
    db.close()
    assert store.last_run_id("officine") == broken.run_id
    after = add(store, full_record(started=at(9, 5)))
    assert store.first_run_after("officine", mark) == after


def test_a_run_in_progress_is_the_one_to_follow_and_a_dead_one_is_passed_over(store: StatusStore) -> None:
    """A click while the job runs (here or in a terminal) follows that run: the mark is the id
    before it. A run left "running" by a process that died, which a later run of the job
    follows, is not followed: runs of a job never overlap."""
    add(store, full_record(started=at(9, 0)))
    running = store.start_run("officine", "nas", "manual", at(10, 0))
    assert store.run_mark("officine") == running - 1
    followed = store.first_run_after("officine", running - 1)
    assert followed is not None and followed.run_id == running and followed.outcome == "running"
    later = add(store, full_record(started=at(11, 0)))  # the dead run's lock was free again
    assert store.first_run_after("officine", running - 1) == later
    assert store.run_mark("officine") == later.run_id


# -- coffre status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeProblem:
    kind: str
    job: str
    target: str
    since: float
    detail: dict[str, object] = field(default_factory=dict)


FAILING = {"failed", "late", "no_disk", "copy_diverges", "check_failed", "drill_failed"}


def fake_light(problems: Sequence[Any]) -> str:
    return "failed" if any(p.kind in FAILING for p in problems) else "warning"


def fake_next_run(times: Sequence[str], days: Sequence[str], every: float | None, tz: str,
                  after: float) -> float | None:
    assert tz == "Europe/Paris" and after == NOW
    return at(10, 19, 30)


def config(tmp_path: Path) -> Config:
    return Config(
        path=str(tmp_path / "coffre.toml"),
        repositories={"nas": Repository("nas", "/mnt/nas/coffre", password_file="/etc/coffre/pw"),
                      "s3": Repository("s3", "s3://host/b/p", password_file="/etc/coffre/pw")},
        media_sets={"disques": MediaSet("disques", {"lundi": "a" * 32, "mardi": "b" * 32})},
        jobs={"officine": Job("officine", "nas", paths=("/srv/officine",), copies=("s3",)),
              "scans": Job("scans", "disques", paths=("/srv/scans",))},
    )


def history(store: StatusStore) -> None:
    steps = (StepResult("backup", "nas", True, 0, at(10, 12, 30), at(10, 12, 31)),
             StepResult("check", "nas", True, 0, at(10, 12, 32), at(10, 12, 33)),
             StepResult("copy:s3", "s3", True, 0, at(10, 12, 33), at(10, 12, 34)),
             StepResult("against:s3", "s3", False, 1, at(10, 12, 34), at(10, 12, 35), error="diff"))
    add(store, RunRecord("officine", "nas", "schedule", at(10, 12, 30), at(10, 12, 35), "failed",
                         steps=steps, error="the copy differs"))
    add(store, RunRecord("officine", "nas", "schedule", at(4, 12, 30), at(4, 12, 50), "ok",
                         steps=(StepResult("drill", "nas", True, 0, at(4, 12, 40), at(4, 12, 50)),
                                StepResult("against:s3", "s3", True, 0, at(4, 12, 35), at(4, 12, 36)))))
    add(store, RunRecord("scans", "disques", "schedule", at(9, 19, 30), at(9, 19, 45), "ok",
                         medium=(95, 100)))
    store.record_sighting(DiskSighting("disques", "a" * 32, "lundi", at(9, 19, 30)))


PROBLEMS = [FakeProblem("copy_diverges", "officine", "s3", at(10, 12, 35)),
            FakeProblem("medium_full", "scans", "disques", at(9, 19, 45)),
            FakeProblem("not_rotated", "scans", "disques", at(1, 12, 30))]


def report(tmp_path: Path, store: StatusStore | None, problems: Sequence[Any] = PROBLEMS,
           messages: Sequence[Any] = ()) -> overview.StatusReport:
    seen: list[Any] = []

    def assess(cfg: Config, runs: Sequence[RunRecord], now: float,
               media: Sequence[DiskSighting]) -> list[Any]:
        seen.append((runs, media))
        return list(problems)

    result = cmd_status.status_report(config(tmp_path), store, NOW, messages, assess=assess,
                                      next_run=fake_next_run, light=fake_light)
    if store is not None:
        runs, media = seen[0]
        assert runs == store.runs()  # the health rules see the history, oldest first
        assert media == store.sightings("disques")
    return result


MESSAGE = (at(10, 12, 36), "error", "La copie s3 diffère de l'original.")


def test_status_in_english(tmp_path: Path, store: StatusStore) -> None:
    i18n.set_language("en")
    history(store)
    r = report(tmp_path, store, messages=[MESSAGE])
    [officine, copy, scans] = r.lines
    assert (officine.light, copy.light, scans.light) == ("ok", "failed", "warning")
    assert (officine.last_backup, officine.last_check, officine.last_drill) == (
        at(10, 12, 31), at(10, 12, 33), at(4, 12, 50))
    # The check --against of the last run failed: the last good one is older.
    assert (copy.last_copy, copy.last_check) == (at(10, 12, 34), at(4, 12, 36))
    text = cmd_status.render(r)
    rows = text.splitlines()
    assert rows[0].split() == ["state", "job", "destination", "last", "backup", "last", "copy", "last",
                               "check", "last", "drill", "next", "run"]
    assert rows[2].split()[:6] == ["OK", "officine", "nas", "today", "12:31", "—"]
    assert "Wednesday 12:50" in rows[2] and rows[2].endswith("today 19:30")
    assert rows[3].startswith("failing   officine  s3 (copy)") and "Wednesday 12:36" in rows[3]
    assert rows[4] == "    → the copy s3 differs from the original: check it"
    assert rows[5].startswith("to check  scans") and "yesterday 19:45" in rows[5]
    assert rows[6:8] == ["    → the backup disk is nearly full (95 % used)",
                         "    → the disk lundi has stayed plugged in since 2026-03-01 12:30: change the disk"]
    assert "  today 12:36  La copie s3 diffère de l'original." in text
    assert text.endswith("Something needs attention (see above).")
    assert cmd_status.exit_code(r) == 1


FRAGMENT = Path("/work/fr/agent-D.po")  # until the integrator merges it into the catalogue


@pytest.fixture
def french(tmp_path: Path) -> Iterator[None]:
    i18n.set_language("fr")
    if i18n._("to check") == "to check" and FRAGMENT.exists():
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


def test_status_in_french(tmp_path: Path, store: StatusStore, french: None) -> None:
    history(store)
    r = report(tmp_path, store, messages=[MESSAGE])
    rows = cmd_status.render(r).splitlines()
    assert rows[0].split()[:4] == ["état", "tâche", "destination", "dernière"]
    assert rows[2].split()[:5] == ["OK", "officine", "nas", "aujourd'hui", "12:31"]
    assert "mercredi 12:50" in rows[2]
    assert rows[3].startswith("en échec    officine  s3 (copie)")
    assert rows[4] == "    → la copie s3 diffère de l'original : vérifiez-la"
    assert rows[5].startswith("à vérifier  scans") and "hier 19:45" in rows[5]
    assert rows[6:8] == ["    → le disque de sauvegarde est presque plein (95 % utilisés)",
                         "    → le disque lundi est branché depuis 1 mars 12:30 : changez de disque"]
    assert rows[-1] == "Quelque chose demande votre attention (voir ci-dessus)."


def test_all_green_exits_0_and_anything_else_1(tmp_path: Path, store: StatusStore) -> None:
    i18n.set_language("en")
    history(store)
    green = report(tmp_path, store, problems=[])
    assert [line.light for line in green.lines] == ["ok"] * 3 and green.ok
    assert cmd_status.exit_code(green) == 0
    assert cmd_status.render(green).endswith("Everything is OK.")
    # A problem tied to no job (an alert channel that fails) is not green either.
    channel = report(tmp_path, store, problems=[FakeProblem("delivery_failed", "", "mail", NOW)])
    assert all(line.light == "ok" for line in channel.lines) and cmd_status.exit_code(channel) == 1
    assert "→ an alert could not be delivered (mail)" in cmd_status.render(channel)
    # Neither is a status file that could not be read whole: a damaged run could be a failure.
    db = sqlite3.connect(store.path)
    db.execute("UPDATE runs SET verified = 'nonsense' WHERE job = 'scans'")
    db.commit()
    db.close()
    damaged = report(tmp_path, store, problems=[])
    assert cmd_status.exit_code(damaged) == 1
    assert "run 3: verified: not JSON" in cmd_status.render(damaged)


def test_no_history_yet(tmp_path: Path) -> None:
    i18n.set_language("en")
    r = report(tmp_path, None, problems=[FakeProblem("late", "officine", "nas", NOW)])
    assert r.lines[0].why == ("no backup has succeeded yet",)
    assert r.lines[0].last_backup is None and cmd_status.exit_code(r) == 1
    assert cmd_status.render(r).splitlines()[2].split()[:5] == ["failing", "officine", "nas", "—", "—"]


def test_a_run_left_unfinished_says_so(tmp_path: Path, store: StatusStore) -> None:
    i18n.set_language("en")
    store.start_run("officine", "nas", "schedule", at(10, 12, 30))
    store.settle_abandoned(store.running_ids("officine"), NOW)
    r = report(tmp_path, store, problems=[FakeProblem("failed", "officine", "nas", NOW)])
    assert r.lines[0].why == ("the last backup failed: the run stopped before its end: the agent or "
                              "'coffre run' running it was stopped, or the machine",)
    # A run an earlier version settled keeps its words, in the language asked.
    add(store, full_record(started=at(10, 13), outcome="interrupted", error=STALE_ERROR))
    i18n.set_language("fr")
    try:
        r = report(tmp_path, store, problems=[FakeProblem("failed", "officine", "nas", NOW)])
    finally:
        i18n.set_language("en")
    assert r.lines[0].why == ("la dernière sauvegarde a échoué : l'agent s'est arrêté pendant la sauvegarde",)


def test_json_document(tmp_path: Path, store: StatusStore) -> None:
    i18n.set_language("en")
    history(store)
    doc = json.loads(json.dumps(cmd_status.report_json(report(tmp_path, store, messages=[MESSAGE]))))
    assert doc["ok"] is False and doc["now"] == NOW
    assert [(j["job"], j["target"], j["role"], j["light"]) for j in doc["jobs"]] == [
        ("officine", "nas", "primary", "ok"), ("officine", "s3", "copy", "failed"),
        ("scans", "disques", "primary", "warning")]
    first = doc["jobs"][0]
    assert {k: first[k] for k in ("last_backup", "last_copy", "last_check", "last_drill", "next_run")} == {
        "last_backup": at(10, 12, 31), "last_copy": None, "last_check": at(10, 12, 33),
        "last_drill": at(4, 12, 50), "next_run": at(10, 19, 30)}
    assert doc["jobs"][1]["problems"] == [{
        "kind": "copy_diverges", "target": "s3", "since": at(10, 12, 35), "detail": {},
        "text": "the copy s3 differs from the original: check it"}]
    assert doc["messages"] == [{"at": MESSAGE[0], "level": "error", "text": MESSAGE[2]}]
    assert doc["problems"] == [] and doc["damage"] == []


def test_config_path_flag_then_environment_then_etc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFRE_CONFIG", raising=False)
    assert cmd_status.config_path(None) == "/etc/coffre/coffre.toml"
    monkeypatch.setenv("COFFRE_CONFIG", "/srv/coffre.toml")
    assert cmd_status.config_path(None) == "/srv/coffre.toml"
    assert cmd_status.config_path("/tmp/x.toml") == "/tmp/x.toml"
    assert store_path("/var/lib/coffre") == Path("/var/lib/coffre/agent.sqlite")
