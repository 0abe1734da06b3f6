"""The restore pages' contexts: one frozen, documented dataclass per page (render.Pages adds
the common variables). Every `str` that comes from a backup (paths, names, job names, error
texts) is untrusted and only ever rendered through autoescape. Times are Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass

from coffre.web.local.tasks import Task


@dataclass(frozen=True)
class SnapshotRow:
    """One snapshot as the pages name it."""

    id: str  # the full id (links carry it)
    short: str  # its first 8 characters
    time: float  # when it was taken
    size: int | None  # bytes of the files it holds (None: not recorded)
    databases: int  # how many databases it holds (a drill needs one)


@dataclass(frozen=True)
class JobChoice:
    """A job on the restore home page."""

    name: str
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    repository: str  # the configuration's name of its primary repository or media set


@dataclass(frozen=True)
class RestoreHomePage:
    """/restore: pick a job; the recent restores and drills."""

    title: str
    jobs: tuple[JobChoice, ...]
    tasks: tuple[Task, ...]
    area: str  # where restored files go


@dataclass(frozen=True)
class CalendarDay:
    """One cell of the month grid."""

    day: int | None  # the day of the month; None for the cells of the weeks' other months
    iso: str  # YYYY-MM-DD ('' outside the month)
    count: int  # snapshots taken that day
    chosen: bool


@dataclass(frozen=True)
class CalendarPage:
    """/restore/{job}: a month of snapshots, the chosen day's snapshots, search and drill."""

    title: str
    job: str
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    month: str  # YYYY-MM shown
    month_label: str  # « novembre 2026 »
    weekdays: tuple[str, ...]  # short names, Monday first
    weeks: tuple[tuple[CalendarDay, ...], ...]
    previous_month: str | None  # the closest earlier month holding a snapshot
    next_month: str | None
    day: str | None  # the chosen day (YYYY-MM-DD)
    day_snapshots: tuple[SnapshotRow, ...]  # that day's snapshots, oldest first
    latest: SnapshotRow | None
    count: int  # the job's snapshots in all
    drill_snapshot: SnapshotRow | None  # the newest snapshot holding a database
    problems: tuple[str, ...]  # damaged snapshot or index files passed over
    area: str


@dataclass(frozen=True)
class Crumb:
    name: str  # a folder's name ('' for the snapshot's root)
    path: str  # its path in the snapshot ('/' for the root)


@dataclass(frozen=True)
class Entry:
    """One entry of a folder."""

    name: str
    path: str
    kind: str  # "dir", "file", "symlink", or another type of the snapshot
    kind_label: str  # translated
    size: int | None  # files only
    mtime: float
    linkable: bool  # False for a name that is not UTF-8 (shown, not linked)


@dataclass(frozen=True)
class FolderPage:
    """/restore/{job}/snapshot/{id}?path=: a folder of a snapshot."""

    title: str
    job: str
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    snapshot: SnapshotRow
    path: str  # '/' for the root
    crumbs: tuple[Crumb, ...]
    entries: tuple[Entry, ...]  # folders first, then by name
    area: str


@dataclass(frozen=True)
class Match:
    """A path found by a search."""

    path: str
    name: str
    kind: str
    size: int | None
    mtime: float
    versions: int  # distinct versions among the snapshots searched
    snapshot: SnapshotRow  # the newest snapshot holding it
    linkable: bool


@dataclass(frozen=True)
class SearchPage:
    """/restore/{job}/search: files and folders by name, in one snapshot or the recent ones."""

    title: str
    job: str
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    query: str
    snapshot: SnapshotRow | None  # searched only this one; None: the recent ones
    searched: int  # snapshots searched
    matches: tuple[Match, ...]
    truncated: bool  # more matched than shown
    error: str | None


@dataclass(frozen=True)
class VersionRow:
    """One version of a path: the snapshots that hold it unchanged."""

    kind: str
    kind_label: str
    size: int | None
    mtime: float  # the modification time it had
    count: int  # snapshots holding it
    first: SnapshotRow
    last: SnapshotRow


@dataclass(frozen=True)
class VersionsPage:
    """/restore/{job}/versions?path=: when a file changed, newest version first."""

    title: str
    job: str
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    path: str
    name: str
    crumbs: tuple[Crumb, ...]
    versions: tuple[VersionRow, ...]
    searched: int  # snapshots looked at


@dataclass(frozen=True)
class TaskPage:
    """/restore/task/{id}: a restore or a drill, running or done (the part that changes is
    `local/task_progress.html`, polled every second by htmx while it runs)."""

    title: str
    task: Task
    base: str  # "/restore/<job>", the job's name quoted for a URL (urls.to takes it)
    area: str
