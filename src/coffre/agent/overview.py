"""What `coffre status` (and later the local dashboard) shows: one line per job and target
(the primary repository, then each copy) with its light, when the last good backup, copy,
check and drill happened, the next run, and why it is not green; one line per continuous
capture and per standby the agent feeds; the recent screen messages; what the status store
could not read. Built from the configuration, the status store and
the health rules; no rendering here (cli/cmd_status.py renders it as text or JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from coffre.agent.health import Problem
from coffre.agent.model import Config, Continuity, Job
from coffre.agent.records import ContinuityStatus, DiskSighting, RunRecord
from coffre.agent.status import GOOD, SETTLED_ERRORS, Damage, StatusStore
from coffre.core.human import human_duration, human_size, human_when
from coffre.core.i18n import _, ngettext

LIGHTS = ("ok", "warning", "failed")
HISTORY = 62 * 86400.0  # the runs read for the view and the health rules (plus each job's last good run)
MESSAGES = 10  # screen messages shown under the table


ProblemLike = Problem  # what `agent.health.assess` returns


Assess = Callable[[Config, Sequence[RunRecord], float, Sequence[DiskSighting]], Sequence[ProblemLike]]
NextRun = Callable[[Sequence[str], Sequence[str], "float | None", str, float], "float | None"]
Light = Callable[[Sequence[ProblemLike]], str]


@dataclass(frozen=True)
class StatusLine:
    job: str
    target: str  # a repository or media set name
    role: str  # "primary" | "copy"
    light: str  # one of LIGHTS
    last_backup: float | None  # primary: the last backup that made its snapshot (its end)
    last_copy: float | None  # copy: the last copy made to it
    last_check: float | None  # primary: `check`; copy: `check --against`
    last_drill: float | None  # primary only
    next_run: float | None
    realtime: bool
    problems: tuple[ProblemLike, ...]
    why: tuple[str, ...]  # one short sentence per problem, in the current language


@dataclass(frozen=True)
class ContinuityLine:
    """A continuous capture (`role` "capture": the spool shipped to the repository), a
    standby fed from it (`role` "standby") or the files kept current on a standby machine
    (`role` "files"), with its light and a sentence saying where it is."""

    name: str
    repository: str
    role: str  # "capture" | "standby" | "files"
    light: str  # one of LIGHTS
    text: str  # « Capture continue officine : à jour (il y a 3 s) », in the current language
    status: ContinuityStatus | None  # None: the agent has not run it yet
    problems: tuple[ProblemLike, ...]
    why: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    """A screen message (the alerts' software-message channel)."""

    at: float
    level: str
    text: str


@dataclass(frozen=True)
class StatusReport:
    now: float
    timezone: str
    lines: tuple[StatusLine, ...]
    messages: tuple[Message, ...]
    general: tuple[str, ...]  # problems tied to no configured job (an alert channel failing...)
    damage: tuple[Damage, ...]  # what the status store could not read
    continuity: tuple[ContinuityLine, ...] = ()

    @property
    def ok(self) -> bool:
        """Everything green: every light, no other problem, a store read whole (a damaged
        record could hide a failure)."""
        return (all(line.light == "ok" for line in self.lines)
                and all(line.light == "ok" for line in self.continuity)
                and not self.general and not self.damage)


def status_report(config: Config, store: StatusStore | None, now: float,
                  messages: Iterable[Any] = (), *, assess: Assess | None = None,
                  next_run: NextRun | None = None, light: Light | None = None) -> StatusReport:
    """The status of every job of `config` at `now`, from `store` (None: no history yet).
    `messages`: screen messages as (at, level, text) tuples or objects with those attributes.
    `assess`, `next_run`, `light` default to agent.health's and policy.schedule's."""
    # Imported here, and cast: health.Problem is a ProblemLike, but a function taking
    # Problems is not a Light to mypy (arguments are contravariant).
    if assess is None or light is None:
        from coffre.agent import health  # type: ignore[attr-defined, unused-ignore]

        assess = assess or cast(Assess, health.assess)
        light = light or cast(Light, health.light)
    if next_run is None:
        from coffre.policy import schedule  # type: ignore[attr-defined, unused-ignore]

        next_run = cast(NextRun, schedule.next_run)
    assert assess is not None and light is not None and next_run is not None
    runs = _history(config, store, now)
    media = _media(config, store, now)
    problems = list(assess(config, runs, now, media))
    by_job: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_job.setdefault(r.job, []).append(r)
    tz = config.agent.timezone
    lines = []
    claimed: set[int] = set()
    for job in config.jobs.values():
        targets = [job.repository, *job.copies]
        s = job.schedule
        upcoming = next_run(s.times, s.days, s.every, tz, now)
        history = by_job.get(job.name, [])
        for target in targets:
            mine = tuple(p for i, p in enumerate(problems) if p.job == job.name and (
                p.target == target or (target == job.repository and p.target not in targets)))
            claimed.update(i for i, p in enumerate(problems) if any(p is m for m in mine))
            shade = "ok" if not mine else light(mine)
            lines.append(StatusLine(
                job=job.name, target=target, role="primary" if target == job.repository else "copy",
                light=shade if shade in LIGHTS else "warning",
                **_moments(job, target, history), next_run=upcoming, realtime=s.realtime,
                problems=mine, why=tuple(why(p, history, media, tz, now) for p in mine)))
    general = tuple(why(p, [], media, tz, now) for i, p in enumerate(problems) if i not in claimed)
    capture = continuity_lines(config, store.continuity() if store is not None else {}, now, light)
    return StatusReport(now=now, timezone=tz, lines=tuple(lines), messages=_messages(messages),
                        general=general, damage=tuple(store.damage) if store is not None else (),
                        continuity=capture)


def continuity_lines(config: Config, statuses: Mapping[str, ContinuityStatus], now: float,
                     light: Light | None = None) -> tuple[ContinuityLine, ...]:
    """A line per continuous capture and per standby of `config`, from their recorded status."""
    from coffre.agent import health  # type: ignore[attr-defined, unused-ignore]

    light = light or cast(Light, health.light)
    problems = health.continuity_problems(config, statuses, now)
    out = []
    for name, entry in config.continuity.items():
        st = statuses.get(name)
        for role, kinds, given in (("capture", ("capture_behind", "capture_gap"), entry.spool),
                                   ("standby", ("standby_behind", "standby_gap"), entry.standby),
                                   ("files", ("files_behind",), entry.files_target)):
            if given is None:
                continue
            mine = tuple(p for p in problems if p.job == name and p.kind in kinds)
            last = None if st is None else {"capture": st.last_pass, "standby": st.standby,
                                            "files": st.files}[role]
            started = last is not None
            shade = light(mine) if mine else ("ok" if started else "warning")
            if role == "files":
                text = _files_text(entry, st, now, config.agent.timezone)
            else:
                text = (_capture_text if role == "capture" else _standby_text)(entry, st, mine, now)
            out.append(ContinuityLine(name=name, repository=entry.repository, role=role,
                                      light=shade if shade in LIGHTS else "warning", text=text, status=st,
                                      problems=mine, why=tuple(why(p, [], [], config.agent.timezone, now)
                                                               for p in mine)))
    return tuple(out)


def _ago(moment: float, now: float) -> str:
    return _("{duration} ago").format(duration=human_duration(max(0, round(now - moment))))


def _capture_text(entry: Continuity, st: ContinuityStatus | None, problems: Sequence[ProblemLike],
                  now: float) -> str:
    name = entry.name
    if st is None or st.last_pass is None:
        return _("Continuous capture {name}: not started yet (is the agent running?)").format(name=name)
    behind = next((p for p in problems if p.kind == "capture_behind"), None)
    if behind is not None and st.source_error and not st.waiting:
        return _("Continuous capture {name}: the database is not being followed").format(name=name)
    if behind is not None:
        age = _detail(behind, "age", float)
        if age is not None and age > entry.max_backlog and st.waiting:
            return ngettext("Continuous capture {name}: behind, {n} piece waiting for {duration}",
                            "Continuous capture {name}: behind, {n} pieces waiting for {duration}",
                            st.waiting).format(name=name, n=st.waiting, duration=human_duration(round(age)))
        return _("Continuous capture {name}: no pass for {duration} (is the agent running?)").format(
            name=name, duration=human_duration(round(now - st.last_pass)))
    return _("Continuous capture {name}: up to date ({ago})").format(name=name, ago=_ago(st.last_pass, now))


def _standby_text(entry: Continuity, st: ContinuityStatus | None, problems: Sequence[ProblemLike],
                  now: float) -> str:
    name = entry.name
    sb = st.standby if st is not None else None
    if sb is None:
        return _("Standby {name}: not started yet (is the agent running?)").format(name=name)
    if sb.promoted:
        return _("Standby {name}: promoted, it is the primary now").format(name=name)
    if sb.gap:
        return _("Standby {name}: stopped at the missing log piece {gap}").format(name=name, gap=sb.gap)
    newest = (_("the newest piece was captured {ago}").format(ago=_ago(sb.newest_ns / 1e9, now))
              if sb.newest_ns else _("no piece yet"))
    if sb.behind_pieces:
        return ngettext("Standby {name}: {n} piece ({size}) waits in the repository; {newest}",
                        "Standby {name}: {n} pieces ({size}) wait in the repository; {newest}",
                        sb.behind_pieces).format(name=name, n=sb.behind_pieces,
                                                 size=human_size(sb.behind_bytes), newest=newest)
    if sb.last_pass is None:
        return _("Standby {name}: no pass has reached the repository yet").format(name=name)
    return _("Standby {name}: up to date with the repository ({ago}); {newest}").format(
        name=name, ago=_ago(sb.last_pass, now), newest=newest)


def _files_text(entry: Continuity, st: ContinuityStatus | None, now: float, tz: str) -> str:
    name = entry.name
    fs = st.files if st is not None else None
    if fs is None:
        return _("Standby files {name}: not started yet (is the agent running?)").format(name=name)
    if not fs.applied:
        return _("Standby files {name}: no snapshot applied yet").format(name=name)
    return _("Standby files {name}: snapshot of {when} applied ({ago})").format(
        name=name, when=snapshot_moment(fs.applied_ns, tz), ago=_ago(fs.applied_ns / 1e9, now))


def snapshot_moment(time_ns: int, tz: str) -> str:
    """A snapshot's time, short: « 30/11 12:00 » (English: "11-30 12:00")."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromtimestamp(time_ns / 1e9, ZoneInfo(tz))
    except (OverflowError, OSError, ValueError, KeyError):
        return "?"
    # Translators: a strftime format: day and month, then hours and minutes.
    return moment.strftime(_("%m-%d %H:%M"))


def _history(config: Config, store: StatusStore | None, now: float) -> list[RunRecord]:
    """The runs of the last HISTORY seconds, and each job's last good run however old (the
    staleness and the "last good backup" column need it)."""
    if store is None:
        return []
    runs = store.runs(since=now - HISTORY)
    for name in config.jobs:
        if not any(r.job == name and r.outcome in GOOD for r in runs):
            last = store.last_run(name, ok_only=True)
            if last is not None:
                runs.append(last)
    return sorted(runs, key=lambda r: (r.started, r.run_id or 0))


def _media(config: Config, store: StatusStore | None, now: float) -> list[DiskSighting]:
    if store is None:
        return []
    out: list[DiskSighting] = []
    for m in config.media_sets.values():
        out += store.sightings(m.name, since=now - max(HISTORY, 2 * m.rotate_after))
    return out


def _moments(job: Job, target: str, history: Sequence[RunRecord]) -> dict[str, float | None]:
    """When each kind of step last succeeded for this target: the step's end."""
    primary = target == job.repository

    def last(name: str) -> float | None:
        for r in reversed(history):
            if r.target != job.repository:  # a run to the repository the job used before
                continue
            step = r.step(name)
            if step is not None and step.ok:
                return step.ended
            if name == "backup" and not r.steps and r.outcome in GOOD:  # a run recorded without steps
                return r.ended if r.ended is not None else r.started
        return None

    if primary:
        return {"last_backup": last("backup"), "last_copy": None, "last_check": last("check"),
                "last_drill": last("drill")}
    return {"last_backup": None, "last_copy": last(f"copy:{target}"),
            "last_check": last(f"against:{target}"), "last_drill": None}


