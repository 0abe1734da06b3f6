"""Pure: which stored log pieces (segments) no kept backup can use any more.

A log piece is only useful replayed on top of a base: a base backup snapshot that says where
in its stream its replay starts (`stream_from`), or a base piece of the stream itself (SQLite's
whole copies). So, stream by stream:

- with kept base backups: pieces ending at or before the oldest kept base's start go;
- without, but with base pieces: pieces before the newest base piece captured at or before
  `cutoff_ns` (the oldest kept snapshot's time, so the window of moments that can be reached
  follows the snapshots' retention) go, older base pieces included;
- otherwise nothing goes: without a base to judge by, Coffre keeps rather than guess.

History pieces (a few hundred bytes each; PostgreSQL's timeline files) always stay: a later
recovery may need to follow a timeline they describe.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    object: str
    stream: str
    kind: str
    start: int
    end: int
    time_ns: int


def removable(pieces: Iterable[Piece], floors: dict[str, int], cutoff_ns: int | None,
              unknown_floor: Collection[str] = ()) -> list[Piece]:
    """The pieces that may go. `floors`: stream -> the smallest `stream_from` of the kept
    base backups of that stream; `unknown_floor`: engines (stream prefixes) with a kept base
    backup that does not say where its replay starts (their streams are all kept)."""
    by_stream: dict[str, list[Piece]] = {}
    for p in pieces:
        by_stream.setdefault(p.stream, []).append(p)
    out: list[Piece] = []
    for stream, group in by_stream.items():
        if stream.split(":", 1)[0] in unknown_floor:
            continue
        floor = floors.get(stream)
        if floor is None and cutoff_ns is not None:
            bases = [p for p in group if p.kind == "base" and p.time_ns <= cutoff_ns]
            if bases:
                floor = max(bases, key=lambda p: (p.start, p.time_ns)).start
        if floor is None:
            continue
        out += [p for p in group if p.kind != "history" and p.end <= floor
                and not (p.kind == "base" and p.start == floor)]
    return out
