"""SQLite's write-ahead log, read the way SQLite itself reads it (file format, section 4:
https://www.sqlite.org/fileformat2.html#the_write_ahead_log). Pure: bytes in, no I/O.

A WAL file is a 32-byte header followed by frames; a frame is a 24-byte frame header and one
database page. All integers are big-endian:

    header:  magic (0x377f0682 or 0x377f0683), format version (3007000), page size,
             checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2 (of the first 24 bytes)
    frame:   page number, database size in pages after the commit (non-zero only on the
             frame that commits a transaction), salt-1, salt-2, checksum-1, checksum-2

The checksums are cumulative: a frame's covers its first 8 header bytes and its page, starting
from the previous frame's (the header's for the first frame), over 32-bit words read in the
byte order the magic names (0x377f0682 little-endian, 0x377f0683 big-endian).

A frame counts only if its salts equal the header's and its checksum chains; a transaction
counts only once its commit frame does. What follows the last valid commit frame is a
transaction still being written, one rolled back, or what an earlier use of the file left
behind (other salts): SQLite ignores it, and so do these functions. When a checkpoint has
copied every frame into the database, the next writer "restarts" the log: a new header with
new salts is written at offset 0 and frames start again at offset 32, over the old ones.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC_LITTLE = 0x377F0682
MAGIC_BIG = 0x377F0683
FORMAT_VERSION = 3007000
HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
_HEADER = struct.Struct(">8I")
_FRAME = struct.Struct(">6I")
_MASK = 0xFFFFFFFF

Checksum = tuple[int, int]


@dataclass(frozen=True)
class WalHeader:
    raw: bytes  # the 32 bytes as found
    big_endian: bool  # the byte order of the checksums
    page_size: int
    checkpoint_seq: int
    salts: tuple[int, int]
    checksum: Checksum  # of the header: the seed of the first frame's

    @property
    def frame_size(self) -> int:
        return FRAME_HEADER_SIZE + self.page_size


@dataclass(frozen=True)
class Frame:
    offset: int  # of its frame header in the WAL file
    page: int  # page number (1-based)
    commit_size: int  # pages in the database after this commit; 0: not a commit frame
    checksum: Checksum
    data: bytes  # the page


@dataclass(frozen=True)
class Committed:
    """The whole committed transactions found from `start`: frames [start, end)."""

    start: int
    end: int  # just after the last valid commit frame; `start` when there is none
    checksum: Checksum  # the running checksum at `end` (the seed of the frame there)
    frames: int
    commits: int
    db_size: int  # pages in the database after the last commit (0 when none)


def checksum(data: bytes | memoryview, big_endian: bool, seed: Checksum = (0, 0)) -> Checksum:
    """SQLite's WAL checksum (walChecksumBytes) of `data` (a multiple of 8 bytes)."""
    if len(data) % 8:
        raise ValueError("the WAL checksum covers a multiple of 8 bytes")
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = seed
    for a, b in zip(words[0::2], words[1::2], strict=True):
        s0 = (s0 + a + s1) & _MASK
        s1 = (s1 + b + s0) & _MASK
    return s0, s1


def parse_header(data: bytes | memoryview) -> WalHeader | None:
    """The header of a WAL file from its first bytes; None when there is no valid one (an
    empty or truncated file, another file, a damaged header): SQLite then treats the log as
    empty."""
    if len(data) < HEADER_SIZE:
        return None
    raw = bytes(data[:HEADER_SIZE])
    magic, version, page_size, seq, salt1, salt2, c1, c2 = _HEADER.unpack(raw)
    if magic not in (MAGIC_LITTLE, MAGIC_BIG) or version != FORMAT_VERSION:
        return None
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return None
    big = magic == MAGIC_BIG
    if checksum(raw[:24], big) != (c1, c2):
        return None
    return WalHeader(raw, big, page_size, seq, (salt1, salt2), (c1, c2))


def is_frame_boundary(offset: int, header: WalHeader) -> bool:
    return offset >= HEADER_SIZE and (offset - HEADER_SIZE) % header.frame_size == 0


def stored_checksum(frame_header: bytes | memoryview) -> Checksum:
    """The checksum a frame header records (the running checksum after that frame)."""
    fields = _FRAME.unpack(bytes(frame_header[:FRAME_HEADER_SIZE]))
    return fields[4], fields[5]


def frames(data: bytes | memoryview, header: WalHeader, start: int, seed: Checksum) -> Iterator[Frame]:
    """The valid frames of `data` (the WAL's bytes from offset `start`, a frame boundary), in
    order, up to the first that is not: incomplete, other salts, a checksum that does not
    chain from `seed` (the running checksum at `start`), or page number 0."""
    if not is_frame_boundary(start, header):
        raise ValueError(f"offset {start} is not a frame boundary")
    view = memoryview(data)
    size = header.frame_size
    running = seed
    at = 0
    while at + size <= len(view):
        page, commit, salt1, salt2, c1, c2 = _FRAME.unpack(view[at:at + FRAME_HEADER_SIZE])
        if page == 0 or (salt1, salt2) != header.salts:
            return
        running = checksum(view[at:at + 8], header.big_endian, running)
        running = checksum(view[at + FRAME_HEADER_SIZE:at + size], header.big_endian, running)
        if running != (c1, c2):
            return
        yield Frame(start + at, page, commit, running, bytes(view[at + FRAME_HEADER_SIZE:at + size]))
        at += size


def committed(data: bytes | memoryview, header: WalHeader, start: int, seed: Checksum) -> Committed:
    """How far `data` (the WAL's bytes from offset `start`) holds whole committed
    transactions that chain from `seed`."""
    end, end_checksum, count, commits, db_size = start, seed, 0, 0, 0
    for seen, frame in enumerate(frames(data, header, start, seed), 1):
        if frame.commit_size:
            end, end_checksum = frame.offset + header.frame_size, frame.checksum
            count, commits, db_size = seen, commits + 1, frame.commit_size
    return Committed(start, end, end_checksum, count, commits, db_size)


def transactions(data: bytes | memoryview, header: WalHeader, start: int,
                 seed: Checksum) -> Iterator[list[Frame]]:
    """The committed transactions of `data`, each as its frames (the last one commits);
    frames after the last commit are not given."""
    pending: list[Frame] = []
    for frame in frames(data, header, start, seed):
        pending.append(frame)
        if frame.commit_size:
            yield pending
            pending = []
