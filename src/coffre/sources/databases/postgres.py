"""PostgreSQL: pg_dump in custom format, uncompressed, inside a snapshot Coffre exports.

Coffre opens a REPEATABLE READ transaction, exports its snapshot, counts every table's rows
in it, and runs `pg_dump --snapshot`: the dump and the recorded counts are the same instant.
Why this format (docs/databases.md): custom format lets a restore choose to skip owners and
grants (a drill's throwaway cluster has no roles) and is what pg_restore reads; without
compression (-Z0) a day's changed rows stay changed rows in the byte stream, so Coffre's
chunking, deltas and zstd do the work. The password comes from PGPASSWORD or ~/.pgpass, never a command line.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, TypeVar

from coffre.core import posix
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import N_, _
from coffre.sources.databases.base import Captured, Check, CountedTarget, Database
from coffre.sources.databases.command import (
    feed_command,
    find_program,
    read_head,
    run_tool,
    stream_command,
)
from coffre.sources.databases.pglib import conninfo_to_dict, make_conninfo, psycopg, sql

T = TypeVar("T")
CONNECT_TIMEOUT = "30"
_USER_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
_ANY_RELATION = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""


def bin_dirs() -> list[str]:
    """Debian keeps each PostgreSQL version's programs apart; the newest first."""
    found = glob.glob("/usr/lib/postgresql/*/bin")
    return sorted(found, key=lambda d: _major(d.split("/")[-2]), reverse=True)


def _major(text: str) -> int:
    digits = text.split(".")[0]
    return int(digits) if digits.isdigit() else 0


def program(name: str) -> str:
    """From PATH (Debian's /usr/bin/pg_dump picks the newest installed version, and pg_dump
    must be at least as new as the server), else the newest of Debian's version folders."""
    try:
        return find_program(name)
    except CoffreError:
        return find_program(name, extra_dirs=bin_dirs())


class Connection:
    """A parsed connection string: libpq's key=value or postgresql:// URI."""

    def __init__(self, dsn: str) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise UsageError(_("the PostgreSQL connection string is not valid"),
                             _("e.g. 'host=localhost dbname=officine user=coffre' or "
                               "postgresql://coffre@localhost/officine")) from None
        if params.get("password") or params.get("sslpassword"):
            raise UsageError(_("a password in the PostgreSQL connection string would show in the "
                               "process list"), _("put it in PGPASSWORD or ~/.pgpass"))
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self.params: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        self.dbname = str(self.params.get("dbname") or self.params.get("user")
                          or os.environ.get("PGDATABASE") or os.environ.get("PGUSER")
                          or posix.current_user())

    def conninfo(self, dbname: str | None = None) -> str:
        return make_conninfo(**{**self.params, **({"dbname": dbname} if dbname else {})})

    def describe(self) -> str:
        where = self.params.get("host") or os.environ.get("PGHOST") or _("local socket")
        port = self.params.get("port") or os.environ.get("PGPORT")
        return _("PostgreSQL database {name} on {where}").format(
            name=repr(self.dbname), where=f"{where}:{port}" if port else where)

    def connect(self, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.conninfo(dbname), autocommit=autocommit)
        except psycopg.Error as exc:
            raise CoffreError(_("{database}: cannot connect: {reason}").format(
                database=self.describe(), reason=pg_message(exc))) from None


def pg_message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _tables(cur: Any) -> list[tuple[str, str]]:
    return [(s, t) for s, t in cur.execute(_USER_TABLES).fetchall()]


def _counts(cur: Any) -> dict[str, int]:
    out = {}
    for schema, table in _tables(cur):
        q = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        out[f"{schema}.{table}"] = int(cur.execute(q).fetchone()[0])
    return out


