"""Retries on flaky links: transient failures are retried with growing pauses (injected, no
sleeping), permanent ones are not, a listing is never partial, a removal whose answer was
lost is not an error, and a storage that stays unreachable for the retry budget ends the
whole command at once (an injected clock, no waiting)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.core.errors import (
    ObjectNotFound,
    StoragePermissionDenied,
    StorageUnreachable,
    TransientStorageError,
    UsageError,
)
from coffre.storage.base import Handle, ObjectInfo
from coffre.storage.memory import MemoryBackend
from coffre.storage.retry import RetryBackend, retry_budget

from conftest import Coffre

H = Handle("data", "ab" + "0" * 62)


class Flaky(MemoryBackend):
    """Fails the next `failures` calls of the named operations, then works."""

    def __init__(self, failures: int, ops: tuple[str, ...], after: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.ops = ops
        self.after = after  # fail after doing the work (the answer is lost)
        self.calls = 0

    def _maybe_fail(self, op: str) -> None:
        if op in self.ops and self.failures > 0:
            self.failures -= 1
            raise TransientStorageError(f"{op}: connection reset")

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self.calls += 1
        if self.after:
            super().save(handle, data)
        self._maybe_fail("save")
        super().save(handle, data)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self.calls += 1
        self._maybe_fail("load")
        return super().load(handle, offset, length)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        items = list(super().list(kind))
        yield items[0]
        self._maybe_fail("list")  # fails mid-listing, after yielding a first object
        yield from items[1:]

    def remove(self, handle: Handle) -> None:
        if self.after:
            super().remove(handle)
        self._maybe_fail("remove")
        super().remove(handle)


def retrying(inner: MemoryBackend, attempts: int = 5) -> tuple[RetryBackend, list[float], list[str]]:
    pauses: list[float] = []
    warnings: list[str] = []
    return RetryBackend(inner, attempts=attempts, sleep=pauses.append, warn=warnings.append), pauses, warnings


def test_transient_failures_are_retried_with_growing_pauses() -> None:
    inner = Flaky(3, ("save", "load"))
    b, pauses, warnings = retrying(inner)
    b.save(H, b"data")
    assert b.load(H) == b"data"
    assert len(pauses) == 3 and pauses[0] < pauses[2] and all(p > 0 for p in pauses)
    assert "connection reset" in warnings[0] and "trying again" in warnings[0]


def test_save_retried_after_a_lost_answer_succeeds_without_duplicate() -> None:
    inner = Flaky(1, ("save",), after=True)
    b, pauses, _ = retrying(inner)
    b.save(H, b"data")  # stored, answer lost, retried: same bytes are a success
    assert len(pauses) == 1 and inner.load(H) == b"data"


def test_remove_retried_after_a_lost_answer_is_not_an_error() -> None:
    inner = Flaky(1, ("remove",), after=True)
    inner.failures = 0
    inner.save(H, b"data")
    inner.failures = 1
    b, pauses, _ = retrying(inner)
    b.remove(H)
    assert len(pauses) == 1
    with pytest.raises(ObjectNotFound):
        b.remove(H)  # a real "not found" on the first attempt is still reported


def test_a_listing_is_never_partial() -> None:
    inner = Flaky(0, ("list",))
    for i in range(5):
        inner.save(Handle("data", f"{i:064x}"), b"x")
    inner.failures = 1
    b, pauses, _ = retrying(inner)
    assert len(list(b.list("data"))) == 5
    assert len(pauses) == 1
    inner.failures = 10
    b2, _, _ = retrying(inner, attempts=3)
    with pytest.raises(TransientStorageError):
        list(b2.list("data"))  # nothing yielded before the error: prune cannot see a short list


def test_permanent_failures_are_not_retried() -> None:
    class Denied(MemoryBackend):
        def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
            raise StoragePermissionDenied("reading: access denied")

    b, pauses, _ = retrying(Denied())
    with pytest.raises(StoragePermissionDenied):
        b.load(H)
    with pytest.raises(ObjectNotFound):
        b.stat(H)
    assert pauses == []


def test_giving_up_says_so() -> None:
    b, pauses, _ = retrying(Flaky(100, ("load",)), attempts=4)
    with pytest.raises(TransientStorageError) as info:
        b.load(H)
    assert "gave up after 4 attempts" in info.value.message
    assert info.value.hint and "network" in info.value.hint
    assert len(pauses) == 3
    assert max(pauses) <= 60


# -- a listing error never lets prune delete data ---------------------------------------------
class DataListing(MemoryBackend):
    """Fails, or lies with an empty answer, when the packs are listed."""

    def __init__(self, inner_objects: MemoryBackend, mode: str) -> None:
        super().__init__()
        self._objects = inner_objects._objects
        self.mode = mode

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == "data" and self.mode == "fail":
            raise TransientStorageError("listing data: connection reset")
        if kind == "data" and self.mode == "empty":
            return iter([])
        return super().list(kind)


@pytest.mark.parametrize("mode", ["fail", "empty"])
def test_a_listing_error_never_lets_prune_delete(mode: str, tmp_path: Path) -> None:
    from coffre.core.errors import CoffreError
    from coffre.ops.backup import Backup, BackupOptions
    from coffre.ops.prune import Pruner
    from coffre.repository.locks import Lock
    from coffre.repository.repo import Repository

    from conftest import make_tree

    store = MemoryBackend()
    repo, _ = Repository.init(store, "pw")
    src = make_tree(tmp_path / "src", big=300_000)
    for host in ("a", "b"):
        with Lock(repo, exclusive=False, command="backup") as lock:
            repo.load_index()
            Backup(repo, lock, BackupOptions(paths=[str(src)], host=host, force_read=True)).run()
    snaps = repo.snapshots()
    repo.backend.remove(Handle("snapshots", snaps[0].id))  # something for prune to do
    before = {k: v[0] for k, v in store._objects.items() if k[0] == "data"}
    flaky = RetryBackend(DataListing(store, mode), attempts=3, sleep=lambda _: None)
    pruning = Repository.open(flaky, "pw")
    with Lock(pruning, exclusive=True, command="prune") as lock, pytest.raises(CoffreError) as info:
        Pruner(pruning, lock).run()
    expected = "gave up" if mode == "fail" else "prune refuses to run"
    assert expected in info.value.message
    assert {k: v[0] for k, v in store._objects.items() if k[0] == "data"} == before


# -- the retry budget: a storage that stays unreachable ends the command ------------------------
class FakeClock:
    """Monotonic seconds that move only when a pause is taken (or a test moves them)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class Switchable(MemoryBackend):
    """A storage that can be cut off: every request then fails as a dead server's would."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.requests = 0

    def _request(self, op: str) -> None:
        self.requests += 1
        if self.down:
            raise TransientStorageError(f"{op}: connection refused")

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self._request("save")
        super().save(handle, data)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self._request("load")
        return super().load(handle, offset, length)

    def stat(self, handle: Handle) -> ObjectInfo:
        self._request("stat")
        return super().stat(handle)

    def remove(self, handle: Handle) -> None:
        self._request("remove")
        super().remove(handle)


def budgeted(inner: MemoryBackend, budget: float = 60, attempts: int = 100) -> tuple[RetryBackend, FakeClock]:
    clock = FakeClock()
    return RetryBackend(inner, attempts=attempts, sleep=clock.sleep, budget_s=budget, clock=clock), clock


def test_an_outage_longer_than_the_budget_ends_every_later_request_at_once() -> None:
    inner = Switchable()
    b, clock = budgeted(inner, budget=180)
    b.save(H, b"data")
    inner.down = True
    with pytest.raises(StorageUnreachable) as info:
        b.load(H)
    # Retried with growing pauses, the last one cut to end with the budget, then one last try.
    assert sum(clock.pauses) == pytest.approx(180)
    assert info.value.message == ("the storage at memory has not answered for 3 min "
                                  "(last error: load: connection refused); gave up")
    assert info.value.hint and "next run resumes" in info.value.hint
    # What comes after (the lock removal...) gives up without a pause and without a request.
    requests, pauses = inner.requests, len(clock.pauses)
    with pytest.raises(StorageUnreachable) as again:
        b.remove(H)
    assert again.value.message == info.value.message
    with pytest.raises(StorageUnreachable):
        b.save(Handle("locks", "a" * 64), b"lock")
    assert inner.requests == requests and len(clock.pauses) == pauses


def test_the_budget_counts_from_the_first_failure_across_operations() -> None:
    inner = Switchable()
    b, clock = budgeted(inner, budget=60, attempts=3)
    inner.down = True
    with pytest.raises(StorageUnreachable, match="; gave up after 3 attempts"):
        b.load(H)  # out of attempts before the budget is spent
    clock.now += 60  # local work (reading files...) while nothing answered
    requests, pauses = inner.requests, len(clock.pauses)
    with pytest.raises(StorageUnreachable, match=r"has not answered for 6\d s \(last error: load: "):
        b.remove(H)  # the lock removal after it: given up, not tried
    assert inner.requests == requests and len(clock.pauses) == pauses


def test_blips_never_spend_the_budget() -> None:
    class Blipping(MemoryBackend):
        """Every other request fails."""

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
            self.n += 1
            if self.n % 2:
                raise TransientStorageError("load: connection reset")
            return super().load(handle, offset, length)

    inner = Blipping()
    inner.save(H, b"data")
    b, clock = budgeted(inner, budget=30, attempts=3)
    for _ in range(200):
        assert b.load(H) == b"data"
    assert clock.now - 1000 > 3 * 30  # far longer than the budget, in blips


def test_a_request_pausing_in_another_thread_stops_when_the_budget_is_spent() -> None:
    inner = Switchable()
    clock = FakeClock()
    pausing = threading.Event()
    b = RetryBackend(inner, attempts=100, budget_s=60, clock=clock, warn=lambda _: pausing.set())
    b.first_pause_s = 3600  # a long first pause (a minute at most): only the budget cuts it short
    inner.down = True
    outcome: list[BaseException] = []

    def upload() -> None:
        try:
            b.save(H, b"data")
        except BaseException as exc:
            outcome.append(exc)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    assert pausing.wait(10)  # the uploader failed once and now pauses (real time, not faked)
    clock.now += 61
    with pytest.raises(StorageUnreachable):
        b.stat(H)  # another thread finds the budget spent...
    uploader.join(10)
    assert not uploader.is_alive()  # ... and the pausing one stops too, without its next try
    assert isinstance(outcome[0], StorageUnreachable) and inner.requests == 1


def test_releasing_the_lock_after_the_budget_makes_no_request_and_no_pause() -> None:
    from coffre.repository.locks import Lock
    from coffre.repository.repo import Repository

    inner = Switchable()
    Repository.init(inner, "pw")
    b, clock = budgeted(inner, budget=120)
    repo = Repository.open(b, "pw")
    lock = Lock(repo, exclusive=False, command="backup").acquire()
    inner.down = True
    with pytest.raises(StorageUnreachable):
        repo.save_object("snapshots", b"x")
    requests, pauses = inner.requests, len(clock.pauses)
    lock.release()
    assert inner.requests == requests and len(clock.pauses) == pauses


def test_a_request_that_runs_out_of_attempts_while_others_succeed_says_only_that() -> None:
    inner = Flaky(100, ("load",))
    inner.failures = 0
    inner.save(H, b"data")
    inner.failures = 100
    other = Handle("data", "cd" + "0" * 62)
    clock = FakeClock()

    def pause(seconds: float) -> None:
        clock.sleep(seconds)
        b.save(other, b"more")  # the storage answers other requests meanwhile

    b = RetryBackend(inner, attempts=4, sleep=pause, budget_s=60, clock=clock)
    with pytest.raises(TransientStorageError) as info:
        b.load(H)
    assert not isinstance(info.value, StorageUnreachable)
    assert info.value.message == "load: connection reset (gave up after 4 attempts)"


@pytest.mark.parametrize("text", ["0", "-5", "soon", "nan", "inf", "90000"])
def test_a_wrong_retry_budget_is_refused(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFRE_STORAGE_RETRY_BUDGET", text)
    with pytest.raises(UsageError, match="COFFRE_STORAGE_RETRY_BUDGET must be a number of seconds"):
        retry_budget()


def test_the_retry_budget_is_read_from_the_environment(repo: Coffre, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFRE_STORAGE_RETRY_BUDGET", "12.5")
    assert retry_budget() == 12.5
    monkeypatch.delenv("COFFRE_STORAGE_RETRY_BUDGET")
    assert retry_budget() == 240
    res = repo("snapshots", env={"COFFRE_STORAGE_RETRY_BUDGET": "2min"})
    assert res.code == 2 and "COFFRE_STORAGE_RETRY_BUDGET must be a number of seconds" in res.err
