"""A local repository that records what is announced to its disk (Backend.will_read) and which
loads of data were not announced before: the tests of restore's and backup's read-ahead."""

from __future__ import annotations

import threading
from pathlib import Path

from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend


class Announcing(LocalBackend):
    """Spans of data packs announced, and loads of data; those loaded that were not announced
    before are kept apart. Packs of folder listings (`tree_packs`) are left out: restore's plan
    and a backup's parent read them one by one. `told` is set at the `expect`-th announcement."""

    def __init__(self, path: Path, expect: int = 0) -> None:
        super().__init__(path)
        self.tree_packs: set[str] = set()
        self.announced: list[tuple[str, int, int]] = []
        self.loaded: list[tuple[str, int, int]] = []
        self.unannounced: list[tuple[str, int, int]] = []
        self.expect = expect
        self.told = threading.Event()

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        self.announced.append((handle.name, offset, offset + length))
        super().will_read(handle, offset, length)
        if len(self.announced) == self.expect:
            self.told.set()

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        data = super().load(handle, offset, length)
        if handle.kind == "data" and handle.name not in self.tree_packs:
            span = (handle.name, offset, offset + len(data))
            self.loaded.append(span)
            if not any(name == span[0] and start <= span[1] and span[2] <= stop
                       for name, start, stop in self.announced):
                self.unannounced.append(span)
        return data
