"""The restore pages of the pharmacy's page (`/restore` and below): pick a job, a date on a
calendar of its snapshots, browse a snapshot's folders or search by name, see the versions of
a file, restore a file or a folder into the restore area, download a file, start a database
drill; restores and drills run in the background with their progress shown (tasks.py).

Where restored files go: `<restore area>/<YYYY-MM-DD HHMM> <job>/<original path>` (the
snapshot's date and time, in the agent's time zone). Never over the original, never outside
the area: the area is resolved once (symlinks followed, it is the configuration's), then every
existing folder below it on the way to the destination must be a real folder (a symbolic link
there is refused), a path from a page is checked part by part against the snapshot ('.', '..'
and '/' refused), and an existing destination is never written to: the next free name is
taken (`… (2)`). The restore itself (`coffre restore`, --overwrite never) adds its own checks.
"""

from __future__ import annotations

import calendar
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from coffre.agent.steps import Priority
from coffre.core import i18n
from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.find import Finder
from coffre.web.guard import form_of
from coffre.web.local.app import LocalKit
from coffre.web.local.browse import (
    Opened,
    Repositories,
    Unavailable,
    joined,
    linkable,
    restore_area,
    split_path,
)
from coffre.web.local.restore_contexts import (
    CalendarDay,
    CalendarPage,
    Crumb,
    Entry,
    FolderPage,
    JobChoice,
    Match,
    RestoreHomePage,
    SearchPage,
    SnapshotRow,
    TaskPage,
    VersionRow,
    VersionsPage,
)
from coffre.web.local.tasks import (
    Task,
    Tasks,
    TooBusy,
    child_environment,
    coffre_command,
    drill_summary,
    restore_summary,
)
from coffre.web.render import local_time
from coffre.web.security import session_of
from coffre.web.urls import segment

RECENT_SNAPSHOTS = 30  # a search without a snapshot looks at the newest ones
MATCHES_SHOWN = 200
GLOB = "*?["


class UnsafeDestination(CoffreError):
    """The way to the destination in the restore area holds a symbolic link."""


@dataclass
class RestoreState:
    """What the restore pages keep between requests (kit.extras["restore"])."""

    repositories: Repositories
    tasks: Tasks


# -- where a restore goes ----------------------------------------------------------------------
def folder_name(snap_time: float, job: str, tz: str) -> str:
    """'2026-11-30 1231 officine': the snapshot's local date and time, then the job."""
    safe_job = job.replace("/", "_").replace("\0", "_").strip() or "job"
    return local_time(snap_time, tz).strftime("%Y-%m-%d %H%M") + " " + safe_job


def _walk_is_plain(area: Path, target: Path) -> bool:
    """Whether each existing folder from `area` down to `target` is a real folder. A symbolic
    link on the way raises UnsafeDestination; anything else that is not a folder (a file of
    an earlier restore) returns False (another name is then taken)."""
    current = area
    for part in target.relative_to(area).parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return True  # the restore creates the rest
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeDestination(_("{path} is a symbolic link: refused (a restore never leaves the "
                                      "restore area)").format(path=str(current)))
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def destination(area: Path, folder: str, parts: list[str], is_file: bool) -> tuple[Path, Path]:
    """(the restore's --target, the final path of what is restored) in the restore area,
    for the snapshot path `parts` (checked by split_path). Never an existing path: the folder
    `folder`, else `folder (2)`, `folder (3)`…"""
    for p in parts:
        if p in ("", ".", "..") or "/" in p or "\0" in p:
            raise UnsafeDestination(_("{name}: not a name a restore accepts").format(name=p))
    os.makedirs(area, mode=0o700, exist_ok=True)
    real = Path(os.path.realpath(area))
    if real == Path("/"):
        raise UnsafeDestination(_("the restore area cannot be the root folder"))
    for n in range(1, 1000):
        top = real / (folder if n == 1 else f"{folder} ({n})")
        final = top.joinpath(*parts)
        target = final.parent if is_file else final
        if os.path.lexists(final) or not _walk_is_plain(real, target):
            continue
        if os.path.commonpath([real, os.path.abspath(final)]) != str(real) or final == real:
            raise UnsafeDestination(_("{path} is outside the restore area").format(path=str(final)))
        return target, final
    raise UnsafeDestination(_("no free name for the restore in {area}").format(area=str(real)))


