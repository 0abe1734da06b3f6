"""Leases: a holder whose lock could not be renewed stops before committing."""

from __future__ import annotations

import pytest

from coffre.core.clock import FixedClock
from coffre.core.errors import CoffreError, StorageError
from coffre.repository.locks import STALE_S, Lock, live_locks
from coffre.repository.repo import Repository
from coffre.storage.memory import MemoryBackend


class FlakyBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.fail_saves = False

    def save(self, handle, data):  # type: ignore[no-untyped-def]
        if self.fail_saves:
            raise StorageError("connection lost")
        super().save(handle, data)


def test_lock_not_renewed_in_time_stops_the_holder() -> None:
    backend = FlakyBackend()
    clock = FixedClock(1_700_000_000 * 10**9)
    repo, _ = Repository.init(backend, "pw", clock=clock)
    lock = Lock(repo, exclusive=False, command="backup").acquire()
    try:
        clock.advance(10 * 60)
        lock.check_lease()  # renewed on the spot
        assert [lk.lock_id for lk in live_locks(repo)] == [lock.lock_id]
        backend.fail_saves = True
        clock.advance(10 * 60)
        with pytest.raises(StorageError):
            lock.refresh()
        lock.check_lease()  # renewed 10 minutes ago: fine
        clock.advance(16 * 60)
        assert live_locks(repo)  # 26 minutes: others still see it live, but soon not...
        with pytest.raises(CoffreError, match="could not be renewed"):
            lock.check_lease()  # ...so the holder refuses to commit
        clock.advance(5 * 60)
        assert live_locks(repo) == []  # 31 minutes: stale for everybody
        assert STALE_S == 30 * 60
    finally:
        backend.fail_saves = False
        lock.release()
