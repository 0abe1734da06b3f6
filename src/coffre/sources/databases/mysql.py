"""MariaDB and MySQL: mariadb-dump (or mysqldump) in one consistent transaction, one INSERT
per row.

`--single-transaction` reads every InnoDB table at one instant while sales go on. One INSERT
line per row (`--skip-extended-insert`) keeps a day's changes local in the byte stream, and
lets Coffre count each table's rows in the dump as it streams by: those counts are what the
drill compares with. The dump must end with its own completion line. The password goes to the
programs through MYSQL_PWD, never argv.

When a MariaDB server writes a binary log, `--master-data=2` makes the dump write, as a
comment, the place of its consistent snapshot in that log (MariaDB reads it with the snapshot,
binlog_snapshot_file/position: no lock, no right needed); the snapshot records it as `stream`
and `stream_from` (binlog.position), where a point-in-time recovery starts its replay
(continuity/mysql_restore.py).

A drill loads the dump into a throwaway server with its grant tables, as a user whose only
rights are on its own database: the dump's triggers and routines (its code) get no right
on the server (FILE, SUPER), and their DEFINER clauses become that user.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO, BinaryIO, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.sources.databases import binlog
from coffre.sources.databases.base import Captured, Check, CountedTarget, Database, Target, batched
from coffre.sources.databases.command import (
    feed_command,
    find_program,
    run_tool,
    stream_command,
)
from coffre.sources.databases.throwaway import DrillFolder, Server, drill_account

T = TypeVar("T")
# The lines that matter for counting: a table's data is between LOCK TABLES and UNLOCK TABLES
# (an INSERT elsewhere is in a trigger's or routine's body); CREATE TABLE lists empty tables.
# With --master-data=2, the header says where the dump's snapshot is in the binary log
# (MySQL 8.0.23's --source-data=2 writes CHANGE REPLICATION SOURCE): only its first line
# counts, since a routine's body, dumped later, could hold any text.
_LINE = re.compile(
    rb"^(?:LOCK TABLES `((?:[^`]|``)+)` WRITE;|(UNLOCK TABLES;)"
    rb"|INSERT INTO `((?:[^`]|``)+)` (?:\([^\n]*?\) )?VALUES |CREATE TABLE `((?:[^`]|``)+)` \("
    rb"|-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^'\n]{1,250})', "
    rb"(?:MASTER|SOURCE)_LOG_POS=(\d{1,15});)",
    re.M,
)
_LINE_HEAD = 4096  # of a line not yet ended, only its start matters
_DONE = b"-- Dump completed"
_SIZE = ("SELECT VERSION(); SELECT COALESCE(SUM(data_length + index_length), 0) "
         "FROM information_schema.tables WHERE table_schema = {0}; "
         "SELECT COALESCE(GROUP_CONCAT(table_name ORDER BY table_name SEPARATOR ', '), '') "
         "FROM information_schema.tables WHERE table_schema = {0} AND table_type = 'BASE TABLE' "
         "AND engine <> 'InnoDB'")
_TABLES = ("SELECT table_name FROM information_schema.tables WHERE table_schema = {} "
           "AND table_type = 'BASE TABLE' ORDER BY table_name")
_EXISTS = "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {}"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec")
IDENTITY = ("server_uuid", "server_id", "hostname")


class Connection:
    """mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?socket=PATH] (also mariadb://)."""

    def __init__(self, dsn: str, database: bool = True) -> None:
        """`database`: whether the string must name a database (not for a whole server)."""
        u = urlsplit(dsn)
        if u.scheme not in ("mysql", "mariadb") or (database and not u.path.strip("/")):
            raise UsageError(_("the MariaDB/MySQL connection string is not valid"),
                             _("e.g. mysql://coffre@localhost/officine (password in MYSQL_PWD or ~/.my.cnf)"))
        self.database = unquote(u.path.strip("/"))
        self.user = unquote(u.username or "")
        if u.password:
            raise UsageError(_("a password in the MariaDB/MySQL connection string would show in "
                               "the process list"), _("put it in MYSQL_PWD or ~/.my.cnf"))
        self.host = u.hostname or ""
        try:
            self.port = u.port
        except ValueError:
            raise UsageError(_("the MariaDB/MySQL connection string has an invalid port")) from None
        query = parse_qs(u.query)
        self.socket = query.get("socket", [""])[0]
        self.no_defaults = False
        self.env: dict[str, str] | None = None  # the clients' environment: Coffre's

    @classmethod
    def local(cls, socket: str, database: str, user: str) -> Connection:
        """A throwaway server's account with no password, through its socket: no option
        file, nor the live server's password (MYSQL_PWD) sent to it."""
        conn = cls(f"mysql://{user}@localhost/{database}?socket={socket}")
        conn.no_defaults = True
        conn.env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}
        return conn

    def options(self, database: bool = True) -> list[str]:
        opts = ["--no-defaults"] if self.no_defaults else []
        if self.user:
            opts.append(f"--user={self.user}")
        if self.host:
            opts.append(f"--host={self.host}")
        if self.port:
            opts.append(f"--port={self.port}")
        if self.socket:
            opts.append(f"--socket={self.socket}")
        return opts + ([self.database] if database else [])

    def _where(self) -> str:
        return self.socket or (f"{self.host}:{self.port}" if self.port else self.host) or _("local socket")

    def describe(self) -> str:
        if not self.database:
            return self.describe_server()
        return _("MariaDB/MySQL database {name} on {where}").format(name=repr(self.database),
                                                                    where=self._where())

    def describe_server(self) -> str:
        return _("the MariaDB/MySQL server on {where}").format(where=self._where())

    def query(self, statement: str, what: str) -> list[list[str]]:
        client = find_program("mariadb", "mysql")
        out = run_tool([client, *self.options(database=False), "--batch", "--skip-column-names",
                        "--raw", "-e", statement], _("{what} on {database}").format(
                            what=what, database=self.describe()), env=self.env)
        return [line.split("\t") for line in out.splitlines() if line]

    def variables(self, *names: str) -> dict[str, str]:
        """Global variables of the server (those it does not have are left out)."""
        rows = self.query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})".format(
            ", ".join(_literal(n) for n in names)), _("reading the server's settings"))
        return {r[0].lower(): r[1] if len(r) > 1 else "" for r in rows}

    def stream(self, variables: dict[str, str] | None = None) -> str:
        """The name of this server's binary log stream (binlog.stream_name)."""
        v = variables if variables is not None else self.variables(*IDENTITY)
        return binlog.stream_name(v.get("server_uuid", ""), v.get("server_id", ""), v.get("hostname", ""))


