"""« Sauvegarder maintenant »: a POST per job (CSRF-checked by the guard) asks the scheduler to
start it (`AgentView.run_now`), then the progress page shows the step it is at, the time
elapsed and, when it ends, its outcome with the bytes read and sent. htmx fetches the progress
fragment every second; without JavaScript the page has an « Actualiser » link.

The page follows the first run of that job started after the click: the click notes the id of
the job's latest run (`after`; ids only grow, whatever the clock does) and the run followed is
the first with a greater id: the click's own, or a scheduled one that started first and so took
its place. A run started before the click is never it, even a moment before: until the click's
run starts, the page says it is starting. A run in progress at the click (the agent's, or a
`coffre run` in a terminal, which the agent's own start would only find busy) is the one
followed: the mark is then the id before it.

A request made of an agent that has stopped since (restarted: `agent=` names the process asked,
`AgentView.incarnation`) is gone with it: once the agent serving the page has nothing of the
job to start (`AgentView.pending`) and the store no run after the mark, the page says the
backup did not start and offers the button again, instead of « Démarrage… » until the next
night's run. A request of the agent serving the page is never said lost: one it could not start
because the job was running elsewhere (a `coffre run` in a terminal) is followed by that run, and
one refused while the agent's own run of the job was starting is taken by the agent if that run
gives up without a record (the job held by a terminal's run sending its alerts)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coffre.core.i18n import _
from coffre.web.local import history
from coffre.web.local.app import LocalKit
from coffre.web.local.contexts import Progress, ProgressPage
from coffre.web.local.status_pages import run_url
from coffre.web.security import session_of
from coffre.web.urls import segment


def _followed(kit: LocalKit, request: Request, job: str) -> Progress:
    """The progress of the run the page's address follows (`after`, `agent`)."""
    try:
        after: int | None = int(request.query_params.get("after", ""))
    except ValueError:
        after = None
    return progress_of(kit, job, after, request.query_params.get("agent"))


def progress_of(kit: LocalKit, job: str, after: int | None, asked_of: str | None) -> Progress:
    """Where the run followed is (see the module): running, done, not started yet, or never to
    start (asked of an agent process that has stopped since: `asked_of`)."""
    view = kit.view
    now = view.clock()
    base = f"/jobs/{segment(job)}"
    poll = kit.urls.to(base + "/progress", after=after, agent=asked_of)
    page = kit.urls.to(base + "/run", after=after, agent=asked_of)
    # Asked first: a run that ends between the two questions is then found in the store.
    pending = view.pending(job)
    store = view.store()
    latest = store.first_run_after(job, after) if after is not None else None
    if latest is None and after is not None and store.last_run_id(job) < after:
        after = None  # a history begun anew (the file moved aside): its runs all came after
    if after is None:
        runs = store.runs(job=job, limit=1)
        latest = runs[-1] if runs else None
    started = view.running().get(job)
    if latest is not None and latest.outcome != "running" and (after is not None or started is None):
        row = history.run_row(latest, run_url(kit.urls))
        return Progress(job, "done", None, latest.started, latest.duration, row.steps, row, poll, page)
    if started is not None or latest is not None:
        begun = started if started is not None else latest.started if latest is not None else now
        step = view.step(job)
        steps = latest.steps if latest is not None and latest.outcome == "running" else ()
        return Progress(job, "running", history.step_words(step[0]) if step else None, begun,
                        max(0.0, now - begun), tuple(history.step_row(s) for s in steps), None, poll, page)
    if after is not None and asked_of is not None and asked_of != view.incarnation and not pending:
        return Progress(job, "lost", None, None, None, (), None, poll, page,
                        again_url=kit.urls.to(base + "/run"))
    return Progress(job, "queued", None, None, None, (), None, poll, page)


def routes(kit: LocalKit) -> list[BaseRoute]:
    def run_now(request: Request) -> Response:
        job = request.path_params["job"]
        config = kit.view.config()
        if job not in config.jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        asked, after = kit.view.run_now(job)
        session = session_of(request)
        if asked:
            if session is not None:
                session.flash(_("The backup {job} is starting.").format(job=job), "ok")
        elif session is not None:  # running, or asked already: the page follows that run
            session.flash(_("The backup {job} is running already.").format(job=job), "info")
        return kit.guard.redirect(f"/jobs/{segment(job)}/run", after=after,
                                  agent=kit.view.incarnation or None)

    def show(request: Request) -> Response:
        job = request.path_params["job"]
        if job not in kit.view.config().jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        page = ProgressPage(title=_("Backup {job}").format(job=job), progress=_followed(kit, request, job))
        return kit.pages.render(request, "local/progress.html", page)

    def fragment(request: Request) -> Response:
        job = request.path_params["job"]
        if job not in kit.view.config().jobs:
            return kit.guard.message(request, _("There is no such job."), 404)
        page = ProgressPage(title="", progress=_followed(kit, request, job))
        return kit.pages.render(request, "local/_progress.html", page)

    guard = kit.guard
    return [Route("/jobs/{job:path}/run", guard.page(run_now), methods=["POST"]),
            Route("/jobs/{job:path}/run", guard.page(show), methods=["GET", "HEAD"]),
            Route("/jobs/{job:path}/progress", guard.page(fragment), methods=["GET", "HEAD"])]
