"""Reading remote packs by windows: neighbouring blobs come from one request, memory stays
bounded, and a read at the end of a pack returns what is there."""

from __future__ import annotations

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
