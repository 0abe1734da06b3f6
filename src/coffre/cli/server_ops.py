"""`coffre server scrub`, `coffre server replicate`, `coffre server adopt`: the provider's
checks of what the server stores, its copy in a second centre, and repairs from that copy (server/scrub.py,
server/replication.py; docs/server.md).

Exit status: `scrub --now`: 1 when the pass found a damaged object, else 0; `scrub
--findings`: 1 when a finding is open (damage, or a difference on the second site), else 0
(orphans are reported, never counted); `scrub --repair-from`: 1 when
an object could not be repaired. `replicate`: 0 when the
copy completed and (with --verify) both sites hold the same objects, 1 on a stopped copy or a
divergence. 2 for a usage error."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from coffre.cli.output import emit_json, human_duration, human_size, human_time, say, table, warn
from coffre.cli.server_common import add_location_options, settings_from_args
from coffre.core.errors import EXIT_FATAL, EXIT_OK, UsageError
from coffre.core.i18n import N_, _, ngettext
from coffre.core.lazy import lazy_module
from coffre.core.sizes import parse_rate
from coffre.storage.base import Backend
from coffre.storage.faults import KillSwitchBackend
from coffre.storage.retry import ATTEMPTS, RetryBackend, retry_budget

if TYPE_CHECKING:
    from coffre.server import context, replication, scrub
    from coffre.server.context import ServerContext
else:  # loaded when an action runs, not when the parser is built (core/lazy.py)
    context, replication, scrub = (lazy_module("coffre.server." + name)
                                   for name in ("context", "replication", "scrub"))

PROBLEM_WORDS = {
    "mismatch": N_("bytes no longer match the name"),
    "missing": N_("missing from storage"),
    "unreadable": N_("unreadable"),
    "size": N_("wrong size"),
    "replica-missing": N_("missing on the second site"),
    "replica-differs": N_("different on the second site"),
}
VERIFY_EVERY_S = 86400.0  # with --every: how often --verify runs
SHOWN = 20                # objects named per tenant in a verify's text output


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "scrub", help=_("check that stored objects still match their names, without the keys"),
        description=_("Re-reads stored objects and checks each against its name (the SHA-256 of "
                      "its bytes): --now runs a whole pass at once (the running server scrubs in "
                      "the background at the configured rate); --findings lists what was found; "
                      "--repair-from repairs it from the second site. "
                      "Exit status 1 when an object is damaged (with --findings: or differs on the "
                      "second site)."))
    add_location_options(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--now", action="store_true", help=_("run a whole pass now and list what it found"))
    what.add_argument("--findings", action="store_true",
                      help=_("list the open findings (damaged objects, second-site differences) and "
                             "the orphans"))
    what.add_argument("--repair-from", metavar=_("LOCATION"),
                      help=_("repair the damaged or missing objects from the second site's copy "
                             "(a folder or s3://HOST/BUCKET/PREFIX written by 'coffre server "
                             "replicate'), when that copy matches its name"))
    p.add_argument("--all", action="store_true", help=_("with --findings: resolved findings too"))
    p.add_argument("--rate", metavar=_("RATE"),
                   help=_("with --now: bytes per second to read at most, e.g. 50MiB/s (default: "
                          "the server's scrub rate)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scrub)

    p = actions.add_parser(
        "replicate", help=_("copy every tenant's objects to a second site, and prove both match"),
        description=_("Copies every tenant's new objects to another object store (a folder or "
                      "s3://HOST/BUCKET/PREFIX: the second centre), reading each back and checking "
                      "its hash; a cut copy resumes where it stopped. Nothing is ever deleted "
                      "there unless --remove-vanished. --verify compares both sites per tenant "
                      "(names and sizes; hashes of a sample, or of everything with --deep); alone, "
                      "it only verifies."))
    add_location_options(p)
    p.add_argument("--to", required=True, metavar=_("LOCATION"),
                   help=_("the second site: a folder or s3://HOST/BUCKET/PREFIX (credentials as for "
                          "any S3 repository: AWS_ACCESS_KEY_ID..., AWS_PROFILE)"))
    p.add_argument("--to-profile", metavar=_("PROFILE"),
                   help=_("with an s3:// second site: take its credentials from this profile of "
                          "~/.aws/credentials (the second centre's keys, not this server's)"))
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help=_("copy what is new, then stop"))
    when.add_argument("--every", type=float, metavar=_("SECONDS"),
                      help=_("copy what is new, again and again with this pause, until stopped"))
    p.add_argument("--verify", action="store_true",
                   help=_("compare both sites; with --every, once a day"))
    p.add_argument("--deep", action="store_true",
                   help=_("with --verify: re-hash every object on both sides, not a sample"))
    p.add_argument("--catch-up", action="store_true",
                   help=_("also compare listings now and copy whatever the second site lacks "
                          "(done once a day anyway)"))
    p.add_argument("--remove-vanished", action="store_true",
                   help=_("remove from the second site the objects this server no longer has, once "
                          "gone for the hold"))
    p.add_argument("--hold-days", type=float, metavar=_("DAYS"),
                   help=_("with --remove-vanished: days an object stays after it vanished here "
                          "(default: the recycle bin's days)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replicate)

    p = actions.add_parser(
        "adopt", help=_("start a second server on a replica: its database from the replica"),
        description=_("Fills this server's new, empty database from a replica written by "
                      "'coffre server replicate': tenants, repositories and tokens (the same "
                      "tokens keep working), and a row for every object there. Serve it with "
                      "--objects naming the replica."))
    add_location_options(p)
    p.add_argument("replica", metavar=_("LOCATION"), help=_("the replica: a folder or s3://HOST/BUCKET/PREFIX"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_adopt)


def _open(args: argparse.Namespace) -> ServerContext:
    return context.ServerContext.open(settings_from_args(args))


def _problem(problem: str) -> str:
    word = PROBLEM_WORDS.get(problem)
    return _(word) if word else problem


def _blocking(found: list[scrub.Finding]) -> list[scrub.Finding]:
    """The findings that make the exit status 1: damage and second-site differences."""
    return [f for f in found if f.resolved_ns is None]


def _findings_table(found: list[scrub.Finding]) -> str:
    rows = []
    for f in found:
        obj = "config" if f.kind == "config" else f"{f.kind}/{f.name}"
        state = _("resolved {when}").format(when=human_time(f.resolved_ns)) if f.resolved_ns else ""
        rows.append([f.tenant or str(f.tenant_id), f.repository or str(f.repository_id), obj,
                     _problem(f.problem), human_time(f.found_ns), state])
    return table(rows, [_("tenant"), _("repository"), _("object"), _("problem"), _("found"), ""])


# -- scrub ---------------------------------------------------------------------------------

def cmd_scrub(args: argparse.Namespace) -> int:
    if args.all and not args.findings:
        raise UsageError(_("--all goes with --findings"))
    if args.rate and not args.now:
        raise UsageError(_("--rate goes with --now"))
    rate = None
    if args.rate:
        found = parse_rate(args.rate, "--rate")  # SizeError is a UsageError
        rate = 0.0 if found is None else found  # 0: unlimited
    ctx = _open(args)
    try:
        if args.now:
            return _scrub_now(ctx, rate, args.json)
        if args.repair_from:
            return _repair(ctx, args.repair_from, args.json)
        return _show_findings(ctx, args.all, args.json)
    finally:
        ctx.close()


def _scrub_now(ctx: ServerContext, rate: float | None, as_json: bool) -> int:
    started = time.monotonic()
    quiet = logging.getLogger("coffre.server")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # each finding is listed below: not twice
    try:
        summary = scrub.scrub_now(ctx, rate=rate)
    finally:
        quiet.setLevel(level)
    bad = _blocking(summary.problems)
    if as_json:
        emit_json({"ok": not bad, "summary": summary.to_json()})
        return EXIT_FATAL if bad else EXIT_OK
    say(ngettext("scrubbed {n} object ({size} read) in {duration}",
                 "scrubbed {n} objects ({size} read) in {duration}", summary.objects).format(
        n=summary.objects, size=human_size(summary.bytes),
        duration=human_duration(time.monotonic() - started)))
    if summary.orphans:
        say(ngettext(
            "{n} object stored without a record, older than a day ({size}): an upload cut before "
            "it was acknowledged; reported, not removed",
            "{n} objects stored without a record, older than a day ({size}): uploads cut before "
            "they were acknowledged; reported, not removed", len(summary.orphans)).format(
            n=len(summary.orphans), size=human_size(sum(o.size for o in summary.orphans))))
    if summary.temporaries_removed:
        say(ngettext("{n} partial upload removed", "{n} partial uploads removed",
                     summary.temporaries_removed).format(n=summary.temporaries_removed))
    if summary.late:
        warn(_("warning: at the configured rate, a background pass takes longer than the scrub "
               "interval: raise the rate or the interval"))
    if not bad:
        say(_("every stored object matches its name"))
        return EXIT_OK
    say(ngettext("{n} object is damaged:", "{n} objects are damaged:", len(bad)).format(n=len(bad)))
    say(_findings_table(bad))
    return EXIT_FATAL


def _show_findings(ctx: ServerContext, include_resolved: bool, as_json: bool) -> int:
    found = scrub.findings(ctx.db, include_resolved=include_resolved)
    last = scrub.last_pass(ctx.db)
    orphans, count, size = scrub.orphans(ctx.db)
    bad = _blocking(found)
    if as_json:
        emit_json({"ok": not bad, "last_pass": last, "findings": [f.to_json() for f in found],
                   "orphans": {"count": count, "bytes": size,
                               "named": [dataclasses.asdict(o) for o in orphans]}})
        return EXIT_FATAL if bad else EXIT_OK
    if count:
        say(ngettext(
            "{n} object stored without a record, older than a day ({size}): an upload cut before "
            "it was acknowledged; reported, not removed",
            "{n} objects stored without a record, older than a day ({size}): uploads cut before "
            "they were acknowledged; reported, not removed", count).format(n=count, size=human_size(size)))
    if last and isinstance(last.get("finished_ns"), int):
        say(_("last complete pass: {when}, {n} objects, {size} read").format(
            when=human_time(last["finished_ns"]), n=last.get("objects", 0),
            size=human_size(int(last.get("bytes", 0)))))
    else:
        say(_("no complete scrub pass yet"))
    if not found:
        say(_("no findings"))
        return EXIT_OK
    say(_findings_table(found))
    return EXIT_FATAL if bad else EXIT_OK


def _repair(ctx: ServerContext, location: str, as_json: bool) -> int:
    target = replication.Target(location, wrap=_target_backend)
    try:
        healed = replication.heal_from(ctx, target)
    finally:
        target.close()
    if as_json:
        emit_json(healed.to_json() | {"ok": not healed.unrepaired})
        return EXIT_FATAL if healed.unrepaired else EXIT_OK
    for name in healed.repaired:
        say(_("repaired from the second site: {object}").format(object=name))
    for name, why in healed.unrepaired:
        warn(_("not repaired: {object}: {reason}").format(object=name, reason=why))
    if not healed.repaired and not healed.unrepaired:
        say(_("nothing to repair"))
    return EXIT_FATAL if healed.unrepaired else EXIT_OK


# -- replicate -----------------------------------------------------------------------------

def _target_backend(backend: Backend) -> Backend:
    """The second site's storage as the client's commands use theirs: retried while it may
    pass (storage/retry.py), and the test suite's crash switch."""
    return RetryBackend(KillSwitchBackend.from_env(backend), attempts=ATTEMPTS,
                        warn=lambda text: warn(text), budget_s=retry_budget())


