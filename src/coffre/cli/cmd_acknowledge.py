"""acknowledge: accept the storage's present state after investigating what Coffre reported as
vanished or put back (docs/design.md §8.1)."""

from __future__ import annotations

import argparse

from coffre.cli.context import add_repo_options, open_repo
from coffre.cli.output import emit_json, say
from coffre.cli.watching import accept_standing, say_alarms
from coffre.core.i18n import _
from coffre.repository.mark import Alarm
from coffre.repository.watch import describe


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "acknowledge",
        help=_("accept the storage's present state once you have investigated the snapshots, index "
               "files, key slots or forget records Coffre reported as vanished or stored again"),
        description=_("Every command warns, and 'coffre check' fails, while this machine's record of "
                      "the repository says the storage deleted or put back something. After finding "
                      "out why, this accepts the storage as it is now: a vanished snapshot is taken as "
                      "gone (if it comes back, that is reported), a snapshot or index file stored again "
                      "as present. A key slot removed here and put back stays refused here. Only the "
                      "warnings given before this command are accepted: what it finds new is reported."),
    )
    add_repo_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_acknowledge)


def _row(a: Alarm) -> dict[str, object]:
    return {"kind": a.kind, "id": a.id, "message": describe(a)}


def cmd_acknowledge(args: argparse.Namespace) -> int:
    repo = open_repo(args, watch=False)
    accepted, new = accept_standing(repo)
    if args.json:
        emit_json({"accepted": [_row(a) for a in accepted], "new": [_row(a) for a in new]})
    else:
        for a in accepted:
            say(_("accepted: {alarm}").format(alarm=describe(a)))
        if not accepted and not new:
            say(_("nothing to acknowledge: the storage shows what this machine expects"))
        say_alarms(new)
    return 1 if new else 0
