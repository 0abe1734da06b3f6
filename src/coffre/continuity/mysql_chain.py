"""Pure: the stored pieces of a MariaDB binary log stream, joined end to end from a place on.

A piece covers [start, end) of the stream (binlog.position): its bytes when it holds some, the
end of a finished file up to the next file's start when it is empty (a file's close). Pieces
may overlap (the capture put one again after a crash): the chain takes, at each step, the
piece that goes furthest from where it stands, and only its bytes from there. It stops where
nothing covers the next byte; when something is stored beyond, that place is missing — a
recorded gap (the capture knew it lost it) or a hole (a piece removed or never shipped) — and
the missing piece is named `FILE:OFFSET`, the name its capture gave it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from coffre.format.segment import SegmentHeader
from coffre.sources.databases import binlog


@dataclass
class Link:
    header: SegmentHeader
    skip: int  # bytes of its payload already given by the pieces before


@dataclass
class Chain:
    begin: int
    end: int  # the first position it does not cover
    links: list[Link] = field(default_factory=list)
    missing: str = ""  # the first missing piece, when something is stored beyond `end`
    reason: str = ""  # why, when the capture recorded the gap


def file_names(headers: Iterable[SegmentHeader]) -> dict[int, str]:
    """File sequence -> the binary log file's name, as the pieces tell it."""
    out: dict[int, str] = {}
    for h in headers:
        for key in ("file", "next"):
            name = h.extra.get(key, "")
            if binlog.is_name(name):
                out.setdefault(binlog.sequence(name), name)
    return out


def name_at(pos: int, names: dict[int, str]) -> str:
    """A place as the capture names the piece that starts there: `FILE:OFFSET`."""
    seq, offset = binlog.split(pos)
    return f"{names.get(seq, f'#{seq}')}:{offset}"


def follow(headers: Iterable[SegmentHeader], begin: int) -> Chain:
    """The pieces that join without a break from `begin`."""
    every = list(headers)
    logs = sorted((h for h in every if h.kind == "log"), key=lambda h: (h.start, -h.end))
    chain = Chain(begin, begin)
    i = 0
    while True:
        best: SegmentHeader | None = None
        while i < len(logs) and logs[i].start <= chain.end:
            if logs[i].end > chain.end and (best is None or logs[i].end > best.end):
                best = logs[i]
            i += 1
        if best is None:
            break
        chain.links.append(Link(best, chain.end - best.start))
        chain.end = best.end
    beyond = [h for h in every if h.kind in ("log", "gap") and h.end > chain.end]
    if beyond:
        recorded = [h for h in beyond if h.kind == "gap" and h.start <= chain.end]
        if recorded:
            chain.missing, chain.reason = recorded[0].name, recorded[0].extra.get("reason", "")
        else:
            chain.missing = name_at(chain.end, file_names(every))
    return chain


def gaps(headers: Iterable[SegmentHeader], most: int = 100) -> list[str]:
    """Every break between the first piece stored and the last (the missing pieces' names)."""
    every = [h for h in headers if h.kind in ("log", "gap")]
    if not every:
        return []
    out: list[str] = []
    begin = min(h.start for h in every)
    while len(out) < most:
        chain = follow(every, begin)
        if not chain.missing:
            break
        out.append(chain.missing)
        later = [h.start for h in every if h.kind == "log" and h.start > chain.end]
        if not later:
            break
        begin = min(later)
    return out
