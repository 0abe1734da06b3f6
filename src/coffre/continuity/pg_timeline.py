"""Pure: which stored WAL pieces a recovery from one base backup replays, and where the chain
breaks.

A base backup starts at a position on a timeline. Recovery follows the newest timeline that
branches off that one after the start (PostgreSQL's recovery_target_timeline = 'latest'), using
each timeline's history file: segments of the base's timeline up to the first branch point,
then those of the next timeline, and so on, then the last timeline's segments as far as they
run unbroken. A segment missing in a range that must be crossed, a recorded gap, or a stored
segment beyond a missing one is a gap: recovery could not go past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coffre.continuity import positions
from coffre.format.segment import SegmentHeader


@dataclass
class Plan:
    pieces: list[SegmentHeader] = field(default_factory=list)  # to give recovery, in order
    timelines: list[int] = field(default_factory=list)
    gap: str = ""  # the first WAL file recovery needs and cannot have; "" when unbroken
    reached_ns: int = 0  # capture time of the last piece before the end or the gap


def _size(h: SegmentHeader) -> int:
    return int(h.extra.get("segment_size", positions.DEFAULT_SEGMENT_SIZE))


def plan(headers: list[SegmentHeader], start_lsn: int, start_timeline: int,
         histories: dict[int, list[tuple[int, int]]]) -> Plan:
    """`headers`: the stream's stored pieces; `histories`: each stored timeline history
    (timeline -> [(parent, branch LSN)], parsed from its file)."""
    logs: dict[int, dict[int, SegmentHeader]] = {}
    gaps: dict[int, dict[int, SegmentHeader]] = {}
    size = positions.DEFAULT_SEGMENT_SIZE
    for h in headers:
        if h.kind not in ("log", "gap") or h.name.endswith(".partial"):
            continue
        size = _size(h)
        wal = positions.parse_segment(h.name, size)
        if wal is None:
            continue
        (logs if h.kind == "log" else gaps).setdefault(wal.timeline, {})[wal.number] = h
    # The newest timeline descending from the base's, branching after the base started.
    target = start_timeline
    for tli, lines in histories.items():
        parents = {parent: lsn for parent, lsn in lines}
        if tli > target and start_timeline in parents and parents[start_timeline] > start_lsn:
            target = tli
    path: list[tuple[int, int, int | None]] = []  # (timeline, first segment, last segment or None)
    first = start_lsn // size
    if target != start_timeline:
        chain = [(p, lsn) for p, lsn in histories[target] if p >= start_timeline]
        for tli, branch in chain:
            # PostgreSQL reads the segment holding the branch point from the child timeline.
            path.append((tli, first, branch // size - 1))
            first = branch // size
    path.append((target, first, None))
    out = Plan(timelines=[t for t, _, _ in path])
    out.pieces += [h for h in headers if h.kind == "history"]
    for tli, lo, hi in path:
        have = logs.get(tli, {})
        last = positions.chain_end(set(have), lo) if hi is None else hi
        for n in range(lo, last + 1):
            if n in gaps.get(tli, {}) or n not in have:
                out.gap = positions.WalName(tli, n).name(size)
                return out
            out.pieces.append(have[n])
            out.reached_ns = max(out.reached_ns, have[n].time_ns)
        if hi is None:
            beyond = [n for n in (*have, *gaps.get(tli, {})) if n > last]
            if beyond:
                out.gap = positions.WalName(tli, last + 1).name(size)
    return out
