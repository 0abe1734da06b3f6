"""Leases: a holder whose lock could not be renewed stops before committing."""

from __future__ import annotations

import pytest

from coffre.core.clock import FixedClock
from coffre.core.errors import CoffreError, StorageError
from coffre.repository.locks import STALE_S, LeaseExpired, Lock, live_locks
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
        with pytest.raises(CoffreError, match="last renewed 26 minutes ago"):
            lock.check_lease()  # ...so the holder refuses to commit
        clock.advance(5 * 60)
        assert live_locks(repo) == []  # 31 minutes: stale for everybody
        assert STALE_S == 30 * 60
    finally:
        backend.fail_saves = False
        lock.release()


class Ticker:
    """A suspend-counting clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_suspended_machine_is_caught_by_the_clock_that_counts_suspension() -> None:
    """The wall clock may be put back after a sleep (NTP, a wrong RTC): the boot-time clock
    still shows the lapse, and the lapse is measured before any renewal hides it."""
    clock = FixedClock(1_700_000_000 * 10**9)
    repo, _ = Repository.init(MemoryBackend(), "pw", clock=clock)
    mono = Ticker()
    lock = Lock(repo, exclusive=False, command="backup", mono=mono).acquire()
    try:
        mono.now += 4 * 60
        lock.check_lease()  # four minutes: nothing to say
        mono.now += 40 * 60  # slept 40 minutes; the wall clock did not move
        with pytest.raises(LeaseExpired, match="suspended"):
            lock.check_lease()
        with pytest.raises(LeaseExpired):
            lock.check_lease()  # a lapse stays a lapse until the holder renews on purpose
        lock.renew()
        lock.check_lease()
    finally:
        lock.release()


class StorageClockBackend(MemoryBackend):
    """A storage whose own clock (the times it reports) the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.time_ns = 10**18

    def stat(self, handle):  # type: ignore[no-untyped-def]
        info = super().stat(handle)
        return type(info)(info.name, info.size, self.time_ns)


def test_a_long_gap_on_the_storage_clock_is_a_lapse() -> None:
    """Both local clocks may have been frozen (a paused VM restored): the storage's times of
    two successive lock objects still show the gap others saw."""
    backend = StorageClockBackend()
    repo, _ = Repository.init(backend, "pw", clock=FixedClock(1_700_000_000 * 10**9))
    lock = Lock(repo, exclusive=False, command="backup", mono=Ticker()).acquire()
    try:
        backend.time_ns += 5 * 60 * 10**9
        lock.refresh()
        lock.check_lease()
        backend.time_ns += 45 * 60 * 10**9
        lock.refresh()  # what the refresher thread does: writes, and notes the storage's gap
        with pytest.raises(LeaseExpired, match="storage's clock shows 45 minutes"):
            lock.check_lease()
    finally:
        lock.release()


def test_frozen_local_clocks_do_not_hide_a_lapse_from_the_commit_gate() -> None:
    """A paused VM freezes both local clocks and the refresher's timer: the commit gate
    itself renews, and so reads the storage's clock."""
    backend = StorageClockBackend()
    repo, _ = Repository.init(backend, "pw", clock=FixedClock(1_700_000_000 * 10**9))
    lock = Lock(repo, exclusive=False, command="backup", mono=Ticker()).acquire()
    try:
        backend.time_ns += 45 * 60 * 10**9
        with pytest.raises(LeaseExpired, match="storage's clock shows 45 minutes"):
            lock.check_lease()
    finally:
        lock.release()


class InterruptedAfterWrite(MemoryBackend):
    """A SIGTERM that lands just after the storage wrote a lock object, before the write
    returned: the moment a real interrupted backup once left its lock behind."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupt_lock_writes = 0

    def save(self, handle, data):  # type: ignore[no-untyped-def]
        super().save(handle, data)
        if handle.kind == "locks" and self.interrupt_lock_writes:
            self.interrupt_lock_writes -= 1
            raise KeyboardInterrupt("SIGTERM")


@pytest.mark.parametrize("exclusive", [False, True])
def test_an_interruption_as_the_lock_is_written_still_removes_it(exclusive: bool) -> None:
    backend = InterruptedAfterWrite()
    repo, _ = Repository.init(backend, "pw", clock=FixedClock(1_700_000_000 * 10**9))
    lock = Lock(repo, exclusive=exclusive, command="backup")
    backend.interrupt_lock_writes = 1
    with pytest.raises(KeyboardInterrupt):
        try:
            lock.acquire()
        finally:
            lock.release()
    assert repo.list_names("locks") == []


def test_an_interruption_as_the_lock_is_renewed_removes_both_objects() -> None:
    backend = InterruptedAfterWrite()
    clock = FixedClock(1_700_000_000 * 10**9)
    repo, _ = Repository.init(backend, "pw", clock=clock)
    lock = Lock(repo, exclusive=False, command="backup").acquire()
    clock.advance(60)
    backend.interrupt_lock_writes = 1
    with pytest.raises(KeyboardInterrupt):
        try:
            lock.check_lease()  # the commit gate renews on the main thread
        finally:
            lock.release()
    assert repo.list_names("locks") == []
