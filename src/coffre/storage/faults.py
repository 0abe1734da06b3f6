"""Fault injection for the test suite: a wrapper that kills its own process with SIGKILL at
the N-th write or delete, before it, half-way through it, or right after it — or sends
itself SIGINT there, as a user pressing Ctrl-C would, or SIGSTOP, as a machine going to
sleep would (the test moves the clock, then sends SIGCONT).

Enabled only by the test-only environment variable COFFRE_TEST_CRASH_AT="N:phase" (phase:
before, partial, after, sigint, stop), read by the command line when it builds the backend.
"""

from __future__ import annotations

import os
import signal
import threading

from coffre.storage.base import Backend, Handle, Wrapper

PHASES = ("before", "partial", "after", "sigint", "stop")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillSwitchBackend(Wrapper):
    def __init__(self, inner: Backend, at: int, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown crash phase {phase!r}")
        super().__init__(inner)
        self.at = at
        self.phase = phase
        self.count = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, inner: Backend) -> Backend:
        spec = os.environ.get("COFFRE_TEST_CRASH_AT")
        if not spec:
            return inner
        n, _, phase = spec.partition(":")
        return cls(inner, int(n), phase or "before")

    def _tick(self) -> bool:
        with self._lock:
            self.count += 1
            return self.count == self.at

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        if not self._tick():
            self.inner.save(handle, data)
            return
        if self.phase == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
            self.inner.save(handle, data)
            return
        if self.phase == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            self.inner.save(handle, data)
            return
        if self.phase == "before":
            _die()
        if self.phase == "partial":
            # What a power cut mid-write leaves: a temporary file with half the bytes.
            root = getattr(self.inner, "root", None)
            if root is not None:
                tmp = os.path.join(str(root), handle.kind if handle.kind != "config" else "",
                                   f".tmp-crash-{os.getpid()}")
                with open(tmp, "wb") as f:
                    f.write(bytes(data)[: len(data) // 2])
            _die()
        self.inner.save(handle, data)
        _die()

    def remove(self, handle: Handle) -> None:
        if not self._tick():
            self.inner.remove(handle)
            return
        if self.phase == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            self.inner.remove(handle)
            return
        if self.phase != "after":
            _die()
        self.inner.remove(handle)
        _die()
