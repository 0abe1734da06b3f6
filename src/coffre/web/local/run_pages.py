"""« Sauvegarder maintenant »: a POST per job (CSRF-checked by the guard) asks the scheduler to
start it (`AgentView.run_now`), then the progress page shows the step it is at, the time
elapsed and, when it ends, its outcome with the bytes read and sent. htmx fetches the progress
fragment every second; without JavaScript the page has an « Actualiser » link.

A run is found by its job and the instant the button was pressed (`since`): the first run of
that job starting after it (or the one already running)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coffre.agent.records import RunRecord
from coffre.core.i18n import _
from coffre.web.local import history
from coffre.web.local.app import LocalKit
from coffre.web.local.contexts import Progress, ProgressPage
from coffre.web.local.status_pages import run_url
from coffre.web.security import session_of
from coffre.web.urls import segment

SLACK = 2.0  # seconds: a run recorded this much before the button's instant is still its run


def _since(request: Request) -> float | None:
    try:
        return float(request.query_params.get("since", ""))
    except ValueError:
        return None


def progress_of(kit: LocalKit, job: str, since: float | None) -> Progress:
    view = kit.view
    now = view.clock()
    base = f"/jobs/{segment(job)}"
    poll = kit.urls.to(base + "/progress", since=since)
    page = kit.urls.to(base + "/run", since=since)
    latest: RunRecord | None = None
    for r in view.store().runs(job=job, limit=5):
        if since is None or r.started >= since - SLACK or r.outcome == "running":
            latest = r
    started = view.running().get(job)
    if started is not None or (latest is not None and latest.outcome == "running"):
        begun = started if started is not None else latest.started if latest is not None else now
        step = view.step(job)
        steps = latest.steps if latest is not None and latest.outcome == "running" else ()
        return Progress(job, "running", history.step_words(step[0]) if step else None, begun,
                        max(0.0, now - begun), tuple(history.step_row(s) for s in steps), None, poll, page)
    if latest is not None:
        row = history.run_row(latest, run_url(kit.urls))
        return Progress(job, "done", None, latest.started, latest.duration, row.steps, row, poll, page)
    return Progress(job, "queued", None, None, None, (), None, poll, page)


def routes(kit: LocalKit) -> list[BaseRoute]:
    def run_now(request: Request) -> Response:
        job = request.path_params["job"]
        config = kit.view.config()
        if job not in config.jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        since = kit.view.clock()
        session = session_of(request)
        if kit.view.run_now(job):
            if session is not None:
                session.flash(_("The backup {job} is starting.").format(job=job), "ok")
            return kit.guard.redirect(f"/jobs/{segment(job)}/run", since=since)
        if session is not None:
            session.flash(_("The backup {job} is running already.").format(job=job), "info")
        return kit.guard.redirect(f"/jobs/{segment(job)}/run")

    def show(request: Request) -> Response:
        job = request.path_params["job"]
        if job not in kit.view.config().jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        page = ProgressPage(title=_("Backup {job}").format(job=job),
                            progress=progress_of(kit, job, _since(request)))
        return kit.pages.render(request, "local/progress.html", page)

    def fragment(request: Request) -> Response:
        job = request.path_params["job"]
        if job not in kit.view.config().jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        page = ProgressPage(title="", progress=progress_of(kit, job, _since(request)))
        return kit.pages.render(request, "local/_progress.html", page)

    guard = kit.guard
    return [Route("/jobs/{job:path}/run", guard.page(run_now), methods=["POST"]),
            Route("/jobs/{job:path}/run", guard.page(show), methods=["GET", "HEAD"]),
            Route("/jobs/{job:path}/progress", guard.page(fragment), methods=["GET", "HEAD"])]
