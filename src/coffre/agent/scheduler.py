"""The agent's loop (`coffre agent`): jobs on schedule and in real time, alerts, signals.

- A job's next run comes from its last scheduled run recorded in the status store, so runs
  missed while the machine was off happen once at the next start, and a clock that goes back
  does not run a slot twice (policy/schedule.py).
- Each run is a thread holding the job's lock and its repositories' locks (locks.py): a job
  waits for another running on the same repository; jobs on different repositories run in
  parallel; a job already running (here, in another agent, or `coffre run`) is skipped.
- Real-time jobs: their folders are watched (watcher.py); a run starts once the changes have
  settled and not sooner than `min_interval` after the previous one.
- Continuous capture (`[continuity.NAME]`) runs on threads of its own (continuity.py),
  started with the loop, restarted on a reload when an entry changed, stopped with the agent.
- Health and alerts are evaluated after each run and every minute (staleness needs no run to
  be noticed, nor a capture that falls behind); a failed job never stops the loop.
- SIGHUP reloads the configuration (a broken file is reported and the old one kept); SIGTERM
  or SIGINT interrupts the running steps as Ctrl-C would (no snapshot, no damage, the run
  recorded as interrupted) and ends the loop.
- The loop sleeps in `select` until the next event: an idle agent costs nothing measurable.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from coffre.agent import jobs
from coffre.agent.config import load_config
from coffre.agent.continuity import ContinuityService
from coffre.agent.health import assess, continuity_problems
from coffre.agent.locks import Busy, Holder, holders, job_locks
from coffre.agent.model import Config, Job
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.agent.status import StatusStore, StatusStoreError, store_path
from coffre.agent.watcher import Debouncer, Watcher
from coffre.core.human import human_when
from coffre.core.i18n import _, ngettext
from coffre.policy.schedule import due_slot, next_run

Log = Callable[[str], None]
HEALTH_EVERY = 60.0  # seconds between evaluations of health and alerts without a run
PRUNE_EVERY = 86400.0  # the history beyond `history_days` (at least 400) is forgotten daily
CATCH_UP_AFTER = 120.0  # a slot older than this when it starts is a catch-up of a missed run


def status_path(config: Config) -> Path:
    return store_path(config.agent.state_dir)


def open_store(config: Config) -> StatusStore:
    return StatusStore(status_path(config))


def last_drill(store: StatusStore, job: str) -> float | None:
    for run in reversed(store.runs(job=job)):
        if run.drill is not None and run.drill.get("ok"):
            return run.started
    return None


# Read once, as the agent starts: the status store and the locks are opened in `state_dir` (a
# store in one folder and locks in another would let the agent take a live run for a dead one),
# and the page is bound to its address and certificate.
RESTART_ONLY = {"agent": ("state_dir",), "web": ("enabled", "listen", "tls_cert", "tls_key")}


def kept_until_restart(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """The configuration a reload puts in force: `loaded`, but for the RESTART_ONLY settings,
    which keep their running values; and those that differ, named as in the file."""
    changed = [f"[{section}] {key}" for section, keys in RESTART_ONLY.items() for key in keys
               if getattr(getattr(running, section), key) != getattr(getattr(loaded, section), key)]
    if not changed:
        return loaded, []
    kept = {section: replace(getattr(loaded, section), **{key: getattr(getattr(running, section), key)
                                                          for key in keys})
            for section, keys in RESTART_ONLY.items()}
    return replace(loaded, **kept), changed


def targets(job: Job) -> list[str]:
    return [job.repository, *job.copies]


class Runner:
    """Runs one job, exactly as the agent does: locks, record, run, record, alerts. `coffre run`
    uses it too."""

    def __init__(self, config: Config, store: StatusStore, log: Log,
                 clock: Callable[[], float] = time.time, since: float | None = None) -> None:
        self.config, self.store, self.log, self.clock = config, store, log, clock
        self.since = since  # the agent's start: a job that never ran is late a window after it
        self.alerts_lock = threading.Lock()
        self._activity_lock = threading.Lock()
        self._activity: dict[str, tuple[str, float]] = {}  # running job -> (its step now, since when)

    def activity(self, name: str) -> tuple[str, float] | None:
        """The step job `name` is running now, and since when (None: not running here, or
        between two steps). Safe from any thread."""
        with self._activity_lock:
            return self._activity.get(name)

    def _progress(self, name: str, run_id: int, begun: RunRecord) -> jobs.OnStep:
        """Follows a run's steps: the step running now (`activity`), and the steps done
        written to the status store (the run stays "running")."""

        def on_step(step: str | None, done: tuple[StepResult, ...]) -> None:
            with self._activity_lock:
                if step is not None:
                    self._activity[name] = (step, self.clock())
                else:
                    self._activity.pop(name, None)
            if step is None:
                self.store.finish_run(run_id, replace(begun, steps=done))

        return on_step

    # Around the writing of a run's end (job name), before the heartbeat, the report to the
    # hosting server and the alerts that follow: the agent tells its pages the run has ended
    # in the same step as the store does (a click then asks for a new run).
    recording: Callable[[str], AbstractContextManager[None]] | None = None

    def run(self, name: str, trigger: str, slot: float | None, cancel: threading.Event,
            wait_for_job: bool = False) -> RunRecord | None:
        """The run's record; None when the job is already running elsewhere, when `cancel`
        stopped the wait for its locks (with `wait_for_job`, the job's too), or when it was taken
        out of the configuration while this run waited."""
        config = self.config
        job = config.jobs[name]

        def waiting() -> None:
            self.log(_("job {job}: waiting for its run in progress elsewhere (another agent or "
                       "'coffre run') to end").format(job=name))

        try:
            # `cancel` ends the wait for the repositories' locks (the job's is never waited for
            # unless `wait_for_job`): Ctrl-C on `coffre run` waiting behind another job.
            with job_locks(config.agent.state_dir, name, targets(job), cancel,
                           wait_for_job=wait_for_job, waiting=waiting) as locks:
                if name not in self.config.jobs:  # a reload took it out meanwhile
                    self.log(_("job {job}: no longer in the configuration; not started").format(job=name))
                    return None
                return self._run_locked(name, trigger, slot, cancel, locks)
        except Busy as busy:
            if cancel.is_set():
                return None
            self.log(self._busy_words(name, busy.path))
            return None

    def _busy_words(self, name: str, lock: str) -> str:
        """Why a run of the job does not start: the processes that hold its lock, named (a
        step left behind by a run whose process died holds it as long as it lives)."""
        held_by = [h for h in holders(lock) if h.pid != os.getpid()]
        if not held_by:
            return _("job {job}: already running (another agent or 'coffre run'); not started again"
                     ).format(job=name)
        return _("job {job}: already running, its lock held by {processes}; not started again").format(
            job=name, processes=", ".join(self._process_words(h) for h in held_by))

    def _process_words(self, h: Holder) -> str:
        program = h.name or "?"
        if h.started is None:
            return _("process {pid} ({program})").format(pid=h.pid, program=program)
        when = human_when(h.started, time.time(), self.config.agent.timezone)
        return _("process {pid} ({program}, started {when})").format(pid=h.pid, program=program, when=when)

    def _run_locked(self, name: str, trigger: str, slot: float | None,
                    cancel: threading.Event, locks: tuple[int, ...] = ()) -> RunRecord:
        config, store = self.config, self.store
        started = self.clock()
        # Holding the job's lock: a run of it still "running" was left by processes that died.
        self._log_settled(store.settle_abandoned(store.running_ids(name), started))
        run_id = store.start_run(name, config.jobs[name].repository, trigger, started, slot)
        begun = RunRecord(job=name, target=config.jobs[name].repository, trigger=trigger, started=started,
                          slot=slot)
        self.log(_("job {job}: started ({trigger})").format(job=name, trigger=trigger_words(trigger)))
        self._ping("start")
        try:
            record = jobs.run_job(config, name, trigger=trigger, started=started, slot=slot,
                                  cancel=cancel, log=self.log, clock=self.clock,
                                  last_drill=last_drill(store, name), sight=store.record_sighting,
                                  on_step=self._progress(name, run_id, begun), locks=locks)
        except Exception as exc:  # a fault of the agent itself: recorded as a failed run, and alerted
            record = RunRecord(job=name, target=config.jobs[name].repository, trigger=trigger,
                               started=started, ended=self.clock(), outcome="failed", slot=slot,
                               error=_("the agent failed while running the job: {reason}").format(
                                   reason=f"{type(exc).__name__}: {exc}"))
        with self._activity_lock:
            self._activity.pop(name, None)
        record = replace(record, run_id=run_id)
        with self.recording(name) if self.recording is not None else nullcontext():
            store.finish_run(run_id, record)
        self.log(_("job {job}: {outcome}").format(job=name, outcome=outcome_words(record)))
        if record.outcome != "interrupted":
            self._ping("success" if record.outcome in ("ok", "warning") else "fail")
        self._report(record)
        self.evaluate()
        return record

    def settle_abandoned(self, leave: Collection[str] = ()) -> int:
        """Record as interrupted the runs left "running" by a process that died (a `coffre run`
        killed, the agent or the machine stopped), job by job, for the jobs whose lock is free:
        a run going on holds its job's lock, in this agent or another process, and is left
        alone. `leave`: jobs not looked at (those this agent runs: probing their lock as their
        run starts would make it give up). The number settled; never raises."""
        settled = 0
        try:
            jobs_running = self.store.running_jobs()
        except Exception as exc:  # the agent keeps running; the reason is logged
            self.log(_("runs left unfinished could not be looked at: {reason}").format(reason=exc))
            return 0
        for name in jobs_running:
            if name in leave:
                continue
            try:
                # The lock held only to read: a run of the job starting meanwhile looks again
                # a few times before it gives up (locks.PROBE_RETRIES), so not for the write's
                # fsync as well.
                with job_locks(self.config.agent.state_dir, name, [], probe=True):
                    left = self.store.running_ids(name)
                settled += self.store.settle_abandoned(left, self.clock())
            except Busy:
                continue  # its run goes on
            except Exception as exc:  # one job's lock or row; the others are looked at
                self.log(_("job {job}: a run left unfinished could not be looked at: {reason}").format(
                    job=name, reason=exc))
        self._log_settled(settled)
        return settled

    def _log_settled(self, settled: int) -> None:
        if settled:
            self.log(ngettext("{n} run left unfinished by a stopped process recorded as interrupted",
                              "{n} runs left unfinished by a stopped process recorded as interrupted",
                              settled).format(n=settled))

    def _report(self, record: RunRecord | None) -> None:
        """Post the run's status record to the hosting server (`record` None: only the records
        still waiting). Never raises; failures are logged and retried later."""
        if self.config.server is None:
            return
        from coffre.agent import report

        try:
            if record is None:
                results = report.retry_due(self.config, self.clock(), status_path(self.config))
            else:
                results = report.after_run(self.config, record, self.clock(), status_path(self.config))
        except Exception as exc:  # never into a run
            self.log(_("the status could not be sent to the hosting server: {reason}").format(reason=exc))
            return
        for r in results:
            if r.ok:
                self.log(_("job {job}: status sent to the hosting server").format(job=r.job))
                quota = (r.answer or {}).get("quota")
                state = quota.get("state") if isinstance(quota, dict) else None
                if state == "near":
                    self.log(_("the hosting server says this pharmacy's quota is nearly full"))
                elif state == "full":
                    self.log(_("the hosting server says this pharmacy's quota is reached: backups to it "
                               "are refused"))
            elif r.retried:
                self.log(_("job {job}: status not sent to the hosting server, tried again later: {reason}")
                         .format(job=r.job, reason=r.error or "-"))
            else:
                self.log(_("job {job}: status not sent to the hosting server: {reason}").format(
                    job=r.job or "-", reason=r.error or "-"))

    def _ping(self, kind: str) -> None:
        heartbeat = self.config.alerts.heartbeat
        if heartbeat is None:
            return
        from coffre.agent.alerts.heartbeat import ping

        ping(heartbeat, kind)

    def forget_old(self) -> None:
        """Forget the runs, sightings and alert records older than `history_days` (at least
        400; each job's last good run is kept however old). Never raises."""
        from coffre.agent.alerts.outbox import Outbox

        now, days = self.clock(), float(self.config.agent.history_days)
        try:
            removed = self.store.prune(now, days)
            Outbox(status_path(self.config)).prune(now, max(days, 400.0))
            if self.config.server is not None:
                from coffre.agent.report import Reporter

                Reporter(status_path(self.config)).prune(now, max(days, 400.0))
        except Exception as exc:  # the agent keeps running; the reason is logged
            self.log(_("the history could not be trimmed: {reason}").format(reason=exc))
            return
        if removed:
            self.log(ngettext("{n} record older than {days} days forgotten",
                              "{n} records older than {days} days forgotten", removed).format(
                                  n=removed, days=int(days)))

    def evaluate(self) -> None:
        """Health rules over the history, then the alerts they call for. Never raises: a broken
        channel or a damaged record must not stop the agent."""
        from coffre.agent.alerts.outbox import Outbox

        if self.config.server is not None:
            self._report(None)
        with self.alerts_lock:
            now = self.clock()
            try:
                runs = self.store.runs(since=now - 60 * 86400)
                sightings: list[DiskSighting] = []
                for media in self.config.media_sets:
                    sightings.extend(self.store.sightings(media))
                problems: list[Any] = list(assess(self.config, runs, now, sightings, since=self.since))
                problems.extend(continuity_problems(self.config, self.store.continuity(), now))
                outbox = Outbox(status_path(self.config))
                problems.extend(outbox.failure_problems())
                for result in outbox.process(self.config, problems, now):
                    if result.ok:
                        self.log(_("alert sent ({channel}): {event} {key}").format(
                            channel=result.channel, event=result.event, key=result.key))
                    else:
                        self.log(_("alert not delivered ({channel}): {event} {key}: {reason}").format(
                            channel=result.channel, event=result.event, key=result.key,
                            reason=result.error or "-"))
            except Exception as exc:  # the agent keeps running; the reason is logged
                self.log(_("alerts could not be evaluated: {reason}").format(reason=exc))


def trigger_words(trigger: str) -> str:
    return {"schedule": _("scheduled"), "catch-up": _("catching up a missed run"),
            "realtime": _("files changed"), "manual": _("by hand")}.get(trigger, trigger)


def outcome_words(record: RunRecord) -> str:
    words = {"ok": _("succeeded"), "warning": _("succeeded with warnings"), "failed": _("failed"),
             "interrupted": _("interrupted"), "running": _("running")}[record.outcome]
    if record.snapshot:
        words += " " + _("(snapshot {id})").format(id=record.snapshot[:8])
    if record.error and record.outcome != "ok":
        words += ": " + record.error.replace("\n", " ")
    return words


class Agent:
    """The long-running service."""

    def __init__(self, config_path: str, log: Log, clock: Callable[[], float] = time.time) -> None:
        self.config_path, self.log, self.clock = config_path, log, clock
        self.config = load_config(config_path)
        self.cancel = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self.last_slot: dict[str, float] = {}
        self.last_start: dict[str, float] = {}
        self.watchers: dict[str, Watcher] = {}
        self.debouncers: dict[str, Debouncer] = {}
        self.reload_wanted = False
        self.stop_wanted = False
        self._requests_lock = threading.RLock()  # _start takes it, called under it or not
        # jobs asked to run now (run_now), started by the loop -> whether the run waits for the
        # job's run elsewhere to end (asked when that run was recorded as ended: its tail)
        self._requested: dict[str, bool] = {}
        self._active: set[str] = set()  # jobs whose thread was started and has not ended
        self._tail: set[str] = set()  # ... whose run is recorded as ended (alerts, reports left)
        # clicks refused because this agent's thread of the job was running -> the latest one's
        # mark; taken as a request if that thread ends without recording a run (_refused_click)
        self._refused: dict[str, int] = {}
        self._looping = False  # the loop has looked at the schedule once (jobs due at the start)
        # Tells this agent's « Sauvegarder maintenant » requests from an earlier one's: a
        # request made of a stopped agent is gone with it.
        self.incarnation = secrets.token_hex(4)
        self.wake_w: int | None = None
        self.runner = Runner(self.config, open_store(self.config), self.log, self.clock, since=self.clock())
        self.runner.recording = self._recording
        self.continuity = ContinuityService(self.runner.store, self.log, self.clock)

    def run_now(self, name: str) -> tuple[bool, int]:
        """Ask the loop to start job `name` now (trigger "manual"); safe from any thread (the
        pages call it). Whether it was asked (not when there is no such job, it is running
        already, or it is asked already), and the click's mark (`StatusStore.run_mark`),
        taken in the same step, so that the run that answers the click is the first after
        it. Asked once its run is recorded as ended, while its thread still sends the alerts
        and the report, it starts when that thread ends; the same for a run elsewhere (a
        `coffre run` in a terminal): its run waits for that one to let go of the job. A run
        elsewhere still going answers the click (the page follows it): nothing waits then.
        Refused because this agent's thread of the job runs, the click is answered by that
        thread's run, or taken when it ends if it recorded none (_refused_click)."""
        store = self.runner.store
        with self._requests_lock:
            mark = store.run_mark(name)
            if name not in self.config.jobs or name in self._requested:
                return False, mark
            if name in self.running():
                self._refused[name] = mark  # the latest: a run after it is after every earlier one
                return False, mark
            self._requested[name] = mark == store.last_run_id(name)  # its latest run has ended
        self._wake()
        return True, mark

    def pending(self, name: str) -> bool:
        """Whether this agent may still start a run of job `name` for what it was asked: a
        request not taken by the loop yet, a thread of the job not ended, or the loop not
        started yet (it starts the jobs due then). Any thread."""
        with self._requests_lock:
            return not self._looping or name in self._requested or name in self._active

    def running(self) -> dict[str, float]:
        """The jobs running now (their run not recorded as ended) -> when each started. Any
        thread."""
        with self._requests_lock:
            return {name: self.last_start.get(name, 0.0) for name in self._active - self._tail}

    @contextmanager
    def _recording(self, name: str) -> Iterator[None]:
        with self._requests_lock:
            yield
            self._tail.add(name)

    def _wake(self) -> None:
        if self.wake_w is not None:
            try:
                os.write(self.wake_w, b"\0")
            except OSError:
                pass

    def serve(self) -> int:
        store = self.runner.store
        self.runner.settle_abandoned()  # before any job starts: every job's lock may be probed
        self.runner.since = self.clock()
        self._remember(store)
        self._watch()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self.wake_w = wake_w
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        self.log(_("agent started, configuration {path}; jobs: {names}").format(
            path=self.config_path, names=", ".join(self.config.jobs) or "-"))
        try:
            self.continuity.apply(self.config)
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
            self.cancel.set()
            self.continuity.stop()
            for t in list(self.threads.values()):
                t.join()
            for w in self.watchers.values():
                w.close()
            self.wake_w = None
            os.close(wake_r)
            os.close(wake_w)
        self.log(_("agent stopped"))
        return 0

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop_wanted = True
        self.cancel.set()  # the running steps get SIGINT now

    def _on_reload(self, signum: int, frame: Any) -> None:
        self.reload_wanted = True

    def _remember(self, store: StatusStore) -> None:
        for run in store.runs(since=self.clock() - 400 * 86400):
            if run.slot is not None:
                self.last_slot[run.job] = max(self.last_slot.get(run.job, run.slot), run.slot)
            self.last_start[run.job] = max(self.last_start.get(run.job, run.started), run.started)

    def _watch(self) -> None:
        for w in self.watchers.values():
            w.close()
        self.watchers, self.debouncers = {}, {}
        for name, job in self.config.jobs.items():
            if job.schedule.realtime and job.paths:
                self.watchers[name] = Watcher(list(job.paths), exclude=tuple(job.exclude))
                self.debouncers[name] = Debouncer(job.schedule.debounce, job.schedule.min_interval)
                self.log(_("job {job}: watching its folders for changes ({mode})").format(
                    job=name, mode=self.watchers[name].mode))

    def _reload(self) -> None:
        self.reload_wanted = False
        try:
            config = load_config(self.config_path)
        except Exception as exc:  # a broken file keeps the running configuration
            self.log(_("configuration not reloaded, the previous one stays in force: {reason}")
                     .format(reason=getattr(exc, "message", exc)))
            return
        config, kept = kept_until_restart(self.config, config)
        self.config = config
        self.runner.config = config
        self._watch()
        self.continuity.apply(config)
        self.log(_("configuration reloaded; jobs: {names}").format(names=", ".join(config.jobs) or "-"))
        if kept:
            self.log(_("changed settings that take effect only when the agent restarts, the running "
                       "values kept until then: {settings}").format(settings=", ".join(kept)))

    def _start(self, name: str, trigger: str, slot: float | None, wait_for_job: bool = False) -> None:
        now = self.clock()
        if slot is not None:
            self.last_slot[name] = slot
        self.last_start[name] = now
        def run_then_wake() -> None:
            record = None
            try:
                record = self.runner.run(name, trigger, slot, self.cancel, wait_for_job=wait_for_job)
            finally:
                with self._requests_lock:
                    self._active.discard(name)
                    self._tail.discard(name)
                    self._refused_click(name, record)
                self._wake()  # the loop looks at the schedule (and the requests) again

        thread = threading.Thread(target=run_then_wake, name=f"job-{name}", daemon=True)
        with self._requests_lock:
            self._active.add(name)
            self.threads[name] = thread
        thread.start()

    def _refused_click(self, name: str, record: RunRecord | None) -> None:
        """A click refused while this agent's thread of the job ran, and that thread ended
        without a run after the click's mark: it found the job held elsewhere (a `coffre run`
        in a terminal, its run recorded as ended, sending its alerts) and gave up. The click is
        then taken, its run waiting for the job, instead of its page waiting for the night's
        run. Under _requests_lock."""
        mark = self._refused.pop(name, None)
        if mark is None or record is not None or self.cancel.is_set() or name not in self.config.jobs:
            return
        try:
            if self.runner.store.first_run_after(name, mark) is not None:
                return
        except StatusStoreError as exc:  # the page then waits as it did; the loop goes on
            self.log(_("job {job}: {error}").format(job=name, error=exc.message))
            return
        self._requested[name] = True
        self.log(_("job {job}: the run asked from the page starts once the run in progress elsewhere "
                   "ends").format(job=name))

    def _loop(self, wake_r: int) -> None:
        next_health = next_prune = 0.0
        while not self.stop_wanted:
            if self.reload_wanted:
                self._reload()
            now = self.clock()
            for name in [n for n, t in self.threads.items() if not t.is_alive()]:
                del self.threads[name]
            wake_at = now + HEALTH_EVERY
            cfg = self.config
            with self._requests_lock:  # a request is never seen neither asked nor started
                asked, self._requested = self._requested, {}
                for name, wait in asked.items():
                    if name in self._active:  # its run recorded, its alerts not sent yet
                        self._requested[name] = wait  # started when its thread ends
                    elif name in cfg.jobs:
                        self._start(name, "manual", None, wait_for_job=wait)
            for name, job in cfg.jobs.items():
                s = job.schedule
                running = name in self._active
                slot = due_slot(s.times, s.days, s.every, cfg.agent.timezone, self.last_slot.get(name), now)
                if slot is not None and not running:
                    self._start(name, "catch-up" if now - slot > CATCH_UP_AFTER else "schedule", slot)
                    running = True
                nxt = next_run(s.times, s.days, s.every, cfg.agent.timezone, now,
                               anchor=self.last_slot.get(name))
                if nxt is not None:
                    wake_at = min(wake_at, nxt)
                watcher, debouncer = self.watchers.get(name), self.debouncers.get(name)
                if watcher is None or debouncer is None:
                    continue
                if watcher.poll(now):
                    debouncer.changed(now)
                last = self.last_start.get(name)
                if not running and debouncer.due(now, last):
                    self._start(name, "realtime", None)
                    running = True
                check = None if running else debouncer.next_check(now, self.last_start.get(name))
                if check is not None:
                    wake_at = min(wake_at, check)
                scan = watcher.next_scan()
                if scan is not None:
                    wake_at = min(wake_at, scan)
            self._looping = True
            if now >= next_health:
                # Here, in the loop's thread: no job of this agent starts while its lock is probed.
                self.runner.settle_abandoned(leave=self._active)
                threading.Thread(target=self.runner.evaluate, daemon=True).start()
                next_health = now + HEALTH_EVERY
            if now >= next_prune:
                threading.Thread(target=self.runner.forget_old, daemon=True).start()
                next_prune = now + PRUNE_EVERY
            fds = [wake_r, *(fd for w in self.watchers.values() if (fd := w.fileno()) is not None)]
            timeout = max(0.0, min(wake_at, next_health) - self.clock())
            try:
                ready, _w, _x = select.select(fds, [], [], timeout)
            except InterruptedError:
                ready = []
            if wake_r in ready:
                os.read(wake_r, 512)  # signal numbers, or a run that ended: flags already set
