"""Reading remote packs by windows: neighbouring blobs come from one request, memory stays
bounded, and a read at the end of a pack returns what is there."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from coffre.repository.window import PackWindows
from coffre.storage.base import Handle
from coffre.storage.memory import MemoryBackend

PACK = bytes(range(256)) * 4096  # 1 MiB
PID = b"\x01" * 32


class Remote(MemoryBackend):
    remote = True

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.save(Handle("data", PID.hex()), PACK)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self.loads += 1
        return super().load(handle, offset, length)


def test_neighbours_come_from_one_request() -> None:
    b = Remote()
    w = PackWindows(b, window=256 * 1024, capacity=1024 * 1024)
    for off in range(0, 256 * 1024, 4096):
        assert w.read(PID, off, 4096) == PACK[off : off + 4096]
    assert b.loads == 1


def test_memory_stays_bounded_and_evicted_windows_are_read_again() -> None:
    b = Remote()
    w = PackWindows(b, window=128 * 1024, capacity=256 * 1024)
    for off in range(0, len(PACK), 128 * 1024):
        w.read(PID, off, 1000)
    assert b.loads == 8
    assert w._held <= 256 * 1024
    assert w.read(PID, 0, 1000) == PACK[:1000]  # dropped long ago: read again
    assert b.loads == 9


def test_the_end_of_a_pack() -> None:
    b = Remote()
    w = PackWindows(b, window=256 * 1024)
    assert w.read(PID, len(PACK) - 10, 10) == PACK[-10:]
    assert w.read(PID, len(PACK) - 10, 20) == PACK[-10:]  # short: the caller rejects it


def test_blobs_in_a_random_order_read_each_stretch_once() -> None:
    # Format 2 shuffles a pack's blobs: bases are wanted in any order. Each stretch of the
    # pack is read once, not a window from each blob's offset.
    b = Remote()
    w = PackWindows(b, window=256 * 1024, capacity=1024 * 1024)
    for off in (700_000, 300_000, 10_000, 900_000, 250_000, 650_000, 5_000):
        assert w.read(PID, off, 3000) == PACK[off : off + 3000]
    assert b.loads == 4  # the four windows of the 1 MiB pack, each once
    assert w.read(PID, 270_000, 1000) == PACK[270_000:271_000]  # kept
    assert b.loads == 4


def test_a_blob_across_the_end_of_a_window() -> None:
    b = Remote()
    w = PackWindows(b, window=256 * 1024)
    off = 256 * 1024 - 100
    assert w.read(PID, off, 1000) == PACK[off : off + 1000]
    assert w.read(PID, 1000, 10) == PACK[1000:1010]  # the same window, grown to hold the blob
    assert b.loads == 1


def test_a_blob_across_the_end_of_a_window_read_first_reads_only_what_is_missing() -> None:
    """The window read for a blob within it, then a blob crossing its end: the pack's bytes
    already held are not asked for again."""

    class Spans(Remote):
        def __init__(self) -> None:
            super().__init__()
            self.spans: list[tuple[int, int | None]] = []

        def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
            self.spans.append((offset, length))
            return super().load(handle, offset, length)

    b = Spans()
    w = PackWindows(b, window=256 * 1024)
    assert w.read(PID, 1000, 10) == PACK[1000:1010]
    off = 256 * 1024 - 100
    assert w.read(PID, off, 1000) == PACK[off : off + 1000]
    assert b.spans == [(0, 256 * 1024), (256 * 1024, 900)]
    assert w.read(PID, 5000, 10) == PACK[5000:5010]  # the window, grown, still serves
    assert b.loads == 2


def test_threads_wanting_one_window_read_it_once() -> None:
    class Slow(Remote):
        def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
            time.sleep(0.05)  # every thread asks before the first answer comes
            return super().load(handle, offset, length)

    b = Slow()
    w = PackWindows(b, window=256 * 1024)
    offsets = [1000 + 9000 * n for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda off: w.read(PID, off, 3000), offsets))
    assert got == [PACK[off : off + 3000] for off in offsets]
    assert b.loads == 1
