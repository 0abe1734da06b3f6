"""One job, start to end, exactly as the agent runs it: the backup, its retention, the copies,
the verification, the status record. `coffre run JOB` and the agent's scheduler both call
`run_job`.

Order and rules:
1. The primary: a repository, or the disk of a media set that is plugged in now (none: the
   run fails with "no disk", which is an alert).
2. `backup` (retried with growing pauses within the schedule's window while the destination
   is unreachable or locked; never for a usage or password error).
3. `forget` with the job's retention, then prune, on the primary.
4. For each copy: `copy` from the primary (only what it lacks), the same retention there, and
   `check --against` (same snapshots, same data) when the job asks for it.
5. `check --read-data-subset`, a `verify` of the new snapshot against the live files, and a
   `drill` of its databases every N days.
6. `stats --databases` for the size watch.
A step that fails does not stop the ones that do not depend on it: a copy failing does not
prevent the next copy or the check. The outcome is "failed" if any step failed, "warning" if
the backup could not read some files (exit 3), else "ok".
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from coffre.agent.media import medium_usage, present_disks
from coffre.agent.model import Config, Job, Retention
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.agent.steps import Endpoint, Interrupted, Outcome, Priority, endpoint_for, run_step
from coffre.core.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, EXIT_WRONG_PASSWORD
from coffre.core.i18n import _

Log = Callable[[str], None]
StepFn = Callable[[list[str], dict[str, str]], Outcome]
# Told when a step begins (its name) and when it ends (None), with the steps done so far:
# the pages show the running step, the status store keeps the steps done (progress).
OnStep = Callable[[str | None, tuple[StepResult, ...]], None]

# Exit codes a retry cannot mend: a wrong command or password, an interruption.
_NOT_RETRIED = (0, EXIT_PARTIAL, EXIT_USAGE, EXIT_WRONG_PASSWORD, EXIT_INTERRUPTED)


class NoDisk(Exception):
    def __init__(self, set_name: str) -> None:
        super().__init__(set_name)
        self.set_name = set_name


def resolve(config: Config, name: str) -> Endpoint:
    """The repository a name stands for now; a media set's present disk (NoDisk if none)."""
    if name in config.repositories:
        return endpoint_for(config.repositories[name])
    media = config.media_sets[name]
    disks = present_disks(media)
    if not disks:
        raise NoDisk(name)
    disk = disks[0]
    return Endpoint(name, disk.path, media.password_file, media.password_command,
                    disk_id=disk.disk_id, disk_name=disk.disk_name)


def retention_args(r: Retention) -> list[str]:
    args: list[str] = []
    for key in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
        value = getattr(r, key)
        if value is not None:
            args += ["--" + key.replace("_", "-"), str(value)]
    if r.keep_within:
        args += ["--keep-within", r.keep_within]
    if r.max_size:
        args += ["--max-size", r.max_size]
    if r.prune:
        args.append("--prune")
    return args


def backup_args(job: Job) -> list[str]:
    args = ["backup", *job.paths]
    for pattern in job.exclude:
        args += ["--exclude", pattern]
    for flag, values in (("--postgres", job.postgres), ("--mysql", job.mysql), ("--sqlite", job.sqlite)):
        for v in values:
            args += [flag, v]
    for tag in job.tags:
        args += ["--tag", tag]
    if job.host:
        args += ["--host", job.host]
    if job.one_file_system:
        args.append("--one-file-system")
    return args


def _message(outcome: Outcome) -> str | None:
    """The step's own words for a person: its last "coffre: ..." line and hint."""
    if outcome.error is None:
        return None
    lines = [ln for ln in outcome.error.splitlines() if ln.strip()]
    return "\n".join(lines[-3:]) or None


