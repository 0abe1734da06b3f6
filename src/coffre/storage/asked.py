"""A backend whose reads are asked of another process, and which writes nothing.

A copy of a restore process (ops/restoreprocs.py) must not use the storage connections it
inherited: the parent uses the same sockets, and two processes writing requests on one
connection corrupt it. Its repository reads through this backend instead, and the parent
makes each request with its own connections (Repository.answer_read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

from coffre.core.errors import StorageError
from coffre.core.i18n import _
from coffre.storage.base import Handle, ObjectInfo

# What is asked: kind, name, offset, length (None: to the end), blobs (0: not through whole packs).
Read = tuple[str, str, int, int | None, int]
Ask = Callable[[str, str, int, int | None, int], bytes]  # a Read's fields -> the bytes


class AskedBackend:
    def __init__(self, ask: Ask, location: str, remote: bool) -> None:
        self._ask = ask
        self.location = location
        self.remote = remote

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._ask(handle.kind, handle.name, offset, length, 0)

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        pass  # the parent reads, when asked

    def close(self) -> None:
        pass  # the connections are the parent's

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        _refuse()

    def remove(self, handle: Handle) -> None:
        _refuse()

    def create(self) -> None:
        _refuse()

    def stat(self, handle: Handle) -> ObjectInfo:
        _refuse()

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        _refuse()

    def exists(self) -> bool:
        _refuse()

    def clean_temporaries(self, older_than_ns: int) -> int:
        _refuse()

    def free_space(self) -> int | None:
        return None


def _refuse() -> NoReturn:
    raise StorageError(_("a copy of the restore process only reads, through its parent"))
