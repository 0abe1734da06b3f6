"""status: how the agent's backups are doing, in one screen (agent/overview.py builds it).

Exit status: 0 when every light is green (and nothing else is wrong), 1 otherwise, 2 for a
configuration that cannot be read: `coffre status` can feed any monitoring system.

`--json` prints:
    {"ok": bool, "now": float,
     "jobs": [{"job", "target", "role": "primary"|"copy", "light": "ok"|"warning"|"failed",
               "last_backup", "last_copy", "last_check", "last_drill", "next_run" (Unix
               seconds or null), "realtime": bool,
               "problems": [{"kind", "target", "since", "detail", "text"}]}],
     "continuity": [{"name", "repository", "role": "capture"|"standby"|"files", "light", "text",
                     "last_pass", "pieces", "bytes", "waiting", "oldest_age" (seconds or null),
                     "gaps": [name, ...], "error", for a capture "capture_error" (the agent's
                     own capture of sqlite or mysql not running), for a standby
                     "behind_seconds" (since the newest piece it has was captured while pieces
                     wait for it; since its last pass when none waits), "behind_pieces",
                     "behind_bytes", "newest_age", "gap", "promoted"; for files "applied" (snapshot id),
                     "applied_time", "behind_seconds", "newest", "written", "unchanged",
                     "deleted", "files_failed", "errors"; "problems": [...as above]}],
     "problems": [text, ...],  (tied to no job: an alert channel failing...)
     "messages": [{"at", "level", "text"}],
     "damage": [{"run_id", "column", "reason"}]}  (what the status store could not read)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from coffre.agent.overview import ContinuityLine, Message, StatusLine, StatusReport, status_report
from coffre.agent.records import StandbyStatus
from coffre.agent.status import StatusStore, store_path
from coffre.cli.output import emit_json, say, table
from coffre.core.errors import EXIT_FATAL, EXIT_OK
from coffre.core.human import human_when
from coffre.core.i18n import N_, _

__all__ = ["cmd_status", "exit_code", "register", "render", "report_json", "status_report"]

DEFAULT_CONFIG = "/etc/coffre/coffre.toml"
LIGHT_WORDS = {"ok": N_("OK"), "warning": N_("to check"), "failed": N_("failing")}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help=_("show how the agent's backups are doing: one line per job and destination"),
        description=_("For each job of the agent's configuration and each of its destinations: "
                      "OK, to check or failing, when the last good backup, copy, check and restore "
                      "drill happened, the next run, and why it is not OK. The exit status is 0 only "
                      "when everything is OK."),
    )
    p.add_argument("--config", metavar="FILE",
                   help=_("the agent's configuration (default: COFFRE_CONFIG, else {path})")
                   .format(path=DEFAULT_CONFIG))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def config_path(flag: str | None) -> str:
    """--config, else COFFRE_CONFIG, else the system's file."""
    return flag or os.environ.get("COFFRE_CONFIG") or DEFAULT_CONFIG


def cmd_status(args: argparse.Namespace, now: float | None = None) -> int:
    import time

    from coffre.agent.config import load_config  # type: ignore[import-not-found, unused-ignore]

    config = load_config(config_path(args.config))  # ConfigError: exit 2
    moment = time.time() if now is None else now
    path = store_path(config.agent.state_dir)
    # No history yet (the agent never ran): nothing is created by a command that only reads.
    store = StatusStore(path) if path.exists() else None
    try:
        report = status_report(config, store, moment, screen_messages(path) if store is not None else ())
    finally:
        if store is not None:
            store.close()
    if args.json:
        emit_json(report_json(report))
    else:
        say(render(report))
    return exit_code(report)


def screen_messages(path: Path) -> list[Any]:
    """The latest screen messages the alerts wrote in the agent's file (agent/alerts/outbox.py)."""
    from coffre.agent.alerts.outbox import Outbox  # type: ignore[import-not-found, unused-ignore]
    from coffre.agent.overview import MESSAGES

    outbox = Outbox(path)
    try:
        return list(outbox.messages(MESSAGES))
    finally:
        close = getattr(outbox, "close", None)
        if close is not None:
            close()


def exit_code(report: StatusReport) -> int:
    return EXIT_OK if report.ok else EXIT_FATAL


def _when(t: float | None, report: StatusReport) -> str:
    return "—" if t is None else human_when(t, report.now, report.timezone)


def _next(line: StatusLine, report: StatusReport) -> str:
    if line.next_run is None:
        return _("on changes") if line.realtime else "—"
    text = _when(line.next_run, report)
    return _("{when}, and on changes").format(when=text) if line.realtime else text


