"""The metadata database: SQLite by default (one file beside the objects), PostgreSQL when
several server instances share the work.

SQLAlchemy Core gives one table definition and one query language for both engines (a
well-kept toolkit rather than two hand-written SQL dialects). Write transactions on SQLite
begin IMMEDIATE, so two writers queue on the busy timeout instead of failing on upgrade;
PostgreSQL rows that serialize writers (a tenant's usage, an audit head) are locked with
SELECT ... FOR UPDATE (`Database.for_update`).

Migrations only ever add (tables, so far): an older database is brought up to SCHEMA_VERSION
by `create` (`coffre server init`) and by `check` (every start and every action), under the
lock of the schema row, so several instances starting together migrate it once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _
from coffre.core.sqlite_wal import use_wal
from coffre.server.db import tables

SCHEMA_VERSION = 2
BUSY_S = 60  # how long a SQLite connection waits for another writer
# version -> the tables it adds (created when a database of an earlier version is opened)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("provider_accounts", "fleet_alert_acks"),  # the web console's accounts, acknowledged alerts
}
log = logging.getLogger("coffre.server")


class Database:
    """One engine and the schema it holds. `url`: sqlite:///PATH or postgresql://..."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self.dialect = self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on an exception."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (no write lock taken on SQLite)."""
        with self.engine.connect().execution_options(coffre_read_only=True) as conn:
            yield conn

    def for_update(self, select: Any) -> Any:
        """`select` locking its rows until the transaction ends (PostgreSQL; SQLite's
        IMMEDIATE transactions already serialize writers)."""
        return select.with_for_update() if self.dialect == "postgresql" else select

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports on_conflict_do_update / on_conflict_do_nothing on both
        engines."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def create(self) -> None:
        """Create the tables (idempotent) and record the schema version; refuse a database
        written by a newer Coffre."""
        tables.metadata.create_all(self.engine)
        with self.begin() as conn:
            version = conn.execute(self.for_update(sa.select(tables.schema.c.version))).scalar()
            if version is not None and version < SCHEMA_VERSION:
                self._migrate(conn, version)
            elif version is None:
                conn.execute(tables.schema.insert().values(version=SCHEMA_VERSION))
                # The provider's own chain (audit.PROVIDER), so appends only ever lock a row.
                conn.execute(tables.audit_heads.insert().values(
                    tenant_id=0, seq=0, entry_hash="0" * 64, first_seq=1, first_prev_hash="0" * 64))
            elif version > SCHEMA_VERSION:
                raise CoffreError(
                    _("the server's database has schema version {found}; this Coffre knows up to "
                      "{known}").format(found=version, known=SCHEMA_VERSION),
                    _("run the newer Coffre that wrote it"))

    def check(self) -> None:
        """Refuse to serve from a database that was never created, or is too new."""
        try:
            with self.read() as conn:
                version = conn.execute(sa.select(tables.schema.c.version)).scalar()
        except sa.exc.OperationalError as exc:
            raise UsageError(_("the server's database cannot be opened ({reason})").format(
                reason=type(exc.orig).__name__ if exc.orig else exc.code),
                _("create it with 'coffre server init'")) from None
        except sa.exc.ProgrammingError:
            version = None
        if version is None:
            raise UsageError(_("the server's database holds no Coffre schema"),
                             _("create it with 'coffre server init'"))
        if version > SCHEMA_VERSION:
            raise CoffreError(
                _("the server's database has schema version {found}; this Coffre knows up to "
                  "{known}").format(found=version, known=SCHEMA_VERSION),
                _("run the newer Coffre that wrote it"))
        if version < SCHEMA_VERSION:
            self.upgrade()

    def upgrade(self) -> int | None:
        """Bring an older schema up to SCHEMA_VERSION; the version it had (None: nothing done)."""
        with self.begin() as conn:
            version = conn.execute(self.for_update(sa.select(tables.schema.c.version))).scalar()
            if version is None or version >= SCHEMA_VERSION:
                return None
            self._migrate(conn, int(version))
        return int(version)

    def _migrate(self, conn: Connection, version: int) -> None:
        """Inside the caller's transaction, which holds the schema row."""
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for name in MIGRATIONS.get(target, ()):
                tables.metadata.tables[name].create(conn, checkfirst=True)
        conn.execute(tables.schema.update().values(version=SCHEMA_VERSION))
        log.info("the server's database schema was brought from version %d to %d", version, SCHEMA_VERSION)

    def close(self) -> None:
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.absolute()}"


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:"):
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_S, "check_same_thread": False},
                                  pool_size=8, max_overflow=24)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
            cur = dbapi_conn.cursor()
            use_wal(dbapi_conn, BUSY_S)
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            read_only = conn.get_execution_options().get("coffre_read_only")
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith(("postgresql:", "postgresql+psycopg:", "postgres:")):
        url = "postgresql+psycopg:" + url.split(":", 1)[1]
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    raise UsageError(_("unsupported metadata database {url}").format(url=url.split(":", 1)[0] + ":..."),
                     _("use sqlite:///PATH or postgresql://USER@HOST/DATABASE"))
