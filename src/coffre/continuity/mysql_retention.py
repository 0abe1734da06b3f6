"""Pure: which pieces of MariaDB binary log streams retention may remove.

A point-in-time recovery starts from a kept dump and replays its stream from the dump's place
(`stream_from` in its DatabaseRecord.extra). mariadb-binlog reads a file from its start (its
format description comes first), so what every kept dump needs is its stream from the start of
the file holding its place. A piece, gap record or file close that ends at or before the
oldest such start of its stream may go. A stream no kept dump refers to is left alone: the
capture may have begun before the first backup, and whoever prunes decides about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from coffre.format.snapshot import DatabaseRecord
from coffre.repository.segments import StoredSegment
from coffre.sources.databases import binlog

ENGINE = "mysql"


def needed_from(kept: Iterable[DatabaseRecord]) -> dict[str, int]:
    """Stream -> the first position a kept dump needs."""
    out: dict[str, int] = {}
    for d in kept:
        stream, start = d.extra.get("stream", ""), d.extra.get("stream_from", "")
        if d.engine != ENGINE or not stream or not start.isdigit():
            continue
        first = binlog.file_start(int(start))
        out[stream] = min(out.get(stream, first), first)
    return out


def removable(stored: Sequence[StoredSegment], kept: Iterable[DatabaseRecord]) -> list[StoredSegment]:
    """The pieces no kept dump's recovery can use (kept: the databases of the snapshots kept)."""
    floors = needed_from(kept)
    return [s for s in stored if s.header.engine == ENGINE and s.header.stream in floors
            and s.header.end <= floors[s.header.stream]]
