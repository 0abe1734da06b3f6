"""Retries for flaky links: a wrapper that runs any backend operation again, with growing
pauses, when it failed for a reason that may pass (a dropped connection, a stuck transfer
that timed out, a busy or restarting server).

Safe to retry because every operation is idempotent: saving an object that is already there
with the same bytes succeeds, a listing is read whole before anything is returned, and a
removal retried after a lost answer finds the object already gone. Permanent failures
(permission denied, storage full, not found) are raised at once. The pause is injected, so
tests do not sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from coffre.core.errors import ObjectNotFound, TransientStorageError
from coffre.storage.base import Backend, Handle, ObjectInfo

T = TypeVar("T")
ATTEMPTS = 10
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0  # with 10 attempts: about 4 minutes of trying before giving up


class RetryBackend:
    def __init__(
        self,
        inner: Backend,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.remote = inner.remote
        self.attempts = attempts
        self.sleep = sleep
        self.warn = warn
        self.retried = 0

    def _pause(self, attempt: int) -> float:
        # Full jitter: many pharmacies behind one provider do not retry in step.
        ceiling: float = min(MAX_PAUSE_S, FIRST_PAUSE_S * 2.0**attempt)
        return random.uniform(0.5, 1.0) * ceiling  # noqa: S311

    def _run(self, what: str, op: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return op()
            except TransientStorageError as exc:
                if attempt + 1 >= self.attempts:
                    raise TransientStorageError(
                        f"{exc.message} (gave up after {self.attempts} attempt"
                        f"{'s' if self.attempts > 1 else ''})",
                        "check the network connection and the storage, then run the command again",
                    ) from exc
                pause = self._pause(attempt)
                self.retried += 1
                if self.warn:
                    self.warn(f"{exc.message}; trying again in {pause:.0f} s")
                self.sleep(pause)
        raise AssertionError("unreachable")

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self._run("save", lambda: self.inner.save(handle, data))

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._run("load", lambda: self.inner.load(handle, offset, length))

    def stat(self, handle: Handle) -> ObjectInfo:
        return self._run("stat", lambda: self.inner.stat(handle))

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        return iter(self._run("list", lambda: list(self.inner.list(kind))))

    def remove(self, handle: Handle) -> None:
        tried = False

        def once() -> None:
            nonlocal tried
            try:
                self.inner.remove(handle)
            except ObjectNotFound:
                if not tried:
                    raise
                # An earlier attempt removed it and its answer was lost.
            finally:
                tried = True

        self._run("remove", once)

    def exists(self) -> bool:
        return self._run("exists", self.inner.exists)

    def create(self) -> None:
        self._run("create", self.inner.create)

    def clean_temporaries(self, older_than_ns: int) -> int:
        return self._run("clean", lambda: self.inner.clean_temporaries(older_than_ns))

    def close(self) -> None:
        self.inner.close()
