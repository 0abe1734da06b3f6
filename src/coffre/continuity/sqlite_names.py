"""Pure: how a SQLite database's continuous capture is named in the repository.

- A database is known by a stable id: the first 16 hex digits of the SHA-256 of its absolute
  path (the path itself travels in each piece's `extra["database"]`).
- A **generation** is one unbroken capture: a base (a whole, consistent copy of the
  database) followed by every transaction committed after it. Its stream is
  `sqlite:<database id>:<generation id>`; the generation id starts with the hexadecimal
  millisecond time it began, so generations sort by age.
- A **position** inside a generation is `run << 40 | offset`: `offset` is a byte offset in the
  -wal file (the end of the last commit copied), `run` counts the times the WAL restarted at
  its beginning (after a checkpoint) while the monitor watched. Positions only grow.
- A log piece covers [start, end): the frames of whole transactions from `start` on. A piece
  that follows a restart starts where the previous run ended and ends in the new run. A base
  sits at one position: start == end.
"""

from __future__ import annotations

import hashlib
import os
import secrets

ENGINE = "sqlite"
RUN_SHIFT = 40
OFFSET_MASK = (1 << RUN_SHIFT) - 1


def database_id(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:16]


def new_generation(now_ns: int) -> str:
    return f"{now_ns // 1_000_000:011x}{secrets.token_hex(3)}"


def stream(db_id: str, generation: str) -> str:
    return f"{ENGINE}:{db_id}:{generation}"


def parse_stream(name: str) -> tuple[str, str] | None:
    """(database id, generation id) of a SQLite stream, None for another stream."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != ENGINE or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def position(run: int, offset: int) -> int:
    if not 0 <= offset <= OFFSET_MASK or run < 0:
        raise ValueError("position out of range")
    return run << RUN_SHIFT | offset


def split_position(pos: int) -> tuple[int, int]:
    """(run, offset)."""
    return pos >> RUN_SHIFT, pos & OFFSET_MASK


def format_position(pos: int) -> str:
    run, offset = split_position(pos)
    return f"{run}.{offset}"


def base_name(pos: int) -> str:
    return f"base-{format_position(pos)}"


def log_name(start: int, end: int) -> str:
    """A log piece's name, from its positions: the name of a missing piece can be told from
    the pieces around it."""
    return f"wal-{format_position(start)}-{format_position(end)}"
