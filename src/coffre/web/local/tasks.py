"""Background tasks started from the restore pages (a restore, a database drill), with the
progress a page shows while they run.

Each task is the real `coffre` command run as a child process, as the agent's steps run
theirs (agent/steps.py), rather than `ops.restore` on a thread of the agent:
- a crash, a memory peak or a stuck storage call in a restore of a 40 GB folder never takes
  the agent (its scheduler, its page) down, and the agent's memory stays flat afterwards;
- the restore runs at the agent's priority for its work (nice, ionice), below the
  pharmacy's software, without lowering the page's;
- it is exactly the command a technician would type (`coffre restore ID:PATH --target DIR`,
  `coffre drill ID`), with its own checks (names validated, nothing written outside the
  target, never over an existing file) and its shared lock, tested on its own;
- secrets never go on its command line: the password comes through the environment
  (`COFFRE_PASSWORD_FILE` / `COFFRE_PASSWORD_COMMAND`), as for the agent's steps.
The progress is the command's own: with `--json` it prints a status line a second
(`COFFRE_PROGRESS_INTERVAL` here: twice a second) with the files and bytes done of the
totals, read here line by line; its last line is its summary.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from coffre.agent.steps import Endpoint, Priority
from coffre.core.i18n import _
from coffre.core.interpreter import python_module

PROGRESS_EVERY_S = "0.5"
ERROR_TAIL = 4000
KEEP = 50  # finished tasks remembered (the newest)


class TooBusy(Exception):
    """Another task is running: one at a time (a restore reads the disk at full speed)."""


@dataclass(frozen=True)
class DrillCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DrillDatabase:
    engine: str
    name: str  # untrusted (from the snapshot)
    size: int
    ok: bool
    seconds: float
    checks: tuple[DrillCheck, ...] = ()


@dataclass(frozen=True)
class Task:
    """One task as a page shows it (a consistent reading of its state)."""

    id: str
    kind: str  # "restore" | "drill"
    job: str
    what: str  # what it works on: a path in the snapshot, or "" (the snapshot)
    snapshot_time: float  # Unix seconds
    started: float
    ended: float | None = None
    state: str = "running"  # "running" | "ok" | "failed"
    phase: str = ""
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    total_known: bool = False
    destination: str | None = None  # where a restore writes (a folder of the restore area)
    result: str | None = None  # the final path of what was restored
    files: int = 0  # restored
    files_failed: int = 0
    error: str | None = None  # what the command said on failure (its last lines)
    problems: tuple[str, ...] = ()  # the command's errors and warnings from its summary
    databases: tuple[DrillDatabase, ...] = ()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def percent(self) -> int | None:
        if self.state == "ok":
            return 100
        if not self.total_known:
            return None
        if self.bytes_total:
            return min(100, self.bytes_done * 100 // self.bytes_total)
        if self.files_total:
            return min(100, self.files_done * 100 // self.files_total)
        return None


Summarize = Callable[[Task, dict[str, Any]], Task]


def child_environment(endpoint: Endpoint) -> dict[str, str]:
    """This process's environment without any password variable, with the endpoint's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COFFRE_PASSWORD", "COFFRE_FROM_", "COFFRE_AGAINST_"))}
    env.pop("COFFRE_REPOSITORY", None)
    env.update(endpoint.env())
    env["COFFRE_PROGRESS_INTERVAL"] = PROGRESS_EVERY_S
    return env


def coffre_command(args: list[str], endpoint: Endpoint, priority: Priority, language: str) -> list[str]:
    return [*priority.prefix(), *python_module("coffre"), "--lang", language, *args,
            "-r", endpoint.url, *endpoint.options, "--json"]


