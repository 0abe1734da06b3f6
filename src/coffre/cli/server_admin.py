"""The provider's administration of `coffre server` (docs/server.md): `init [--demo]`,
`tenant add|list|show|enable|disable|read-only|quota`, `token add|list|revoke`,
`recycle list|restore|purge`, `install`, `uninstall`.

Each operation is server/admin.py's, journaled in the audit journal with the console's
account as the client. A token is shown once: on the terminal only (never in --log-file), or
written 0600 to the file --out names.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coffre.cli.logfile import say_unlogged
from coffre.cli.output import emit_json, human_size, human_time, say, table
from coffre.cli.server_common import add_location_options, settings_from_args
from coffre.core.errors import EXIT_FATAL, EXIT_OK, CoffreError, UsageError
from coffre.core.i18n import N_, _, ngettext
from coffre.core.sizes import parse_size

ROLES = ("backup", "prune", "read")
STATE_WORDS = {"active": N_("active"), "read-only": N_("read-only"), "disabled": N_("disabled")}
TOKEN_WORDS = {"active": N_("active"), "revoked": N_("revoked"), "expired": N_("expired")}
QUOTA_WORDS = {"ok": "", "soft": N_("above the soft quota"), "hard": N_("at the hard quota: uploads refused")}


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def leaf(parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, helptext: str,
             func: Callable[[argparse.Namespace], int], description: str | None = None,
             json: bool = False) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=helptext, description=description or helptext)
        add_location_options(p)
        if json:
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        return p

    init = leaf(actions, "init", _("create the server's folder, database, certificate and first admin token"),
                cmd_init, _("Creates what a server needs on this machine: its folder (private), the metadata "
                            "database, the objects folder, a self-signed TLS certificate and a first admin "
                            "token (in admin.token). Run again, it keeps everything and says so."))
    init.add_argument("--demo", action="store_true",
                      help=_("also create a tenant 'demo' with a backup token, and print the commands "
                             "that back up into it"))
    init.add_argument("--tls-name", action="append", metavar=_("NAME"),
                      help=_("a host name or address the clients use, named by the certificate "
                             "(repeat it; default: localhost, 127.0.0.1, ::1 and this machine's name)"))

    tenant = actions.add_parser("tenant", help=_("add, list, show, disable or limit tenants (pharmacies)"))
    ts = tenant.add_subparsers(dest="tenant_action", required=True, metavar=_("ACTION"))
    add = leaf(ts, "add", _("add a tenant"), cmd_tenant_add)
    add.add_argument("name", help=_("its short name: lower-case letters, digits and '-'"))
    add.add_argument("--display-name", default="", metavar=_("TEXT"), help=_("its full name"))
    add.add_argument("--contact", default="", metavar=_("TEXT"), help=_("who to call: e-mail, telephone"))
    add.add_argument("--quota-soft", metavar=_("SIZE"),
                     help=_("above this, responses, status and alerts warn (e.g. 40GiB)"))
    add.add_argument("--quota-hard", metavar=_("SIZE"),
                     help=_("uploads that would pass it are refused (e.g. 50GiB)"))
    leaf(ts, "list", _("list the tenants with their usage, quota, state and recycle bin"), cmd_tenant_list,
         json=True)
    show = leaf(ts, "show", _("show a tenant: repositories, tokens, quota, recycle bin"), cmd_tenant_show,
                json=True)
    show.add_argument("name", help=_("the tenant"))
    for name, helptext in (("disable", N_("refuse every token of a tenant (its data is kept)")),
                           ("enable", N_("make a tenant active again")),
                           ("read-only", N_("let a tenant read and restore, not write nor delete"))):
        s = leaf(ts, name, _(helptext), cmd_tenant_state)
        s.add_argument("name", help=_("the tenant"))
        s.add_argument("--motive", metavar=_("TEXT"), required=name != "enable",
                       help=_("why: recorded in the tenant's audit journal"))
        s.set_defaults(state={"disable": "disabled", "enable": "active", "read-only": "read-only"}[name])
    quota = leaf(ts, "quota", _("change a tenant's quotas"), cmd_tenant_quota,
                 _("Changes the soft and/or hard quota ('none' removes it). Bytes in the recycle bin "
                   "count against the quota until they are purged."))
    quota.add_argument("name", help=_("the tenant"))
    quota.add_argument("--soft", metavar=_("SIZE"), help=_("the soft quota, or 'none'"))
    quota.add_argument("--hard", metavar=_("SIZE"), help=_("the hard quota, or 'none'"))
    quota.add_argument("--motive", metavar=_("TEXT"), help=_("why: recorded in the tenant's audit journal"))

    token = actions.add_parser("token", help=_("issue, list or revoke access tokens"))
    ks = token.add_subparsers(dest="token_action", required=True, metavar=_("ACTION"))
    tadd = leaf(ks, "add", _("issue a token (shown once)"), cmd_token_add,
                _("Issues a token for a tenant's machine (role backup, prune or read), or an admin "
                  "token with --admin. The token is shown once, on the terminal (never in the log), "
                  "or written to --out; only its hash is kept."))
    who = tadd.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", metavar=_("NAME"), help=_("the tenant the token belongs to"))
    who.add_argument("--admin", action="store_true", help=_("a token for the provider's administration"))
    tadd.add_argument("--role", choices=ROLES,
                      help=_("backup: add and read, never delete; prune: also delete (into the recycle "
                             "bin); read: restore only"))
    tadd.add_argument("--label", default="", metavar=_("TEXT"), help=_("what it is for, e.g. the machine"))
    tadd.add_argument("--expires", metavar=_("WHEN"),
                      help=_("a duration from now (90d, 1y) or a date (2027-06-30)"))
    tadd.add_argument("--out", metavar=_("FILE"), help=_("write the token to this new file (mode 0600)"))
    tlist = leaf(ks, "list", _("list tokens (never their secrets)"), cmd_token_list, json=True)
    tlist.add_argument("--tenant", metavar=_("NAME"), help=_("only this tenant's tokens"))
    rev = leaf(ks, "revoke", _("revoke a token"), cmd_token_revoke)
    rev.add_argument("id", help=_("the token's id, as 'token list' shows it"))
    rev.add_argument("--motive", metavar=_("TEXT"), required=True,
                     help=_("why: recorded in the audit journal"))

    recycle = actions.add_parser("recycle", help=_("list, restore or purge the tenants' recycle bins"))
    rs = recycle.add_subparsers(dest="recycle_action", required=True, metavar=_("ACTION"))
    rlist = leaf(rs, "list", _("what the recycle bins hold"), cmd_recycle_list, json=True)
    rlist.add_argument("--tenant", metavar=_("NAME"), help=_("only this tenant, object by object"))
    rres = leaf(rs, "restore", _("take deleted objects back out of a tenant's recycle bin"),
                cmd_recycle_restore,
                _("Undoes deletions: the tenant's binned objects (lock objects excepted) are listed and "
                  "readable again. --since and --until choose them by when they were deleted."))
    rres.add_argument("--tenant", metavar=_("NAME"), required=True, help=_("the tenant"))
    rres.add_argument("--repo", metavar=_("NAME"), help=_("only this repository of the tenant"))
    rres.add_argument("--since", metavar=_("WHEN"),
                      help=_("deleted at or after: a date (2026-11-30 14:00) or a duration ago (2d)"))
    rres.add_argument("--until", metavar=_("WHEN"),
                      help=_("deleted before: a date or a duration ago"))
    rres.add_argument("--motive", metavar=_("TEXT"), required=True,
                      help=_("why: recorded in the tenant's audit journal"))
    rpur = leaf(rs, "purge", _("delete for good what a tenant's recycle bin holds"), cmd_recycle_purge,
                _("Removes binned objects from storage now, instead of after the recycle delay. They "
                  "cannot be restored afterwards."))
    rpur.add_argument("--tenant", metavar=_("NAME"), required=True, help=_("the tenant"))
    rpur.add_argument("--older-than", metavar=_("DAYS"),
                      help=_("only objects deleted more than DAYS days ago (default: all)"))
    rpur.add_argument("--motive", metavar=_("TEXT"), required=True,
                      help=_("why: recorded in the tenant's audit journal"))

    inst = leaf(actions, "install", _("install and start the server as a systemd service (root)"),
                cmd_install,
                _("Creates the service's account (coffre-server) if missing, gives it the server's "
                  "folder, writes /etc/coffre/server.env (kept if it exists) and a hardened unit, then "
                  "enables and starts it."))
    inst.add_argument("--user", default=None, metavar=_("NAME"),
                      help=_("the account the server runs as (default coffre-server)"))
    inst.add_argument("--unit-dir", default=None, metavar=_("DIR"),
                      help=_("where to write the unit (default /etc/systemd/system)"))
    inst.add_argument("--env-file", default=None, metavar=_("FILE"),
                      help=_("the service's settings file (default /etc/coffre/server.env)"))
    inst.add_argument("--no-enable", action="store_true", help=_("only write the files; do not start it"))
    uni = leaf(actions, "uninstall", _("stop the server's service and remove its unit (root)"), cmd_uninstall)
    uni.add_argument("--unit-dir", default=None, metavar=_("DIR"),
                     help=_("where the unit is (default /etc/systemd/system)"))
    uni.add_argument("--no-enable", action="store_true", help=_("only remove the unit file"))


# -- helpers -----------------------------------------------------------------------------------

@contextmanager
def opened(args: argparse.Namespace) -> Iterator[Any]:
    """The server's context (database checked); the read tally journaled at the end."""
    from coffre.server.context import ServerContext

    ctx = ServerContext.open(settings_from_args(args))
    try:
        yield ctx
    finally:
        ctx.close()