class PostgresDatabase(Database):
    engine = "postgres"
    suffix = ".dump"

    def __init__(self, dsn: str) -> None:
        self.conn = Connection(dsn)
        self.name = self.conn.dbname
        self.data_directory = ""

    def describe(self) -> str:
        return self.conn.describe()

    def stored_at(self) -> list[str]:
        return local_data_directory(self.data_directory)

    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        conn = self.conn.connect()
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            cur = conn.cursor()
            snapshot = cur.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            counts = _counts(cur)
            size = int(cur.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
            version = str(cur.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            self.data_directory = data_directory(cur)
            pg_dump = program("pg_dump")
            argv = [pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                    "--no-password", f"--dbname={self.conn.conninfo()}"]
            result = stream_command(argv, consume, _("pg_dump of {database}").format(
                database=self.describe()))
            conn.rollback()
        except psycopg.Error as exc:
            raise CoffreError(_("{database} could not be backed up: {reason}; no snapshot was "
                                "written").format(
                database=self.describe(), reason=pg_message(exc))) from None
        finally:
            conn.close()
        return result, Captured(size=size, tables=counts, server=f"PostgreSQL {version}",
                                format="pg_dump custom format, uncompressed")


def data_directory(cur: Any) -> str:
    """The server's data folder, if the role may see it (a superuser, pg_read_all_settings):
    pg_settings lists it only to them, without an error for the others."""
    row = cur.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory'").fetchone()
    return str(row[0]) if row else ""


def local_data_directory(path: str) -> list[str]:
    """[path] if it is a PostgreSQL data folder on this machine (the server may be another)."""
    return [path] if path and os.path.isfile(os.path.join(path, "PG_VERSION")) else []


_ENTRY = re.compile(r"^\d+; \d+ \d+ (.*)$")  # ID; CATALOG OID DESCRIPTION SCHEMA NAME OWNER
_EXTENSION = re.compile(r"^EXTENSION - (\S+) $")
_EXTENSION_COMMENT = re.compile(r"^COMMENT - EXTENSION (\S+) $")


def without_entries(listing: str, left_out: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """pg_restore's list of a dump's entries (--list), with those for which `left_out(entry)`
    (the entry's text after its ids) is not None made comments; and the non-empty reasons it
    gave, for a report."""
    lines, reasons = [], []
    for line in listing.splitlines():
        entry = _ENTRY.match(line)
        why = left_out(entry.group(1)) if entry else None
        lines.append(line if why is None else ";" + line)
        if why:
            reasons.append(why)
    return "\n".join(lines) + "\n", reasons


def extension_entry(entry: str) -> tuple[str | None, bool]:
    """The extension an entry creates or comments on (None if neither), and whether it is the
    comment."""
    if found := _EXTENSION.match(entry):
        return found.group(1), False
    if found := _EXTENSION_COMMENT.match(entry):
        return found.group(1), True
    return None, False


class PostgresTarget(CountedTarget):
    def __init__(self, dsn: str, owners: bool = True) -> None:
        self.conn = Connection(dsn)
        self.owners = owners

    def describe(self) -> str:
        return self.conn.describe()

    def _catalog(self, query: str, params: tuple[str, ...] = (),
                 through: tuple[str | None, ...] = ("postgres", "template1")) -> tuple[Any, ...] | None:
        """A row of the server's catalog (asked there, as its messages may be in French),
        through the first of these databases (None: the target itself) that lets us in; ()
        if the query finds no row, None if no database let us in."""
        for database in through:
            try:
                with contextlib.closing(self.conn.connect(database)) as conn:
                    return conn.execute(query, params).fetchone() or ()
            except (CoffreError, psycopg.Error):
                continue
        return None

    def _exists(self) -> bool:
        """Asked of the catalog; failing that, by connecting to the database itself."""
        row = self._catalog("SELECT count(*) FROM pg_database WHERE datname = %s", (self.conn.dbname,))
        if row is not None:
            return bool(row and row[0])
        self.conn.connect().close()  # raises with the server's own message
        return True

    def is_empty(self) -> bool:
        if not self._exists():
            return True
        with contextlib.closing(self.conn.connect()) as conn:
            return int(conn.execute(_ANY_RELATION).fetchone()[0]) == 0  # type: ignore[index]

    def too_privileged(self) -> str | None:
        row = self._catalog("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user",
                            through=("postgres", "template1", None))
        if row and row[1]:
            return _("the PostgreSQL role {role} is a superuser").format(role=repr(row[0]))
        return None

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        if not self._exists():
            with contextlib.closing(self.conn.connect("postgres", autocommit=True)) as conn:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.conn.dbname)))
                except psycopg.Error as exc:
                    raise CoffreError(_("{database} cannot be created: {reason}").format(
                        database=self.describe(), reason=pg_message(exc)),
                        _("create it first, or give the user CREATEDB")) from None
        listing, stream = read_head([program("pg_restore"), "--list"], chunks,
                                    "pg_restore --list of the dump")
        with tempfile.TemporaryDirectory(prefix="coffre-restore-") as folder:
            entries = os.path.join(folder, "entries.list")
            with open(entries, "w") as f:
                f.write(self.entries(listing))
            argv = [*self.restore_argv(force), f"--use-list={entries}"]
            feed_command(argv, stream, _("pg_restore into {database}").format(database=self.describe()))

    def entries(self, listing: str) -> str:
        """Which of the dump's entries (pg_restore --list) to restore: all but the extensions
        already in the database and their comments (the role restoring, its owner, may not
        comment on one a superuser created for it)."""
        with contextlib.closing(self.conn.connect()) as conn:
            there = {str(r[0]) for r in conn.execute("SELECT extname FROM pg_catalog.pg_extension")}
        return without_entries(listing, lambda entry: "" if extension_entry(entry)[0] in there else None)[0]

    def restore_argv(self, force: bool) -> list[str]:
        """pg_restore in one transaction that stops at the first error."""
        argv = [program("pg_restore"), "--exit-on-error", "--single-transaction", "--no-password",
                f"--dbname={self.conn.conninfo()}"]
        if force:
            argv += ["--clean", "--if-exists"]
        if not self.owners:
            argv += ["--no-owner", "--no-acl"]
        return argv

    def row_counts(self) -> dict[str, int]:
        with contextlib.closing(self.conn.connect()) as conn:
            return _counts(conn.cursor())

    def integrity(self) -> Check:
        """pg_amcheck, as the target's role: the amcheck extension must be there, and the role
        allowed to run its functions (a drill's setup sees to both)."""
        name = N_("pg_amcheck (tables and indexes)")
        try:
            amcheck = program("pg_amcheck")
        except CoffreError:
            return Check(name, True, _("pg_amcheck is not installed (PostgreSQL 14 or later): skipped"))
        argv = [amcheck, "--heapallindexed", "--no-password", self.conn.conninfo()]
        try:
            out = run_tool(argv, "pg_amcheck")
        except CoffreError as exc:
            return Check(name, False, exc.message)
        return Check(name, not out.strip(), out.strip()[:2000] or _("no corruption found"))
