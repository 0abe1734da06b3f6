"""`coffre server usage` (what the provider bills from) and `coffre server audit verify|export`
(the hash-chained audit journal). They read the server's database only: run them on any machine
that reaches it, while the server runs.

`usage --json` prints:
    {"month": "YYYY-MM", "generated_ns": int, "complete": bool, "gb_bytes": 1000000000,
     "tenants": [{"tenant", "tenant_id", "display_name", "state", "days_in_month",
                  "days_counted", "gb_month", "stored_byte_days", "peak_stored_bytes",
                  "stored_bytes_end", "binned_gb_month", "binned_byte_days", "binned_bytes_end",
                  "uploads", "uploaded_bytes", "downloads", "downloaded_bytes",
                  "quota_soft_bytes", "quota_hard_bytes", "audit_seq", "audit_head"}],
     "provider_audit": {"seq": int, "head": hex}}
`usage --csv` prints CSV_COLUMNS (one header line, then a line per tenant, "." as the decimal
point whatever the language).

`audit verify --json` prints:
    {"ok": bool, "chains": [{"tenant", "tenant_id", "first_seq", "seq", "head"}],
     "problems": [{"tenant", "tenant_id", "code", "seq", "text"}]}
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coffre.cli.output import emit_json, human_number, say, table, warn
from coffre.cli.server_common import settings_from_args
from coffre.core.clock import SystemClock
from coffre.core.errors import EXIT_FATAL, EXIT_OK, CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.lazy import lazy_module
from coffre.core.posix import fsync_dir

if TYPE_CHECKING:
    import sqlalchemy as sa

    from coffre.server import audit, metering, tenants
    from coffre.server import db as _db
    from coffre.server.db import Database
else:  # loaded when an action runs, not when the parser is built (core/lazy.py)
    sa = lazy_module("sqlalchemy")
    audit, metering, tenants = (lazy_module("coffre.server." + m) for m in ("audit", "metering", "tenants"))
    _db = lazy_module("coffre.server.db")


DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "usage", help=_("usage per tenant for a calendar month: what the provider bills from"),
        description=_("Per tenant and calendar month (UTC): GB-month stored (decimal GB, 10^9 "
                      "bytes; a day without a sample counts the last sample before it), peak "
                      "stored, recycle bin, uploads and downloads, and the head of the tenant's "
                      "audit journal at the time of the report (docs/server.md)."))
    p.add_argument("--month", metavar="YYYY-MM",
                   help=_("the calendar month (default: the current one, counted up to today)"))
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true",
                     help=_("print CSV for a billing system (columns in docs/server.md)"))
    fmt.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)

    a = actions.add_parser(
        "audit", help=_("verify or export the hash-chained audit journal"),
        description=_("Every request touching a tenant's data and every provider action is in a "
                      "hash-chained journal per tenant. 'verify' proves nothing was edited, removed, "
                      "reordered or inserted; 'export' writes JSON lines an auditor re-verifies."))
    sub = a.add_subparsers(dest="audit_action", required=True, metavar=_("ACTION"))
    v = sub.add_parser(
        "verify", help=_("check every chain of the audit journal, and its anchors"),
        description=_("Recompute every hash of every chain (or of one), check the numbering, the "
                      "heads and the anchors. The exit status is 0 when the journal is intact, 1 "
                      "with every problem listed."))
    _chain_options(v, required=False)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_audit_verify)
    e = sub.add_parser(
        "export", help=_("write a tenant's audit entries of a range of days as JSON lines"),
        description=_("One JSON object per line, in chain order, each with the exact text that was "
                      "hashed and the hash of the entry before: an auditor re-verifies them without "
                      "Coffre (docs/server.md). Days are UTC, both included."))
    _chain_options(e, required=True)
    e.add_argument("--from", dest="from_day", metavar="YYYY-MM-DD", required=True,
                   help=_("the first day exported"))
    e.add_argument("--to", dest="to_day", metavar="YYYY-MM-DD", required=True,
                   help=_("the last day exported"))
    e.add_argument("--out", metavar=_("FILE"), help=_("write to this file (default: standard output)"))
    e.set_defaults(func=cmd_audit_export)


def _chain_options(p: argparse.ArgumentParser, required: bool) -> None:
    who = p.add_mutually_exclusive_group(required=required)
    who.add_argument("--tenant", metavar=_("TENANT"), help=_("the tenant's chain (by its name)"))
    who.add_argument("--provider", action="store_true",
                     help=_("the chain of the provider's own actions that name no tenant"))


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Database]:
    db = _db.Database(settings_from_args(args).database_url)
    try:
        db.check()
        yield db
    finally:
        db.close()


# --- usage ------------------------------------------------------------------------------------

def cmd_usage(args: argparse.Namespace) -> int:
    now = SystemClock().now_ns()
    month = args.month or audit.day_of(now)[:7]
    metering.parse_month(month)  # a wrong month is a usage error before the database is opened
    with _database(args) as db:
        report = metering.report(db, month, now)
    if args.json:
        emit_json(usage_json(report))
    elif args.csv:
        metering.write_csv(report, sys.stdout)
    else:
        say(render_usage(report))
    return EXIT_OK


def usage_json(report: metering.MonthReport) -> dict[str, Any]:
    rows = []
    for r in report.rows:
        d = r.as_dict(json_ready=True)
        d.pop("month")
        rows.append(d)
    return {"month": report.month, "generated_ns": report.generated_ns, "complete": report.complete,
            "gb_bytes": metering.GB, "tenants": rows,
            "provider_audit": {"seq": report.provider_audit_seq, "head": report.provider_audit_head}}


def _gb(n: float, decimals: int = 3) -> str:
    return human_number(n / metering.GB, decimals, keep_zeros=True)


def render_usage(report: metering.MonthReport) -> str:
    if report.complete:
        head = _("Usage for {month} (GB = 10^9 bytes):").format(month=report.month)
    else:
        head = _("Usage for {month}, month in progress: counted up to today (GB = 10^9 bytes):").format(
            month=report.month)
    if not report.rows:
        return head + "\n" + _("no tenant")
    rows = [[r.tenant, human_number(float(r.gb_month), 3, keep_zeros=True), _gb(r.peak_stored_bytes),
             _gb(r.stored_bytes_end), _gb(r.binned_bytes_end), human_number(r.uploads),
             _gb(r.uploaded_bytes), human_number(r.downloads), _gb(r.downloaded_bytes),
             f"{r.audit_seq}:{r.audit_head[:16]}"] for r in report.rows]
    text = table(rows, [_("tenant"), _("GB-month"), _("peak GB"), _("GB at end"), _("bin GB"),
                        _("uploads"), _("GB up"), _("downloads"), _("GB down"), _("audit head")])
    provider = _("The provider's own audit journal: entry {seq}, head {head}.").format(
        seq=report.provider_audit_seq, head=report.provider_audit_head)
    return "\n".join([head, text, "", provider])


# --- audit ------------------------------------------------------------------------------------

def _chain_id(conn: Any, args: argparse.Namespace) -> int | None:
    if args.provider:
        return audit.PROVIDER
    if args.tenant is None:
        return None
    tenant = tenants.by_name(conn, args.tenant)
    if tenant is None:
        raise UsageError(_("no tenant is named {name}").format(name=args.tenant),
                         _("'coffre server tenant list' lists them"))
    return tenant.id


def _names(conn: Any) -> dict[int, str]:
    t = _db.tables.tenants
    return {int(i): n for i, n in conn.execute(sa.select(t.c.id, t.c.name))}


def chain_label(names: dict[int, str], tenant_id: int) -> str:
    if tenant_id == audit.PROVIDER:
        return _("the provider")
    return names.get(tenant_id) or _("tenant #{id}").format(id=tenant_id)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _database(args) as db:
        with db.read() as conn:
            chain = _chain_id(conn, args)
            names = _names(conn)
        problems = audit.verify(db, chain)
        heads = audit.heads(db, chain)
    if args.json:
        emit_json({
            "ok": not problems,
            "chains": [{"tenant": "" if t == audit.PROVIDER else names.get(t, ""), "tenant_id": t,
                        "first_seq": first, "seq": seq, "head": head} for t, first, seq, head in heads],
            "problems": [{"tenant": "" if p.tenant_id == audit.PROVIDER else names.get(p.tenant_id, ""),
                          "tenant_id": p.tenant_id, "code": p.code, "seq": p.seq, "text": p.text}
                         for p in problems]})
        return EXIT_FATAL if problems else EXIT_OK
    entries = sum(seq - first + 1 for _t, first, seq, _h in heads)
    if not problems:
        say(ngettext("The audit journal is intact: {chains} chain, {entries} entries checked.",
                     "The audit journal is intact: {chains} chains, {entries} entries checked.",
                     len(heads)).format(chains=human_number(len(heads)), entries=human_number(entries)))
        return EXIT_OK
    for p in problems:
        say(_("{chain}: {problem}").format(chain=chain_label(names, p.tenant_id), problem=p.text))
    say(ngettext("{n} problem found in the audit journal.",
                 "{n} problems found in the audit journal.",
                 len(problems)).format(n=human_number(len(problems))))
    return EXIT_FATAL


def _day(text: str) -> str:
    try:
        if DAY.match(text):
            date.fromisoformat(text)
            return text
    except ValueError:
        pass
    raise UsageError(_("{text} is not a day").format(text=repr(text)),
                     _("write it as YYYY-MM-DD, e.g. 2026-11-30"))


def cmd_audit_export(args: argparse.Namespace) -> int:
    from_day, to_day = _day(args.from_day), _day(args.to_day)
    if from_day > to_day:
        raise UsageError(_("the first day {first} comes after the last day {last}").format(
            first=from_day, last=to_day))
    with _database(args) as db:
        with db.read() as conn:
            chain = _chain_id(conn, args)
            names = _names(conn)
        assert chain is not None  # --tenant or --provider is required
        lines = audit.export(db, chain, from_day, to_day)
        count = _write_lines(lines, Path(args.out) if args.out else None)
        problems = audit.verify(db, chain)
    label = chain_label(names, chain)
    if args.out:
        say(ngettext("{n} entry of {chain} written to {file}.", "{n} entries of {chain} written to {file}.",
                     count).format(n=human_number(count), chain=label, file=args.out))
    if problems:
        for p in problems:
            warn(_("{chain}: {problem}").format(chain=label, problem=p.text))
        warn(_("The chain of {chain} has problems: the export shows it as stored, and an auditor "
               "will find them too.").format(chain=label))
        return EXIT_FATAL
    return EXIT_OK


def _write_lines(lines: Iterator[str], path: Path | None) -> int:
    """Write the lines (to the file atomically: complete or absent). Returns their count."""
    count = 0
    if path is None:
        for line in lines:
            sys.stdout.write(line + "\n")
            count += 1
        sys.stdout.flush()
        return count
    folder = path.parent
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
            for line in lines:
                f.write(line + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(folder)
    except OSError as exc:
        raise CoffreError(_("cannot write {file}: {reason}").format(
            file=path, reason=exc.strerror or type(exc).__name__)) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return count