class JobRun:
    """The state of one run while it goes: its steps, and what they reported."""

    def __init__(self, config: Config, job: Job, step: StepFn, log: Log, cancel: threading.Event,
                 clock: Callable[[], float], sleep: Callable[[float], bool],
                 on_step: OnStep | None = None) -> None:
        self.config, self.job, self._step, self.log = config, job, step, log
        self.cancel, self.clock, self.sleep = cancel, clock, sleep
        self.on_step = on_step
        self.steps: list[StepResult] = []

    def _tell(self, name: str | None) -> None:
        if self.on_step is not None:
            try:
                self.on_step(name, tuple(self.steps))
            except Exception as exc:  # progress is shown, never allowed to stop a run
                self.log(_("job {job}: its progress could not be recorded: {reason}").format(
                    job=self.job.name, reason=exc))

    def step(self, name: str, target: Endpoint, args: list[str], env: dict[str, str],
             retries: int = 0, deadline: float | None = None) -> Outcome:
        if self.cancel.is_set():
            raise Interrupted
        self._tell(name)
        pause = self.job.retry_pause
        attempt = 0
        while True:
            outcome = self._step([*args, "-r", target.url, *target.options], {**target.env(), **env})
            if outcome.exit_code in _NOT_RETRIED or attempt >= retries or self.cancel.is_set():
                break
            if deadline is not None and self.clock() + pause > deadline:
                break
            attempt += 1
            self.log(_("job {job}: {step} failed (exit status {code}); trying again in {seconds:.0f} s "
                       "(attempt {n} of {total})").format(job=self.job.name, step=name,
                                                         code=outcome.exit_code, seconds=pause,
                                                         n=attempt + 1, total=retries + 1))
            if self.sleep(pause):
                raise Interrupted
            pause *= 4
        ok = outcome.exit_code in (0, EXIT_PARTIAL)
        # A step that fails while the agent is stopping was stopped by it: SIGINT in its first
        # milliseconds, before Coffre's own handler is in place, ends it with another status.
        if outcome.exit_code == EXIT_INTERRUPTED or (not ok and self.cancel.is_set()):
            raise Interrupted
        self.steps.append(StepResult(name, target.name, ok, outcome.exit_code, outcome.started,
                                     outcome.ended, outcome.summary, None if ok else _message(outcome)))
        self._tell(None)
        self.log(_("job {job}: {step} on {target}: {result}").format(
            job=self.job.name, step=name, target=target.name,
            result=_("done") if ok else _("failed (exit status {code})").format(code=outcome.exit_code)))
        return outcome

    def fail_step(self, name: str, target: str, summary: dict[str, Any], error: str) -> None:
        now = self.clock()
        self.steps.append(StepResult(name, target, False, 1, now, now, summary, error))
        self._tell(None)
        self.log(_("job {job}: {error}").format(job=self.job.name, error=error))


def run_job(config: Config, job_name: str, *, trigger: str, started: float, slot: float | None,
            cancel: threading.Event, log: Log, clock: Callable[[], float] = time.time,
            step: StepFn | None = None, sleep: Callable[[float], bool] | None = None,
            last_drill: float | None = None,
            sight: Callable[[DiskSighting], None] | None = None,
            on_step: OnStep | None = None, locks: tuple[int, ...] = ()) -> RunRecord:
    """Run the job once and return its record (the caller stores it). `last_drill`: when its
    last successful drill ran (a drill is due every `drill_every`). `sleep(seconds)` waits
    between retries and returns True when the run must stop. `on_step` follows the steps (OnStep).
    `locks`: the descriptors holding the run's locks, handed to its steps (agent/locks.py)."""
    job = config.jobs[job_name]
    priority = Priority(config.agent.nice, config.agent.ionice)
    if step is None:
        def step(args: list[str], env: dict[str, str]) -> Outcome:
            return run_step(args, env, priority, config.agent.language, cancel, clock, locks)
    if sleep is None:
        sleep = cancel.wait
    run = JobRun(config, job, step, log, cancel, clock, sleep, on_step)
    record = RunRecord(job=job_name, target=job.repository, trigger=trigger, started=started, slot=slot)
    try:
        record = _run(config, job, run, record, last_drill, sight)
    except Interrupted:
        record = replace(record, outcome="interrupted", error=_(
            "the run was stopped before its end (the agent stopping, or Ctrl-C or a signal to 'coffre run')"))
    return replace(record, steps=tuple(run.steps), ended=clock())


def _sighted(sight: Callable[[DiskSighting], None] | None, target: Endpoint, at: float) -> None:
    if sight is not None and target.disk_id is not None:
        sight(DiskSighting(target.name, target.disk_id, target.disk_name or "", at))