# -- small helpers -------------------------------------------------------------------------------
def kind_label(kind: str) -> str:
    names = {"dir": _("folder"), "file": _("file"), "symlink": _("symbolic link"), "fifo": _("named pipe"),
             "chardev": _("character device"), "blockdev": _("block device"), "socket": _("socket")}
    return names.get(kind, kind)


def snapshot_row(s: Snapshot) -> SnapshotRow:
    size = s.summary.get("bytes_total") if isinstance(s.summary, dict) else None
    return SnapshotRow(s.id, s.id[:8], s.time_ns / 1e9, size if isinstance(size, int) else None,
                       len(s.databases))


def seconds(ns: int) -> float:
    return ns / 1e9


def crumbs_of(parts: list[str]) -> tuple[Crumb, ...]:
    out = [Crumb("", "/")]
    for i, p in enumerate(parts):
        out.append(Crumb(p, joined(parts[: i + 1])))
    return tuple(out)


def local_day(ts: float, tz: str) -> date:
    return local_time(ts, tz).date()


def month_label(year: int, month: int) -> str:
    from babel.dates import format_date

    return str(format_date(date(year, month, 1), format="LLLL y", locale=i18n.locale_name()))


def weekday_names() -> tuple[str, ...]:
    from babel.dates import get_day_names

    names = get_day_names("abbreviated", locale=i18n.locale_name())
    return tuple(str(names[i]) for i in range(7))


def search_pattern(query: str) -> str:
    """A glob as typed (`*.pdf`, `ordonnance-2026-*`), else a part of the name (`lettre`)."""
    q = query.strip()
    if not any(c in q for c in GLOB):
        q = "*" + q + "*"
    return "\\" + q if q.startswith("!") else q


def version_key(n: Node) -> tuple[object, ...]:
    return (n.type, n.size, n.mtime_ns, tuple(n.content), n.target)