def cmd_replicate(args: argparse.Namespace) -> int:
    if args.deep and not args.verify:
        raise UsageError(_("--deep goes with --verify"))
    if args.hold_days is not None and not args.remove_vanished:
        raise UsageError(_("--hold-days goes with --remove-vanished"))
    if args.hold_days is not None and not 0 <= args.hold_days <= 36500:
        raise UsageError(_("--hold-days must be a number of days from 0 to 36500"))
    if args.every is not None and not 0 < args.every <= 7 * 86400:
        raise UsageError(_("--every must be a number of seconds from 0 to 604800"))
    copy = args.once or args.every is not None or not args.verify
    target = replication.Target(args.to, wrap=_target_backend, profile=args.to_profile)
    ctx = _open(args)
    try:
        hold = None if args.hold_days is None else args.hold_days * 86400
        replicator = replication.Replicator(
            ctx, target, remove_vanished=args.remove_vanished, hold_s=hold,
            progress=None if args.json else _progress)
        if not copy:
            return _verify(ctx, target, args.deep, args.json, None)
        if args.every is None:
            summary = replicator.round(catch_up=True if args.catch_up else None)
            if args.verify and summary.error is None:
                return _verify(ctx, target, args.deep, args.json, summary)
            _say_round(summary, args.json, verify=None)
            return EXIT_FATAL if summary.error else EXIT_OK
        return _every(ctx, target, replicator, args)
    finally:
        target.close()
        ctx.close()