def _run(config: Config, job: Job, run: JobRun, record: RunRecord, last_drill: float | None,
         sight: Callable[[DiskSighting], None] | None) -> RunRecord:
    try:
        primary = resolve(config, job.repository)
    except NoDisk:
        error = _("no disk of the set {name} is plugged in").format(name=job.repository)
        run.fail_step("media", job.repository, {"reason": "no_disk"}, error)
        return replace(record, outcome="failed", error=error)
    _sighted(sight, primary, record.started)
    record = replace(record, disk=primary.disk_id, medium=medium_usage(primary.url))
    deadline = (record.slot if record.slot is not None else record.started) + job.schedule.window
    backup = run.step("backup", primary, backup_args(job), {}, retries=job.retries, deadline=deadline)
    summary = backup.summary.get("summary") if isinstance(backup.summary.get("summary"), dict) else {}
    assert isinstance(summary, dict)
    snapshot = backup.summary.get("snapshot")
    record = replace(
        record, snapshot=snapshot if isinstance(snapshot, str) else None,
        bytes_read=_int(summary.get("bytes_read")), bytes_sent=_int(summary.get("data_added_stored")),
        files_total=sum(_int(summary.get(k)) for k in ("files_new", "files_changed", "files_unmodified")),
        files_changed=_int(summary.get("files_new")) + _int(summary.get("files_changed")),
        warnings=tuple(str(w) for w in backup.summary.get("warnings", []) if isinstance(w, str | dict))[:50],
        medium=medium_usage(primary.url))
    if backup.exit_code not in (0, EXIT_PARTIAL):
        return replace(record, outcome="failed", error=_message(backup))
    verified: dict[str, Any] = {}
    if not job.retention.is_empty():
        run.step("forget", primary, ["forget", *retention_args(job.retention)], {})
    for name in job.copies:
        try:
            copy_to = resolve(config, name)
        except NoDisk:
            run.fail_step("media", name, {"reason": "no_disk"},
                          _("no disk of the set {name} is plugged in").format(name=name))
            continue
        _sighted(sight, copy_to, record.started)
        copied = run.step(f"copy:{name}", copy_to, ["copy", "--from", primary.url], primary.env("FROM_"),
                          retries=job.retries, deadline=deadline)
        if copied.exit_code != 0:
            continue
        if not job.retention.is_empty():
            run.step(f"forget:{name}", copy_to, ["forget", *retention_args(job.retention)], {})
        if job.verification.check_copies:
            against = run.step(f"against:{name}", primary, ["check", "--against", copy_to.url],
                               copy_to.env("AGAINST_"))
            verified[f"against:{name}"] = against.exit_code == 0
    if job.verification.check_subset:
        subset = job.verification.check_subset
        checked = run.step("check", primary, ["check", "--read-data-subset", subset], {})
        verified["check"] = {"ok": checked.exit_code == 0, "subset": subset}
    share = job.verification.verify_sample
    if share > 0 and record.snapshot:
        sample = _sample(run, primary, record.snapshot, share)
        if sample is not None:
            compared = run.step("verify", primary, ["verify", record.snapshot, *sample], {})
            verified["verify"] = {"ok": compared.exit_code == 0, "files": len(sample) or record.files_total}
    drill: dict[str, Any] | None = None
    has_databases = bool(job.postgres or job.mysql or job.sqlite)
    every = job.verification.drill_every
    if has_databases and every is not None and record.snapshot and (
            last_drill is None or run.clock() - last_drill >= every):
        drilled = run.step("drill", primary, ["drill", record.snapshot], {})
        drill = {"ok": drilled.exit_code == 0, "report": drilled.summary}
    db_sizes: dict[str, int] = {}
    if has_databases:
        stats = run.step("stats", primary, ["stats", "--databases"], {})
        for db in stats.summary.get("databases", []) or []:
            if isinstance(db, dict) and db.get("sizes"):
                last = db["sizes"][-1]
                if isinstance(last, dict):
                    db_sizes[f"{db.get('engine')}:{db.get('name')}"] = _int(last.get("size"))
    failed = [s for s in run.steps if not s.ok]
    outcome = "failed" if failed else ("warning" if backup.exit_code == EXIT_PARTIAL else "ok")
    summary_error = "; ".join(f"{s.name}: {s.error or s.exit_code}" for s in failed) or None
    return replace(record, outcome=outcome, verified=verified, drill=drill, db_sizes=db_sizes,
                   error=summary_error)


_SAMPLE_MAX = 2000  # files named on one command line


def _sample(run: JobRun, primary: Endpoint, snapshot: str, share: float) -> list[str] | None:
    """The files to compare with the live ones: all (an empty list: the whole snapshot) at a
    share of 1, else that share of the snapshot's files drawn at random (at most 2,000)."""
    if share >= 1:
        return []
    listing = run.step("list", primary, ["ls", snapshot], {})
    nodes = listing.summary.get("nodes")
    if listing.exit_code != 0 or not isinstance(nodes, list):
        return None
    files = [n["path"] for n in nodes
             if isinstance(n, dict) and n.get("type") == "file" and isinstance(n.get("path"), str)]
    count = min(_SAMPLE_MAX, max(1, round(len(files) * share))) if files else 0
    return random.sample(files, count) if count else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
