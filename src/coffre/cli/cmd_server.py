"""`coffre server`: the hosting server (docs/server.md). Without an action it serves; the
actions manage it: init, tenant, token, recycle (server_admin.py), usage, audit
(server_journal.py), scrub, replicate (server_ops.py), fleet (server_fleet.py)."""

from __future__ import annotations

import argparse

from coffre.cli import server_accounts, server_admin, server_fleet, server_journal, server_ops, server_serve
from coffre.cli.server_common import add_location_options
from coffre.core.i18n import _


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "server", help=_("the hosting server: pharmacies' off-site backups, without their keys"),
        description=_("Without an action, serves the repositories of every tenant over HTTPS. "
                      "The actions manage tenants, tokens, the recycle bin, usage, the audit "
                      "journal, scrubbing, replication, the fleet and the console's accounts "
                      "(docs/server.md). The web console is served under /console."))
    add_location_options(p)
    server_serve.add_serve_options(p)
    p.set_defaults(func=server_serve.cmd_serve)
    actions = p.add_subparsers(dest="server_action", required=False, metavar=_("ACTION"))
    server_admin.register(actions)
    server_journal.register(actions)
    server_ops.register(actions)
    server_fleet.register(actions)
    server_accounts.register(actions)
