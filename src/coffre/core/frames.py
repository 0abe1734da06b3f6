"""Messages between Coffre's own processes over a pipe: each a 4-byte length, then its bytes.

Used by the backup's helper processes (ops/smallhelper.py) and the restore's copies of itself
(ops/restoreprocs.py), which encode what is inside (msgpack) themselves.
"""

from __future__ import annotations

import struct
from typing import IO

_LENGTH = struct.Struct("<I")


def write(out: IO[bytes], data: bytes) -> None:
    """Send one message, flushed."""
    out.write(_LENGTH.pack(len(data)))
    out.write(data)
    out.flush()


def read(inp: IO[bytes], limit: int) -> bytes | None:
    """The next message, or None at the end of the stream (or a message cut short);
    ValueError if it announces more than `limit` bytes."""
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > limit:
        raise ValueError("frame too long")
    data = inp.read(length)
    return data if len(data) == length else None
