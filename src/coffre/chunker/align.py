"""Which chunk of a file's previous version a new chunk most likely descends from.

The backup stores a changed chunk as a zstd delta against that older chunk, so the pairing
decides how small the delta is. Only chunk lengths are used (no old content is read):
content-defined cut points survive edits, so an edited chunk keeps roughly its old length,
and runs of such lengths show where the new file lines up with the old one even after
inserted or appended data shifted everything. Fixed blocks pair with the block at their offset.

A database dump after a day of updates is the hard case: updated rows leave their place (and
reappear at the end), so every chunk is a little shorter than its ancestor and the offsets
drift. Lengths are matched within ~1 %, and failing that the old chunk that overlaps the new
one most is taken (not the one holding its first byte, which after a drift is the previous
chunk).
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
        tolerance = 512 + length // 100
        lo, hi = max(0, j - SEARCH), min(len(self._lengths), j + SEARCH + 1)
        close = [k for k in range(lo, hi) if abs(self._lengths[k] - length) <= tolerance]
        if close:
            j = min(close, key=lambda k: abs(self._starts[k] - predicted))
            self._shift = offset - self._starts[j]
            return j
        best, most = None, 0
        for k in range(max(0, j - 1), min(len(self._lengths), j + 2)):
            start, end = self._starts[k], self._starts[k] + self._lengths[k]
            overlap = min(end, predicted + length) - max(start, predicted)
            if overlap > most:
                best, most = k, overlap
        return best  # None: past the end of the old file, appended data has no ancestor
