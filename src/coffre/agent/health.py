"""Health: what is wrong, as a pure function of (configuration, run history, disk sightings,
now). `coffre status` shows these problems and the alerts mail them; nothing here reads a
clock, a file or the network, so the rules are tested by replaying histories.

Each problem has a kind, the job and the target (repository, media set or copy) it is about,
``since`` (the instant it began, as far as the history tells) and ``detail`` (what a message
needs: shares, dates, disk names). Its ``key`` stays the same while it lasts, which is what
the alerts de-duplicate on.

The step summaries in the history come from child processes' --json output: they are read
defensively (a field of the wrong type is ignored, never an exception).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from coffre.agent.model import Config, Continuity, Job, Schedule
from coffre.agent.records import ContinuityStatus, DiskSighting, RunRecord, StepResult
from coffre.policy.schedule import next_run

# Continuous capture's kinds (`continuity_problems`): its problems' `job` is the entry's name.
CONTINUITY_KINDS = ("capture_behind", "capture_gap", "standby_behind", "standby_gap", "files_behind")
KINDS = ("failed", "late", "no_disk", "not_rotated", "medium_full", "copy_diverges", "check_failed",
         "drill_failed", "db_growth", "many_changes", "delivery_failed", *CONTINUITY_KINDS)
# Backups are not being made, or cannot be trusted: red. The others are warnings: orange. A
# gap is red: no restore can cross it, and it does not mend by itself.
FAILING = frozenset({"failed", "late", "no_disk", "copy_diverges", "check_failed", "drill_failed",
                     "capture_gap", "standby_gap"})
STATUS_EVERY = 30.0  # seconds: a continuity entry's status is written at least this often

DAY = 86400.0
GROWTH_WINDOW = 28 * DAY  # the medium-growth forecast fits the samples of these last days
GROWTH_MIN_SPAN = DAY  # ... when they cover at least this long (fewer say nothing of a trend)
GROWTH_MIN_SAMPLES = 3
CHANGES_FACTOR = 5.0  # many_changes: this many times the job's usual share of changed files
CHANGES_USUAL_MIN = 3  # previous backups needed for a usual share; fewer: the threshold alone
CHANGES_USUAL_RUNS = 30  # the usual share is the median of at most this many previous backups
_SINCE_LOOKBACK = 20  # samples walked back to date a forecast's start

# Steps whose failure has its own kind: a run failing only because of them is not also "failed".
_OWN_KIND = ("check", "drill")


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS
    job: str
    target: str
    since: float
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.job}:{self.target}"


def light(problems: Iterable[Problem]) -> Literal["ok", "warning", "failed"]:
    """A job's (or target's) light: "failed" when backups are not being made or cannot be
    trusted, "warning" for anything else to look at, "ok" when there is nothing."""
    kinds = {p.kind for p in problems}
    if kinds & FAILING:
        return "failed"
    return "warning" if kinds else "ok"


def late(schedule: Schedule, tz: str, last_ok: float | None, now: float, *,
         first_seen: float | None = None, anchor: float | None = None) -> float | None:
    """The instant a job became late, or None if it is not: when a slot of its schedule came
    after its last successful run (``last_ok``, its start) and ``schedule.window`` went by
    since that slot. ``every`` slots are counted from ``anchor`` (the slot that successful run
    answered; default ``last_ok``). A job with no success at all is late ``window`` after
    ``first_seen`` (its first run's start, or when the agent first knew of it; None: never
    late, since nothing tells when it should have run). A schedule without slots (real time
    only) is never late."""
    if not ((schedule.times and schedule.days) or schedule.every):
        return None
    if last_ok is None:
        due = first_seen
    else:
        due = next_run(schedule.times, schedule.days, schedule.every, tz, last_ok,
                       anchor=last_ok if anchor is None else anchor)
    if due is None or due + schedule.window > now:
        return None
    return due + schedule.window


def assess(config: Config, runs: Sequence[RunRecord], now: float, media: Sequence[DiskSighting] = (),
           *, since: float | None = None) -> list[Problem]:
    """Every current problem of every job of ``config``, from the run history (any order, any
    jobs) and the disk sightings. ``since`` is when the agent started watching (its start
    time): a job that has no run at all is late ``window`` after it; None: such a job is never
    said to be late. Runs dated after ``now`` (a clock that went back) count as they are."""
    by_job: dict[str, list[RunRecord]] = {}
    for r in sorted(runs, key=lambda r: (r.started, r.run_id or 0)):
        by_job.setdefault(r.job, []).append(r)
    problems: list[Problem] = []
    for name, job in config.jobs.items():
        history = by_job.get(name, [])
        problems += _outcome(config, job, history)
        problems += _late(config, job, history, now, since)
        problems += _steps(job, history)
        problems += _many_changes(config, job, history)
    problems += _medium_full(config, runs)
    problems += _not_rotated(config, media)
    return problems


# -- outcomes ----------------------------------------------------------------------------

def _finished(history: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs that came to an end on their own ("interrupted" ones were stopped with the agent:
    they are retried, and staleness tells if that never happens)."""
    return [r for r in history if r.outcome in ("ok", "warning", "failed")]


