"""The standby the agent feeds for a `[continuity.NAME]` entry: PostgreSQL (`standby_pgdata`,
continuity/standby.py), SQLite (`standby_sqlite`, continuity/sqlite_standby.py) or MariaDB
(`standby_mysql`, continuity/mysql_standby.py). One pass of the engine's follower, and its state
file read back, in the same words for the three: what the status store keeps of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coffre.agent import model
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader
from coffre.repository.repo import Repository

if TYPE_CHECKING:
    from coffre.continuity.mysql_standby import MysqlStandbyState
    from coffre.continuity.sqlite_standby import SqliteStandbyState
    from coffre.continuity.standby import StandbyState


@dataclass(frozen=True)
class Followed:
    """A standby's state file after a pass, whatever its engine."""

    newest_ns: int  # capture time of the newest piece staged (PostgreSQL) or applied (0: none)
    behind_pieces: int  # stored in the repository and not staged or applied yet
    behind_bytes: int
    staged: int  # pieces staged (PostgreSQL), pieces applied (SQLite), transactions replayed (MariaDB)
    gap: str  # the piece it stopped at ("" when none)
    promoted: bool


def engine(entry: model.Continuity) -> str:
    """"postgres", "sqlite" or "mysql": the engine of the entry's standby (it has one)."""
    if entry.standby_pgdata:
        return "postgres"
    return "sqlite" if entry.standby_sqlite else "mysql"


def describe(entry: model.Continuity) -> str:
    """The standby as the log and the pages name it."""
    where = entry.standby or "?"
    return {"postgres": _("the PostgreSQL standby {where}"), "sqlite": _("the SQLite standby {where}"),
            "mysql": _("the MariaDB standby of {where}")}[engine(entry)].format(where=where)


def read(entry: model.Continuity) -> Followed:
    """The standby's state file as the last pass (of the agent or of a command) left it."""
    kind = engine(entry)
    if kind == "postgres":
        from coffre.continuity import standby

        assert entry.standby_pgdata is not None
        return _postgres(standby.StandbyState.load(standby.state_folder(Path(entry.standby_pgdata))))
    if kind == "sqlite":
        from coffre.continuity.sqlite_standby import SqliteStandbyState

        assert entry.standby_sqlite is not None
        return _sqlite(SqliteStandbyState.load(Path(entry.standby_sqlite)))
    from coffre.continuity.mysql_standby import MysqlStandbyState

    assert entry.standby_mysql is not None
    return _mysql(MysqlStandbyState.load(Path(entry.standby_mysql)))


def follow(entry: model.Continuity, repo: Repository, said: Callable[[str], None],
           known: dict[str, SegmentHeader]) -> Followed:
    """One pass of the entry's standby (the engine's follower refuses a promoted one): what the
    repository holds beyond what it has, and the state the pass left. `known`: the segment
    headers earlier passes read."""
    kind = engine(entry)
    if kind == "postgres":
        from coffre.continuity import standby

        assert entry.standby_pgdata is not None
        return _postgres(standby.follow(repo, Path(entry.standby_pgdata), report=said, known=known))
    if kind == "sqlite":
        from coffre.continuity import sqlite_standby

        assert entry.standby_sqlite is not None
        return _sqlite(sqlite_standby.follow(repo, entry.standby_sqlite, report=said, known=known))
    from coffre.continuity import mysql_standby

    assert entry.standby_mysql is not None
    return _mysql(mysql_standby.follow(repo, Path(entry.standby_mysql), report=said, known=known))


def _postgres(pg: StandbyState) -> Followed:
    return Followed(pg.newest_ns, pg.behind_pieces, pg.behind_bytes, pg.staged_count, pg.gap,
                    bool(pg.promoted_ns))


def _sqlite(lite: SqliteStandbyState) -> Followed:
    return Followed(lite.newest_ns, lite.behind_pieces, lite.behind_bytes, lite.applied, lite.gap,
                    bool(lite.promoted_ns))


def _mysql(my: MysqlStandbyState) -> Followed:
    return Followed(my.newest_ns, my.behind_pieces, my.behind_bytes, my.transactions, my.gap,
                    bool(my.promoted_ns))


__all__ = ["Followed", "describe", "engine", "follow", "read"]
