"""A whole PostgreSQL cluster, physically: pg_basebackup's tar stream, WAL included.

Asked for with `--postgres-cluster DSN` (the user needs REPLICATION and a `replication` line
in pg_hba.conf). It copies every database, role and setting of the cluster's data folder
byte for byte, and restores only into the same PostgreSQL major version, into an empty data
folder (`restore-db --pgdata DIR`). The tar holds the WAL needed to reach a consistent state
(`-X fetch`) and pg_basebackup's manifest, which the drill checks with pg_verifybackup
before starting a throwaway server on the copy and running pg_amcheck on every database.

A physical copy has no instant at which rows could be counted alongside it: the drill lists
what the restored cluster holds instead of comparing counts.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, TypeVar

from coffre.core.errors import CoffreError
from coffre.core.i18n import N_, _, ngettext
from coffre.core.posix import Account
from coffre.sources.databases.base import Captured, Check, Database, Target
from coffre.sources.databases.command import run_tool, service_account, stream_command
from coffre.sources.databases.pgdrill import (
    PINNED,
    connect,
    grant_amcheck,
    install_amcheck,
    local,
    server_major,
    start_server,
    stop_server,
)
from coffre.sources.databases.pglib import psycopg, sql
from coffre.sources.databases.postgres import (
    Connection,
    PostgresTarget,
    data_directory,
    local_data_directory,
    program,
)
from coffre.sources.databases.throwaway import DrillFolder, Server, drill_account

T = TypeVar("T")
_DATABASES = ("SELECT datname, datistemplate FROM pg_catalog.pg_database WHERE datallowconn "
              "ORDER BY datname <> 'postgres', datistemplate, datname")
# The cluster's identity, and a WAL position at or before where the next base backup starts.
_LOG_POSITION = ("SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system()), "
                 "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() "
                 "ELSE pg_catalog.pg_current_wal_lsn() END - '0/0'::pg_catalog.pg_lsn")
_EVENT_TRIGGERS = "SELECT evtname FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D'"
# What a superuser owns outside the system's schemas: tables (amcheck evaluates an index's
# expressions as its table's owner) and SECURITY DEFINER routines (they run as their owner).
_SUPERUSERS_TABLES = """
SELECT c.oid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
WHERE c.relkind IN ('r', 'p', 'm') AND r.rolsuper
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""
_SUPERUSERS_DEFINERS = """
SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
WHERE p.prosecdef AND r.rolsuper
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""


class PostgresCluster(Database):
    engine = "postgres-cluster"
    suffix = ".tar"

    def __init__(self, dsn: str) -> None:
        self.conn = Connection(dsn)
        host = str(self.conn.params.get("host") or os.environ.get("PGHOST") or "local")
        port = str(self.conn.params.get("port") or os.environ.get("PGPORT") or "5432")
        self.name = f"{host.strip('/').replace('/', '_')}:{port}"
        self.data_directory = ""

    def describe(self) -> str:
        return _("PostgreSQL cluster {name}").format(name=self.name)

    def stored_at(self) -> list[str]:
        return local_data_directory(self.data_directory)

    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        after = _("; no snapshot was written")
        try:
            # Any database serves to ask; the user's own may not exist.
            with contextlib.closing(self.conn.connect(self.conn.params.get("dbname") or "postgres")) as conn:
                version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
                self.data_directory = data_directory(conn)
                superuser = str(conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()[0])  # type: ignore[index]
                size = int(conn.execute(
                    "SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0])  # type: ignore[index]
                position = _log_position(conn)
        except psycopg.Error as exc:
            raise CoffreError(f"{self.describe()}: {' '.join(str(exc).split())}{after}") from None
        argv = [program("pg_basebackup"), "--pgdata=-", "--format=tar", "--wal-method=fetch",
                "--checkpoint=fast", "--no-password", f"--dbname={self.conn.conninfo()}"]
        result = stream_command(argv, consume, _("pg_basebackup of {database}").format(
            database=self.describe()),
                                after=after)
        return result, Captured(size=size, tables={}, server=f"PostgreSQL {version}",
                                format="pg_basebackup tar, WAL included",
                                extra={"superuser": superuser, "major": version.split(".")[0],
                                       # The WAL this base backup needs starts at or after this
                                       # position of this stream (continuity's retention).
                                       **position})


def _log_position(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """{"stream", "stream_from"}, or nothing when this role may not read the cluster's identity
    (retention then keeps every WAL segment of the cluster rather than guess)."""
    try:
        with conn.transaction():
            system, floor = conn.execute(_LOG_POSITION).fetchone()  # type: ignore[misc]
    except psycopg.Error:
        return {}
    return {"stream": f"postgres:{system}", "stream_from": str(int(floor))}


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def extract(chunks: Iterable[bytes], data: str, account: Account | None) -> None:
    """Unpack a base backup into the new folder `data`, then give it to `account`.

    Only folders and regular files with plain relative names are accepted (a base backup
    holds nothing else; a tablespace link is refused), each created relative to its parent's
    descriptor without following links, so nothing in the tar can lead a write out of
    `data`. `data` stays root's (0700) until everything is unpacked and handed over, deepest
    first, so the account cannot interfere meanwhile."""
    os.makedirs(os.path.dirname(data), exist_ok=True)
    os.mkdir(data, 0o700)
    top = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stream = io.BufferedReader(_ChunkReader(chunks), 1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _unpack(tar, member, top)
    except (tarfile.TarError, OSError) as exc:
        raise CoffreError(_("the base backup does not unpack into {folder}: {reason}").format(
            folder=data, reason=exc)) from None
    finally:
        os.close(top)
    if account is not None:
        for root, dirs, files in os.walk(data, topdown=False):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), account.pw_uid, account.pw_gid)
        os.lchown(data, account.pw_uid, account.pw_gid)


def _unpack(tar: tarfile.TarFile, member: tarfile.TarInfo, top: int) -> None:
    parts = [p for p in member.name.split("/") if p not in ("", ".")]
    if member.name.startswith("/") or ".." in parts:
        raise CoffreError(_("the base backup holds an unsafe name: {name}").format(
            name=repr(member.name[:200])))
    if not parts:
        return
    if not (member.isdir() or member.isfile()):
        raise CoffreError(_("the base backup holds {name}, which is neither a file nor a folder (clusters "
                            "with tablespaces are not supported)").format(name=repr(member.name[:200])))
    folders = parts if member.isdir() else parts[:-1]
    fd = os.dup(top)
    try:
        for part in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if member.isfile():
            source = tar.extractfile(member)
            assert source is not None
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                shutil.copyfileobj(source, f, 1 << 20)
    finally:
        os.close(fd)


class ClusterFolder(Target):
    """An empty data folder to unpack a base backup into (the server is started apart)."""

    @property
    def replace_hint(self) -> str:
        return _("a data folder is never overwritten: move it aside, or give a new folder")

    def __init__(self, data: str, account: Account | None = None) -> None:
        self.data = os.path.abspath(data)
        self.account = account if account is not None else service_account("postgres")

    def describe(self) -> str:
        return _("PostgreSQL data folder {folder}").format(folder=self.data)

    def is_empty(self) -> bool:
        return not os.path.exists(self.data) or (os.path.isdir(self.data) and not os.listdir(self.data))

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        if not self.is_empty():
            raise CoffreError(_("{target} is not empty; nothing was changed").format(target=self.describe()),
                              self.replace_hint)
        if os.path.isdir(self.data):
            os.rmdir(self.data)
        extract(chunks, self.data, self.account)

    def drill_checks(self, recorded: dict[str, int]) -> list[Check]:
        """What can be checked without a server (no row counts are recorded)."""
        return [self._verify()]

    def _verify(self) -> Check:
        name = N_("pg_verifybackup (files and WAL against the backup's manifest)")
        try:
            out = run_tool([program("pg_verifybackup"), self.data], "pg_verifybackup", account=self.account)
        except CoffreError as exc:
            return Check(name, False, exc.message)
        return Check(name, True, out.strip().splitlines()[-1] if out.strip() else _("ok"))


class _DrillCluster(ClusterFolder):
    """A base backup unpacked into a drill's folder, checked against its manifest, then
    started as a throwaway server (as the drill's account) for pg_amcheck and row counts.

    Its roles are production's, superusers included. The bootstrap superuser only confines
    the copy, with commands that run none of its code: event triggers disabled, tables and
    SECURITY DEFINER routines of superusers given to a role without rights (amcheck evaluates
    an index's expressions as its table's owner), amcheck installed where missing. Every
    check then runs as a role of the drill's own, allowed only to read and to run amcheck."""

    def __init__(self, folder: DrillFolder) -> None:
        super().__init__(folder.path("data"), folder.account)
        self.folder = folder
        self.sockets = folder.owned("run")
        self.superuser = "postgres"
        self.server: Server | None = None
        suffix = secrets.token_hex(4)  # never a role that production made
        self.checker, self.stand_in = f"coffre_drill_check_{suffix}", f"coffre_drill_owner_{suffix}"
        self.amcheck_schema = f"coffre_amcheck_{suffix}"

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        super().restore(chunks, force, extra)
        self.superuser = extra.get("superuser", "postgres")

    def _dsn(self, dbname: str, user: str) -> str:
        return local(self.sockets, user, dbname, PINNED if user == self.superuser else "")

    def drill_checks(self, recorded: dict[str, int]) -> list[Check]:
        checks = super().drill_checks(recorded)
        self.server = start_server(self.data, self.sockets, self.folder, self._settings())
        databases = self._confine()
        checks.append(self._amcheck(next(iter(databases))))
        checks.append(self._contents([db for db, template in databases.items() if not template]))
        return checks

    def _settings(self) -> list[str]:
        """The drill's own configuration, not the copied one (on Debian there is none in the
        data folder; elsewhere it may name files, libraries or archiving of the live server)."""
        hba = self.folder.file("drill_hba.conf", "local all all trust\n", 0o644)
        ident = self.folder.file("drill_ident.conf", "", 0o644)
        conf = self.folder.file("drill.conf", f"data_directory = {_conf_text(self.data)}\n", 0o644)
        settings = [f"config_file={conf}", f"hba_file={hba}", f"ident_file={ident}", "jit=off"]
        if server_major() >= 17:  # a login event trigger would run as the superuser connecting
            settings.append("event_triggers=off")
        return settings

    def _confine(self) -> dict[str, bool]:
        """As the superuser: the drill's roles, then each database confined. The databases
        (whether each is a template), the maintenance one first."""
        role = sql.Identifier
        try:
            with contextlib.closing(self._maintenance()) as conn:
                databases = {str(name): bool(template) for name, template in conn.execute(_DATABASES)}
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                     "NOREPLICATION BYPASSRLS").format(role(self.checker)))
                conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role(self.checker)))
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                     "NOREPLICATION NOBYPASSRLS").format(role(self.stand_in)))
                # The tables' new owner reaches what their indexes' functions name, as before.
                conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role(self.stand_in)))
            for db in databases:
                confining = connect(self._dsn(db, self.superuser), _("confining the copy"))
                with contextlib.closing(confining) as conn:
                    self._confine_database(conn, db)
        except psycopg.Error as exc:
            raise CoffreError(_("preparing the restored cluster for its checks failed: {reason}").format(
                reason=" ".join(str(exc).split()))) from None
        return databases

    def _maintenance(self) -> psycopg.Connection[Any]:
        """The superuser's session in the first database that lets it in."""
        for db in ("postgres", "template1"):
            with contextlib.suppress(CoffreError):
                return connect(self._dsn(db, self.superuser), "setup")
        return connect(self._dsn("postgres", self.superuser), "setup")  # its own error

    def _confine_database(self, conn: psycopg.Connection[Any], db: str) -> None:
        for (name,) in conn.execute(_EVENT_TRIGGERS).fetchall():  # first: they fire on DDL
            conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))
        stand_in = sql.Identifier(self.stand_in)
        for (table,) in conn.execute(_SUPERUSERS_TABLES).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(table), stand_in))
        for (routine,) in conn.execute(_SUPERUSERS_DEFINERS).fetchall():
            conn.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(routine), stand_in))
        if not conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck'").fetchone():
            install_amcheck(conn, self.amcheck_schema)
        grant_amcheck(conn, self.checker)
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(db), sql.Identifier(self.checker)))

    def _amcheck(self, maintenance_db: str) -> Check:
        name = N_("pg_amcheck (every database, tables and indexes)")
        argv = [program("pg_amcheck"), "--all", "--heapallindexed", "--no-password",
                "--maintenance-db", self._dsn(maintenance_db, self.checker)]
        try:
            out = run_tool(argv, "pg_amcheck")
        except CoffreError as exc:
            return Check(name, False, exc.message)
        return Check(name, not out.strip(), out.strip()[:2000] or _("no corruption found"))

    def _contents(self, databases: list[str]) -> Check:
        found = []
        for db in databases:
            counts = PostgresTarget(self._dsn(db, self.checker)).row_counts()
            rows = sum(counts.values())
            found.append(_("{database}: {tables}, {rows}").format(
                database=db, tables=ngettext("{n} table", "{n} tables", len(counts)).format(n=len(counts)),
                rows=ngettext("{n} row", "{n} rows", rows).format(n=rows)))
        return Check(N_("contents (a physical copy records no row counts)"), bool(databases),
                     "; ".join(found))


def _conf_text(value: str) -> str:
    """A value as postgresql.conf reads it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextlib.contextmanager
def throwaway_cluster(work_dir: str | None = None) -> Iterator[Target]:
    """A temporary folder to unpack a base backup into and start a server on, as the drill's
    account; the checks run as a role of the drill's own (see _DrillCluster)."""
    folder = DrillFolder("coffre-drill-pgcluster-", work_dir, drill_account())
    target = None
    try:
        target = _DrillCluster(folder)
        yield target
    finally:
        if target is not None and target.server is not None:
            stop_server(target.server)
        folder.remove()