def _every(ctx: ServerContext, target: replication.Target, replicator: replication.Replicator,
           args: argparse.Namespace) -> int:
    """Rounds until stopped (Ctrl-C, SIGTERM: main.py's exit status 130)."""
    last_verify = -VERIFY_EVERY_S
    catch_up: bool | None = True if args.catch_up else None
    while True:
        try:
            summary = replicator.round(catch_up=catch_up)
        except replication.LeaseHeld as exc:
            warn(exc.message)
            time.sleep(args.every)
            continue
        catch_up = None
        report = None
        if args.verify and summary.error is None and time.monotonic() - last_verify >= VERIFY_EVERY_S:
            last_verify = time.monotonic()
            report = replication.verify_sites(ctx, target, deep=args.deep)
        if args.json:
            doc = {"round": summary.to_json(), "verify": report.to_json() if report else None}
            sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            _say_round(summary, False, None)
            if report is not None:
                _say_verify(report)
        time.sleep(args.every)


def _progress(summary: replication.RoundSummary) -> None:
    warn(ngettext("… {n} object copied ({size})", "… {n} objects copied ({size})", summary.copied)
         .format(n=summary.copied, size=human_size(summary.copied_bytes)))


def _verify(ctx: ServerContext, target: replication.Target, deep: bool, as_json: bool,
            summary: replication.RoundSummary | None) -> int:
    report = replication.verify_sites(ctx, target, deep=deep)
    if as_json:
        emit_json({"round": summary.to_json() if summary else None, "verify": report.to_json()})
    else:
        if summary is not None:
            _say_round(summary, False, None)
        _say_verify(report)
    return EXIT_FATAL if report.divergent else EXIT_OK


