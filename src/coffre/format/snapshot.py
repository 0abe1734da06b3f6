"""Snapshots: the commit record of a backup, written last."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import INT64_MAX, INT64_MIN, decode, encode, want, want_id, want_int, want_map
from coffre.format.tree import validate_name

# Database dumps live in the snapshot tree under this top-level folder.
DATABASES_DIR = "@databases"
ENGINES = ("postgres", "postgres-cluster", "mysql", "sqlite")


@dataclass
class DatabaseRecord:
    """A database captured by a backup: where its dump is in the tree, and what it held."""

    engine: str  # one of ENGINES
    name: str  # the database's name (SQLite: the file's path)
    file: str  # the dump's file name inside DATABASES_DIR
    format: str  # how it was captured, e.g. "pg_dump custom, uncompressed"
    size: int  # the database's own size in bytes, as the engine reports it
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows at backup time
    server: str = ""  # the engine's version
    extra: dict[str, str] = field(default_factory=dict)  # e.g. SQLite's journal mode

    @property
    def path(self) -> str:
        return f"{DATABASES_DIR}/{self.file}"

    def to_map(self) -> dict[str, Any]:
        return {"engine": self.engine, "name": self.name, "file": self.file, "format": self.format,
                "size": self.size, "tables": self.tables, "server": self.server, "extra": self.extra}

    @classmethod
    def from_map(cls, d: Any) -> DatabaseRecord:
        d = want_map(d, "snapshot database")
        engine = want(d.get("engine"), str, "database engine")
        if engine not in ENGINES:
            raise FormatError(_("snapshot database: unknown engine {engine}").format(
                engine=repr(engine[:20])))
        file = want(d.get("file"), str, "database file")
        validate_name(file.encode("utf-8", "surrogateescape"))
        tables = want_map(d.get("tables", {}), "database tables")
        extra = want_map(d.get("extra", {}), "database extra")
        return cls(
            engine=engine,
            name=want(d.get("name"), str, "database name"),
            file=file,
            format=want(d.get("format", ""), str, "database format"),
            size=want_int(d.get("size"), "database size"),
            tables={want(k, str, "table"): want_int(v, "table rows") for k, v in tables.items()},
            server=want(d.get("server", ""), str, "database server"),
            extra={want(k, str, "extra"): want(v, str, "extra value") for k, v in extra.items()},
        )


@dataclass
class Snapshot:
    time_ns: int
    hostname: str
    username: str
    paths: list[str]
    tree: bytes
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    program: str = ""
    parent: str = ""  # the snapshot whose files served as delta bases, if any
    original: str = ""  # for a copy (coffre copy): the id of the snapshot it was copied from
    databases: list[DatabaseRecord] = field(default_factory=list)
    id: str = ""  # the storage name; not part of the encoding

    def to_bytes(self) -> bytes:
        # A snapshot's time is a clock's reading, always int64 ns; refuse to write what
        # from_bytes would refuse to read (a snapshot that could never be opened).
        if not INT64_MIN <= self.time_ns <= INT64_MAX:
            raise FormatError(
                _("the clock reads {ns} ns since 1970, outside the years 1677 to 2262 a snapshot's date "
                  "can hold").format(ns=self.time_ns),
                _("set the system clock right and back up again"),
            )
        return encode(
            {
                "v": 1,
                "time": self.time_ns,
                "hostname": self.hostname,
                "username": self.username,
                "paths": self.paths,
                "tags": self.tags,
                "excludes": self.excludes,
                "tree": self.tree,
                "summary": self.summary,
                "program": self.program,
                "parent": self.parent,
                **({"original": self.original} if self.original else {}),
                **({"databases": [d.to_map() for d in self.databases]} if self.databases else {}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, snap_id: str) -> Snapshot:
        d: dict[str, Any] = want_map(decode(data, "snapshot"), "snapshot")
        if d.get("v") != 1:
            raise FormatError(_("snapshot: unknown version"))
        summary = want_map(d.get("summary", {}), "snapshot summary")
        for k, v in summary.items():
            want_int(v, f"summary {k}")
        return cls(
            time_ns=want_int(d.get("time"), "snapshot time", INT64_MIN, INT64_MAX),
            hostname=want(d.get("hostname"), str, "hostname"),
            username=want(d.get("username", ""), str, "username"),
            paths=[want(p, str, "path") for p in want(d.get("paths"), list, "paths")],
            tags=[want(t, str, "tag") for t in want(d.get("tags", []), list, "tags")],
            excludes=[want(t, str, "exclude") for t in want(d.get("excludes", []), list, "x")],
            tree=want_id(d.get("tree"), "snapshot tree"),
            summary=summary,
            program=want(d.get("program", ""), str, "program"),
            parent=want(d.get("parent", ""), str, "parent"),
            original=want(d.get("original", ""), str, "original"),
            databases=[DatabaseRecord.from_map(x) for x in want(d.get("databases", []), list, "databases")],
            id=snap_id,
        )