class Tasks:
    """The tasks of one page app: started, followed, remembered."""

    def __init__(self, clock: Callable[[], float] = time.time, running_limit: int = 1) -> None:
        self.clock, self.running_limit = clock, running_limit
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._order: list[str] = []

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def recent(self, job: str | None = None) -> list[Task]:
        with self._lock:
            tasks = [self._tasks[i] for i in reversed(self._order)]
        return [t for t in tasks if job is None or t.job == job]

    def _update(self, task_id: str, **changes: Any) -> Task:
        with self._lock:
            task = replace(self._tasks[task_id], **changes)
            self._tasks[task_id] = task
            return task

    def start(self, task: Task, command: list[str], env: dict[str, str], priority: Priority,
              summarize: Summarize) -> Task:
        """Run `command` for `task` (its id is given here) on a thread; TooBusy when the
        limit of running tasks is reached."""
        with self._lock:
            if sum(1 for t in self._tasks.values() if t.running) >= self.running_limit:
                raise TooBusy
            task = replace(task, id=secrets.token_urlsafe(12), started=self.clock())
            self._tasks[task.id] = task
            self._order.append(task.id)
            for old in self._order[:-KEEP]:
                if not self._tasks[old].running:
                    del self._tasks[old]
            self._order = [i for i in self._order if i in self._tasks]
        thread = threading.Thread(target=self._run, args=(task.id, command, env, priority, summarize),
                                  name=f"task-{task.kind}", daemon=True)
        thread.start()
        return task

    def _run(self, task_id: str, command: list[str], env: dict[str, str], priority: Priority,
             summarize: Summarize) -> None:
        nice = priority.nice

        def lower_priority() -> None:
            if nice > 0:
                os.nice(nice)

        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, preexec_fn=lower_priority,
                                    start_new_session=True)
        except OSError as exc:
            self._update(task_id, state="failed", ended=self.clock(),
                         error=_("the command could not start: {reason}").format(reason=exc.strerror))
            return
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""),
                                  daemon=True)
        reader.start()
        summary: dict[str, Any] = {}
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("message_type") == "status":
                self._update(task_id, **_status_fields(event))
            elif event.get("message_type") == "summary":
                summary = event
        code = proc.wait()
        reader.join(10)
        text = b"".join(errors).decode("utf-8", "replace").strip()[-ERROR_TAIL:]
        task = self._update(task_id, ended=self.clock())
        try:
            task = summarize(task, summary)
        except (KeyError, TypeError, ValueError):
            pass
        failed = code != 0 or task.state == "failed"
        lines = [ln for ln in text.splitlines() if ln.strip()]
        said = "\n".join(lines[-3:]) or _("the command failed (exit status {code})").format(code=code)
        self._update(task_id, **{**_fields(task), "state": "failed" if failed else "ok",
                                 "error": said if failed else None})


def _fields(task: Task) -> dict[str, Any]:
    return {k: getattr(task, k) for k in task.__dataclass_fields__ if k != "id"}


def _status_fields(event: dict[str, Any]) -> dict[str, Any]:
    def whole(key: str) -> int:
        value = event.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    phase = event.get("phase")
    return {"phase": phase if isinstance(phase, str) else "", "files_done": whole("files_done"),
            "files_total": whole("total_files"), "bytes_done": whole("bytes_done"),
            "bytes_total": whole("total_bytes"), "total_known": event.get("total_known") is True}


def restore_summary(task: Task, doc: dict[str, Any]) -> Task:
    """A restore's task after its summary (`coffre restore --json`)."""
    problems = [str(p) for p in [*doc.get("errors", []), *doc.get("warnings", [])]][:20]
    files = doc.get("files")
    failed = doc.get("files_failed")
    total = doc.get("bytes")
    return replace(task, files=files if isinstance(files, int) else 0,
                   files_failed=failed if isinstance(failed, int) else 0,
                   bytes_done=total if isinstance(total, int) else task.bytes_done,
                   problems=tuple(problems), state="failed" if doc.get("errors") else task.state)


def drill_summary(task: Task, doc: dict[str, Any]) -> Task:
    """A drill's task after its summary (`coffre drill --json`)."""
    out = []
    for db in doc.get("databases", []):
        if not isinstance(db, dict):
            continue
        checks = tuple(DrillCheck(str(c.get("name", "")), c.get("ok") is True, str(c.get("detail", "")))
                       for c in db.get("checks", []) if isinstance(c, dict))
        size, seconds = db.get("size"), db.get("seconds")
        out.append(DrillDatabase(str(db.get("engine", "")), str(db.get("name", "")),
                                 size if isinstance(size, int) else 0, db.get("ok") is True,
                                 float(seconds) if isinstance(seconds, int | float) else 0.0, checks))
    return replace(task, databases=tuple(out), state="failed" if doc.get("ok") is False else task.state)