def actor() -> Any:
    from coffre.server import admin

    return admin.console_actor()


def size_option(text: str | None, option: str, none_ok: bool = False) -> int | None:
    if text is None:
        return None
    if none_ok and text.strip().lower() in ("none", "no", "off"):
        return None
    return parse_size(text, option)


def when(ns: int | None) -> str:
    return human_time(ns) if ns is not None else "-"


def quota_text(soft: int | None, hard: int | None) -> str:
    return "{soft} / {hard}".format(soft=human_size(soft) if soft is not None else "-",
                                     hard=human_size(hard) if hard is not None else "-")


def refuse_existing(path: str) -> None:
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise UsageError(_("{path} exists already: it is not replaced").format(path=path),
                         _("remove it first, or give another file with --out"))


def write_secret(path: str, text: str) -> None:
    """A new file, 0600, holding `text`: never an existing one replaced."""
    from coffre.core.files import write_atomic

    refuse_existing(path)
    write_atomic(Path(path), (text + "\n").encode("ascii"), 0o600)


def show_secret(token: str) -> None:
    say_unlogged(token, _("(the token was shown on the terminal; it is not logged)"))


# -- init --------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from coffre.core.private import private_dir
    from coffre.server import admin, audit, tls
    from coffre.server.context import ServerContext
    from coffre.server.db import Database
    from coffre.server.settings import DEFAULT_PORT

    def said(created: bool, made: str, kept: str, **values: object) -> bool:
        say((_(made) if created else _(kept)).format(**values))
        return created

    settings = settings_from_args(args)
    data = settings.data_dir.absolute()
    names = list(dict.fromkeys(tls.check_name(n) for n in args.tls_name)) if args.tls_name else None
    changed = said(not data.exists(), N_("server folder: {path} (created)"),
                   N_("server folder: {path} (kept)"), path=data)
    private_dir(data)

    db = Database(settings.database_url)
    try:
        had_schema = _has_schema(db)
        db.create()
    finally:
        db.close()
    changed |= said(not had_schema, N_("database: {url} (created)"), N_("database: {url} (kept)"),
                    url=make_url(settings.database_url).render_as_string(hide_password=True))

    objects = settings.objects_location
    if "://" not in objects:
        changed |= said(not Path(objects).exists(), N_("objects: {path} (created)"),
                        N_("objects: {path} (kept)"), path=objects)
        private_dir(Path(objects))
    else:
        say(_("objects: {location}").format(location=objects))

    cert = tls.create(private_dir(data / "tls"), names or tls.default_names())
    changed |= said(cert.created, N_("TLS certificate: {path}, for {names}, valid until {date} (created)"),
                    N_("TLS certificate: {path}, for {names}, valid until {date} (kept)"),
                    path=cert.cert, names=", ".join(cert.names), date=human_time(cert.not_after_ns))
    if not cert.created and names and not set(names) <= set(cert.names):
        say(_("  the existing certificate does not name every --tls-name: remove {folder} and run "
              "init again to make a new one (clients must then trust the new cert.pem)").format(
            folder=data / "tls"))

    me = admin.console_actor()
    ctx = ServerContext.open(settings)
    try:
        if not had_schema:
            with ctx.db.begin() as conn:
                entry = audit.Entry(audit.PROVIDER, "admin.init", "ok", me.token_id, me.client,
                                    detail=admin.detail(tls_names=list(cert.names)))
                audit.append(ctx.db, conn, entry, ctx.clock.now_ns())
        admin_file = data / "admin.token"
        if _file_token(ctx, admin_file, None):
            say(_("admin token: {path} (kept)").format(path=admin_file))
        elif _valid_tokens(ctx):
            say(_("admin token: there are valid admin tokens already; 'coffre server token add --admin' "
                  "issues another"))
        else:
            _doc, secret = admin.add_token(ctx, me, None, "admin", "init")
            admin_file.unlink(missing_ok=True)  # a token this database does not know: worthless
            write_secret(str(admin_file), secret)
            say(_("admin token: written to {path} (keep it secret: it administers every tenant)").format(
                path=admin_file))
            changed = True
        if args.demo:
            changed |= _demo(ctx, data, getattr(args, "port", None) or DEFAULT_PORT, me)
    finally:
        ctx.close()
    if not changed:
        say(_("the server was set up already: nothing was changed"))
    return EXIT_OK


