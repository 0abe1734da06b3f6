"""Chunker: content-defined chunking (FastCDC, keyed gear table) of byte streams.

pyfastcdc was chosen over `fastcdc`: it is ~1.8x faster here and releases the GIL
(../shared/reference/perf-baseline.md §4), so chunking overlaps with hashing in other threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc import FastCDC

# pyfastcdc's real mean is avg + min: about 1.25 MiB with these parameters.
DEFAULT_MIN = 256 * 1024
DEFAULT_AVG = 1024 * 1024
DEFAULT_MAX = 4 * 1024 * 1024


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = DEFAULT_MIN
    avg_size: int = DEFAULT_AVG
    max_size: int = DEFAULT_MAX

    def validate(self) -> None:
        if not (64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * 1024 * 1024):
            raise ValueError("invalid chunker parameters")


class Chunker:
    def __init__(self, params: ChunkerParams, seed: int) -> None:
        params.validate()
        self.params = params
        self._seed = seed

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield the chunks of `stream` as independent bytes objects."""
        cdc = FastCDC(
            self.params.avg_size,
            min_size=self.params.min_size,
            max_size=self.params.max_size,
            seed=self._seed,
        )
        for chunk in cdc.cut_stream(stream):
            # The memoryview is only valid until the next chunk: copy it out.
            yield bytes(chunk.data)
