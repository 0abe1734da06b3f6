"""The pharmacy page's contexts (status, history, plots, run now): one frozen dataclass per page,
the variables its template receives besides the common ones (render.Pages). Built by the pure
functions of `history.py`; every text in them that came from a backup, the configuration or a
step's output (job names, targets, error texts) is untrusted and only ever autoescaped.

Instants are Unix seconds (None: never), sizes bytes, durations seconds: the templates format
them (filters `recent`, `when`, `size`, `duration`)."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup


@dataclass(frozen=True)
class Light:
    """The one light at the top of the status page."""

    color: str  # "green" | "orange" | "red"
    headline: str  # « Sauvegardes OK — dernière sauvegarde aujourd'hui à 12:31, copie … vérifiée »
    reasons: tuple[str, ...]  # the other problems, one sentence each
    advice: tuple[str, ...]  # what to do (non-green only), one sentence each
    contact: str  # whom to call: [web].contact ("" when the configuration names nobody)


@dataclass(frozen=True)
class TargetRow:
    """One line per job and target (its primary repository, then each copy)."""

    job: str
    target: str
    role: str  # "primary" | "copy"
    color: str  # "green" | "orange" | "red"
    light_words: str  # « OK », « À vérifier », « En échec »
    last: float | None  # primary: the last backup; copy: the last copy
    last_check: float | None  # the last successful check of it
    next_run: float | None
    realtime: bool
    why: tuple[str, ...]  # what is wrong with it


@dataclass(frozen=True)
class JobAction:
    """A job and its « Sauvegarder maintenant » button."""

    name: str
    running: bool
    run_url: str  # where the button posts (and the progress page)


@dataclass(frozen=True)
class MessageRow:
    at: float
    level: str  # "alert" | "info"
    text: str


@dataclass(frozen=True)
class StepRow:
    """One step of a run, in words."""

    words: str  # « sauvegarde », « copie vers hors-site »…
    target: str
    ok: bool
    started: float
    duration: float
    error: str | None


@dataclass(frozen=True)
class RunRow:
    """One run of a job."""

    id: int | None
    job: str
    target: str
    trigger_words: str  # « programmée », « à la main »…
    started: float
    duration: float | None
    outcome: str  # one of records.OUTCOMES
    outcome_words: str
    bytes_read: int
    bytes_sent: int
    files_total: int
    files_changed: int
    snapshot: str | None
    error: str | None
    steps: tuple[StepRow, ...]
    url: str | None  # its detail page


@dataclass(frozen=True)
class RunningRow:
    """A job running now, under the light."""

    job: str
    step_words: str | None  # the step it is at (None: unknown, another process runs it)
    started: float
    elapsed: float
    url: str  # its progress page


@dataclass(frozen=True)
class StatusPage:
    """`/`: the light, one line per job and target, the run-now buttons, the recent messages."""

    title: str
    light: Light
    rows: tuple[TargetRow, ...]
    jobs: tuple[JobAction, ...]
    running: tuple[RunningRow, ...]
    messages: tuple[MessageRow, ...]


@dataclass(frozen=True)
class CheckRow:
    """A verification that happened: a check, a copy compared, a sample compared, a drill."""

    job: str
    words: str  # « vérification des données », « essai de restauration des bases »…
    target: str
    at: float
    ok: bool
    error: str | None
    run_url: str | None


@dataclass(frozen=True)
class DiskRow:
    """A removable disk present from `first` to `last` (the runs that saw it)."""

    set_name: str
    disk_name: str
    first: float
    last: float


@dataclass(frozen=True)
class JobHistory:
    job: str
    runs: tuple[RunRow, ...]  # newest first
    checks: tuple[CheckRow, ...]  # newest first


@dataclass(frozen=True)
class HistoryPage:
    """`/history`: the runs of the last weeks per job, the checks and drills, the disks."""

    title: str
    days: int
    jobs: tuple[JobHistory, ...]
    disks: tuple[DiskRow, ...]  # newest first


@dataclass(frozen=True)
class PlotBlock:
    title: str
    svg: Markup  # from web/plots.py (every text in it escaped there); empty: no data yet
    note: str  # what the plot says in words (« plein vers le 3 mars 2027 »), "" for nothing


@dataclass(frozen=True)
class JobPlots:
    job: str
    plots: tuple[PlotBlock, ...]


@dataclass(frozen=True)
class PlotsPage:
    """`/plots`: the medium's use with its trend and full date, database sizes, bytes sent per
    day, backup durations."""

    title: str
    days: int
    jobs: tuple[JobPlots, ...]


@dataclass(frozen=True)
class RunPage:
    """`/runs/{id}`: one run with its steps."""

    title: str
    run: RunRow


@dataclass(frozen=True)
class Progress:
    """A job started by hand, as it goes."""

    job: str
    state: str  # "queued" | "running" | "done" | "lost" (asked, and dropped before it started)
    step_words: str | None  # the step running now
    started: float | None
    elapsed: float | None
    steps: tuple[StepRow, ...]  # the steps done so far
    run: RunRow | None  # the finished run (state "done")
    poll_url: str  # the fragment htmx fetches every second while not done
    page_url: str  # the page itself (the « Actualiser » link without JavaScript)
    again_url: str = ""  # where « Sauvegarder maintenant » posts (state "lost")


@dataclass(frozen=True)
class ProgressPage:
    """`/jobs/{job}/run`: the live progress of a job (and `/jobs/{job}/progress`, its fragment)."""

    title: str
    progress: Progress