# -- the pages ---------------------------------------------------------------------------------
def routes(kit: LocalKit) -> list[BaseRoute]:
    state = RestoreState(Repositories(kit.view.config), Tasks(kit.view.clock))
    kit.extras["restore"] = state
    repos, tasks, guard, pages = state.repositories, state.tasks, kit.guard, kit.pages

    def tz() -> str:
        return kit.view.config().agent.timezone

    def area() -> Path:
        return restore_area(kit.view.config())

    def back(job: str, tail: str = "", **query: object) -> Response:
        return guard.redirect("/restore/" + segment(job) + tail, **query)

    def problem(request: Request, exc: CoffreError, status: int = 409) -> Response:
        text = exc.message + (" — " + exc.hint if exc.hint else "")
        return guard.message(request, text, status)

    def opened_or_message(request: Request, job: str) -> Opened | Response:
        try:
            return repos.get(job)
        except Unavailable as exc:
            return problem(request, exc, 404 if job not in kit.view.config().jobs else 503)

    def with_opened(handler: Callable[[Request, str, Opened], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            job = request.path_params["job"]
            opened = opened_or_message(request, job)
            if isinstance(opened, Response):
                return opened
            try:
                return handler(request, job, opened)
            except Unavailable as exc:
                return problem(request, exc, 503)
            except CoffreError as exc:
                return problem(request, exc, 404)
        return run

    # /restore
    def home(request: Request) -> Response:
        config = kit.view.config()
        jobs = tuple(JobChoice(name, base_of(name), job.repository)
                     for name, job in sorted(config.jobs.items()))
        return pages.render(request, "local/restore.html", RestoreHomePage(
            title=_("Restore files"), jobs=jobs, tasks=tuple(tasks.recent()[:10]), area=str(area())))

    # /restore/{job}
    def calendar_page(request: Request, job: str, opened: Opened) -> Response:
        zone = tz()
        snaps = opened.snapshots
        by_day: dict[date, list[Snapshot]] = {}
        for s in snaps:
            by_day.setdefault(local_day(seconds(s.time_ns), zone), []).append(s)
        months = sorted({(d.year, d.month) for d in by_day})
        latest = snaps[-1] if snaps else None
        wanted = request.query_params.get("month", "")
        try:
            year, month = (int(x) for x in wanted.split("-")) if wanted else (0, 0)
            date(year, month, 1)
        except ValueError:
            if latest is not None:
                d = local_day(seconds(latest.time_ns), zone)
                year, month = d.year, d.month
            else:
                today = local_day(kit.view.clock(), zone)
                year, month = today.year, today.month
        chosen: date | None = None
        try:
            chosen = date.fromisoformat(request.query_params.get("day", ""))
        except ValueError:
            if latest is not None and not wanted:
                chosen = local_day(seconds(latest.time_ns), zone)
        if chosen is not None and (chosen.year, chosen.month) != (year, month):
            chosen = None
        weeks = tuple(
            tuple(CalendarDay(d.day if d.month == month else None, d.isoformat() if d.month == month else "",
                              len(by_day.get(d, [])) if d.month == month else 0, d == chosen)
                  for d in week)
            for week in calendar.Calendar(firstweekday=0).monthdatescalendar(year, month))
        earlier = [m for m in months if m < (year, month)]
        later = [m for m in months if m > (year, month)]
        drill = next((s for s in reversed(snaps) if s.databases), None)
        return pages.render(request, "local/restore_calendar.html", CalendarPage(
            title=_("Restore from {job}").format(job=job), job=job, base=base_of(job),
            month=f"{year:04d}-{month:02d}",
            month_label=month_label(year, month), weekdays=weekday_names(), weeks=weeks,
            previous_month=f"{earlier[-1][0]:04d}-{earlier[-1][1]:02d}" if earlier else None,
            next_month=f"{later[0][0]:04d}-{later[0][1]:02d}" if later else None,
            day=chosen.isoformat() if chosen else None,
            day_snapshots=tuple(snapshot_row(s) for s in by_day.get(chosen, [])) if chosen else (),
            latest=snapshot_row(latest) if latest else None, count=len(snaps),
            drill_snapshot=snapshot_row(drill) if drill else None, problems=tuple(opened.problems),
            area=str(area())))

    # /restore/{job}/snapshot/{id}?path=
    def folder_page(request: Request, job: str, opened: Opened) -> Response:
        snap = opened.snapshot(request.path_params["snapshot"])
        try:
            parts = split_path(request.query_params.get("at", "/"))
        except ValueError:
            return guard.message(request, _("This path is not one a backup holds."), 400)
        nodes = opened.listing(snap, parts)
        if nodes is None:
            node = opened.node(snap, parts)
            if node is not None:  # a file: its folder
                return back(job, "/snapshot/" + snap.id, at=joined(parts[:-1]))
            return guard.message(request, _("This folder is not in the backup of {time}.").format(
                time=_when(seconds(snap.time_ns))), 404)
        here = joined(parts)
        entries = []
        for n in sorted(nodes, key=lambda n: (n.type != "dir", os.fsdecode(n.name).lower())):
            name = os.fsdecode(n.name)
            path = joined([*parts, name])
            entries.append(Entry(name, path, n.type, kind_label(n.type), n.size if n.type == "file" else None,
                                 seconds(n.mtime_ns), linkable(path)))
        return pages.render(request, "local/browse.html", FolderPage(
            title=_("Backup of {time}").format(time=_when(seconds(snap.time_ns))), job=job, base=base_of(job),
            snapshot=snapshot_row(snap), path=here, crumbs=crumbs_of(parts), entries=tuple(entries),
            area=str(area())))

    def _when(ts: float) -> str:
        from coffre.web.render import format_when

        return format_when(ts, tz())

    # /restore/{job}/search?q=&snapshot=
    def search_page(request: Request, job: str, opened: Opened) -> Response:
        query = request.query_params.get("q", "").strip()[:200]
        ref = request.query_params.get("snapshot") or ""
        one = opened.snapshot(ref) if ref else None
        snaps = [one] if one is not None else opened.snapshots[-RECENT_SNAPSHOTS:]
        matches: list[Match] = []
        error: str | None = None
        truncated = False
        searched = 0
        if query:
            try:
                result = Finder(opened.repo, [search_pattern(query)], ignore_case=True).run(snaps)
            except CoffreError as exc:
                result, error = None, exc.message
            if result is not None:
                searched = result.searched
                if result.errors:
                    error = "; ".join(result.errors[:3])
                items = list(result.matches.items())
                truncated = len(items) > MATCHES_SHOWN
                for path, versions in items[:MATCHES_SHOWN]:
                    newest = max(versions, key=lambda v: (v.snapshots[-1].time_ns, v.snapshots[-1].id))
                    n = newest.node
                    matches.append(Match(path, path.rsplit("/", 1)[-1], n.type,
                                         n.size if n.type == "file" else None, seconds(n.mtime_ns),
                                         len(versions), snapshot_row(newest.snapshots[-1]), linkable(path)))
                matches.sort(key=lambda m: (-m.snapshot.time, m.path))
        return pages.render(request, "local/browse_search.html", SearchPage(
            title=_("Search in the backups of {job}").format(job=job), job=job, base=base_of(job),
            query=query,
            snapshot=snapshot_row(one) if one else None, searched=searched, matches=tuple(matches),
            truncated=truncated, error=error))

    # /restore/{job}/versions?path=
    def versions_page(request: Request, job: str, opened: Opened) -> Response:
        try:
            parts = split_path(request.query_params.get("at", ""))
        except ValueError:
            parts = []
        if not parts:
            return guard.message(request, _("This path is not one a backup holds."), 400)
        rows: list[tuple[Node, list[Snapshot]]] = []
        for snap in opened.snapshots:
            node = opened.node(snap, parts)
            if node is None:
                continue
            if rows and version_key(rows[-1][0]) == version_key(node):
                rows[-1][1].append(snap)
            else:
                rows.append((node, [snap]))
        versions = tuple(
            VersionRow(n.type, kind_label(n.type), n.size if n.type == "file" else None, seconds(n.mtime_ns),
                       len(held), snapshot_row(held[0]), snapshot_row(held[-1]))
            for n, held in reversed(rows))
        return pages.render(request, "local/browse_versions.html", VersionsPage(
            title=_("Versions of {name}").format(name=parts[-1]), job=job, base=base_of(job),
            path=joined(parts), name=parts[-1],
            crumbs=crumbs_of(parts), versions=versions, searched=len(opened.snapshots)))

    # /restore/{job}/download?snapshot=&path=
    def download(request: Request, job: str, opened: Opened) -> Response:
        snap = opened.snapshot(request.query_params.get("snapshot", ""))
        try:
            parts = split_path(request.query_params.get("at", ""))
        except ValueError:
            parts = []
        node = opened.node(snap, parts) if parts else None
        if node is None or node.type != "file":
            return guard.message(request, _("This file is not in the backup of {time}.").format(
                time=_when(seconds(snap.time_ns))), 404)
        return StreamingResponse(opened.content(node), media_type="application/octet-stream",
                                 headers={"Content-Disposition": attachment(parts[-1])})

    # POST /restore/{job}/restore  (snapshot, path)
    def start_restore(request: Request, job: str, opened: Opened) -> Response:
        form = form_of(request)
        session = session_of(request)
        snap = opened.snapshot(form.get("snapshot", ""))
        try:
            parts = split_path(form.get("at", "/"))
        except ValueError:
            return guard.message(request, _("This path is not one a backup holds."), 400)
        node = opened.node(snap, parts) if parts else None
        if parts and node is None:
            return guard.message(request, _("This file is not in the backup of {time}.").format(
                time=_when(seconds(snap.time_ns))), 404)
        is_file = node is not None and node.type != "dir"
        config = kit.view.config()
        try:
            target, final = destination(area(), folder_name(seconds(snap.time_ns), job, tz()), parts, is_file)
        except (UnsafeDestination, OSError) as exc:
            text = exc.message if isinstance(exc, CoffreError) else str(exc.strerror)
            if session is not None:
                session.flash(_("Not restored: {reason}").format(reason=text), "error")
            return back(job, "/snapshot/" + snap.id, at=joined(parts[:-1] if is_file else parts))
        ref = snap.id + (":" + joined(parts) if parts else "")
        priority = Priority(config.agent.nice, config.agent.ionice)
        command = coffre_command(["restore", ref, "--target", str(target)], opened.endpoint, priority,
                                 i18n.language())
        task = Task(id="", kind="restore", job=job, what=joined(parts), snapshot_time=seconds(snap.time_ns),
                    started=0.0, destination=str(target), result=str(final))
        try:
            task = tasks.start(task, command, child_environment(opened.endpoint), priority, restore_summary)
        except TooBusy:
            if session is not None:
                session.flash(_("Another restore or drill is running: wait for it to finish."), "error")
            return back(job, "/snapshot/" + snap.id, at=joined(parts[:-1] if is_file else parts))
        return guard.redirect("/restore/task/" + task.id)

    # POST /restore/{job}/drill  (snapshot)
    def start_drill(request: Request, job: str, opened: Opened) -> Response:
        session = session_of(request)
        snap = opened.snapshot(form_of(request).get("snapshot", ""))
        if not snap.databases:
            if session is not None:
                session.flash(_("This backup holds no database."), "error")
            return back(job)
        config = kit.view.config()
        priority = Priority(config.agent.nice, config.agent.ionice)
        command = coffre_command(["drill", snap.id], opened.endpoint, priority, i18n.language())
        task = Task(id="", kind="drill", job=job, what="", snapshot_time=seconds(snap.time_ns), started=0.0)
        try:
            task = tasks.start(task, command, child_environment(opened.endpoint), priority, drill_summary)
        except TooBusy:
            if session is not None:
                session.flash(_("Another restore or drill is running: wait for it to finish."), "error")
            return back(job)
        return guard.redirect("/restore/task/" + task.id)

    # /restore/task/{id} and its progress part
    def task_page(request: Request) -> Response:
        task = tasks.get(request.path_params["task"])
        if task is None:
            return guard.message(request, _("This task is unknown (the agent was restarted?)."), 404)
        page = TaskPage(title=_("Database drill") if task.kind == "drill" else _("Restore"), task=task,
                        base=base_of(task.job), area=str(area()))
        fragment = request.url.path.endswith("/progress")
        return pages.render(request, "local/task_progress.html" if fragment else "local/task.html", page)

    return [
        Route("/restore", guard.page(home)),
        Route("/restore/{job}", guard.page(with_opened(calendar_page))),
        Route("/restore/{job}/snapshot/{snapshot}", guard.page(with_opened(folder_page))),
        Route("/restore/{job}/search", guard.page(with_opened(search_page))),
        Route("/restore/{job}/versions", guard.page(with_opened(versions_page))),
        Route("/restore/{job}/download", guard.page(with_opened(download))),
        Route("/restore/{job}/restore", guard.page(with_opened(start_restore)), methods=["POST"]),
        Route("/restore/{job}/drill", guard.page(with_opened(start_drill)), methods=["POST"]),
        Route("/restore/task/{task}", guard.page(task_page)),
        Route("/restore/task/{task}/progress", guard.page(task_page)),
    ]


def base_of(job: str) -> str:
    """The path of a job's restore pages, its name quoted as one URL segment."""
    return "/restore/" + segment(job)


def attachment(name: str) -> str:
    """Content-Disposition for a download: an ASCII fallback name (quotes, backslashes,
    control and other characters replaced) and the real name percent-encoded (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in name) or "file"
    encoded = quote(name.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
