"""`coffre server account add|list|disable|enable|reset-totp|password`: the provider's
accounts of the web console (web/hosted/accounts.py). A password is typed at a hidden prompt
(twice) or read from --password-file; a TOTP secret and its otpauth:// URI are shown once, on
the terminal only (never in --log-file). Every change is journaled in the provider's audit
chain with the console's account (`console:<system user>`) as the actor."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from coffre.cli.logfile import say_unlogged
from coffre.cli.output import emit_json, human_time, say, table
from coffre.cli.server_admin import actor, opened
from coffre.cli.server_common import add_location_options
from coffre.core.errors import EXIT_OK, UsageError
from coffre.core.i18n import _

ROLES = ("viewer", "operator", "admin")


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("account", help=_("the provider's accounts of the web console (/console)"),
                           description=_("Accounts that log in to the console served under /console: a "
                                         "password (Argon2id) and a second factor (TOTP, any "
                                         "authenticator app). Roles: viewer reads; operator also acts on "
                                         "tenants; admin also manages accounts."))
    sub = p.add_subparsers(dest="account_action", required=True, metavar=_("ACTION"))

    def leaf(name: str, helptext: str, func: object) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=helptext, description=helptext)
        add_location_options(q)
        q.set_defaults(func=func)
        return q

    add = leaf("add", _("add an account; its TOTP secret is shown once"), cmd_add)
    add.add_argument("name", help=_("its name: lower-case letters, digits and . _ @ -"))
    add.add_argument("--role", choices=ROLES, required=True,
                     help=_("viewer: reads; operator: also acts on tenants; admin: also manages accounts"))
    add.add_argument("--password-file", metavar=_("FILE"),
                     help=_("read the password from this file (default: typed at a hidden prompt)"))
    lst = leaf("list", _("list the accounts"), cmd_list)
    lst.add_argument("--json", action="store_true")
    dis = leaf("disable", _("refuse an account's logins; its open sessions end"), cmd_disable)
    dis.add_argument("name", help=_("the account"))
    dis.add_argument("--motive", metavar=_("TEXT"), required=True,
                     help=_("why: recorded in the provider's audit journal"))
    ena = leaf("enable", _("let a disabled account log in again"), cmd_enable)
    ena.add_argument("name", help=_("the account"))
    ena.add_argument("--motive", metavar=_("TEXT"), help=_("why: recorded in the provider's audit journal"))
    tot = leaf("reset-totp", _("give an account a new TOTP secret (a lost phone); shown once"),
               cmd_reset_totp)
    tot.add_argument("name", help=_("the account"))
    pw = leaf("password", _("set an account's password; its open sessions end"), cmd_password)
    pw.add_argument("name", help=_("the account"))
    pw.add_argument("--password-file", metavar=_("FILE"),
                    help=_("read the password from this file (default: typed at a hidden prompt)"))


def read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(_("cannot read {path}: {reason}").format(
                path=args.password_file, reason=exc.strerror)) from None
        return text.rstrip("\r\n")
    first = getpass.getpass(_("Password of {name}: ").format(name=args.name))
    if getpass.getpass(_("The same password again: ")) != first:
        raise UsageError(_("the two passwords differ"))
    return first


def show_enrolment(name: str, secret: str, uri: str) -> None:
    say_unlogged("\n".join([
        _("Second factor of {name} (shown once, not logged): enter it in an authenticator app").format(
            name=name),
        _("  secret: {secret}").format(secret=secret),
        _("  or the link: {uri}").format(uri=uri)]),
        _("(the TOTP secret was shown on the terminal; it is not logged)"))


def cmd_add(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    password = read_password(args)
    with opened(args) as ctx:
        account, enrol = accounts.add(ctx, actor(), args.name, args.role, password)
    say(_("account {name} added, role {role}").format(name=account.name, role=account.role))
    show_enrolment(account.name, enrol.secret, enrol.uri)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    with opened(args) as ctx:
        rows = accounts.listing(ctx)
    if args.json:
        emit_json({"accounts": [{"name": a.name, "role": a.role, "created_ns": a.created_ns,
                                 "changed_ns": a.changed_ns, "disabled_ns": a.disabled_ns,
                                 "last_login_ns": a.last_login_ns} for a in rows]})
        return EXIT_OK
    if not rows:
        say(_("no console account: 'coffre server account add NAME --role admin' adds one"))
        return EXIT_OK
    say(table([[a.name, a.role, human_time(a.created_ns),
                human_time(a.last_login_ns) if a.last_login_ns is not None else "-",
                _("disabled") if a.disabled_ns is not None else _("active")] for a in rows],
              [_("account"), _("role"), _("created"), _("last login"), _("state")]))
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    with opened(args) as ctx:
        accounts.disable(ctx, actor(), args.name, args.motive)
    say(_("account {name} disabled: its logins are refused and its open sessions end").format(name=args.name))
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    with opened(args) as ctx:
        accounts.enable(ctx, actor(), args.name, args.motive)
    say(_("account {name} enabled").format(name=args.name))
    return EXIT_OK


def cmd_reset_totp(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    with opened(args) as ctx:
        enrol = accounts.reset_totp(ctx, actor(), args.name)
    say(_("account {name}: new TOTP secret; the old codes no longer work").format(name=args.name))
    show_enrolment(args.name, enrol.secret, enrol.uri)
    return EXIT_OK


def cmd_password(args: argparse.Namespace) -> int:
    from coffre.web.hosted import accounts

    password = read_password(args)
    with opened(args) as ctx:
        accounts.set_password(ctx, actor(), args.name, password)
    say(_("account {name}: password changed; its open sessions end").format(name=args.name))
    return EXIT_OK
