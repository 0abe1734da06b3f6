"""Pure: PostgreSQL WAL file names and positions, chains and gaps."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
# Other files archive_command is given: a backup's history, a timeline's last partial segment.
_SIDE = re.compile(r"^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup|\.partial)$")


@dataclass(frozen=True, order=True)
class WalName:
    """A WAL segment: its timeline and its number (from the start of the log)."""

    timeline: int
    number: int

    def name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per_id = 0x1_0000_0000 // segment_size
        return f"{self.timeline:08X}{self.number // per_id:08X}{self.number % per_id:08X}"

    def start(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        """Its first LSN."""
        return self.number * segment_size


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName | None:
    """The segment a WAL file name designates, or None for another file (history...)."""
    m = _SEGMENT.match(name)
    if not m:
        return None
    per_id = 0x1_0000_0000 // segment_size
    log, seg = int(m.group(2), 16), int(m.group(3), 16)
    if seg >= per_id:
        return None
    return WalName(int(m.group(1), 16), log * per_id + seg)


def history_timeline(name: str) -> int | None:
    m = _HISTORY.match(name)
    return int(m.group(1), 16) if m else None


def is_wal_file(name: str) -> bool:
    """A name archive_command may be given (and restore_command asked for)."""
    return bool(_SEGMENT.match(name) or _HISTORY.match(name) or _SIDE.match(name))


def segment_of(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName:
    return WalName(timeline, lsn // segment_size)


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> int."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file's lines: (parent timeline, LSN where the child branched off)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and "/" in parts[1]:
            out.append((int(parts[0]), parse_lsn(parts[1])))
    return out


def first_missing(have: set[int], first: int, last: int) -> int | None:
    """The first segment number in [first, last] not in `have`."""
    for n in range(first, last + 1):
        if n not in have:
            return n
    return None


def chain_end(have: set[int], first: int) -> int:
    """The last number of the unbroken run from `first` (first - 1 if `first` is absent)."""
    n = first
    while n in have:
        n += 1
    return n - 1
