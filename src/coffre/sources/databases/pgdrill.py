"""PostgreSQL drills: a throwaway cluster where the dump is restored and checked by an
ordinary role, never a superuser.

A dump is the backed-up database's code: a function in a CHECK constraint or an expression
index runs while rows are loaded and while pg_amcheck --heapallindexed reads the indexes. As a
superuser, such a function could run programs (COPY ... TO PROGRAM) as the server's account.
So the cluster's bootstrap superuser only prepares it, before anything of the dump is in it:
the role `drill` (LOGIN, no SUPERUSER, CREATEDB, CREATEROLE nor REPLICATION; BYPASSRLS so that
row counts are exact), its database, and the amcheck extension in a schema of its own whose
functions `drill` may run. pg_restore (owners and grants left out), the row counts and
pg_amcheck then run as `drill`. What only a superuser can create is left out of the restore
when it holds no rows (untrusted extensions, event triggers, publications, subscriptions,
security labels, tablespaces), and named in the report.

The server is started as the drill's account, directly: no shell sees the folder's path.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterable, Iterator
from typing import Any

from coffre.core.errors import CoffreError
from coffre.core.i18n import N_, _
from coffre.sources.databases.base import Check, Target
from coffre.sources.databases.command import run_tool
from coffre.sources.databases.pglib import make_conninfo, pq, psycopg, sql
from coffre.sources.databases.postgres import (
    PostgresTarget,
    extension_entry,
    pg_message,
    program,
    without_entries,
)
from coffre.sources.databases.throwaway import DrillFolder, Server, drill_account

PORT = "5432"
SETUP_ROLE = "coffre"  # the throwaway cluster's bootstrap superuser: setup only
DRILL_ROLE = "drill"
DRILL_DB = "drill"
AMCHECK_SCHEMA = "coffre_amcheck"
# Whatever the restored configuration says, a drill's server listens on its own socket only,
# archives nothing, runs no command of its settings and needs no preloaded library.
DRILL_SETTINGS = {
    "listen_addresses": "", "port": PORT, "archive_mode": "off", "fsync": "off",
    "full_page_writes": "off", "synchronous_commit": "off", "ssl": "off",
    "shared_preload_libraries": "", "session_preload_libraries": "", "local_preload_libraries": "",
    # Autovacuum's ANALYZE evaluates expression indexes as their table's owner: in a cluster
    # copy, before the drill confines it, that owner may be one of production's superusers.
    "autovacuum": "off",
}
# A superuser's session in a database that holds someone's objects: names resolve in the
# system catalog only, and no library of theirs is loaded (these win over the database's
# and the role's own settings).
PINNED = "-c search_path=pg_catalog -c local_preload_libraries= -c session_preload_libraries="
# What only a superuser can create and that holds no rows: left out of a drill's restore.
RESTORE_WITHOUT = ["--no-tablespaces", "--no-publications", "--no-subscriptions",
                   "--no-security-labels"]
_NOT_CREATABLE = """
SELECT a.name, a.installed_version IS NOT NULL FROM pg_catalog.pg_available_extensions a
WHERE a.installed_version IS NOT NULL OR NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_available_extension_versions v
    WHERE v.name = a.name AND v.version = a.default_version AND v.trusted)
"""
_AMCHECK_FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text, n.nspname
FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
JOIN pg_catalog.pg_proc p ON p.oid = d.objid JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
  AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.extname = 'amcheck'
"""
SUPERUSER_ONLY = N_(
    "This is not damage in the backup: a drill restores as an ordinary database role, so that "
    "the database's own code never runs with rights over the server, and the dump holds something "
    "only a PostgreSQL superuser can create (named above). See docs/databases.md, 'What a drill "
    "cannot restore'.")


def local(socket_dir: str, user: str, dbname: str, options: str = "") -> str:
    """A connection string to the throwaway server, through its socket."""
    extra = {"options": options} if options else {}
    return make_conninfo(host=socket_dir, port=PORT, user=user, dbname=dbname, **extra)


def server_major() -> int:
    """The major version of the `postgres` the drills start."""
    out = run_tool([program("postgres"), "--version"], "postgres --version", timeout=60)
    found = re.search(r"\(PostgreSQL\) (\d+)", out)  # postgres (PostgreSQL) 15.18 (Debian ...)
    return int(found.group(1)) if found else 0


def _quoted_dir(path: str) -> str:
    """A folder as unix_socket_directories reads it (a list: a comma would split it)."""
    return '"' + path.replace('"', '""') + '"'


def start_server(data: str, socket_dir: str, folder: DrillFolder, settings: Iterable[str] = ()) -> Server:
    """`postgres` on `data`, as the drill's account, with the drill's settings (`settings`:
    more -c name=value); returns once it accepts connections."""
    argv = [program("postgres"), "-D", data, "-c", f"unix_socket_directories={_quoted_dir(socket_dir)}"]
    for name, value in DRILL_SETTINGS.items():
        argv += ["-c", f"{name}={value}"]
    for setting in settings:
        argv += ["-c", setting]
    server = Server(argv, folder, _("PostgreSQL server"))
    try:
        probe = local(socket_dir, SETUP_ROLE, "postgres").encode()
        server.wait_ready(lambda: pq.PGconn.ping(probe) == pq.Ping.OK)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    """Immediate shutdown: the cluster is thrown away."""
    server.stop(signal.SIGQUIT)


