"""Pure: which segments of continuous capture retention may remove.

SQLite (`sqlite_floor`): to keep every moment from `cutoff_ns` on restorable, a database
needs the newest base taken at or before the cutoff and everything after it. So, for each
database (all its generations, sqlite_names.py), with B that base:

- in B's generation, every segment before B's position goes (earlier bases, log pieces and
  gaps that end at or before it); B itself and what follows stay;
- every segment of another generation of the same database whose newest segment was
  captured before B goes (that generation ended before B was taken);
- a database with no base at or before the cutoff keeps everything (nothing newer could
  replace what would go).

Headers in, object names out: prune lists the segments, calls this, removes the objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from coffre.continuity import mysql_retention
from coffre.continuity import sqlite_names as names
from coffre.format.snapshot import Snapshot
from coffre.repository.segments import StoredSegment


def sqlite_floor(stored: Iterable[StoredSegment], cutoff_ns: int) -> list[str]:
    """The objects of SQLite streams that retention may remove, keeping every moment from
    `cutoff_ns` on restorable (sorted; other engines' segments are never named)."""
    by_database: dict[str, list[tuple[str, StoredSegment]]] = defaultdict(list)
    for s in stored:
        parsed = names.parse_stream(s.header.stream) if s.header.engine == names.ENGINE else None
        if parsed:
            by_database[parsed[0]].append((parsed[1], s))
    removable: list[str] = []
    for segs in by_database.values():
        bases = [s for _g, s in segs if s.header.kind == "base" and s.header.time_ns <= cutoff_ns]
        if not bases:
            continue
        floor = max(bases, key=lambda s: (s.header.time_ns, s.header.start))
        newest: dict[str, int] = defaultdict(lambda: -(2**63))
        for generation, s in segs:
            newest[generation] = max(newest[generation], s.header.time_ns)
        for generation, s in segs:
            if s.header.stream == floor.header.stream:
                if s.header == floor.header:
                    continue  # the floor (or another copy of it)
                if s.header.kind == "base":
                    before = (s.header.start, s.header.time_ns) < (floor.header.start, floor.header.time_ns)
                else:
                    before = s.header.end <= floor.header.start
                if before:
                    removable.append(s.object)
            elif newest[generation] < floor.header.time_ns:
                removable.append(s.object)
    return sorted(removable)


def removable(stored: list[StoredSegment], snaps: list[Snapshot], cutoff_ns: int) -> list[str]:
    """What prune may remove of the engines whose rules live here (PostgreSQL's are in
    policy/log_retention.py): SQLite's generations (`sqlite_floor`) and MariaDB's binary logs
    (mysql_retention.py: from the start of the file holding the oldest kept dump's place)."""
    records = [d for s in snaps for d in s.databases]
    mysql = [s.object for s in mysql_retention.removable(
        [s for s in stored if s.header.engine == "mysql"], records)]
    return sorted(set(sqlite_floor(stored, cutoff_ns)) | set(mysql))
