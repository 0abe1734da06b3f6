"""Pure builders of the pharmacy page: from the configuration, the status report
(agent/overview.py), the runs and the disk sightings to the pages' contexts (contexts.py).
Nothing here reads a clock, a file or the store: the tests feed them histories.

The light says only what the history shows: « vérifiée » only when a check or a comparison of
that copy really succeeded; « OK » only when every job has made a backup and nothing is wrong."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup

from coffre.agent import overview
from coffre.agent.health import FAILING, GROWTH_WINDOW, forecast_days, medium_samples
from coffre.agent.model import Config
from coffre.agent.overview import StatusLine, StatusReport
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.agent.scheduler import trigger_words
from coffre.agent.status import SETTLED_ERRORS
from coffre.core import i18n
from coffre.core.errors import EXIT_LOCKED, EXIT_NO_REPOSITORY, EXIT_WRONG_PASSWORD
from coffre.core.human import human_size
from coffre.core.i18n import _
from coffre.web import plots
from coffre.web.local.contexts import (
    CheckRow,
    DiskRow,
    JobHistory,
    JobPlots,
    Light,
    MessageRow,
    PlotBlock,
    RunRow,
    StepRow,
    TargetRow,
)
from coffre.web.render import format_day, format_duration, format_recent, local_time

DAY = 86400.0
COLORS = {"ok": "green", "warning": "orange", "failed": "red"}
RunUrl = Callable[[int], str]


# --------------------------------------------------------------------------- words

def light_words(color: str) -> str:
    return {"green": _("OK"), "orange": _("To check"), "red": _("Failing")}.get(color, color)


def step_words(name: str) -> str:
    """A step's name for a pharmacist."""
    base, _sep, target = name.partition(":")
    words = {
        "media": _("looking for the disk"), "backup": _("backup"), "forget": _("sorting out old backups"),
        "check": _("checking the stored data"), "list": _("choosing files to compare"),
        "verify": _("comparing with the original files"), "drill": _("restore drill of the databases"),
        "stats": _("measuring the databases"),
    }
    if base == "copy" and target:
        return _("copy to {target}").format(target=target)
    if base == "against" and target:
        return _("comparing the copy {target}").format(target=target)
    if base == "forget" and target:
        return _("sorting out old backups on {target}").format(target=target)
    return words.get(name, name)


def outcome_words(outcome: str) -> str:
    return {"ok": _("succeeded"), "warning": _("succeeded, some files unreadable"), "failed": _("failed"),
            "interrupted": _("interrupted"), "running": _("running")}.get(outcome, outcome)



def one_line(text: str | None, limit: int = 300) -> str | None:
    if text is None:
        return None
    if text in SETTLED_ERRORS:  # stored in English, shown in the page's language
        return _(text)
    return overview.one_line(text, limit)


# --------------------------------------------------------------------------- the light

def _failing_step(runs: Sequence[RunRecord], job: str) -> StepResult | None:
    """The failed step of the job's last finished run that failed."""
    for r in reversed(runs):
        if r.job != job or r.outcome == "running":
            continue
        if r.outcome not in ("failed", "interrupted"):
            return None
        return next((s for s in r.steps if not s.ok), None)
    return None


def reason(line: StatusLine, index: int, runs: Sequence[RunRecord]) -> str:
    """What is wrong, in plain words: the destination that does not answer rather than the
    command's message when the history tells it."""
    problem = line.problems[index]
    if problem.kind == "failed":
        step = _failing_step(runs, line.job)
        if step is not None:
            where = step.target or line.target
            if step.exit_code == EXIT_NO_REPOSITORY:
                return _("the destination {target} cannot be reached (switched off, unplugged or not "
                         "mounted)").format(target=where)
            if step.exit_code == EXIT_WRONG_PASSWORD:
                return _("the password of {target} is refused").format(target=where)
            if step.exit_code == EXIT_LOCKED:
                return _("{target} is busy with another operation").format(target=where)
    if problem.kind == "not_rotated":
        days, disk = problem.detail.get("days"), problem.detail.get("disk")
        if isinstance(days, int | float) and isinstance(disk, str):
            n = int(days)
            return i18n.ngettext("the disk {disk} has not been changed for {n} day",
                                 "the disk {disk} has not been changed for {n} days", n).format(
                                     disk=disk, n=n)
    return line.why[index]