def connect(conninfo: str, what: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise CoffreError(_("{what}: cannot connect to the drill's server: {reason}").format(
            what=what, reason=pg_message(exc))) from None


def install_amcheck(conn: psycopg.Connection[Any], schema: str) -> None:
    """As a superuser: the amcheck extension in `schema`, a new schema of the superuser's
    (other roles cannot put objects beside its functions)."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE EXTENSION amcheck WITH SCHEMA {}").format(sql.Identifier(schema)))


def grant_amcheck(conn: psycopg.Connection[Any], role: str) -> None:
    """As a superuser: `role` may run amcheck's functions (pg_amcheck needs nothing else)."""
    functions = conn.execute(_AMCHECK_FUNCTIONS).fetchall()
    for schema in sorted({s for _sig, s in functions}):
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(role)))
    for signature, _schema in functions:
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
            sql.SQL(signature), sql.Identifier(role)))


def prepare_drill_database(socket_dir: str) -> None:
    """As the bootstrap superuser, in a new cluster: the drill's role, its database, and
    amcheck for it. Nothing of the dump is in the cluster yet."""
    role, db = sql.Identifier(DRILL_ROLE), sql.Identifier(DRILL_DB)
    try:
        with contextlib.closing(connect(local(socket_dir, SETUP_ROLE, "postgres", PINNED), "setup")) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                 "BYPASSRLS").format(role))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
        with contextlib.closing(connect(local(socket_dir, SETUP_ROLE, DRILL_DB, PINNED), "setup")) as conn:
            # PostgreSQL 15 gives it to the database's owner; older versions to the superuser.
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
            install_amcheck(conn, AMCHECK_SCHEMA)
            grant_amcheck(conn, DRILL_ROLE)
    except psycopg.Error as exc:
        raise CoffreError(_("preparing the drill's throwaway PostgreSQL failed: {reason}").format(
            reason=pg_message(exc))) from None


def drill_listing(listing: str, untrusted: set[str], installed: set[str]) -> tuple[str, list[str]]:
    """pg_restore's list of the dump's entries (--list), with those the drill's role cannot
    create made comments: extensions already there or untrusted (and their comments), event
    triggers (and theirs). The new list, and what was left out that the report should name."""
    return without_entries(listing, lambda entry: _left_out(entry, untrusted, installed))


def _left_out(entry: str, untrusted: set[str], installed: set[str]) -> str | None:
    """None: restore this entry; "": leave it out silently; else: leave it out and name it."""
    extension, comment = extension_entry(entry)
    if extension in installed:
        return ""
    if extension in untrusted:
        return "" if comment else _("extension {name}").format(name=extension)
    if entry.startswith("EVENT TRIGGER - "):
        return _("event trigger {name}").format(name=entry.removeprefix("EVENT TRIGGER - ").rsplit(" ", 1)[0])
    if entry.startswith("COMMENT - EVENT TRIGGER "):
        return ""
    return None


class DrillTarget(PostgresTarget):
    """The drill's database in its throwaway cluster, restored and checked as the role
    `drill`: the dump's code runs only with that role's rights."""

    def __init__(self, socket_dir: str) -> None:
        super().__init__(local(socket_dir, DRILL_ROLE, DRILL_DB), owners=False)
        self.left_out: list[str] = []

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        try:
            super().restore(chunks, force, extra)
        except CoffreError as exc:
            raise CoffreError(exc.message + self._why(exc.message)) from None

    def restore_argv(self, force: bool) -> list[str]:
        return [*super().restore_argv(force), *RESTORE_WITHOUT]

    def entries(self, listing: str) -> str:
        untrusted, installed = self._not_creatable()
        kept, self.left_out = drill_listing(listing, untrusted, installed)
        return kept

    def _not_creatable(self) -> tuple[set[str], set[str]]:
        """The extensions `drill` cannot create: untrusted ones, and those already there."""
        with contextlib.closing(connect(self.conn.conninfo(), _("listing extensions"))) as conn:
            rows = conn.execute(_NOT_CREATABLE).fetchall()
        return {n for n, there in rows if not there}, {n for n, there in rows if there}

    def _why(self, message: str) -> str:
        """What a failed restore's message should add: why a superuser's object is refused."""
        why = ""
        if any(s in message for s in ("permission denied", "must be superuser", "must be owner")):
            why += "\n" + _(SUPERUSER_ONLY)
        if self.left_out:
            why += "\n" + _("Left out of the drill, as only a superuser can create them: {names}. If the "
                           "error above is about them (a type, function or other object that does not "
                           "exist), it is not damage in the backup: what needs them cannot be restored in a "
                           "drill "
                           "(docs/databases.md, 'What a drill cannot restore').").format(
                               names=", ".join(self.left_out))
        return why

    def drill_checks(self, recorded: dict[str, int]) -> list[Check]:
        checks = super().drill_checks(recorded)
        if self.left_out:
            checks.insert(0, Check(N_("left out (only a superuser can create them; they hold no rows)"),
                                   True, ", ".join(self.left_out)))
        return checks


@contextlib.contextmanager
def throwaway_postgres(work_dir: str | None = None) -> Iterator[Target]:
    """A temporary cluster made by initdb, run as the drill's account, listening on a socket
    in its own folder only; the target is its database `drill`, as the role `drill`."""
    account = drill_account()
    initdb = program("initdb")
    folder = DrillFolder("coffre-drill-pg-", work_dir, account)
    server = None
    try:
        data, sockets = folder.owned("data"), folder.owned("run")
        run_tool([initdb, "-D", data, "-U", SETUP_ROLE, "--auth=trust", "-E", "UTF8", "--no-locale",
                  "--no-sync"], _("initdb of the drill's throwaway cluster"), account=account)
        server = start_server(data, sockets, folder)
        prepare_drill_database(sockets)
        yield DrillTarget(sockets)
    finally:
        if server is not None:
            stop_server(server)
        folder.remove()
