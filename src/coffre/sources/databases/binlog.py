"""Pure: MariaDB/MySQL binary logs — file names, positions that order across files, and the
events' common header.

A binary log is a series of files `NAME.000001`, `NAME.000002`...; a place in it is a file and
a byte offset. Coffre orders places across files with one integer, `sequence << 40 | offset`
(a file is far smaller than 2**40 bytes), so pieces of the log have [start, end) positions like
any other stream's.

A file starts with the 4 bytes `\\xfebin`, then events. Every event (binlog format v4) starts
with a 19-byte common header: timestamp (u32, seconds), type (u8), server id (u32), the
event's length (u32, at offset 9, header included), the position where it ends in its file
(u32, 0 for an artificial event) and flags (u16).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from coffre.core.errors import FormatError
from coffre.core.i18n import _

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")
POSITION_BITS = 40
FILE_SPAN = 1 << POSITION_BITS
QUERY_EVENT, STOP_EVENT, ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT = 2, 3, 4, 15
XID_EVENT, TABLE_MAP_EVENT = 16, 19
GTID_EVENT = 162  # MariaDB: a transaction's (or a standalone statement's) start
_QUERY_HEAD = struct.Struct("<IIBHH")  # thread id, execution time, database length, error, status length
MAX_EVENT = (1 << 30) + (1 << 20)  # max_allowed_packet is at most 1 GiB
_NAME = re.compile(r"^[^-/\\\0\n][^/\\\0\n]{0,199}\.(\d{1,9})$")  # never an option's dash


@dataclass(frozen=True)
class Event:
    offset: int  # where it starts in its file
    length: int
    type: int
    timestamp: int  # seconds since the epoch (the statement's start)
    log_pos: int  # where it ends in its file (0: artificial, made up by the sender)

    @property
    def end(self) -> int:
        return self.offset + self.length


def sequence(name: str) -> int:
    """The number of a binary log file (`binlog.000042` -> 42)."""
    m = _NAME.match(name)
    if not m:
        raise FormatError(_("{name} is not the name of a binary log file").format(name=repr(name[:100])))
    return int(m.group(1))


def is_name(name: str) -> bool:
    return bool(_NAME.match(name))


def position(name: str, offset: int) -> int:
    """The place (`name`, `offset`) as one integer that orders across files."""
    if not 0 <= offset < FILE_SPAN:
        raise FormatError(_("binary log offset out of range"))
    return (sequence(name) << POSITION_BITS) | offset


def split(pos: int) -> tuple[int, int]:
    """(file sequence, offset) of a position."""
    return pos >> POSITION_BITS, pos & (FILE_SPAN - 1)


def file_start(pos: int) -> int:
    """The position of the start of the file holding `pos`."""
    return pos & ~(FILE_SPAN - 1)


def stream_name(server_uuid: str, server_id: str, hostname: str) -> str:
    """The stream of one server's binary log: its UUID (MySQL), else its id and host name
    (MariaDB has no UUID)."""
    if server_uuid:
        return f"mysql:{server_uuid}"
    return f"mysql:{server_id}@{hostname}"


def events(data: bytes | memoryview, offset: int, placed: bool = True) -> Iterator[Event]:
    """The whole events of `data`, which holds the file's bytes from `offset` on (an event's
    start, or 0 for the file's start). An event cut short at the end is not given; an
    impossible header raises FormatError (the bytes are not a binary log). `placed`: each
    event must say it ends where it does (False for a copy that starts inside a file)."""
    view = memoryview(data)
    at = 0
    if offset == 0:
        if len(view) < len(MAGIC):
            return
        if bytes(view[:len(MAGIC)]) != MAGIC:
            raise FormatError(_("not a binary log file (its first bytes are wrong)"))
        at = len(MAGIC)
    while len(view) - at >= HEADER.size:
        timestamp, kind, _server, length, log_pos, _flags = HEADER.unpack_from(view, at)
        start = offset + at
        if not HEADER.size <= length <= MAX_EVENT or (placed and log_pos and log_pos != start + length):
            raise FormatError(_("impossible binary log event at offset {offset}").format(offset=start))
        if len(view) - at < length:
            return
        yield Event(start, length, kind, timestamp, log_pos)
        at += length


def complete_end(data: bytes | memoryview, offset: int) -> int:
    """The file offset where the last whole event of `data` ends (`offset` if none)."""
    end = offset
    for e in events(data, offset):
        end = e.end
    return end


def first_length(data: bytes | memoryview, offset: int) -> int | None:
    """How many bytes from `offset` the first event needs (its header says; with the magic
    when `offset` is 0), or None while its header is incomplete."""
    at = len(MAGIC) if offset == 0 else 0
    if len(data) < at + HEADER.size:
        return None
    length: int = HEADER.unpack_from(data, at)[3]
    return at + length


def table_map_database(body: bytes) -> bytes | None:
    """The database a TABLE_MAP event's table belongs to (its body: table id in 6 bytes,
    flags in 2, then the database name's length and the name)."""
    if len(body) < 9 or len(body) < 9 + body[8]:
        return None
    return body[9:9 + body[8]]


def query_text(body: bytes) -> bytes:
    """The statement of a QUERY event (its start, as much as `body` holds)."""
    if len(body) < _QUERY_HEAD.size:
        return b""
    _thread, _time, db_length, _error, status_length = _QUERY_HEAD.unpack_from(body)
    return body[_QUERY_HEAD.size + status_length + db_length + 1:]


def gtid_standalone(body: bytes) -> bool:
    """Whether a MariaDB GTID event starts one statement with no COMMIT of its own (DDL): its
    body holds the sequence number in 8 bytes, the domain in 4, then flags (1: standalone)."""
    return len(body) >= 13 and bool(body[12] & 1)
