"""Which chunk of a file's previous version a new chunk most likely descends from.

The backup stores a changed chunk as a zstd delta against that older chunk, so the pairing
decides how small the delta is. Only chunk lengths are used (no old content is read):
content-defined cut points survive edits, so an edited chunk keeps roughly its old length,
and runs of such lengths show where the new file lines up with the old one even after
inserted or appended data shifted everything. Fixed blocks pair with the block at their offset.

A database dump after a day of updates is the hard case: updated rows leave their place (and
reappear at the end), so every chunk is a little shorter than its ancestor and the offsets
drift. The old chunk that overlaps the new one most is taken (not the one holding its first
byte, which after a drift is the previous chunk), and when their lengths are within 2 % the
drift is learned from it. Further away, an exact length is trusted; a nearly equal one (an
insertion, then edits) is used for one chunk and its offset kept only if the next chunk
agrees: a lookalike length must not throw every following pairing off.
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
        self._end = pos
        self._shift = 0  # new offset minus old offset, learned as chunks go by
        self._tentative: int | None = None  # a shift seen once, kept if the next chunk agrees

    def match(self, offset: int, length: int) -> int | None:
        """Index of the old chunk to use as the base for the new chunk at `offset`, or None.
        Call in file order."""
        if not self._lengths:
            return None
        shifts = [self._shift] + ([self._tentative] if self._tentative is not None else [])
        self._tentative = None
        for shift in shifts:
            # The old chunk this one overlaps most: if their lengths are close (a few rows
            # or pages changed), it is the ancestor, and the drift is learned from it.
            best = self._overlapping(offset - shift, length)
            if best is not None and abs(self._lengths[best] - length) <= 512 + length // 50:
                return self._follow(offset, best)
        predicted = offset - self._shift
        if predicted >= self._end:
            return None  # past the end of the old file: appended data has no ancestor
        j = max(0, min(len(self._lengths) - 1, bisect.bisect_right(self._starts, predicted) - 1))
        lo, hi = max(0, j - SEARCH), min(len(self._lengths), j + SEARCH + 1)
        # An untouched chunk keeps its exact length: after an insertion or a removal anywhere
        # before it, that re-synchronises (a different chunk of the very same length nearby
        # is unlikely).
        exact = [k for k in range(lo, hi) if self._lengths[k] == length]
        if exact:
            return self._follow(offset, min(exact, key=lambda k: abs(self._starts[k] - predicted)))
        # Data inserted before this chunk and this chunk edited a little: a nearly equal
        # length further away. It may be a lookalike, so its shift is only tried on the next
        # chunk, and kept if that one agrees.
        tolerance = 512 + length // 1000
        close = [k for k in range(lo, hi) if abs(self._lengths[k] - length) <= tolerance]
        if close:
            k = min(close, key=lambda k: abs(self._starts[k] - predicted))
            self._tentative = offset - self._starts[k]
            return k
        return self._overlapping(predicted, length)

    def _overlapping(self, predicted: int, length: int) -> int | None:
        """The old chunk sharing most bytes with [predicted, predicted + length), if any."""
        if predicted >= self._end:
            return None
        j = max(0, min(len(self._lengths) - 1, bisect.bisect_right(self._starts, predicted) - 1))
        best, most = None, 0
        for k in range(max(0, j - 1), min(len(self._lengths), j + 2)):
            start, end = self._starts[k], self._starts[k] + self._lengths[k]
            overlap = min(end, predicted + length) - max(start, predicted)
            if overlap > most:
                best, most = k, overlap
        return best

    def _follow(self, offset: int, k: int) -> int:
        self._shift = offset - self._starts[k]
        return k
