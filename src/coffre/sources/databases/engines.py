"""Engine by name: its source, restore target and throwaway instance. The engine modules are
imported only when used (psycopg and apsw are not loaded by other commands)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

from coffre.sources.databases.base import Database, Target


def source(engine: str, where: str) -> Database:
    if engine == "postgres":
        from coffre.sources.databases.postgres import PostgresDatabase

        return PostgresDatabase(where)
    if engine == "postgres-cluster":
        from coffre.sources.databases.pgcluster import PostgresCluster

        return PostgresCluster(where)
    if engine == "mysql":
        from coffre.sources.databases.mysql import MysqlDatabase

        return MysqlDatabase(where)
    from coffre.sources.databases.sqlite import SQLiteDatabase

    return SQLiteDatabase(where)


def target(engine: str, where: str, owners: bool = True) -> Target:
    if engine == "postgres":
        from coffre.sources.databases.postgres import PostgresTarget

        return PostgresTarget(where, owners=owners)
    if engine == "postgres-cluster":
        from coffre.sources.databases.pgcluster import ClusterFolder

        return ClusterFolder(where)
    if engine == "mysql":
        from coffre.sources.databases.mysql import MysqlTarget

        return MysqlTarget.from_dsn(where)
    from coffre.sources.databases.sqlite import SQLiteTarget

    return SQLiteTarget(where)


def throwaway(engine: str, work_dir: str | None = None) -> AbstractContextManager[Target]:
    """A temporary, private instance of the engine, removed on exit."""
    if engine == "postgres":
        from coffre.sources.databases.pgdrill import throwaway_postgres

        return throwaway_postgres(work_dir)
    if engine == "postgres-cluster":
        from coffre.sources.databases.pgcluster import throwaway_cluster

        return throwaway_cluster(work_dir)
    if engine == "mysql":
        from coffre.sources.databases.mysql import throwaway_mysql

        return throwaway_mysql(work_dir)
    from coffre.sources.databases.sqlite import throwaway_sqlite

    return throwaway_sqlite(work_dir)


def drill_note(engines: Iterable[str]) -> str | None:
    """What the user should know before these engines' throwaway servers start (None:
    nothing; SQLite has no server)."""
    if all(e == "sqlite" for e in engines):
        return None
    from coffre.sources.databases.throwaway import isolation_note

    return isolation_note()