def _advice(kind: str, target: str, exit_code: int | None) -> str:
    if kind == "failed" and exit_code == EXIT_NO_REPOSITORY:
        return _("Check that {target} is switched on and connected, then press « Back up now ».").format(
            target=target)
    return {
        "failed": _("Press « Back up now » to try again; if it fails again, call for help."),
        "late": _("Check that this server stayed on and that the Coffre agent runs; then press « Back up "
                  "now »."),
        "no_disk": _("Plug in one of the disks of the set {target}.").format(target=target),
        "not_rotated": _("Take this disk away from the pharmacy and plug in the other one."),
        "medium_full": _("The backup disk is filling up: ask for a larger one or for fewer backups to be "
                         "kept."),
        "copy_diverges": _("A copy differs from the original: call for help before relying on it."),
        "check_failed": _("The stored data failed a check: call for help."),
        "drill_failed": _("The restore drill failed: call for help."),
        "db_growth": _("A database grew abnormally: tell your software vendor or your IT provider."),
        "many_changes": _("Many files changed at once: check that your files open normally (possible "
                          "ransomware) and call for help at once."),
        "delivery_failed": _("Alerts by e-mail are not delivered: tell your IT provider."),
        "capture_behind": _("Check that {target} is switched on and reachable: the database's logs wait on "
                            "this server meanwhile.").format(target=target),
        "capture_gap": _("A full backup of the database is needed to restore past the gap: call for "
                         "help."),
        "standby_behind": _("Check that the main server and {target} are switched on and reachable.").format(
            target=target),
        "standby_gap": _("The standby must be set up again: call for help."),
        "files_behind": _("Check that the standby machine and {target} are switched on and reachable, and "
                          "that its folder can be written.").format(target=target),
    }.get(kind, _("Call for help."))


# The problem that heads a red light: the cause before its consequences (a failing backup
# makes the job late too).
_FIRST = ("failed", "no_disk", "check_failed", "copy_diverges", "drill_failed", "late")


def light_of(report: StatusReport, runs: Sequence[RunRecord], contact: str) -> Light:
    """The one light: red when backups are not made or cannot be trusted, orange when
    something needs looking at (or nothing was backed up yet), green otherwise."""
    now, tz = report.now, report.timezone
    failing: list[tuple[int, float, str, str | None]] = []  # (rank, since, reason, advice)
    warning: list[tuple[int, float, str, str | None]] = []
    for line in report.lines:
        kinds = {p.kind for p in line.problems}
        for i, p in enumerate(line.problems):
            step = _failing_step(runs, line.job) if p.kind == "failed" else None
            words = reason(line, i, runs)
            target = step.target if step is not None and step.target else line.target
            advice: str | None = _advice(p.kind, target, step.exit_code if step else None)
            if p.kind == "late" and "failed" in kinds:
                advice = None  # late because it fails: the failure's advice says what to do
            rank = _FIRST.index(p.kind) if p.kind in _FIRST else len(_FIRST)
            (failing if p.kind in FAILING else warning).append((rank, p.since, words, advice))
    for c in report.continuity:  # continuous capture and the standby: their line says where they are
        for p, words in zip(c.problems, c.why, strict=True):
            (failing if p.kind in FAILING else warning).append(
                (len(_FIRST), p.since, f"{c.text} ({words})", _advice(p.kind, c.repository, None)))
        if not c.problems and c.light != "ok":
            warning.append((len(_FIRST), now, c.text, None))
    for text in report.general:
        warning.append((0, now, text, _advice("delivery_failed", "", None)))
    if report.damage:
        warning.append((0, now, _("part of the history could not be read"), _("Call for help.")))
    never = [ln.job for ln in report.lines if ln.role == "primary" and ln.last_backup is None]
    if never and not failing:
        for job in never:
            warning.append((0, now, _("the job {job} has made no backup yet").format(job=job),
                            _("Press « Back up now » to make the first one.")))
    failing.sort(key=lambda item: (item[0], item[1]))
    items = failing + warning
    reasons = _unique([words for _r, _s, words, _a in items])
    advice_list = tuple(_unique([a for _r, _s, _w, a in items if a]))
    if failing:
        _rank, since, head, _a = failing[0]
        headline = _("Failing since {when}: {reason}").format(when=format_recent(since, now, tz), reason=head)
        return Light("red", headline, tuple(r for r in reasons if r != head), advice_list, contact)
    if warning:
        head = warning[0][2]
        headline = _("To check: {reason}").format(reason=head)
        return Light("orange", headline, tuple(r for r in reasons if r != head), advice_list, contact)
    return Light("green", _green_headline(report), (), (), contact)


