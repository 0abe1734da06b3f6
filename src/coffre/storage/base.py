"""The backend contract every storage implementation satisfies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

# A remote request that receives nothing for this long is stuck: it fails, and is retried.
STALL_TIMEOUT_S = 120.0


def seconds_from_env(name: str, default: float, maximum: float) -> float:
    """A number of seconds in (0, maximum] from an environment variable, or the default;
    anything else (text, zero, nan, inf) is a usage error naming the variable."""
    from coffre.core.errors import UsageError

    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= maximum:  # also refuses nan and inf
        raise UsageError(f"{name} must be a number of seconds (0-{maximum:.0f}], not {text!r}")
    return value


def stall_timeout() -> float:
    """COFFRE_STORAGE_TIMEOUT (seconds), or STALL_TIMEOUT_S."""
    return seconds_from_env("COFFRE_STORAGE_TIMEOUT", STALL_TIMEOUT_S, 3600)


# The kinds of object a repository stores. "config" has a single object named "config".
KINDS = ("config", "keys", "data", "index", "snapshots", "locks", "trash", "forgotten")


@dataclass(frozen=True)
class Handle:
    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown object kind {self.kind!r}")
        if not self.name or "/" in self.name or self.name.startswith(".") or "\0" in self.name:
            raise ValueError(f"invalid object name {self.name!r}")


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    mtime_ns: int


class Backend(Protocol):
    """Named immutable objects.

    - save: atomic and durable when it returns; an existing object with the same bytes is
      success (idempotent), with different bytes raises ObjectExists. Never overwrites.
    - load: bytes [offset, offset+length) (length None = to the end); ObjectNotFound if absent.
      A short object raises IntegrityError-free: callers validate lengths themselves.
    - stat / list: size and modification time as the storage sees it (storage time).
    - remove: ObjectNotFound if absent (callers deleting garbage may ignore it).
    - location: a human description, never containing credentials.
    - remote: each request is a network round trip (callers then read in larger pieces).
    """

    location: str
    remote: bool

    def save(self, handle: Handle, data: bytes | memoryview) -> None: ...

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, handle: Handle) -> ObjectInfo: ...

    def list(self, kind: str) -> Iterator[ObjectInfo]: ...

    def remove(self, handle: Handle) -> None: ...

    def exists(self) -> bool:
        """Whether a repository (its config object) is present."""
        ...

    def create(self) -> None:
        """Prepare an empty location for a new repository (refuses a non-empty one)."""
        ...

    def clean_temporaries(self, older_than_ns: int) -> int:
        """Remove partial uploads left by crashed writers, last written before the given
        time (storage clock). Returns how many were removed."""
        ...

    def free_space(self) -> int | None:
        """Bytes that can still be written, or None when the storage cannot say (remote
        storage). Prune uses it to repack only what fits on a nearly full medium."""
        ...

    def close(self) -> None: ...


class Wrapper:
    """A backend around another one: every operation passes through unless a subclass
    changes it (fault injection, the metadata cache)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location
        self.remote = inner.remote

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self.inner.save(handle, data)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.load(handle, offset, length)

    def stat(self, handle: Handle) -> ObjectInfo:
        return self.inner.stat(handle)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        return self.inner.list(kind)

    def remove(self, handle: Handle) -> None:
        self.inner.remove(handle)

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self) -> None:
        self.inner.create()

    def clean_temporaries(self, older_than_ns: int) -> int:
        return self.inner.clean_temporaries(older_than_ns)

    def free_space(self) -> int | None:
        return self.inner.free_space()

    def close(self) -> None:
        self.inner.close()