@functools.cache
def _sandbox(client: str) -> list[str]:
    """The option that loads a dump in the client's sandbox. A dump is the backed-up
    database's text: a comment in it could smuggle in a client command such as `\\!`, which
    runs a shell as Coffre. A client without a sandbox is refused, never fed a dump."""
    try:
        helps = subprocess.run([client, "--help"], capture_output=True, text=True, timeout=30,
                               check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        helps = ""
    if "--sandbox" not in helps:
        raise CoffreError(_("{client} has no --sandbox option: a dump is loaded only by a client that "
                            "refuses the commands a dump could smuggle in (running a shell, reading "
                            "files)").format(client=client),
                          _("install a MariaDB client of May 2024 or later "
                            "(10.5.25, 10.6.18, 10.11.8, 11.4.2, ...)"))
    return ["--sandbox"]


# Names and values in statements are quoted by these two (the client takes no parameters).
def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _name(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode("utf-8", "replace")


class _RowCounter:
    """Reads the dump through, counting each table's INSERT lines and noting how it ends."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.counts: Counter[str] = Counter()
        self._line = b""  # the start of the line not yet ended
        self.last_line = b""
        self._current: bytes | None = None  # the table whose data is being dumped
        self._current_name = ""
        self.binlog_at: tuple[str, int] | None = None  # (file, offset) of the dump's snapshot
        self._header_done = False  # a table or a binary log position was seen

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self._scan(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        n = self.raw.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self._scan(bytes(buf[:n]))
        return n or 0

    def _scan(self, data: bytes) -> None:
        if not data:
            return
        buf = self._line + data
        end = buf.rfind(b"\n")
        if end < 0:
            self._line = buf[:_LINE_HEAD]
            return
        for m in _LINE.finditer(buf, 0, end + 1):
            locked, unlocked, inserted, created, log_file, log_pos = m.groups()
            if log_file is not None:
                if not self._header_done:
                    self.binlog_at = (log_file.decode("utf-8", "replace"), int(log_pos))
                self._header_done = True
                continue
            self._header_done = True
            if inserted is not None:
                if inserted == self._current:
                    self.counts[self._current_name] += 1
            elif locked is not None:
                self._current, self._current_name = locked, _name(locked)
                self.counts[self._current_name] += 0
            elif unlocked is not None:
                self._current = None
            else:
                self.counts[_name(created)] += 0
        prev = buf.rfind(b"\n", 0, end)
        self.last_line = buf[prev + 1:end][:_LINE_HEAD]
        self._line = buf[end + 1:end + 1 + _LINE_HEAD]


class MysqlDatabase(Database):
    engine = "mysql"
    suffix = ".sql"

    def __init__(self, dsn: str) -> None:
        self.conn = Connection(dsn)
        self.name = self.conn.database
        self.data_directory = ""

    def describe(self) -> str:
        return self.conn.describe()

    def stored_at(self) -> list[str]:
        """The server's data folder, when it is on this machine."""
        path = self.data_directory.rstrip("/")
        return [path] if path and os.path.isdir(os.path.join(path, "mysql")) else []

    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        after = _("; no snapshot was written")
        try:
            rows = self.conn.query(
                _SIZE.format(_literal(self.conn.database)), _("reading the database's size"))
        except CoffreError as exc:
            raise CoffreError(exc.message + after) from None
        version, size = rows[0][0], int(rows[1][0])
        try:
            self.data_directory = self.conn.query("SELECT @@datadir", "reading the data folder")[0][0]
        except (CoffreError, IndexError):
            self.data_directory = ""  # only to leave it out of a files backup
        try:
            settings = self.conn.variables("log_bin", *IDENTITY)
        except CoffreError:
            settings = {}
        # MariaDB reads the binary log position of its consistent snapshot (binlog_snapshot_file)
        # without a lock or a privilege; mysqldump would take FLUSH TABLES WITH READ LOCK.
        logging = settings.get("log_bin", "").upper() == "ON"
        positioned = logging and "mariadb" in version.lower()
        not_innodb = rows[2][0] if len(rows) > 2 else ""
        warnings = [_("{database}: tables not in InnoDB ({tables}) are not read at the same instant as the "
                      "others; convert them to InnoDB").format(database=self.describe(), tables=not_innodb)
                    ] if not_innodb else []
        if logging and not positioned:
            warnings.append(_("{database}: the dump of a MySQL server does not record its place in the "
                              "binary log: point-in-time recovery needs MariaDB").format(
                                  database=self.describe()))
        dumper = find_program("mariadb-dump", "mysqldump")
        argv = [dumper, "--single-transaction", "--quick", "--skip-extended-insert", "--no-autocommit",
                "--routines", "--triggers", "--hex-blob", "--default-character-set=utf8mb4",
                "--skip-dump-date",
                # What the counting and the completeness check rely on, whatever ~/.my.cnf says.
                "--add-locks", "--comments", "--add-drop-table", "--skip-complete-insert",
                "--skip-insert-ignore", "--skip-replace", *(["--master-data=2"] if positioned else []),
                *self.conn.options()]
        counter: list[_RowCounter] = []

        def counted(stream: BinaryIO) -> T:
            counter.append(_RowCounter(stream))
            return consume(counter[0])  # type: ignore[arg-type]

        what = _("{program} of {database}").format(program=os.path.basename(dumper), database=self.describe())
        result = stream_command(argv, counted, what, after=after)
        if not counter[0].last_line.startswith(_DONE):
            raise CoffreError(_("the dump of {database} is incomplete (no completion line)").format(
                database=self.describe()) + after)
        extra: dict[str, str] = {}
        if positioned:
            extra = _stream_extra(self.conn.stream(settings), counter[0].binlog_at)
            if not extra:
                warnings.append(_("{database}: the dump does not say where it is in the binary log: it "
                                  "cannot start a point-in-time recovery").format(database=self.describe()))
        return result, Captured(size=size, tables=dict(counter[0].counts), server=version,
                                format="mariadb-dump --single-transaction, one INSERT per row",
                                extra=extra, warnings=warnings)


def _stream_extra(stream: str, at: tuple[str, int] | None) -> dict[str, str]:
    """What a snapshot records for point-in-time recovery: the server's binary log stream and
    the place of the dump's snapshot in it (where the replay starts)."""
    if at is None or not binlog.is_name(at[0]):
        return {}
    return {"stream": stream, "stream_from": str(binlog.position(*at)), "binlog_file": at[0],
            "binlog_position": str(at[1])}


class MysqlTarget(CountedTarget):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @classmethod
    def from_dsn(cls, dsn: str) -> MysqlTarget:
        return cls(Connection(dsn))

    def describe(self) -> str:
        return self.conn.describe()

    def _tables(self) -> list[str]:
        rows = self.conn.query(
            _TABLES.format(_literal(self.conn.database)), _("listing tables"))
        return [r[0] for r in rows]

    def is_empty(self) -> bool:
        return not self._tables()

    def too_privileged(self) -> str | None:
        rows = self.conn.query(
            "SELECT CURRENT_USER(), GROUP_CONCAT(PRIVILEGE_TYPE) FROM information_schema.USER_PRIVILEGES"
            " WHERE PRIVILEGE_TYPE IN ('SUPER', 'FILE') AND GRANTEE = CONCAT(\"'\","
            " SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", SUBSTRING_INDEX(CURRENT_USER(), '@', -1),"
            " \"'\")", _("reading the restoring account's rights"))
        if rows and len(rows[0]) == 2 and rows[0][1] not in ("", "NULL"):
            rights = rows[0][1].replace(",", _(" and "))
            return _("the MariaDB account {account} holds {rights} on the whole server").format(
                account=repr(rows[0][0]), rights=rights)
        return None

    def client(self) -> list[str]:
        """The client that loads SQL from the backup into the database: in its sandbox, in
        batch mode (it stops at the first statement the server refuses, and fails)."""
        client = find_program("mariadb", "mysql")
        return [client, *self.conn.options(database=False), "--batch", *_sandbox(client), self.conn.database]

    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        argv = self.client()  # before anything is created
        exists = self.conn.query(_EXISTS.format(_literal(self.conn.database)), _("looking for the database"))
        if exists[0][0] == "0":
            self.conn.query(f"CREATE DATABASE {_ident(self.conn.database)}", _("creating the database"))
        feed_command(argv, self._stream(chunks), _("loading the dump into {database}").format(
                         database=self.describe()),
                     env=self.conn.env)

    def _stream(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        """The dump as the client reads it."""
        return batched(chunks)

    def row_counts(self) -> dict[str, int]:
        tables = self._tables()
        if not tables:
            return {}
        db = _ident(self.conn.database)
        rows = self.conn.query(" UNION ALL ".join(
            f"SELECT {_literal(t)}, COUNT(*) FROM {db}.{_ident(t)}" for t in tables),  # noqa: S608
            _("counting rows"))
        return {r[0]: int(r[1]) for r in rows}

    def integrity(self) -> Check:
        tables = self._tables()
        if not tables:
            return Check("CHECK TABLE", True, _("no table"))
        db = _ident(self.conn.database)
        try:
            rows = self.conn.query("CHECK TABLE " + ", ".join(f"{db}.{_ident(t)}" for t in tables),
                                   "CHECK TABLE")
        except CoffreError as exc:
            return Check("CHECK TABLE", False, exc.message)
        bad = [" ".join(r) for r in rows
               if len(r) >= 4 and (r[2] == "error" or (r[2] == "status" and r[3] != "OK"))]
        return Check("CHECK TABLE", not bad, "; ".join(bad[:10]) or ngettext(
            "{n} table OK", "{n} tables OK", len(tables)).format(n=len(tables)))


# A definer names an account of the backed-up server, which only an account with SUPER (or
# SET USER) may name. In a drill, routines, triggers, views and events are the drill user's
# own. Only clauses at the start of a line are definers: a row is one INSERT line.
_DEFINER = re.compile(rb"^(CREATE |/\*!5\d{4} CREATE\*/ /\*!5\d{4} |/\*!5\d{4} )"
                      rb"DEFINER=`(?:[^`\n]|``)*`(?:@`(?:[^`\n]|``)*`)?", re.M)
_AS_DRILL_USER = rb"\1DEFINER=CURRENT_USER"
_DEFINER_HEAD = 8192  # a DEFINER clause ends well before this (user 128, host 255 characters)
DRILL_USER = DRILL_DB = "drill"


def definers_to_current_user(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The dump with every DEFINER clause made DEFINER=CURRENT_USER, as it streams: of a
    long line (a row), only its start is looked at."""
    pending = b""  # the start of a line not sent yet
    passing = False  # inside a long line whose start was sent
    for chunk in chunks:
        if passing:
            nl = chunk.find(b"\n")
            if nl < 0:
                yield chunk
                continue
            yield chunk[:nl + 1]
            chunk, passing = chunk[nl + 1:], False
        buf = pending + chunk
        end = buf.rfind(b"\n") + 1
        if len(buf) - end >= _DEFINER_HEAD:
            yield _DEFINER.sub(_AS_DRILL_USER, buf)
            pending, passing = b"", True
        else:
            yield _DEFINER.sub(_AS_DRILL_USER, buf[:end])
            pending = buf[end:]
    if pending:
        yield _DEFINER.sub(_AS_DRILL_USER, pending)


class DrillMysqlTarget(MysqlTarget):
    """The drill's database, loaded and checked by a user with rights on it alone (no SUPER,
    FILE nor any right on the server): the dump's routines and triggers become that user's."""

    def _stream(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        return batched(definers_to_current_user(chunks))


@contextlib.contextmanager
def throwaway_mysql(work_dir: str | None = None) -> Iterator[Target]:
    """A temporary MariaDB server in its own data folder, reachable only by its socket, run as
    the drill's account with its grant tables: root (no password, through that socket) only
    creates the database `drill` and its user `drill`, which loads and checks the dump."""
    account = drill_account()
    install = find_program("mariadb-install-db", "mysql_install_db", extra_dirs=_SBIN)
    server_program = find_program("mariadbd", "mysqld", extra_dirs=_SBIN)
    folder = DrillFolder("coffre-drill-my-", work_dir, account)
    server: Server | None = None
    try:
        data, run, files = folder.owned("data"), folder.owned("run"), folder.owned("files")
        sock = os.path.join(run, "server.sock")
        run_tool([install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
                  "--auth-root-authentication-method=normal"], _("mariadb-install-db of the drill's server"),
                 account=account)
        server = Server(
            [server_program, "--no-defaults", f"--datadir={data}", f"--socket={sock}", "--skip-networking",
             f"--pid-file={run}/server.pid", "--skip-log-bin", f"--secure-file-priv={files}",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"], folder, _("MariaDB server"))
        root = Connection.local(sock, DRILL_DB, "root")
        server.wait_ready(lambda: _answers(root))
        root.query(f"CREATE DATABASE {_ident(DRILL_DB)}; CREATE USER {_literal(DRILL_USER)}@'localhost'; "
                   f"GRANT ALL PRIVILEGES ON {_ident(DRILL_DB)}.* TO {_literal(DRILL_USER)}@'localhost'",
                   _("preparing the drill's database"))
        yield DrillMysqlTarget(Connection.local(sock, DRILL_DB, DRILL_USER))
    finally:
        if server is not None:
            server.stop()
        folder.remove()


def _answers(conn: Connection) -> bool:
    try:
        conn.query("SELECT 1", _("waiting for the drill's server"))
        return True
    except CoffreError:
        return False
