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