def _backed_up(r: RunRecord) -> bool:
    """The run made its snapshot on the primary (whatever happened after)."""
    backup = r.step("backup")
    return r.outcome in ("ok", "warning") or (backup is not None and backup.ok)


def _no_disk(r: RunRecord) -> bool:
    step = r.step("media")
    return step is not None and not step.ok and step.summary.get("reason") == "no_disk"


def _own_kind(step: StepResult) -> bool:
    return step.name in _OWN_KIND or step.name.startswith("against:")


def _failing_step(r: RunRecord) -> StepResult | None:
    """The first failed step that has no kind of its own."""
    return next((s for s in r.steps if not s.ok and not _own_kind(s)), None)


def _generic_failure(r: RunRecord) -> bool:
    """The run failed, and not only because of steps that have a kind of their own (a check,
    a drill, a copy that diverges): those are reported as such, not twice."""
    backup = r.step("backup")
    if backup is not None and not backup.ok:
        return True
    failed = [s for s in r.steps if not s.ok]
    return r.outcome == "failed" and not (failed and all(_own_kind(s) for s in failed))


def _streak(runs: Sequence[RunRecord], bad: Callable[[RunRecord], bool]) -> list[RunRecord]:
    """The trailing runs for which ``bad`` holds, oldest first."""
    out: list[RunRecord] = []
    for r in reversed(runs):
        if not bad(r):
            break
        out.append(r)
    return out[::-1]


def _outcome(config: Config, job: Job, history: Sequence[RunRecord]) -> list[Problem]:
    finished = _finished(history)
    if not finished:
        return []
    last = finished[-1]
    if _no_disk(last):
        streak = _streak(finished, _no_disk)
        media = last.step("media")
        # The set the run found no disk of: the primary, or one of the copies.
        set_name = media.target if media is not None and media.target else job.repository
        mset = config.media_sets.get(set_name)
        return [Problem("no_disk", job.name, set_name, streak[0].started, {
            "set": set_name, "disks": sorted(mset.disks) if mset else [], "runs": len(streak),
            "last": last.started})]
    if not _generic_failure(last):
        return []
    streak = _streak(finished, _generic_failure)
    step = _failing_step(last)
    return [Problem("failed", job.name, last.target or job.repository, streak[0].started, {
        "error": last.error or (step.error if step else None), "step": step.name if step else None,
        "runs": len(streak), "last": last.started})]


def _late(config: Config, job: Job, history: Sequence[RunRecord], now: float,
          since: float | None) -> list[Problem]:
    oks = [r for r in history if r.outcome != "running" and _backed_up(r)]
    ok = oks[-1] if oks else None
    first_seen = history[0].started if history else since
    at = late(job.schedule, config.agent.timezone, ok.started if ok else None, now,
              first_seen=first_seen, anchor=(ok.slot if ok and ok.slot is not None else None))
    if at is None:
        return []
    return [Problem("late", job.name, job.repository, at, {
        "last_ok": ok.started if ok else None, "due": at - job.schedule.window,
        "window": job.schedule.window})]


# -- steps with a kind of their own ------------------------------------------------------

def _with_step(history: Sequence[RunRecord], name: str) -> list[RunRecord]:
    return [r for r in history if r.outcome != "running" and r.step(name) is not None]


def _step_problem(kind: str, job: Job, history: Sequence[RunRecord], name: str,
                  bad: Callable[[StepResult], bool], detail: Callable[[StepResult], dict[str, object]],
                  target: str | None = None) -> list[Problem]:
    runs = _with_step(history, name)

    def failing(r: RunRecord) -> bool:
        s = r.step(name)
        return s is not None and bad(s)

    streak = _streak(runs, failing)
    if not streak:
        return []
    step = streak[-1].step(name)
    assert step is not None
    return [Problem(kind, job.name, target or step.target or job.repository, streak[0].started,
                    {"runs": len(streak), "last": streak[-1].started, **detail(step)})]