def _green_headline(report: StatusReport) -> str:
    now, tz = report.now, report.timezone
    lasts = [ln.last_backup for ln in report.lines if ln.role == "primary" and ln.last_backup is not None]
    if not lasts:  # no job at all
        return _("Backups OK")
    parts = [_("last backup {when}").format(when=format_recent(max(lasts), now, tz))]
    copies: dict[str, StatusLine] = {}
    for ln in report.lines:
        if ln.role == "copy":
            copies.setdefault(ln.target, ln)
    for target, ln in copies.items():
        if ln.last_check is not None:
            parts.append(_("copy {target} verified").format(target=target))
        elif ln.last_copy is not None:
            parts.append(_("copy {target} made, not verified").format(target=target))
        else:
            parts.append(_("no copy to {target} yet").format(target=target))
    if not copies:
        checked = [ln.last_check for ln in report.lines if ln.role == "primary" and ln.last_check is not None]
        parts.append(_("data read back and verified") if checked else _("not verified yet"))
    return _("Backups OK — {details}").format(details=", ".join(parts))


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def target_rows(report: StatusReport) -> tuple[TargetRow, ...]:
    out = []
    for ln in report.lines:
        color = COLORS.get(ln.light, "orange")
        out.append(TargetRow(
            job=ln.job, target=ln.target, role=ln.role, color=color, light_words=light_words(color),
            last=ln.last_backup if ln.role == "primary" else ln.last_copy, last_check=ln.last_check,
            next_run=ln.next_run, realtime=ln.realtime, why=ln.why))
    return tuple(out)


def message_rows(report: StatusReport) -> tuple[MessageRow, ...]:
    return tuple(MessageRow(m.at, m.level, m.text) for m in report.messages)


# --------------------------------------------------------------------------- history

def step_row(s: StepResult) -> StepRow:
    return StepRow(step_words(s.name), s.target, s.ok, s.started, max(0.0, s.ended - s.started),
                   one_line(s.error))


def run_row(r: RunRecord, run_url: RunUrl | None = None) -> RunRow:
    return RunRow(
        id=r.run_id, job=r.job, target=r.target, trigger_words=trigger_words(r.trigger), started=r.started,
        duration=r.duration, outcome=r.outcome, outcome_words=outcome_words(r.outcome),
        bytes_read=r.bytes_read, bytes_sent=r.bytes_sent, files_total=r.files_total,
        files_changed=r.files_changed, snapshot=r.snapshot, error=one_line(r.error),
        steps=tuple(step_row(s) for s in r.steps),
        url=run_url(r.run_id) if run_url is not None and r.run_id is not None else None)


def _is_check(name: str) -> bool:
    return name in ("check", "verify", "drill") or name.startswith("against:")


def job_history(config: Config, runs: Sequence[RunRecord], run_url: RunUrl) -> tuple[JobHistory, ...]:
    """Per job of the configuration (then jobs only the history knows), newest runs first."""
    names = list(config.jobs) + sorted({r.job for r in runs} - set(config.jobs))
    out = []
    for name in names:
        mine = [r for r in runs if r.job == name]
        checks = [CheckRow(name, step_words(s.name), s.target, s.ended, s.ok, one_line(s.error),
                           run_url(r.run_id) if r.run_id is not None else None)
                  for r in mine for s in r.steps if _is_check(s.name)]
        out.append(JobHistory(name, tuple(run_row(r, run_url) for r in reversed(mine)),
                              tuple(sorted(checks, key=lambda c: -c.at))))
    return tuple(out)


def disk_rows(sightings: Sequence[DiskSighting]) -> tuple[DiskRow, ...]:
    """The media rotation: each stretch a disk stayed plugged in, newest first."""
    out: list[DiskRow] = []
    by_set: dict[str, list[DiskSighting]] = {}
    for s in sorted(sightings, key=lambda s: s.at):
        by_set.setdefault(s.set_name, []).append(s)
    for set_name, seen in by_set.items():
        current: DiskRow | None = None
        current_id = None
        for s in seen:
            if current is not None and s.disk_id == current_id:
                current = DiskRow(set_name, current.disk_name, current.first, s.at)
                continue
            if current is not None:
                out.append(current)
            current, current_id = DiskRow(set_name, s.disk_name, s.at, s.at), s.disk_id
        if current is not None:
            out.append(current)
    return tuple(sorted(out, key=lambda d: -d.last))