def _messages(messages: Iterable[Any]) -> tuple[Message, ...]:
    out = []
    for m in messages:
        if isinstance(m, tuple):
            at, level, text = m
        elif hasattr(m, "event"):  # the outbox's ScreenMessage: its one-line subject is shown
            at, level, text = m.at, "info" if m.event == "resolved" else "alert", m.subject or m.text
        else:
            at, level, text = m.at, m.level, m.text
        out.append(Message(float(at), str(level), str(text)))
    return tuple(out)


def _detail(p: ProblemLike, key: str, kind: type) -> Any:
    """A value of the problem's detail, if it has the expected type (detail is free-form)."""
    value = p.detail.get(key) if isinstance(p.detail, Mapping) else None
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def why(p: ProblemLike, history: Sequence[RunRecord], media: Sequence[DiskSighting], tz: str,
        now: float) -> str:
    """One short sentence for a person: what is wrong."""
    if p.kind == "failed":
        failing = next((r for r in reversed(history) if r.outcome in ("failed", "interrupted")), None)
        error = _detail(p, "error", str) or (failing.error if failing is not None else None)
        if failing is not None and not error:
            error = next((s.error for s in failing.steps if not s.ok and s.error), None)
        if error in SETTLED_ERRORS:
            error = _(error)
        if error:
            return _("the last backup failed: {error}").format(error=one_line(error))
        return _("the last backup failed")
    if p.kind == "late":
        good = [r for r in history if r.outcome in GOOD]
        if not good:
            return _("no backup has succeeded yet")
        return _("no backup has succeeded since {when}").format(
            when=human_when(good[-1].ended or good[-1].started, now, tz))
    if p.kind == "no_disk":
        return _("no disk of the set {set} is plugged in").format(set=p.target)
    if p.kind == "not_rotated":
        seen = [s for s in media if s.set_name == p.target]
        disk = _detail(p, "disk_name", str) or (seen[-1].disk_name if seen else "?")
        return _("the disk {disk} has stayed plugged in since {when}: change the disk").format(
            disk=disk, when=human_when(p.since, now, tz))
    if p.kind == "medium_full":
        medium = next((r.medium for r in reversed(history) if r.medium and r.medium[1] > 0), None)
        if medium is not None:
            return _("the backup disk is nearly full ({percent} % used)").format(
                percent=round(100 * medium[0] / medium[1]))
        return _("the backup disk is nearly full")
    if p.kind == "copy_diverges":
        return _("the copy {target} differs from the original: check it").format(target=p.target)
    if p.kind == "check_failed":
        return _("the last check of {target} found a problem").format(target=p.target)
    if p.kind == "drill_failed":
        return _("the last restore drill failed")
    if p.kind == "db_growth":
        name = _detail(p, "database", str)
        if name:
            return _("the database {name} grew abnormally").format(name=name)
        return _("a database grew abnormally")
    if p.kind == "many_changes":
        return _("an unusual share of files changed: possible ransomware, check the files")
    if p.kind == "delivery_failed":
        return _("an alert could not be delivered ({channel})").format(channel=p.target or "?")
    error = _detail(p, "error", str)
    if p.kind == "capture_behind":
        if error:
            return _("the pieces are not getting through to {target}: {error}").format(
                target=p.target, error=one_line(error))
        return _("the pieces are not getting through to {target}").format(target=p.target)
    if p.kind == "capture_gap":
        gaps = p.detail.get("gaps") if isinstance(p.detail, Mapping) else None
        names = [g for g in gaps if isinstance(g, str)][:3] if isinstance(gaps, list | tuple) else []
        count = _detail(p, "count", int) or len(names)
        return ngettext("a gap was recorded ({names}): point-in-time recovery across it is impossible; "
                        "take a new base backup",
                        "{n} gaps were recorded ({names}): point-in-time recovery across them is "
                        "impossible; take a new base backup", count).format(n=count, names=", ".join(names))
    if p.kind == "standby_behind":
        if error:
            return _("the standby is not being fed: {error}").format(error=one_line(error))
        pieces = _detail(p, "behind_pieces", int) or 0
        if pieces:
            return ngettext("{n} log piece stored in the repository has not reached the standby",
                            "{n} log pieces stored in the repository have not reached the standby",
                            pieces).format(n=pieces)
        return _("no pass of the standby was recorded (is the agent running?)")
    if p.kind == "files_behind":
        target = _detail(p, "target", str) or "?"
        if error:
            return _("the files of {target} are not being kept current: {error}").format(
                target=target, error=one_line(error))
        waiting = _detail(p, "pending_age", float)
        if waiting is not None:
            return _("a newer snapshot has waited {duration} without being applied to {target}").format(
                duration=human_duration(round(waiting)), target=target)
        return _("the repository has not been looked at for a newer snapshot (is the agent running?)")
    if p.kind == "standby_gap":
        return _("the log piece {gap} is missing from the repository: set the standby up again from a newer "
                 "backup (coffre standby init, sqlite-init or mysql-init)").format(
                     gap=_detail(p, "gap", str) or "?")
    return _("problem: {kind}").format(kind=p.kind)


def one_line(text: str, limit: int = 160) -> str:
    """A stored message as one short line (it may hold newlines, or be long)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