def _error(step: StepResult) -> dict[str, object]:
    return {"error": step.error}


def _failed_databases(step: StepResult) -> dict[str, object]:
    names = [f"{d.get('engine')} {d.get('name')}" for d in _dicts(step.summary.get("databases"))
             if d.get("ok") is False]
    return {"error": step.error, "databases": names}


def _grown(step: StepResult) -> list[dict[str, Any]]:
    return [d for d in _dicts(step.summary.get("databases")) if d.get("unusual_growth") is True]


def _growth_detail(step: StepResult) -> dict[str, object]:
    out = []
    for d in _grown(step):
        sizes = [s["size"] for s in _dicts(d.get("sizes")) if isinstance(s.get("size"), int)]
        out.append({"engine": str(d.get("engine")), "name": str(d.get("name")),
                    "size": sizes[-1] if sizes else None,
                    "growth": sizes[-1] - sizes[-2] if len(sizes) >= 2 else None})
    return {"databases": out}


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _steps(job: Job, history: Sequence[RunRecord]) -> list[Problem]:
    out = _step_problem("check_failed", job, history, "check", lambda s: not s.ok, _error)
    for copy in job.copies:
        out += _step_problem("copy_diverges", job, history, f"against:{copy}", lambda s: not s.ok,
                             _error, target=copy)
    out += _step_problem("drill_failed", job, history, "drill", lambda s: not s.ok, _failed_databases)
    # `coffre stats --databases --json` flags each database with "unusual_growth".
    out += _step_problem("db_growth", job, history, "stats", lambda s: s.ok and bool(_grown(s)),
                         _growth_detail)
    return out


# -- a share of changed files far above the usual one (a ransomware signal) ---------------

def _many_changes(config: Config, job: Job, history: Sequence[RunRecord]) -> list[Problem]:
    backups = [r for r in history if r.outcome != "running" and _backed_up(r) and r.files_total > 0]
    if not backups:
        return []
    last = backups[-1]
    # On a rotating disk the parent is the previous backup to that same disk; the first backup
    # to a repository finds every file new, which says nothing.
    previous = [r for r in backups[:-1] if r.disk == last.disk][-CHANGES_USUAL_RUNS:]
    if not previous:
        return []
    share = last.files_changed / last.files_total
    if share <= config.alerts.changed_files_share:
        return []
    usual = None
    if len(previous) >= CHANGES_USUAL_MIN:
        usual = statistics.median(r.files_changed / r.files_total for r in previous)
        if share <= CHANGES_FACTOR * usual:
            return []
    return [Problem("many_changes", job.name, job.repository, last.started, {
        "share": share, "usual": usual, "changed": last.files_changed, "total": last.files_total,
        "snapshot": last.snapshot, "threshold": config.alerts.changed_files_share})]


# -- the primary's medium filling up ------------------------------------------------------

def medium_samples(runs: Sequence[RunRecord], target: str) -> list[tuple[float, int, int]]:
    """(instant, used, total) of the target's medium, oldest first; on a media set, of the
    disk measured last only."""
    measured = sorted((r for r in runs if r.target == target and r.outcome != "running"
                       and r.medium is not None), key=lambda r: (r.started, r.run_id or 0))
    if not measured:
        return []
    disk = measured[-1].disk
    out = []
    for r in measured:
        used, total = r.medium or (0, 0)
        if r.disk == disk and isinstance(used, int) and isinstance(total, int) and used >= 0 and total > 0:
            out.append((r.ended if r.ended is not None else r.started, used, total))
    return out


def forecast_days(samples: Sequence[tuple[float, int, int]]) -> float | None:
    """Days until the medium is full at the pace of a least-squares line through the samples
    of the last ``GROWTH_WINDOW``; None when it does not grow or there is too little to tell."""
    if not samples:
        return None
    end, used, total = samples[-1]
    recent = [(t, u) for t, u, _ in samples if t >= end - GROWTH_WINDOW]
    if len(recent) < GROWTH_MIN_SAMPLES or recent[-1][0] - recent[0][0] < GROWTH_MIN_SPAN:
        return None
    slope = statistics.linear_regression([t for t, _ in recent], [u for _, u in recent]).slope  # bytes/s
    if slope <= 0:
        return None
    return max(0.0, (total - used) / slope / DAY)


