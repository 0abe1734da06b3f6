"""What the agent remembers of each run: plain records, stored by `status.py` and read by the
health rules, `coffre status` and the alerts. Instants are Unix seconds (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRIGGERS = ("schedule", "catch-up", "realtime", "manual")
OUTCOMES = ("running", "ok", "warning", "failed", "interrupted")


@dataclass(frozen=True)
class StepResult:
    """One step of a run: "backup", "forget", "copy:NAME", "check", "against:NAME", "verify",
    "drill", "stats"."""

    name: str
    target: str  # the repository (or media set) the step worked on
    ok: bool
    exit_code: int
    started: float
    ended: float
    summary: dict[str, Any] = field(default_factory=dict)  # the step's --json summary
    error: str | None = None  # the step's message for a person (never a secret)


@dataclass(frozen=True)
class RunRecord:
    job: str
    target: str  # the primary repository or media set
    trigger: str  # one of TRIGGERS
    started: float
    ended: float | None = None
    outcome: str = "running"  # one of OUTCOMES
    slot: float | None = None  # the scheduled instant this run answers
    snapshot: str | None = None
    bytes_read: int = 0
    bytes_sent: int = 0
    files_total: int = 0
    files_changed: int = 0  # new + changed files
    warnings: tuple[str, ...] = ()
    steps: tuple[StepResult, ...] = ()
    verified: dict[str, Any] = field(default_factory=dict)  # what was verified, and how
    drill: dict[str, Any] | None = None
    db_sizes: dict[str, int] = field(default_factory=dict)
    disk: str | None = None  # the media set's disk (repository id) written to
    medium: tuple[int, int] | None = None  # used, total bytes of the primary's filesystem
    error: str | None = None
    run_id: int | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def step(self, name: str) -> StepResult | None:
        """The last step of that name."""
        for s in reversed(self.steps):
            if s.name == name:
                return s
        return None


@dataclass(frozen=True)
class DiskSighting:
    """A disk of a media set seen present (at a run)."""

    set_name: str
    disk_id: str
    disk_name: str
    at: float


@dataclass(frozen=True)
class Gap:
    """A log piece known lost (the spool was full, or it was damaged there), shipped as a gap
    record: point-in-time recovery cannot cross it until a newer base backup exists."""

    name: str  # the engine's name of the lost piece (a WAL file name)
    stream: str
    time_ns: int  # when it was captured (the capturing machine's clock)
    at: float  # when the agent shipped the gap record
    end: int = 0  # where the lost piece ended in its stream (a base backup starting here covers it)


@dataclass(frozen=True)
class StandbyStatus:
    """A standby's state after the agent's last pass (PostgreSQL's, SQLite's or MariaDB's:
    agent/standbys.py reads each engine's state file)."""

    newest_ns: int = 0  # capture time of the newest piece staged or applied (0: none yet)
    behind_pieces: int = 0  # stored in the repository, not staged or applied yet
    behind_bytes: int = 0  # ... their bytes
    behind_since: float | None = None  # since when pieces have waited (None: none waits)
    staged: int = 0  # pieces staged (PostgreSQL) or applied (SQLite, MariaDB) since the set-up
    gap: str = ""  # the log piece it stopped at ("" when none)
    gap_since: float | None = None  # when the agent first saw it stopped there
    promoted: bool = False
    last_pass: float | None = None  # the last pass that reached its end
    error: str | None = None  # why the last pass failed
    error_since: float | None = None


@dataclass(frozen=True)
class FilesStatus:
    """The files kept current on a standby machine (`files_target`) after the agent's last look
    at the repository: the snapshot last applied, the newest one seen, and the last sync's
    counts. Instants are Unix seconds; a snapshot's time nanoseconds, as it records it."""

    applied: str = ""  # id of the snapshot last synced into the target without error ("" none yet)
    applied_ns: int = 0  # its time
    applied_at: float | None = None  # when that sync ended
    newest: str = ""  # the newest snapshot seen in the repository (of files_host)
    newest_ns: int = 0
    pending_since: float | None = None  # since when a newer snapshot than `applied` waits
    written: int = 0  # the last sync's files written (new or replaced)
    unchanged: int = 0  # ... left as they were
    deleted: int = 0  # ... files, links and folders removed
    failed: int = 0  # ... files that could not be written
    errors: tuple[str, ...] = ()  # the last sync's errors (the first ones)
    last_check: float | None = None  # the last look at the repository that reached its end
    error: str | None = None  # why the last look or sync failed
    error_since: float | None = None


@dataclass(frozen=True)
class ContinuityStatus:
    """What the agent knows of one `[continuity.NAME]` entry after its last pass: the spool's
    backlog and what was shipped, the gaps recorded, and the standby it feeds. Instants are
    Unix seconds; capture times nanoseconds, as the pieces carry them."""

    name: str
    repository: str
    first_seen: float  # when the agent first ran the entry
    last_pass: float | None = None  # the last pass that reached its end (with or without error)
    last_ok: float | None = None  # the last pass without error
    pieces: int = 0  # shipped since first_seen
    bytes: int = 0
    last_shipped: float | None = None  # when a piece was last shipped
    waiting: int = 0  # pieces in the spool after the last pass
    waiting_bytes: int = 0
    oldest_ns: int | None = None  # capture time of the oldest piece waiting
    error: str | None = None  # why the last pass failed (None: it did not)
    error_since: float | None = None  # the first failed pass of the current streak
    source_error: str | None = None  # why the agent's own capture (sqlite, mysql) is not running
    source_error_since: float | None = None
    gaps: tuple[Gap, ...] = ()  # not yet covered by a newer base backup
    gaps_total: int = 0  # every gap recorded since first_seen
    standby: StandbyStatus | None = None  # None: no standby, or no pass of it yet
    files: FilesStatus | None = None  # None: no files kept current, or no look yet