def _has_schema(db: Any) -> bool:
    try:
        db.check()
    except CoffreError:
        return False
    return True


def _valid_tokens(ctx: Any) -> bool:
    """Whether some admin token is valid now."""
    from coffre.server import tokens

    now = ctx.clock.now_ns()
    with ctx.db.read() as conn:
        rows = tokens.listing(conn)
    return any(r.role == "admin" and r.revoked_ns is None and (r.expires_ns is None or r.expires_ns > now)
               for r in rows)


def _file_token(ctx: Any, path: Path, tenant: str | None) -> bool:
    """Whether the token in `path` is valid, and an admin token (tenant None) or the tenant's."""
    from coffre.server import tokens

    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        with ctx.db.read() as conn:
            p = tokens.authenticate(conn, "Bearer " + token, ctx.clock.now_ns())
    except tokens.Unauthorized:
        return False
    return p.tenant_name == tenant and (tenant is not None or p.role == "admin")


def _demo(ctx: Any, data: Path, port: int, me: Any) -> bool:
    """The demo tenant and its backup token (kept if they exist), and the commands that use
    them; whether anything was made."""
    from coffre.server import admin, tenants

    changed = False
    with ctx.db.read() as conn:
        found = tenants.by_name(conn, "demo")
    if found is None:
        admin.add_tenant(ctx, me, "demo", "Pharmacie de démonstration")
        say(_("tenant demo: created"))
        changed = True
    else:
        say(_("tenant demo: kept"))
    token_file = data / "demo.token"
    if _file_token(ctx, token_file, "demo"):
        say(_("backup token of demo: {path} (kept)").format(path=token_file))
    else:
        _doc, secret = admin.add_token(ctx, me, "demo", "backup", "demo")
        token_file.unlink(missing_ok=True)
        write_secret(str(token_file), secret)
        say(_("backup token of demo: written to {path}").format(path=token_file))
        changed = True
    url = f"https://127.0.0.1:{port}/demo"
    q = shlex.quote
    folder = _("FOLDER")
    # Commands to copy, not sentences: only the folder's placeholder is in the reader's language.
    serve = [f"coffre server --data {q(str(data))}"]
    client = [f"export COFFRE_SERVER_TOKEN_FILE={q(str(token_file))}",
              f"export SSL_CERT_FILE={q(str(data / 'tls' / 'cert.pem'))}",
              f"coffre init --repo {url}",
              f"coffre backup --repo {url} {folder}"]
    say("")
    say(_("Start the server (it serves until Ctrl-C):"))
    for line in serve:
        say("    " + line)
    say(_("Then, as the pharmacy, in another terminal:"))
    for line in client:
        say("    " + line)
    say("")
    return changed