def _primaries(config: Config) -> dict[str, str]:
    """Target -> the first job (in the file's order) writing to it: problems of a shared
    medium or media set are reported once, on that job."""
    out: dict[str, str] = {}
    for job in config.jobs.values():
        out.setdefault(job.repository, job.name)
    return out


def _medium_full(config: Config, runs: Sequence[RunRecord]) -> list[Problem]:
    out = []
    for target, job in _primaries(config).items():
        found = _medium_problem(medium_samples(runs, target), config.alerts.medium_full_share,
                                config.alerts.medium_full_days)
        if found is not None:
            since, detail = found
            out.append(Problem("medium_full", job, target, since, detail))
    return out


def _medium_problem(samples: Sequence[tuple[float, int, int]], limit_share: float,
                    limit_days: float) -> tuple[float, dict[str, object]] | None:
    """(since, detail) when the medium is fuller than ``limit_share`` or will be full within
    ``limit_days`` at its recent pace."""
    if not samples:
        return None
    _at, used, total = samples[-1]
    detail: dict[str, object] = {"used": used, "total": total, "share": used / total, "days_left": None}
    if used / total > limit_share:
        first = _streak_of(samples, lambda i: samples[i][1] / samples[i][2] > limit_share)
        return samples[first][0], detail
    days = forecast_days(samples)
    if days is None or days > limit_days:
        return None

    def filling(i: int) -> bool:
        d = forecast_days(samples[:i + 1])
        return d is not None and d <= limit_days

    first = _streak_of(samples, filling, limit=_SINCE_LOOKBACK)
    return samples[first][0], {**detail, "days_left": days}


def _streak_of(samples: Sequence[object], holds: Callable[[int], bool], limit: int | None = None) -> int:
    """The index of the first of the trailing samples for which ``holds`` (the last one does),
    looking back at most ``limit`` samples."""
    i = len(samples) - 1
    stop = 0 if limit is None else max(0, len(samples) - limit)
    while i > stop and holds(i - 1):
        i -= 1
    return i


# -- removable disks left in place --------------------------------------------------------

def _not_rotated(config: Config, media: Sequence[DiskSighting]) -> list[Problem]:
    users: dict[str, str] = {}  # set -> the first job writing to it (primary or copy)
    for job in config.jobs.values():
        for name in (job.repository, *job.copies):
            if name in config.media_sets:
                users.setdefault(name, job.name)
    out = []
    for set_name, user in users.items():
        mset = config.media_sets[set_name]
        if len(mset.disks) < 2:  # nothing to rotate with
            continue
        seen = sorted((s for s in media if s.set_name == set_name), key=lambda s: s.at)
        if not seen:
            continue
        last = seen[-1]
        first = last
        for s in reversed(seen):
            if s.disk_id != last.disk_id:
                break
            first = s
        # Sightings happen at runs: the disk is known present from the first to the last one.
        present = last.at - first.at
        if present <= mset.rotate_after:
            continue
        out.append(Problem("not_rotated", user, set_name, first.at + mset.rotate_after, {
            "set": set_name, "disk": last.disk_name, "disk_id": last.disk_id, "since": first.at,
            "days": present / DAY, "rotate_after_days": mset.rotate_after / DAY}))
    return out


# -- continuous capture -------------------------------------------------------------------

def continuity_problems(config: Config, statuses: Mapping[str, ContinuityStatus],
                        now: float) -> list[Problem]:
    """The problems of each `[continuity.NAME]` entry from its last recorded status (an entry
    with no status yet has none: `coffre status` says it has not started).

    - capture_behind: a piece has waited in the spool longer than `max_backlog` (the
      repository cannot be reached...), or no pass was recorded for that long (the agent or
      its thread stopped), or the agent's own capture (`sqlite`, `mysql`) has failed for
      that long;
    - capture_gap: a gap was shipped and no newer base backup covers it yet;
    - standby_behind: pieces stored in the repository have waited longer than `max_lag`
      without being staged or applied, or the standby's passes have failed for that long,
      or no pass was recorded for that long (the agent or its thread stopped). A repository
      with nothing new is no alert: a primary with nothing to write (the night, a closed
      day) writes no log, and its own agent alerts when its capture stops;
    - standby_gap: the standby stopped at a missing piece and cannot go further;
    - files_behind: the files kept current (`files_target`) lack a newer snapshot that has
      waited longer than `max_lag`, or the syncs have failed for that long, or no look at the
      repository was recorded for that long (the agent or its thread stopped)."""
    out: list[Problem] = []
    for name, entry in config.continuity.items():
        st = statuses.get(name)
        if st is None:
            continue
        if entry.spool:
            out += _capture(entry, st, now)
        if entry.standby:
            out += _standby(entry, st, now)
        if entry.files_target:
            out += _files(entry, st, now)
    return out