def _say_round(summary: replication.RoundSummary, as_json: bool, verify: Any) -> None:
    if as_json:
        emit_json({"round": summary.to_json(), "verify": verify})
        return
    parts = [ngettext("{n} object copied ({size})", "{n} objects copied ({size})", summary.copied).format(
        n=summary.copied, size=human_size(summary.copied_bytes)),
        ngettext("{n} already there", "{n} already there", summary.present).format(n=summary.present)]
    if summary.repaired:
        parts.append(ngettext("{n} bad copy replaced", "{n} bad copies replaced", summary.repaired)
                     .format(n=summary.repaired))
    if summary.vanished_removed:
        parts.append(ngettext("{n} vanished object removed", "{n} vanished objects removed",
                              summary.vanished_removed).format(n=summary.vanished_removed))
    say(_("replicated to {location}: {what}").format(location=summary.target, what=", ".join(parts)))
    if summary.source_damaged:
        warn(ngettext("{n} object not copied: damaged on this server (see 'coffre server scrub --findings')",
                      "{n} objects not copied: damaged on this server (see 'coffre server scrub --findings')",
                      summary.source_damaged).format(n=summary.source_damaged))
    if summary.config_differs:
        warn(ngettext("{n} repository has another config on the second site: left as it is",
                      "{n} repositories have another config on the second site: left as they are",
                      summary.config_differs).format(n=summary.config_differs))
    if summary.error:
        warn(_("the copy stopped: {error}").format(error=summary.error))
        warn(_("hint: {hint}").format(hint=_("run the same command again: it resumes where it stopped")))


def _say_verify(report: replication.VerifyReport) -> None:
    objects = sum(t.objects for t in report.tenants)
    hashed = sum(t.hashed for t in report.tenants)
    for t in report.tenants:
        if not (t.divergent or t.primary_damaged):
            continue
        say(_("tenant {tenant}:").format(tenant=t.tenant))
        for label, names in ((N_("missing on the second site"), t.missing),
                             (N_("different on the second site"), t.differs),
                             (N_("damaged on this server"), t.primary_damaged)):
            for name in names[:SHOWN]:
                say("  " + _("{problem}: {object}").format(problem=_(label), object=name))
            if len(names) > SHOWN:
                say("  " + ngettext("… and {n} more", "… and {n} more", len(names) - SHOWN)
                    .format(n=len(names) - SHOWN))
    pending = sum(t.pending for t in report.tenants)
    if pending:
        say(ngettext("{n} object not replicated yet (not compared)",
                     "{n} objects not replicated yet (not compared)", pending).format(n=pending))
    if report.divergent:
        bad = sum(1 for t in report.tenants if t.divergent)
        warn(ngettext("the second site differs for {n} tenant", "the second site differs for {n} tenants",
                      bad).format(n=bad))
    else:
        say(ngettext(
            "the second site holds the same objects for all {n} tenant ({objects} objects, {hashed} "
            "re-hashed on both sides)",
            "the second site holds the same objects for all {n} tenants ({objects} objects, {hashed} "
            "re-hashed on both sides)", len(report.tenants)).format(
            n=len(report.tenants), objects=objects, hashed=hashed))


# -- adopt ---------------------------------------------------------------------------------

def cmd_adopt(args: argparse.Namespace) -> int:
    target = replication.Target(args.replica)
    ctx = _open(args)
    try:
        done = replication.adopt(ctx, target)
    finally:
        target.close()
        ctx.close()
    if args.json:
        emit_json(done.to_json())
        return EXIT_OK
    say(_("adopted the replica at {location} (manifest of {when}): tenants: {tenants}, "
          "repositories: {repositories}, tokens: {tokens}, objects: {objects} ({size})").format(
        location=target.display, when=human_time(done.manifest_written_ns), tenants=done.tenants,
        repositories=done.repositories, tokens=done.tokens, objects=done.objects,
        size=human_size(done.bytes)))
    say(_("serve it with: coffre server --objects {location} ...").format(location=args.replica))
    return EXIT_OK
