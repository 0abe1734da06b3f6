"""What the agent would do, and when: `coffre config check` prints it after validating the file."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from coffre.agent import standbys
from coffre.agent.media import present_disks
from coffre.agent.model import Config, Job
from coffre.core.human import human_duration
from coffre.core.i18n import _, language, locale_name, ngettext
from coffre.policy.schedule import next_run


def moment_text(ts: float, tz: str) -> str:
    """An instant in the agent's time zone: "2026-12-01 12:30" / « 1 déc. 2026 12:30 »."""
    moment = datetime.fromtimestamp(ts, ZoneInfo(tz))
    if language() == "en":
        return moment.strftime("%Y-%m-%d %H:%M")
    from babel.dates import format_datetime

    return str(format_datetime(moment, "EEE d MMM y HH:mm", tzinfo=moment.tzinfo, locale=locale_name()))


def _schedule(job: Job) -> str:
    s = job.schedule
    parts: list[str] = []
    if s.times:
        days = "" if len(s.days) == 7 else " (" + ", ".join(s.days) + ")"
        parts.append(_("at {times}").format(times=", ".join(s.times)) + days)
    if s.every:
        parts.append(_("every {duration}").format(duration=human_duration(s.every)))
    if s.realtime:
        parts.append(_("in real time ({debounce} after the last change, at most once every {interval})")
                     .format(debounce=human_duration(s.debounce), interval=human_duration(s.min_interval)))
    return _("; ").join(parts) or _("only when run by hand")


def _target(config: Config, name: str) -> str:
    if name in config.repositories:
        return _("{name} ({url})").format(name=name, url=config.repositories[name].url)
    media = config.media_sets[name]
    present = present_disks(media)
    if present:
        state = _("disk {disk} plugged in").format(disk=present[0].disk_name)
    else:
        state = _("no disk plugged in now")
    return _("{name} (removable disks {disks}: {state})").format(
        name=name, disks=", ".join(media.disks), state=state)


def describe(config: Config, now: float) -> list[str]:
    tz = config.agent.timezone
    lines = [_("{path}: valid").format(path=config.path),
             ngettext("{n} job, state and status in {dir}", "{n} jobs, state and status in {dir}",
                      len(config.jobs)).format(n=len(config.jobs), dir=config.agent.state_dir)]
    for name, job in config.jobs.items():
        s = job.schedule
        lines.append("")
        lines.append(_("job {job}").format(job=name))
        what = [*job.paths, *(f"postgres {d}" for d in job.postgres), *(f"mysql {d}" for d in job.mysql),
                *(f"sqlite {d}" for d in job.sqlite)]
        lines.append("  " + _("backs up: {what}").format(what=", ".join(what) or "-"))
        lines.append("  " + _("into: {target}").format(target=_target(config, job.repository)))
        for copy in job.copies:
            lines.append("  " + _("then copies to: {target}").format(target=_target(config, copy)))
        lines.append("  " + _("when: {schedule}").format(schedule=_schedule(job)))
        nxt = next_run(s.times, s.days, s.every, tz, now)
        if nxt is not None:
            lines.append("  " + _("next run: {when}").format(when=moment_text(nxt, tz)))
        keep = [f"{k.removeprefix('keep_')}={v}" for k, v in vars(job.retention).items()
                if k.startswith("keep_") and v is not None]
        if job.retention.max_size:
            keep.append(f"max_size={job.retention.max_size}")
        lines.append("  " + (_("keeps: {policy}").format(policy=", ".join(keep)) if keep
                             else _("keeps: every snapshot (no retention)")))
        v = job.verification
        checks = []
        if v.check_subset:
            checks.append(_("reads back {share} of the data").format(share=v.check_subset))
        if v.verify_sample:
            checks.append(_("compares {share:.0%} of the files with the originals").format(
                share=v.verify_sample))
        if v.drill_every and (job.postgres or job.mysql or job.sqlite):
            checks.append(_("drills the databases every {duration}").format(
                duration=human_duration(v.drill_every)))
        if job.copies and v.check_copies:
            checks.append(_("checks the copies against the primary"))
        lines.append("  " + _("verifies: {checks}").format(checks=_("; ").join(checks) or "-"))
    for name, entry in config.continuity.items():
        lines.append("")
        lines.append(_("continuous capture {name}").format(name=name))
        if entry.sqlite:
            lines.append("  " + _("follows the SQLite database {path} into {spool}, a pass every "
                                  "second").format(path=entry.sqlite, spool=entry.spool))
        if entry.mysql:
            lines.append("  " + _("follows the binary log of {server} into {spool}").format(
                server=entry.mysql, spool=entry.spool))
        if entry.spool:
            lines.append("  " + _("ships what waits in {spool} to {target} every {every}").format(
                spool=entry.spool, target=_target(config, entry.repository),
                every=human_duration(entry.every)))
            lines.append("  " + _("alerts when a piece has waited longer than {duration}").format(
                duration=human_duration(entry.max_backlog)))
        if entry.standby:
            lines.append("  " + _("feeds {standby} from {target} every {every}; alerts when pieces wait "
                                  "longer than {lag} or its passes fail that long").format(
                standby=standbys.describe(entry), target=_target(config, entry.repository),
                every=human_duration(entry.every), lag=human_duration(entry.max_lag)))
        if entry.files_target:
            kept = ", ".join(entry.files_paths) or _("every path of the snapshot")
            newest = (_("the newest snapshot of {host}").format(host=entry.files_host) if entry.files_host
                      else _("the newest snapshot"))
            lines.append("  " + _("keeps {target} equal to {newest} ({what}) from {repository}, looking "
                                  "every {every}; alerts when a newer one waits longer than {lag}").format(
                target=entry.files_target, newest=newest, what=kept,
                repository=_target(config, entry.repository), every=human_duration(entry.files_every),
                lag=human_duration(entry.max_lag)))
            if entry.files_delete:
                lines.append("  " + _("deletes there what the snapshot no longer holds (files_delete)"))
    a = config.alerts
    channels = []
    if a.email:
        channels.append(_("e-mail to {to}").format(to=", ".join(a.email.to)))
        if a.email.provider:
            channels.append(_("the provider ({to}) after {delay}").format(
                to=", ".join(a.email.provider), delay=human_duration(a.email.escalate_after)))
    if a.webhooks:
        channels.append(ngettext("{n} webhook", "{n} webhooks", len(a.webhooks)).format(n=len(a.webhooks)))
    if a.heartbeat:
        channels.append(_("heartbeat pings"))
    lines.append("")
    lines.append(_("alerts: {channels}").format(
        channels=_("; ").join(channels) or _("only in 'coffre status' (no channel configured)")))
    server = config.server
    if server is not None:
        lines.append(_("hosting server: {url} is sent the status of each run (token in {file})").format(
            url=server.url, file=server.token_file))
    return lines
