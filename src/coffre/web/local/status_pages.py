"""The status light (`/`), the history (`/history`), one run (`/runs/{id}`) and the plots
(`/plots`) of the pharmacy's page. Handlers read the status store and the configuration in force
through the `AgentView`, build the contexts with `history.py`, and render; they change nothing."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coffre.agent.model import Config
from coffre.agent.overview import MESSAGES, status_report
from coffre.agent.records import DiskSighting, RunRecord
from coffre.agent.status import StatusStore
from coffre.core.i18n import _
from coffre.web.local import history
from coffre.web.local.app import AgentView, LocalKit
from coffre.web.local.contexts import (
    HistoryPage,
    JobAction,
    PlotsPage,
    RunningRow,
    RunPage,
    StatusPage,
)
from coffre.web.urls import Urls, segment

log = logging.getLogger("coffre.web")

HISTORY_DAYS = 35  # the history and plots show these last days
DAY = 86400.0


def screen_messages(store: StatusStore) -> list[Any]:
    """The alerts' latest screen messages (agent/alerts/outbox.py); none when unreadable."""
    from coffre.agent.alerts.outbox import Outbox

    try:
        return list(Outbox(store.path).messages(MESSAGES))
    except Exception as exc:  # the light must show even when the messages cannot be read
        log.warning("the screen messages cannot be read: %s", exc)
        return []


def run_url(urls: Urls) -> history.RunUrl:
    return lambda run_id: urls.to(f"/runs/{run_id}")


def job_run_url(urls: Urls, job: str) -> str:
    return urls.to(f"/jobs/{segment(job)}/run")


def running_rows(view: AgentView, urls: Urls, runs: list[RunRecord], now: float) -> tuple[RunningRow, ...]:
    """The jobs running now: this agent's threads, and runs the store shows going (`coffre run`)."""
    started = dict(view.running())
    for r in runs:
        if r.outcome == "running":
            started.setdefault(r.job, r.started)
    out = []
    for job, at in sorted(started.items()):
        step = view.step(job)
        out.append(RunningRow(job, history.step_words(step[0]) if step else None, at, max(0.0, now - at),
                              job_run_url(urls, job)))
    return tuple(out)


def _runs(store: StatusStore, now: float, days: int = HISTORY_DAYS) -> list[RunRecord]:
    return store.runs(since=now - days * DAY)


def _sightings(config: Config, store: StatusStore, now: float) -> list[DiskSighting]:
    out: list[DiskSighting] = []
    for name in config.media_sets:
        out += store.sightings(name, since=now - HISTORY_DAYS * DAY)
    return out


def status_page(kit: LocalKit) -> StatusPage:
    view = kit.view
    config, store, now = view.config(), view.store(), view.clock()
    report = status_report(config, store, now, screen_messages(store))
    runs = _runs(store, now)
    running = running_rows(view, kit.urls, runs, now)
    busy = {r.job for r in running}
    return StatusPage(
        title=_("Backups of this pharmacy"),
        light=history.light_of(report, runs, config.web.contact),
        rows=history.target_rows(report),
        jobs=tuple(JobAction(name, name in busy, job_run_url(kit.urls, name)) for name in config.jobs),
        running=running, messages=history.message_rows(report))


def routes(kit: LocalKit) -> list[BaseRoute]:
    def home(request: Request) -> Response:
        return kit.pages.render(request, "local/status.html", status_page(kit))

    def history_page(request: Request) -> Response:
        view = kit.view
        config, store, now = view.config(), view.store(), view.clock()
        runs = _runs(store, now)
        page = HistoryPage(title=_("History"), days=HISTORY_DAYS,
                           jobs=history.job_history(config, runs, run_url(kit.urls)),
                           disks=history.disk_rows(_sightings(config, store, now)))
        return kit.pages.render(request, "local/history.html", page)

    def plots_page(request: Request) -> Response:
        view = kit.view
        config, store, now = view.config(), view.store(), view.clock()
        page = PlotsPage(title=_("Plots"), days=HISTORY_DAYS,
                         jobs=history.job_plots(config, _runs(store, now), now))
        return kit.pages.render(request, "local/plots.html", page)

    def one_run(request: Request) -> Response:
        record = kit.view.store().run(int(request.path_params["run_id"]))
        if record is None:
            return kit.guard.message(request, _("This run is not in the history (it may have been "
                                                "forgotten)."), 404)
        row = history.run_row(record, run_url(kit.urls))
        return kit.pages.render(request, "local/run.html", RunPage(title=_("Run of {job}").format(
            job=record.job), run=row))

    guard = kit.guard
    return [Route("/", guard.page(home), methods=["GET", "HEAD"]),
            Route("/history", guard.page(history_page), methods=["GET", "HEAD"]),
            Route("/plots", guard.page(plots_page), methods=["GET", "HEAD"]),
            Route("/runs/{run_id:int}", guard.page(one_run), methods=["GET", "HEAD"])]