# -- tenants -----------------------------------------------------------------------------------

def cmd_tenant_add(args: argparse.Namespace) -> int:
    from coffre.server import admin

    soft = size_option(args.quota_soft, "--quota-soft")
    hard = size_option(args.quota_hard, "--quota-hard")
    with opened(args) as ctx:
        doc = admin.add_tenant(ctx, actor(), args.name, args.display_name, args.contact, soft, hard)
    say(_("tenant {name} added (quota {quota})").format(name=doc["name"], quota=quota_text(soft, hard)))
    say(_("next: 'coffre server token add --tenant {name} --role backup --out FILE' for its machine").format(
        name=doc["name"]))
    return EXIT_OK


def cmd_tenant_list(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        docs = admin.list_tenants(ctx, actor())
    if args.json:
        emit_json({"tenants": docs})
        return EXIT_OK
    if not docs:
        say(_("no tenants yet: 'coffre server tenant add NAME' adds one"))
        return EXIT_OK
    rows = [[d["name"], _(STATE_WORDS[d["state"]]), human_size(d["stored_bytes"]),
             human_size(d["binned_bytes"]), quota_text(d["quota"]["soft"], d["quota"]["hard"]),
             _(QUOTA_WORDS[d["quota"]["state"]]) if QUOTA_WORDS[d["quota"]["state"]] else "",
             str(d["repositories"]), str(d["active_tokens"])] for d in docs]
    say(table(rows, [_("TENANT"), _("STATE"), _("STORED"), _("BIN"), _("QUOTA SOFT / HARD"), "",
                     _("REPOS"), _("TOKENS")]))
    return EXIT_OK


def cmd_tenant_show(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        d = admin.show_tenant(ctx, actor(), args.name)
    if args.json:
        emit_json(d)
        return EXIT_OK
    if d["display_name"]:
        say(_("tenant {name} ({display}), {state}").format(name=d["name"], display=d["display_name"],
                                                           state=_(STATE_WORDS[d["state"]])))
    else:
        say(_("tenant {name}, {state}").format(name=d["name"], state=_(STATE_WORDS[d["state"]])))
    if d["contact"]:
        say(_("contact: {contact}").format(contact=d["contact"]))
    say(_("created: {when}").format(when=when(d["created_ns"])))
    say(_("stored: {stored}; in the recycle bin: {binned}; counted against the quota: {used}").format(
        stored=human_size(d["stored_bytes"]), binned=human_size(d["binned_bytes"]),
        used=human_size(d["used_bytes"])))
    q = d["quota"]
    say(_("quota: soft {soft}, hard {hard}").format(
        soft=human_size(q["soft"]) if q["soft"] is not None else _("none"),
        hard=human_size(q["hard"]) if q["hard"] is not None else _("none"))
        + (f" ({_(QUOTA_WORDS[q['state']])})" if QUOTA_WORDS[q["state"]] else ""))
    b = d["bin"]
    if b["objects"]:
        say(ngettext("recycle bin: {n} object, {size}, deleted {oldest}, purged from {due} ({days} days "
                     "after deletion); until then it counts against the quota",
                     "recycle bin: {n} objects, {size}, oldest deleted {oldest}, purged from {due} "
                     "({days} days after deletion); until then they count against the quota",
                     b["objects"]).format(
            n=b["objects"], size=human_size(b["bytes"]), oldest=when(b["oldest_ns"]),
            due=when(b["next_purge_ns"]), days=b["recycle_days"]))
    else:
        say(_("recycle bin: empty"))
    say("")
    if d["repositories"]:
        say(table([[r["name"], str(r["objects"]), human_size(r["bytes"]), str(r["binned_objects"]),
                    human_size(r["binned_bytes"]), when(r["created_ns"])] for r in d["repositories"]],
                  [_("REPOSITORY"), _("OBJECTS"), _("SIZE"), _("BINNED"), _("BIN SIZE"), _("CREATED")]))
    else:
        say(_("no repositories yet"))
    say("")
    _token_table(d["tokens"])
    return EXIT_OK


def cmd_tenant_state(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        d = admin.set_state(ctx, actor(), args.name, args.state, args.motive)
    say(_("tenant {name}: {state} (was {previous})").format(
        name=args.name, state=_(STATE_WORDS[d["state"]]), previous=_(STATE_WORDS[d["previous"]])))
    return EXIT_OK


def cmd_tenant_quota(args: argparse.Namespace) -> int:
    from coffre.server import admin, tenants

    if args.soft is None and args.hard is None:
        raise UsageError(_("give --soft, --hard or both"), _("'none' removes a quota, e.g. --soft none"))
    soft = tenants.KEEP if args.soft is None else size_option(args.soft, "--soft", none_ok=True)
    hard = tenants.KEEP if args.hard is None else size_option(args.hard, "--hard", none_ok=True)
    with opened(args) as ctx:
        d = admin.set_quota(ctx, actor(), args.name, soft, hard, args.motive)
    q = d["quota"]
    say(_("tenant {name}: quota {quota} (was {previous})").format(
        name=args.name, quota=quota_text(q["soft"], q["hard"]),
        previous=quota_text(d["previous"]["soft"], d["previous"]["hard"])))
    if q["state"] != "ok":
        say(_("  it already uses {used} ({state})").format(used=human_size(d["used_bytes"]),
                                                           state=_(QUOTA_WORDS[q["state"]])))
    return EXIT_OK


# -- tokens ------------------------------------------------------------------------------------

def cmd_token_add(args: argparse.Namespace) -> int:
    from coffre.server import admin

    if args.admin and args.role:
        raise UsageError(_("--role is for a tenant's token; an admin token has the admin role"))
    if not args.admin and not args.role:
        raise UsageError(_("--tenant needs --role backup, prune or read"),
                         _("backup for the pharmacy's machine; prune where retention runs; read to "
                           "restore only"))
    if args.out:
        refuse_existing(args.out)  # before anything is issued
    with opened(args) as ctx:
        expires = (admin.parse_moment(args.expires, ctx.clock.now_ns(), ahead=True, option="--expires")
                   if args.expires else None)
        doc, secret = admin.add_token(ctx, actor(), None if args.admin else args.tenant,
                                      "admin" if args.admin else args.role, args.label, expires)
        if args.out:
            try:
                write_secret(args.out, secret)
            except (OSError, CoffreError):
                admin.revoke_token(ctx, actor(), doc["id"], "the token file could not be written")
                raise
    say(_("token {id} issued: role {role}, {owner}, expires {expires}").format(
        id=doc["id"], role=doc["role"], owner=doc["tenant"] or _("provider"),
        expires=when(doc["expires_ns"]) if doc["expires_ns"] else _("never")))
    if args.out:
        say(_("written to {path} (mode 0600); give it to the machine as COFFRE_SERVER_TOKEN_FILE").format(
            path=args.out))
    else:
        say(_("the token, shown only now (it is stored hashed, and never shown again):"))
        show_secret(secret)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        docs = admin.list_tokens(ctx, actor(), args.tenant)
    if args.json:
        emit_json({"tokens": docs})
        return EXIT_OK
    _token_table(docs)
    return EXIT_OK


def _token_table(docs: list[dict[str, Any]]) -> None:
    if not docs:
        say(_("no tokens"))
        return
    say(table([[d["id"], d["tenant"] or _("(provider)"), d["role"], _(TOKEN_WORDS[d["state"]]),
                when(d["created_ns"]), when(d["expires_ns"]), when(d["last_used_ns"]), d["label"]]
               for d in docs],
              [_("TOKEN"), _("TENANT"), _("ROLE"), _("STATE"), _("CREATED"), _("EXPIRES"), _("LAST USED"),
               _("LABEL")]))


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        d = admin.revoke_token(ctx, actor(), args.id, args.motive)
    say(_("token {id} ({owner}, {role}) revoked").format(id=d["id"], owner=d["tenant"] or _("provider"),
                                                         role=d["role"]))
    return EXIT_OK


# -- recycle bin -------------------------------------------------------------------------------

def cmd_recycle_list(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        d = admin.recycle_list(ctx, actor(), args.tenant)
    if args.json:
        emit_json(d)
        return EXIT_OK
    if not d["repositories"]:
        say(_("the recycle bin is empty") if args.tenant is None else
            _("the recycle bin of {tenant} is empty").format(tenant=args.tenant))
        return EXIT_OK
    say(table([[s["tenant"], s["repository"], str(s["objects"]), human_size(s["bytes"]), when(s["oldest_ns"]),
                when(s["next_purge_ns"])] for s in d["repositories"]],
              [_("TENANT"), _("REPOSITORY"), _("OBJECTS"), _("SIZE"), _("OLDEST DELETION"), _("NEXT PURGE")]))
    if "objects" in d:
        say("")
        say(table([[o["repository"], f"{o['kind']}/{o['name'][:16]}", human_size(o["size"]),
                    when(o["binned_ns"]), o["binned_by"], when(o["purge_due_ns"])] for o in d["objects"]],
                  [_("REPOSITORY"), _("OBJECT"), _("SIZE"), _("DELETED"), _("BY TOKEN"), _("PURGED FROM")]))
    say(_("binned bytes count against the quota until they are purged ({days} days after deletion)").format(
        days=d["recycle_days"]))
    return EXIT_OK


def cmd_recycle_restore(args: argparse.Namespace) -> int:
    from coffre.server import admin

    with opened(args) as ctx:
        now = ctx.clock.now_ns()
        since = admin.parse_moment(args.since, now, ahead=False, option="--since") if args.since else None
        until = admin.parse_moment(args.until, now, ahead=False, option="--until") if args.until else None
        d = admin.recycle_restore(ctx, actor(), args.tenant, args.motive, args.repo, since, until)
    say(ngettext("{n} object ({size}) of {tenant} restored from the recycle bin",
                 "{n} objects ({size}) of {tenant} restored from the recycle bin", d["objects"]).format(
        n=d["objects"], size=human_size(d["bytes"]), tenant=args.tenant))
    if d["already_gone"]:
        say(ngettext("{n} binned object was no longer stored (a purge had begun): removed from the bin",
                     "{n} binned objects were no longer stored (a purge had begun): removed from the bin",
                     d["already_gone"]).format(n=d["already_gone"]))
    return EXIT_OK


def cmd_recycle_purge(args: argparse.Namespace) -> int:
    from coffre.server import admin

    days: float | None = None
    if args.older_than is not None:
        try:
            days = float(args.older_than.strip().removesuffix("d"))
        except ValueError:
            raise UsageError(_("--older-than {text}: not a number of days").format(
                text=repr(args.older_than)),
                             _("e.g. --older-than 7")) from None
    with opened(args) as ctx:
        d = admin.recycle_purge(ctx, actor(), args.tenant, args.motive, days)
    n = d["objects"] + d["already_gone"]
    say(ngettext("{n} object ({size}) of {tenant} purged from the recycle bin",
                 "{n} objects ({size}) of {tenant} purged from the recycle bin", n).format(
        n=n, size=human_size(d["bytes"] + d["already_gone_bytes"]), tenant=args.tenant))
    if d["failed"]:
        say(ngettext("{n} object could not be removed from storage ({reason}): it stays in the bin; run "
                     "purge again",
                     "{n} objects could not be removed from storage ({reason}): they stay in the bin; run "
                     "purge again", d["failed"]).format(n=d["failed"], reason=d["failure"]))
    for name in d["missing_after_upload"]:
        say(_("  {object} was uploaded again while it was purged: its bytes are gone (scrub finding "
              "recorded)").format(object=name))
    return EXIT_FATAL if d["failed"] or d["missing_after_upload"] else EXIT_OK


# -- service -----------------------------------------------------------------------------------

def cmd_install(args: argparse.Namespace) -> int:
    from coffre.server import service

    settings = settings_from_args(args)
    done = service.install(str(settings.data_dir), args.user or service.SERVICE_USER,
                           args.unit_dir or service.SYSTEM_UNITS, args.env_file or service.ENV_FILE,
                           enable=not args.no_enable)
    if done.user_created:
        say(_("account {user} created").format(user=done.user))
    say(_("{path} belongs to {user}").format(path=os.path.abspath(settings.data_dir), user=done.user))
    say((_("settings: {path} (written)") if done.env_written else _("settings: {path} (kept)")).format(
        path=done.env_file))
    say(_("installed: {unit}").format(unit=done.unit))
    if not args.no_enable:
        say(_("the server is running; 'journalctl -u coffre-server' shows its log"))
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from coffre.server import service

    removed = service.uninstall(args.unit_dir or service.SYSTEM_UNITS, disable=not args.no_enable)
    if removed is None:
        raise CoffreError(_("the server's service is not installed"))
    say(_("removed: {unit}").format(unit=removed))
    say(_("the server's folder, its account and its settings file are kept"))
    return EXIT_OK
