"""Chunker: cuts byte streams into chunks. Content-defined (FastCDC, keyed gear table) for
most data; fixed, page-aligned blocks for database files that are modified in place.
Format 1 keys the gear table with a 63-bit seed; format 2 derives it from a key by a PRF
(`gear`) and installs it into pyfastcdc (`keyed`).

pyfastcdc was chosen over `fastcdc`: it is ~1.8x faster here and releases the GIL
(../shared/reference/perf-baseline.md §4), so chunking overlaps with hashing in other threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from coffre.chunker.gear import gear_table
from coffre.chunker.keyed import keyed_fastcdc

# pyfastcdc's real mean is avg + min: about 320 KiB with these parameters. Chunks of this size
# keep zstd deltas against the previous version effective (docs/design.md §3): with 1 MiB
# chunks and a 1 MiB dictionary, zstd-3's match tables lose most of the matches.
DEFAULT_MIN = 64 * 1024
DEFAULT_AVG = 256 * 1024
DEFAULT_MAX = 1024 * 1024

# Page-structured database files are cut into fixed blocks: a page rewritten in place then
# changes exactly one block, and the block at the same offset is its previous version.
PAGE_BLOCK = 256 * 1024
SQLITE_MAGIC = b"SQLite format 3\x00"
# Other engines whose files are arrays of fixed-size pages updated in place (InnoDB, HFSQL,
# SQL Server, Access, PostgreSQL's own relation files have no extension and are not guessed).
PAGE_SUFFIXES = (b".ibd", b".fic", b".ndx", b".mmo", b".mdf", b".ndf", b".ldf", b".mdb", b".accdb")


def is_page_structured(name: bytes, head: bytes) -> bool:
    """Whether a file is a database of fixed-size pages, from its name and first bytes."""
    return head.startswith(SQLITE_MAGIC) or name.lower().endswith(PAGE_SUFFIXES)


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = DEFAULT_MIN
    avg_size: int = DEFAULT_AVG
    max_size: int = DEFAULT_MAX

    def validate(self) -> None:
        if not (64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * 1024 * 1024):
            raise ValueError("invalid chunker parameters")


class Chunker:
    """FastCDC over pyfastcdc. Without `gear_key` (format 1), pyfastcdc's gear table XOR the
    63-bit `seed`; with a 32-byte `gear_key` (format 2), a table drawn entirely from it by a
    keyed PRF (`gear.gear_table`), installed into pyfastcdc's compiled instance (`keyed`), and
    `seed` is not used."""

    def __init__(self, params: ChunkerParams, seed: int, gear_key: bytes | None = None) -> None:
        params.validate()
        self.params = params
        self._seed = seed
        # One checked instance serves every stream: its config is only read while cutting.
        self._keyed = (
            None
            if gear_key is None
            else keyed_fastcdc(gear_table(gear_key), params.min_size, params.avg_size, params.max_size)
        )

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield the content-defined chunks of `stream` as independent bytes objects."""
        cdc = self._keyed
        if cdc is None:
            # Imported here: every command opens a repository (and so this module), but only a
            # backup cuts chunks; restore, check and the others start without it (~8 ms cold).
            from pyfastcdc import FastCDC

            cdc = FastCDC(
                self.params.avg_size,
                min_size=self.params.min_size,
                max_size=self.params.max_size,
                seed=self._seed,
            )
        for chunk in cdc.cut_stream(stream):
            # The memoryview is only valid until the next chunk: copy it out.
            yield bytes(chunk.data)

    @staticmethod
    def blocks(stream: BinaryIO, size: int = PAGE_BLOCK) -> Iterator[bytes]:
        """Yield fixed-size blocks of `stream` (the last one may be shorter)."""
        while True:
            block = stream.read(size)  # read straight into a new bytes: no extra copy
            while 0 < len(block) < size:  # a short read before the end (pipes, signals)
                more = stream.read(size - len(block))
                if not more:
                    break
                block += more
            if not block:
                return
            yield block
            if len(block) < size:
                return
