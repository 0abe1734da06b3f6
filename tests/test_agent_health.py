"""Health rules replayed over simulated histories with an injected "now": staleness from the
schedule (daylight saving, an agent that was off, a clock that went back), failures, missing
and unrotated disks, a filling medium, copies, checks, drills, database growth, and the share
of changed files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.agent.health import Problem, assess, forecast_days, late, light
from coffre.agent.model import Alerts, Config, Job, MediaSet, Repository, Schedule
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.policy import due_slot

PARIS = "Europe/Paris"
Z = ZoneInfo(PARIS)
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
GiB = 1 << 30


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=Z).timestamp()


def config(**jobs: Job) -> Config:
    return Config(
        path="coffre.toml",
        repositories={"nas": Repository("nas", "/mnt/nas"), "offsite": Repository("offsite", "s3://b/c")},
        media_sets={"disques": MediaSet("disques", {"lundi": "a" * 32, "jeudi": "b" * 32})},
        jobs=jobs or {"officine": Job("officine", "nas", paths=("/srv",), copies=("offsite",))})


def run(started: float, outcome: str = "ok", job: str = "officine", target: str = "nas",
        steps: tuple[StepResult, ...] = (), **kw: object) -> RunRecord:
    return RunRecord(job=job, target=target, trigger="schedule", started=started, ended=started + 300,
                     outcome=outcome, slot=kw.pop("slot", started), steps=steps, **kw)  # type: ignore[arg-type]


def step(name: str, ok: bool = True, target: str = "nas", **summary: object) -> StepResult:
    return StepResult(name, target, ok, 0 if ok else 1, 0.0, 1.0, dict(summary), None if ok else "it broke")


def kinds(problems: list[Problem]) -> list[str]:
    return sorted(p.kind for p in problems)


# -- staleness over simulated weeks -------------------------------------------------------

def test_late_over_a_spring_week_with_the_agent_off_for_a_day() -> None:
    """Runs at 12:30 and 19:30 (window 2 h) across 2026-03-29; the agent is off from Saturday
    12:00 to Sunday 16:00 local time, the day clocks go forward. Checked every 10 minutes."""
    cfg = config()
    job = cfg.jobs["officine"]
    off = (at(2026, 3, 28, 12), at(2026, 3, 29, 16))
    runs: list[RunRecord] = []
    last_slot: float | None = at(2026, 3, 26, 19, 30)
    seen_late: list[tuple[float, Problem]] = []
    now = at(2026, 3, 27)
    while now < at(2026, 4, 2):
        if not off[0] <= now < off[1]:  # the agent: runs what is due (every run succeeds)
            slot = due_slot(job.schedule.times, job.schedule.days, None, PARIS, last_slot, now)
            if slot is not None:
                runs.append(run(now, slot=slot))
                last_slot = slot
        # A status check (`coffre status`, or another machine reading the history).
        seen_late += [(now, p) for p in assess(cfg, runs, now) if p.kind == "late"]
        now += 10 * MINUTE
    times = [t for t, _ in seen_late]
    # Late from Saturday's 12:30 slot + the window, until the catch-up run at restart.
    assert times[0] == at(2026, 3, 28, 14, 30) and times[-1] == off[1] - 10 * MINUTE
    assert len(times) == (off[1] - 10 * MINUTE - times[0]) / (10 * MINUTE) + 1
    problems = {(p.key, p.since, p.detail["due"], p.detail["last_ok"]) for _, p in seen_late}
    assert problems == {("late:officine:nas", at(2026, 3, 28, 14, 30), at(2026, 3, 28, 12, 30),
                         at(2026, 3, 27, 19, 30))}  # one problem, the same all along
    assert sum(1 for r in runs if at(2026, 3, 29) <= r.started < at(2026, 3, 30)) == 2  # catch-up, 19:30


def test_late_on_the_autumn_change_day_counts_real_hours() -> None:
    """On 2026-10-25 (clocks go back at 03:00), 12:30 + the 2 h window is 14:30 local."""
    cfg = config()
    history = [run(at(2026, 10, 24, 19, 30))]
    assert assess(cfg, history, at(2026, 10, 25, 14, 29)) == []
    assert kinds(assess(cfg, history, at(2026, 10, 25, 14, 30))) == ["late"]


def test_a_successful_catch_up_run_clears_late() -> None:
    cfg = config()
    history = [run(at(2026, 5, 4, 19, 30))]
    now = at(2026, 5, 6, 9)
    assert kinds(assess(cfg, history, now)) == ["late"]
    history.append(replace(run(now), trigger="catch-up", slot=at(2026, 5, 5, 19, 30)))
    assert assess(cfg, history, now + MINUTE) == []


def test_retries_inside_the_window_are_not_late_but_failed() -> None:
    cfg = config()
    history = [run(at(2026, 5, 4, 19, 30)), run(at(2026, 5, 5, 12, 30), "failed", error="NAS unreachable")]
    problems = assess(cfg, history, at(2026, 5, 5, 13))
    assert kinds(problems) == ["failed"]
    assert problems[0].detail["error"] == "NAS unreachable"
    assert kinds(assess(cfg, history, at(2026, 5, 5, 14, 30))) == ["failed", "late"]


def test_a_clock_that_went_back_after_a_run_does_not_make_it_late() -> None:
    cfg = config()
    history = [run(at(2026, 6, 10, 12, 30))]
    for now in (at(2026, 6, 10, 11, 35), at(2026, 6, 10, 12, 29), at(2026, 6, 10, 20)):
        assert assess(cfg, history, now) == []
    # Back a whole day: the last success is "in the future"; nothing is late until the slot
    # after it has had its window.
    assert assess(cfg, history, at(2026, 6, 9, 15)) == []
    assert kinds(assess(cfg, history, at(2026, 6, 10, 21, 30))) == ["late"]


def test_a_job_that_never_ran() -> None:
    cfg = config()
    start = at(2026, 5, 4, 9)
    assert assess(cfg, [], start + 3 * DAY) == []  # no start time known: never said late
    assert assess(cfg, [], start + HOUR, since=start) == []
    problems = assess(cfg, [], start + 2 * HOUR, since=start)
    assert kinds(problems) == ["late"] and problems[0].since == start + 2 * HOUR
    # Runs, none successful: late a window after the first one.
    failed = [run(start + HOUR, "failed"), run(start + 3.5 * HOUR, "failed")]
    assert kinds(assess(cfg, failed, start + 3 * HOUR, since=start)) == ["failed", "late"]
    assert [p.since for p in assess(cfg, failed, start + 4 * HOUR) if p.kind == "late"] == [start + 3 * HOUR]


def test_every_schedules_are_late_after_a_period_and_the_window() -> None:
    sched = Schedule(times=(), every=600.0, window=300.0)
    cfg = config(fast=Job("fast", "nas", schedule=sched))
    t = at(2026, 5, 4, 10)
    history = [run(t, job="fast", slot=t)]
    assert assess(cfg, history, t + 899) == []
    assert kinds(assess(cfg, history, t + 900)) == ["late"]
    assert late(sched, PARIS, t + 20, t + 900, anchor=t) == t + 900  # counted from the slot


def test_real_time_only_jobs_are_never_late_from_a_schedule() -> None:
    sched = Schedule(times=(), realtime=True)
    assert late(sched, PARIS, at(2026, 1, 1), at(2026, 6, 1)) is None


# -- outcomes and steps -------------------------------------------------------------------

def test_failed_since_the_first_failure_of_the_streak_and_cleared_by_a_success() -> None:
    cfg = config()
    t = at(2026, 5, 4, 12, 30)
    history = [run(t), run(t + 7 * HOUR, "failed", error="x"), run(t + DAY, "interrupted"),
               run(t + DAY + 10 * MINUTE, "failed", error="y")]
    (p,) = [p for p in assess(cfg, history, t + DAY + HOUR) if p.kind == "failed"]
    assert p.since == t + 7 * HOUR and p.detail["runs"] == 2 and p.detail["error"] == "y"
    assert light([p]) == "failed"
    history.append(run(t + DAY + 7 * HOUR))
    assert assess(cfg, history, t + DAY + 8 * HOUR) == []


def test_a_failed_backup_step_is_a_failure_even_if_the_run_said_warning() -> None:
    cfg = config()
    history = [run(at(2026, 5, 4, 12, 30), "warning", steps=(step("backup", False),))]
    assert kinds(assess(cfg, history, at(2026, 5, 4, 13))) == ["failed"]


def test_no_disk_of_the_media_set() -> None:
    cfg = config(officine=Job("officine", "disques"))
    t = at(2026, 5, 4, 12, 30)
    no_disk = step("media", False, target="disques", reason="no_disk")
    history = [run(t, target="disques", disk="a" * 32),
               run(t + 7 * HOUR, "failed", target="disques", steps=(no_disk,)),
               run(t + DAY, "failed", target="disques", steps=(no_disk,))]
    problems = assess(cfg, history, t + DAY + HOUR)
    # Not also "failed": no_disk says what to do. Late too: yesterday's 19:30 backup is missing.
    assert kinds(problems) == ["late", "no_disk"]
    problems = [p for p in problems if p.kind == "no_disk"]
    assert problems[0].since == t + 7 * HOUR and problems[0].detail["disks"] == ["jeudi", "lundi"]
    assert light(problems) == "failed"


def test_no_disk_for_a_copy_names_the_copy_set_not_the_primary() -> None:
    cfg = config(officine=Job("officine", "nas", copies=("disques",)))
    t = at(2026, 5, 4, 12, 30)
    no_disk = step("media", False, target="disques", reason="no_disk")
    history = [run(t, "failed", steps=(step("backup"), no_disk))]
    problems = assess(cfg, history, t + 60)
    assert [(p.kind, p.target) for p in problems] == [("no_disk", "disques")]
    assert problems[0].detail["set"] == "disques"


def test_a_copy_that_diverges_a_failed_check_and_a_failed_drill_have_their_own_kinds() -> None:
    cfg = config()
    t = at(2026, 5, 4, 12, 30)
    drill = step("drill", False, databases=[{"engine": "postgres", "name": "lgo", "ok": False},
                                            {"engine": "sqlite", "name": "scan.db", "ok": True}])
    history = [run(t, steps=(step("backup"), step("against:offsite", True, target="offsite"), step("drill"))),
               run(t + 7 * HOUR, "failed", steps=(step("backup"), step("check", False),
                                                  step("against:offsite", False, target="offsite"), drill))]
    problems = {p.kind: p for p in assess(cfg, history, t + 8 * HOUR)}
    assert sorted(problems) == ["check_failed", "copy_diverges", "drill_failed"]  # not "failed" too
    assert problems["copy_diverges"].key == "copy_diverges:officine:offsite"
    assert problems["drill_failed"].detail["databases"] == ["postgres lgo"]
    # A later run without a drill leaves the drill's verdict standing; a good check clears its own.
    history.append(run(t + DAY, steps=(step("backup"), step("check"),
                                       step("against:offsite", target="offsite"))))
    assert kinds(assess(cfg, history, t + DAY + HOUR)) == ["drill_failed"]


def test_copy_failures_are_failures() -> None:
    cfg = config()
    history = [run(at(2026, 5, 4, 12, 30), "failed", steps=(step("backup"), step("copy:offsite", False)))]
    (p,) = assess(cfg, history, at(2026, 5, 4, 13))
    assert p.kind == "failed" and p.detail["step"] == "copy:offsite"


def stats_step(flagged: bool) -> StepResult:
    """As `coffre stats --databases --json` prints it (cli/cmd_browse.py)."""
    sizes = [{"snapshot": "s", "time": "t", "size": n, "rows": 1} for n in (100, 101, 102, 400)]
    return step("stats", databases=[{"engine": "postgres", "name": "lgo", "unusual_growth": flagged,
                                     "sizes": sizes},
                                    {"engine": "sqlite", "name": "x", "unusual_growth": False, "sizes": []}])


def test_database_growth_flagged_by_stats() -> None:
    cfg = config()
    t = at(2026, 5, 4, 12, 30)
    history = [run(t, steps=(stats_step(False),)), run(t + DAY, steps=(stats_step(True),))]
    (p,) = assess(cfg, history, t + DAY + HOUR)
    assert p.kind == "db_growth" and light([p]) == "warning"
    assert p.detail["databases"] == [{"engine": "postgres", "name": "lgo", "size": 400, "growth": 298}]
    history.append(run(t + 2 * DAY, steps=(stats_step(False),)))
    assert assess(cfg, history, t + 2 * DAY + HOUR) == []


def test_untrusted_summaries_do_not_break_the_rules() -> None:
    cfg = config()
    t = at(2026, 5, 4, 12, 30)
    weird = (step("stats", databases="oops"), step("drill", False, databases=[1, None, {"ok": "no"}]))
    (p,) = assess(cfg, [run(t, steps=weird)], t + HOUR)
    assert p.kind == "drill_failed" and p.detail["databases"] == []


# -- many changed files -------------------------------------------------------------------

def changes_history(shares: list[float], total: int = 10_000) -> list[RunRecord]:
    t = at(2026, 5, 1, 12, 30)
    return [run(t + i * 7 * HOUR, files_total=total, files_changed=int(s * total))
            for i, s in enumerate(shares)]


def changes(shares: list[float], cfg: Config | None = None) -> list[Problem]:
    history = changes_history(shares)
    return assess(cfg or config(), history, history[-1].started + MINUTE)


def test_many_changes_far_above_the_usual_share() -> None:
    usual = [1.0] + [0.02] * 20  # the first backup finds every file new
    (p,) = changes([*usual, 0.35])
    assert p.kind == "many_changes" and light([p]) == "warning"
    assert p.detail["share"] == 0.35 and p.detail["usual"] == 0.02 and p.detail["changed"] == 3500
    assert changes([*usual, 0.35, 0.02]) == []  # the next backup is a usual one
    # Above the threshold but a usual day for this job: nothing.
    assert changes([1.0] + [0.10] * 20 + [0.35]) == []
    # Below the threshold: nothing, however unusual.
    assert changes([*usual, 0.25]) == []


def test_many_changes_with_little_history_uses_the_threshold_alone() -> None:
    assert changes([1.0]) == []  # a first backup
    assert kinds(changes([1.0, 0.31])) == ["many_changes"]
    assert changes([1.0, 0.31], replace(config(), alerts=Alerts(changed_files_share=0.5))) == []


def test_many_changes_compares_a_rotating_disk_with_its_own_backups() -> None:
    cfg = config(officine=Job("officine", "disques"))
    t = at(2026, 5, 1, 12, 30)
    a, b = "a" * 32, "b" * 32
    history = [run(t + i * HOUR, target="disques", disk=a, files_total=100, files_changed=2)
               for i in range(5)]
    history.append(run(t + DAY, target="disques", disk=b, files_total=100, files_changed=100))
    assert assess(cfg, history, t + DAY + HOUR) == []  # the first backup to disk B


# -- the medium filling up ----------------------------------------------------------------

def medium_runs(used_gib: list[float], total_gib: float = 100, every: float = DAY,
                disk: str | None = None) -> list[RunRecord]:
    t = at(2026, 4, 1, 12, 30)
    return [run(t + i * every, medium=(int(u * GiB), int(total_gib * GiB)), disk=disk)
            for i, u in enumerate(used_gib)]


def test_medium_nearly_full_by_share() -> None:
    cfg = config()
    history = medium_runs([80, 80, 91, 92])
    (p,) = assess(cfg, history, history[-1].started + HOUR)
    assert p.kind == "medium_full" and p.target == "nas" and light([p]) == "warning"
    assert p.since == history[2].ended and p.detail["days_left"] is None
    assert p.detail["share"] == pytest.approx(0.92, abs=1e-6)


def test_medium_growth_forecast_over_days() -> None:
    cfg = config()  # medium_full_days = 14
    used = [50 + i for i in range(40)]  # 1 GiB a day on a 100 GiB disk
    seen = []
    for n in range(2, len(used) + 1):
        history = medium_runs(used[:n])
        found = [p for p in assess(cfg, history, history[-1].started + HOUR) if p.kind == "medium_full"]
        seen.append((used[n - 1], found[0].detail["days_left"] if found else None))
    first = next(u for u, days in seen if days is not None)
    assert first == 86  # 14 GiB left at 1 GiB a day
    days_left = dict(seen)[86]
    assert isinstance(days_left, float) and days_left == pytest.approx(14.0)
    assert all(days is not None for u, days in seen if u >= 86)


def test_a_flat_or_shrinking_medium_is_fine() -> None:
    cfg = config()
    for used in ([70] * 30, [89 - i * 0.5 for i in range(30)]):
        history = medium_runs(used)
        assert assess(cfg, history, history[-1].started + HOUR) == []


def test_the_forecast_reads_only_the_last_four_weeks_and_needs_a_day_of_them() -> None:
    # Fast growth long ago, flat at 87 % for the last four weeks: not filling.
    history = medium_runs([3 * i for i in range(30)] + [87] * 29)
    assert assess(config(), history, history[-1].started + HOUR) == []
    samples = [(at(2026, 4, 1) + i * HOUR, (50 + i) * GiB, 100 * GiB) for i in range(5)]
    assert forecast_days(samples) is None  # four hours say nothing about a trend


def test_the_forecast_on_a_media_set_follows_the_disk_in_use() -> None:
    cfg = config(officine=Job("officine", "disques"))
    a = [replace(r, target="disques") for r in medium_runs([40 + 3 * i for i in range(10)], disk="a" * 32)]
    assert assess(cfg, a, a[-1].started + HOUR)[0].kind == "medium_full"
    # Disk A nearly empty, then disk B (fuller, but not growing): a swap is not growth.
    a = [replace(r, target="disques") for r in medium_runs([10] * 10, disk="a" * 32)]
    b = [replace(r, target="disques", started=r.started + 10 * DAY, ended=r.ended + 10 * DAY)  # type: ignore[operator]
         for r in medium_runs([85] * 10, disk="b" * 32)]
    assert assess(cfg, a + b, b[-1].started + HOUR) == []


# -- rotation -----------------------------------------------------------------------------

def test_a_disk_left_in_place_longer_than_rotate_after() -> None:
    cfg = config(officine=Job("officine", "disques"))  # rotate_after: 7 days
    a, b = "a" * 32, "b" * 32
    sightings: list[DiskSighting] = []
    t0 = at(2026, 3, 23, 12, 30)  # over the spring change
    reported = []
    for day in range(12):
        for h in (0.0, 7 * HOUR):
            now = t0 + day * DAY + h
            disk = (a, "lundi") if day < 10 else (b, "jeudi")
            sightings.append(DiskSighting("disques", disk[0], disk[1], now))
            found = [p for p in assess(cfg, [], now, sightings) if p.kind == "not_rotated"]
            reported.append((day, h, found[0] if found else None))
    first = next((day, h) for day, h, p in reported if p is not None)
    assert first == (7, 7 * HOUR)  # more than 7 days after the first sighting
    p = next(p for _, _, p in reported if p is not None)
    assert p.detail["disk"] == "lundi" and p.target == "disques" and p.since == t0 + 7 * DAY
    assert light([p]) == "warning"
    assert all(p is None for day, _, p in reported if day >= 10)  # the other disk came
    assert all(p is not None and p.key == "not_rotated:officine:disques"
               for day, h, p in reported if (day, h) >= (7, 7 * HOUR) and day < 10)


def test_rotation_is_judged_on_copies_too_and_not_on_a_single_disk() -> None:
    cfg = config(officine=Job("officine", "nas", copies=("disques",)))
    seen = [DiskSighting("disques", "a" * 32, "lundi", at(2026, 5, 1) + i * DAY) for i in range(9)]
    assert kinds(assess(cfg, [], at(2026, 5, 10), seen)) == ["not_rotated"]
    single = replace(cfg, media_sets={"disques": MediaSet("disques", {"lundi": "a" * 32})})
    assert assess(single, [], at(2026, 5, 10), seen) == []


# -- lights -------------------------------------------------------------------------------

def test_lights() -> None:
    def p(kind: str) -> Problem:
        return Problem(kind, "j", "t", 0.0, {})

    assert light([]) == "ok"
    assert light([p("many_changes"), p("delivery_failed")]) == "warning"
    for kind in ("failed", "late", "no_disk", "copy_diverges", "check_failed", "drill_failed"):
        assert light([p("not_rotated"), p(kind)]) == "failed"


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=3 * DAY), min_size=1, max_size=12),
       lag=st.floats(min_value=0, max_value=3 * DAY))
def test_late_exactly_when_a_slot_and_the_window_went_by_without_success(gaps: list[float],
                                                                         lag: float) -> None:
    cfg = config()
    sched = cfg.jobs["officine"].schedule
    t = at(2026, 3, 20)
    history = []
    for g in gaps:
        t += g
        history.append(run(t))
    now = t + lag
    is_late = any(p.kind == "late" for p in assess(cfg, history, now))
    # Brute force: a slot s after the last run's start with s + window <= now.
    s = t - (t % 60) + 60
    expected = False
    while s + sched.window <= now:
        local = datetime.fromtimestamp(s, Z)
        if s > t and local.strftime("%H:%M") in sched.times:
            expected = True
            break
        s += 60
    assert is_late == expected
