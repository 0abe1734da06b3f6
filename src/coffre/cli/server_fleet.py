"""`coffre server fleet [--json]`: the tenants by risk (failing, late, quota nearly full,
scrub errors, copies diverging, never reported), with the reasons in plain words; exit 0 when
all are green, 1 otherwise (docs/server.md, "Fleet status").

Also the `--alerts FILE` option of `coffre server` (the provider's fleet alerts,
server/fleet_alerts.py): `add_alerts_option(p)` adds it, `alerts_extra(args)` checks the file
and gives what `Settings.extra` must hold for the serving instance's fleet round to use it."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from coffre.core.errors import EXIT_OK
from coffre.core.i18n import _, language, ngettext

EXIT_NOT_GREEN = 1


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "fleet",
        help=_("the tenants by risk: failing, late, quota nearly full, scrub errors, copies diverging"),
        description=_("Lists every tenant (disabled ones aside), the most at risk first, with the reasons: "
                      "a failed backup, no report since the schedule's due time, a quota nearly full or "
                      "reached, objects the scrub found damaged, copies diverging, no report ever. Exit "
                      "status 0 when all are green, 1 otherwise."))
    p.add_argument("--json", action="store_true", help=_("print JSON for programs"))
    p.set_defaults(func=cmd_fleet)


def add_alerts_option(p: argparse.ArgumentParser) -> None:
    """`--alerts FILE` (for `coffre server`, the serving command)."""
    p.add_argument("--alerts", metavar=_("FILE"), default=argparse.SUPPRESS,
                   help=_("the provider's fleet alerts: a TOML file with [alerts], e-mail and webhooks "
                          "(or COFFRE_SERVER_ALERTS; default: no alerts)"))


def alerts_extra(args: argparse.Namespace) -> dict[str, str]:
    """What `Settings.extra` holds for the fleet alerts: the file's absolute path, checked now so
    that a broken file stops the start with every problem listed ({} when none is given)."""
    from coffre.server import fleet_alerts

    path = getattr(args, "alerts", None) or os.environ.get(fleet_alerts.ENV, "")
    if not path:
        return {}
    path = os.path.abspath(path)
    fleet_alerts.load(path)
    return {fleet_alerts.SETTINGS_KEY: path}


def cmd_fleet(args: argparse.Namespace) -> int:
    from coffre.cli.server_common import settings_from_args
    from coffre.server import fleet
    from coffre.server.context import ServerContext

    ctx = ServerContext.open(settings_from_args(args))
    try:
        now = ctx.clock.now_ns()
        with ctx.db.read() as conn:
            rows = fleet.assess(conn, now)
    finally:
        ctx.close()
    if args.json:
        print(json.dumps(as_json(rows, now), ensure_ascii=False, indent=2))
    else:
        for line in as_lines(rows):
            print(line)
    return EXIT_OK if all(r.light == fleet.GREEN for r in rows) else EXIT_NOT_GREEN


def as_json(rows: list[Any], now_ns: int) -> dict[str, Any]:
    from coffre.server import fleet, fleet_texts

    lang = language()
    return {
        "ok": all(r.light == fleet.GREEN for r in rows), "now_ns": now_ns,
        "tenants": [{
            "tenant": r.tenant, "display_name": r.display_name, "contact": r.contact, "state": r.state,
            "light": r.light, "since_ns": r.since_ns, "last_report_ns": r.last_report_ns, "quota": r.quota,
            "reasons": [{"code": x.code, "severity": x.severity, "since_ns": x.since_ns,
                         "text": fleet_texts.reason_text(x, lang), "detail": x.detail} for x in r.reasons],
            "jobs": [{"site": j.site, "job": j.job, "outcome": j.outcome, "received_ns": j.received_ns,
                      "next_due_ns": j.next_due_ns, "late_at_ns": j.late_at_ns} for j in r.jobs],
        } for r in rows],
    }


def as_lines(rows: list[Any]) -> list[str]:
    from coffre.server import fleet, fleet_texts

    lang = language()
    if not rows:
        return [_("no tenant yet: 'coffre server tenant add' creates one")]
    width = max(len(fleet_texts.light_word(x, lang)) for x in (fleet.RED, fleet.ORANGE, fleet.GREEN))
    names = max(len(r.tenant) for r in rows)
    lines = []
    for r in rows:
        head = f"{fleet_texts.light_word(r.light, lang):<{width}}  {r.tenant:<{names}}"
        if r.display_name:
            head += f"  {r.display_name}"
        if r.light != fleet.GREEN and r.since_ns is not None:
            head += "  " + _("since {when}").format(when=fleet_texts.when(r.since_ns, lang))
        elif r.last_report_ns is not None:
            head += "  " + _("last report {when}").format(when=fleet_texts.when(r.last_report_ns, lang))
        lines.append(head.rstrip())
        lines.extend("    - " + fleet_texts.reason_text(x, lang) for x in r.reasons)
    counts = {light: sum(1 for r in rows if r.light == light)
              for light in (fleet.RED, fleet.ORANGE, fleet.GREEN)}
    lines += ["", ngettext("{n} tenant: {red} failing, {orange} to check, {green} OK",
                           "{n} tenants: {red} failing, {orange} to check, {green} OK", len(rows)).format(
        n=len(rows), red=counts[fleet.RED], orange=counts[fleet.ORANGE], green=counts[fleet.GREEN])]
    return lines