# --------------------------------------------------------------------------- plots

def _short_day(tz: str) -> Callable[[float], str]:
    from babel.dates import format_date

    def label(t: float) -> str:
        return str(format_date(local_time(t, tz).date(), format="d MMM", locale=i18n.locale_name()))

    return label


def _size_label(v: float) -> str:
    return human_size(v)


def _duration_label(v: float) -> str:
    return format_duration(v)


def _local_day_start(t: float, tz: str) -> float:
    moment = datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(tz))
    return moment.replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


def medium_plot(config: Config, target: str, runs: Sequence[RunRecord], now: float) -> PlotBlock:
    """The medium's use over time, its growth trend (the health rule's own least-squares fit,
    over its window) and the date it will be full."""
    tz = config.agent.timezone
    title = _("Space used on {target}").format(target=target)
    samples = medium_samples(runs, target)
    if not samples:
        return PlotBlock(title, Markup(""), _("no measurement yet"))
    total = samples[-1][2]
    days = forecast_days(samples)
    end = samples[-1][0]
    recent = [(t, float(u)) for t, u, _tot in samples if t >= end - GROWTH_WINDOW]
    trend = plots.fit(recent, limit=float(total)) if days is not None else None
    full_at = end + days * DAY if days is not None else None
    until = min(full_at, now + 365 * DAY) if full_at is not None else None
    svg = plots.line_plot(title, [(t, float(u)) for t, u, _tot in samples], _size_label, _short_day(tz),
                          limit=float(total), trend=trend, until=until)
    used = samples[-1][1]
    note = _("{used} used of {total} ({percent} %)").format(
        used=human_size(used), total=human_size(total), percent=round(100 * used / total))
    if full_at is not None:
        day = format_day(local_time(full_at, tz))
        note += " — " + _("full around {day} at the current pace").format(day=day)
    else:
        note += " — " + _("no growth trend to tell when it will be full")
    return PlotBlock(title, svg, note)


def database_plot(config: Config, runs: Sequence[RunRecord]) -> PlotBlock | None:
    points = [(r.ended or r.started, float(sum(r.db_sizes.values()))) for r in runs
              if r.db_sizes and r.outcome != "running"]
    if not points:
        return None
    title = _("Size of the databases")
    svg = plots.line_plot(title, points, _size_label, _short_day(config.agent.timezone))
    return PlotBlock(title, svg, _("now {size}").format(size=human_size(points[-1][1])))


def sent_plot(config: Config, runs: Sequence[RunRecord]) -> PlotBlock:
    """Bytes sent per day: only what changed travels (the byte-level incremental made visible)."""
    tz = config.agent.timezone
    title = _("Data sent per day")
    per_day: dict[float, float] = {}
    for r in runs:
        if r.outcome != "running":
            day = _local_day_start(r.started, tz)
            per_day[day] = per_day.get(day, 0.0) + r.bytes_sent
    bars = sorted(per_day.items())
    read = sum(r.bytes_read for r in runs)
    sent = sum(r.bytes_sent for r in runs)
    note = ""
    if runs:
        note = _("{sent} sent for {read} read").format(sent=human_size(sent), read=human_size(read))
    return PlotBlock(title, plots.bar_plot(title, bars, _size_label, _short_day(tz)), note)


def duration_plot(config: Config, runs: Sequence[RunRecord]) -> PlotBlock:
    title = _("Duration of each backup")
    done = [r for r in runs if r.duration is not None and r.outcome != "running"]
    bars = [(r.started, float(r.duration or 0.0)) for r in done]
    bad = [r.outcome in ("failed", "interrupted") for r in done]
    note = _("failed runs in red") if any(bad) else ""
    return PlotBlock(title, plots.bar_plot(title, bars, _duration_label, _short_day(config.agent.timezone),
                                           bad=bad), note)


def job_plots(config: Config, runs: Sequence[RunRecord], now: float) -> tuple[JobPlots, ...]:
    out = []
    names = list(config.jobs)
    for name in names:
        job = config.jobs[name]
        mine = [r for r in runs if r.job == name]
        blocks = [medium_plot(config, job.repository, [r for r in runs if r.target == job.repository], now)]
        db = database_plot(config, mine)
        if db is not None:
            blocks.append(db)
        blocks += [sent_plot(config, mine), duration_plot(config, mine)]
        out.append(JobPlots(name, tuple(blocks)))
    return tuple(out)