def _capture(entry: Continuity, st: ContinuityStatus, now: float) -> list[Problem]:
    out = []
    waited = None if st.oldest_ns is None else now - st.oldest_ns / 1e9
    silent_from = (st.last_pass if st.last_pass is not None else st.first_seen) \
        + entry.max_backlog + max(entry.every, STATUS_EVERY)
    starts = []
    if waited is not None and waited > entry.max_backlog:
        starts.append(now - waited + entry.max_backlog)
    if now > silent_from:
        starts.append(silent_from)
    if st.source_error is not None and st.source_error_since is not None \
            and now > st.source_error_since + entry.max_backlog:
        starts.append(st.source_error_since + entry.max_backlog)
    if starts:
        out.append(Problem("capture_behind", entry.name, entry.repository, min(starts), {
            "waiting": st.waiting, "bytes": st.waiting_bytes, "age": waited, "last_pass": st.last_pass,
            "max_backlog": entry.max_backlog, "error": st.error or st.source_error}))
    if st.gaps:
        out.append(Problem("capture_gap", entry.name, entry.repository, min(g.at for g in st.gaps), {
            "gaps": [g.name for g in st.gaps[:10]], "count": len(st.gaps)}))
    return out


def _standby(entry: Continuity, st: ContinuityStatus, now: float) -> list[Problem]:
    sb = st.standby
    if sb is not None and sb.promoted:
        return []
    if sb is not None and sb.gap:
        return [Problem("standby_gap", entry.name, entry.repository,
                        sb.gap_since if sb.gap_since is not None else st.first_seen,
                        {"gap": sb.gap, "standby": entry.standby, "error": sb.error})]
    passed = sb.last_pass if sb is not None and sb.last_pass is not None else st.first_seen
    starts = [passed + entry.max_lag + max(entry.every, STATUS_EVERY)]  # no pass recorded: the thread stopped
    if sb is not None and sb.behind_since is not None:
        starts.append(sb.behind_since + entry.max_lag)  # pieces waiting, not applied
    if sb is not None and sb.error is not None:
        starts.append((sb.error_since if sb.error_since is not None else now) + entry.max_lag)
    since = min(starts)
    if since >= now:
        return []
    return [Problem("standby_behind", entry.name, entry.repository, since, {
        "lag": now - sb.newest_ns / 1e9 if sb is not None and sb.newest_ns else None,
        "behind_pieces": sb.behind_pieces if sb is not None else 0,
        "behind_bytes": sb.behind_bytes if sb is not None else 0,
        "last_pass": sb.last_pass if sb is not None else None,
        "standby": entry.standby, "max_lag": entry.max_lag, "error": sb.error if sb is not None else None})]


def _files(entry: Continuity, st: ContinuityStatus, now: float) -> list[Problem]:
    fs = st.files
    looked = fs.last_check if fs is not None and fs.last_check is not None else st.first_seen
    starts = [looked + entry.files_every + entry.max_lag + STATUS_EVERY]  # no look recorded
    if fs is not None and fs.pending_since is not None:
        starts.append(fs.pending_since + entry.max_lag)  # a newer snapshot not applied
    if fs is not None and fs.error is not None:
        starts.append((fs.error_since if fs.error_since is not None else now) + entry.max_lag)
    since = min(starts)
    if since >= now:
        return []
    return [Problem("files_behind", entry.name, entry.repository, since, {
        "lag": now - fs.applied_ns / 1e9 if fs is not None and fs.applied_ns else None,
        "applied": fs.applied if fs is not None else "", "newest": fs.newest if fs is not None else "",
        "pending_age": now - fs.pending_since if fs is not None and fs.pending_since is not None else None,
        "last_check": fs.last_check if fs is not None else None, "target": entry.files_target,
        "max_lag": entry.max_lag, "error": fs.error if fs is not None else None})]