def render(report: StatusReport) -> str:
    """The screen: the table, each line followed by why it is not OK, then the problems tied
    to no job, what the store could not read, and the recent messages."""
    out: list[str] = []
    if not report.lines:
        if not report.continuity:
            out = [_("no job in the configuration")]
    else:
        rows = []
        for line in report.lines:
            target = line.target if line.role == "primary" else _("{name} (copy)").format(name=line.target)
            rows.append([_(LIGHT_WORDS[line.light]), line.job, target, _when(line.last_backup, report),
                         _when(line.last_copy, report), _when(line.last_check, report),
                         _when(line.last_drill, report), _next(line, report)])
        text = table(rows, [_("state"), _("job"), _("destination"), _("last backup"), _("last copy"),
                            _("last check"), _("last drill"), _("next run")])
        head, rule, *body = text.split("\n")
        out = [head, rule]
        for row_text, line in zip(body, report.lines, strict=True):
            out.append(row_text)
            out += ["    → " + sentence for sentence in line.why]
    if report.continuity:
        if out:
            out.append("")
        width = max(len(_(w)) for w in LIGHT_WORDS.values())  # the same column whatever the lights
        for c in report.continuity:
            out.append(f"{_(LIGHT_WORDS[c.light]):<{width}}  {c.text}")
            out += ["    → " + sentence for sentence in c.why]
    if report.general:
        out.append("")
        out += ["→ " + sentence for sentence in report.general]
    if report.damage:
        out.append("")
        out.append(_("The agent's status file is damaged in places; what could be read is shown:"))
        for d in report.damage[:5]:
            out.append("  " + _("run {id}: {column}: {reason}").format(
                id=d.run_id if d.run_id is not None else "?", column=d.column, reason=d.reason))
    if report.messages:
        out.append("")
        out.append(_("Recent messages:"))
        out += [f"  {_when(m.at, report)}  {m.text}" for m in report.messages]
    out.append("")
    out.append(_("Everything is OK.") if report.ok else _("Something needs attention (see above)."))
    return "\n".join(out)


def _line_json(line: StatusLine) -> dict[str, Any]:
    return {
        "job": line.job, "target": line.target, "role": line.role, "light": line.light,
        "last_backup": line.last_backup, "last_copy": line.last_copy, "last_check": line.last_check,
        "last_drill": line.last_drill, "next_run": line.next_run, "realtime": line.realtime,
        "problems": [{"kind": p.kind, "target": p.target, "since": p.since, "detail": _plain(p.detail),
                      "text": text} for p, text in zip(line.problems, line.why, strict=True)],
    }


def _plain(value: Any) -> Any:
    """A problem's detail as JSON values (it is free-form: anything else becomes its text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    return str(value)


def _behind_seconds(sb: StandbyStatus, now: float) -> float | None:
    """How far behind the repository the standby is: since the newest piece it has was captured
    while pieces wait for it (or it stopped at a gap); since its last pass otherwise."""
    if sb.behind_pieces or sb.gap:
        return now - sb.newest_ns / 1e9 if sb.newest_ns else None
    return None if sb.last_pass is None else max(0.0, now - sb.last_pass)


def _continuity_json(c: ContinuityLine, now: float) -> dict[str, Any]:
    st = c.status
    out: dict[str, Any] = {
        "name": c.name, "repository": c.repository, "role": c.role, "light": c.light, "text": c.text,
        "last_pass": None, "pieces": 0, "bytes": 0, "waiting": 0, "oldest_age": None, "gaps": [],
        "error": None,
        "problems": [{"kind": p.kind, "target": p.target, "since": p.since, "detail": _plain(p.detail),
                      "text": text} for p, text in zip(c.problems, c.why, strict=True)],
    }
    if st is not None and c.role == "capture":
        out.update(last_pass=st.last_pass, pieces=st.pieces, bytes=st.bytes, waiting=st.waiting,
                   oldest_age=None if st.oldest_ns is None else now - st.oldest_ns / 1e9,
                   gaps=[g.name for g in st.gaps], error=st.error, capture_error=st.source_error)
    if c.role == "standby":
        sb = st.standby if st is not None else None
        out.update(behind_seconds=None, behind_pieces=0, behind_bytes=0, newest_age=None, gap="",
                   promoted=False)
        if sb is not None:
            out.update(last_pass=sb.last_pass, error=sb.error, behind_pieces=sb.behind_pieces,
                       behind_bytes=sb.behind_bytes, gap=sb.gap, promoted=sb.promoted,
                       newest_age=now - sb.newest_ns / 1e9 if sb.newest_ns else None,
                       behind_seconds=_behind_seconds(sb, now))
    if c.role == "files":
        fs = st.files if st is not None else None
        out.update(applied=None, applied_time=None, behind_seconds=None, newest=None, written=0,
                   unchanged=0, deleted=0, files_failed=0, errors=[])
        if fs is not None:
            out.update(last_pass=fs.last_check, error=fs.error, applied=fs.applied or None,
                       applied_time=fs.applied_ns / 1e9 if fs.applied_ns else None,
                       behind_seconds=now - fs.applied_ns / 1e9 if fs.applied_ns else None,
                       newest=fs.newest or None, written=fs.written, unchanged=fs.unchanged,
                       deleted=fs.deleted, files_failed=fs.failed, errors=list(fs.errors))
    return out


def _message_json(m: Message) -> dict[str, Any]:
    return {"at": m.at, "level": m.level, "text": m.text}


def report_json(report: StatusReport) -> dict[str, Any]:
    """The --json document (shape in the module's docstring)."""
    return {
        "ok": report.ok, "now": report.now,
        "jobs": [_line_json(line) for line in report.lines],
        "continuity": [_continuity_json(c, report.now) for c in report.continuity],
        "problems": list(report.general),
        "messages": [_message_json(m) for m in report.messages],
        "damage": [{"run_id": d.run_id, "column": d.column, "reason": d.reason} for d in report.damage],
    }
