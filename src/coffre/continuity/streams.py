"""Pure: what the stored pieces say about each stream — extent, size, last capture, gaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coffre.continuity import mysql_chain, positions
from coffre.repository.segments import StoredSegment


@dataclass
class StreamSummary:
    stream: str
    engine: str
    pieces: int = 0
    bytes: int = 0
    first: str = ""
    last: str = ""
    last_ns: int = 0
    gaps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "engine": self.engine, "pieces": self.pieces, "bytes": self.bytes,
                "first": self.first, "last": self.last, "last_time_ns": self.last_ns, "gaps": self.gaps}


def _postgres_gaps(stored: list[StoredSegment]) -> list[str]:
    """Recorded gaps, and holes between stored segments of one timeline."""
    gaps = sorted({s.header.name for s in stored if s.header.kind == "gap"})
    by_timeline: dict[int, set[int]] = {}
    size = positions.DEFAULT_SEGMENT_SIZE
    for s in stored:
        if s.header.kind != "log":
            continue
        size = int(s.header.extra.get("segment_size", size))
        wal = positions.parse_segment(s.header.name, size)
        if wal is not None:
            by_timeline.setdefault(wal.timeline, set()).add(wal.number)
    for tli, numbers in sorted(by_timeline.items()):
        lo, hi = min(numbers), max(numbers)
        gaps += [positions.WalName(tli, n).name(size) for n in range(lo, hi + 1) if n not in numbers][:100]
    return gaps


def _positional_gaps(stored: list[StoredSegment]) -> list[str]:
    """Recorded gaps, and pieces that do not start where the previous one ended (a base, a
    whole copy, starts afresh)."""
    gaps = []
    end: int | None = None
    for s in sorted(stored, key=lambda s: (s.header.start, s.header.end)):
        h = s.header
        if h.kind == "gap":
            gaps.append(h.name)
        elif h.kind == "base":
            end = h.end
        elif h.kind == "log":
            if end is not None and h.start > end:
                gaps.append(h.name)
            end = h.end if end is None else max(end, h.end)
    return gaps


def summarize(stored: list[StoredSegment]) -> list[StreamSummary]:
    by_stream: dict[str, list[StoredSegment]] = {}
    for s in stored:
        by_stream.setdefault(s.header.stream, []).append(s)
    out = []
    for stream, pieces in sorted(by_stream.items()):
        logs = [p for p in pieces if p.header.kind != "gap"]
        ordered = sorted((p for p in logs if p.header.kind != "history"),
                         key=lambda p: (p.header.start, p.header.end, p.header.name))
        names = [p.header.name for p in ordered] or [""]
        summary = StreamSummary(stream, pieces[0].header.engine, len(logs),
                                sum(p.header.size for p in logs), names[0], names[-1],
                                max(p.header.time_ns for p in pieces))
        if summary.engine == "postgres":
            summary.gaps = _postgres_gaps(pieces)
        elif summary.engine == "mysql":
            summary.gaps = mysql_chain.gaps(p.header for p in pieces)
        else:
            summary.gaps = _positional_gaps(pieces)
        out.append(summary)
    return out
