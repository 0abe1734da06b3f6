"""Which chunk of a file's previous version a new chunk most likely descends from.

The backup stores a changed chunk as a zstd delta against that older chunk, so the pairing
decides how small the delta is. Only chunk lengths are used (no old content is read):
content-defined cut points survive edits, so an edited chunk keeps roughly its old length,
and runs of such lengths show where the new file lines up with the old one even after
inserted or appended data shifted everything. Fixed blocks pair with the block at their offset.
"""

from __future__ import annotations

import bisect

SEARCH = 8  # old chunks looked at on either side of the predicted one


class Aligner:
    def __init__(self, old_lengths: list[int]) -> None:
        self._lengths = old_lengths
        self._starts: list[int] = []
        pos = 0
        for n in old_lengths:
            self._starts.append(pos)
            pos += n
        self._shift = 0  # new offset minus old offset, learned as chunks go by

    def match(self, offset: int, length: int) -> int | None:
        """Index of the old chunk to use as the base for the new chunk at `offset`, or None.
        Call in file order."""
        if not self._lengths:
            return None
        predicted = offset - self._shift
        if predicted >= self._starts[-1] + self._lengths[-1]:
            return None  # past the end of the old file: appended data has no ancestor
        j = bisect.bisect_right(self._starts, predicted) - 1
        j = max(0, min(len(self._lengths) - 1, j))
        tolerance = 512 + length // 1000
        lo, hi = max(0, j - SEARCH), min(len(self._lengths), j + SEARCH + 1)
        close = [k for k in range(lo, hi) if abs(self._lengths[k] - length) <= tolerance]
        if close:
            j = min(close, key=lambda k: abs(self._starts[k] - predicted))
            self._shift = offset - self._starts[j]
            return j
        start, end = self._starts[j], self._starts[j] + self._lengths[j]
        if min(end, predicted + length) <= max(start, predicted):
            return None  # past the end of the old file: appended data has no ancestor
        return j
