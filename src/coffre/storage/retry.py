"""Retries for flaky links: a wrapper that runs any backend operation again, with growing
pauses, when it failed for a reason that may pass (a dropped connection, a stuck transfer
that timed out, a busy or restarting server), within a time budget for outages.

Two limits. Each request has `attempts` tries (COFFRE_STORAGE_RETRIES, 10): enough to ride
out a blip. The wrapper, one per command and shared by all its threads, also has a retry
budget (COFFRE_STORAGE_RETRY_BUDGET seconds, 4 minutes by default): how long the storage may
stay unreachable, counted from the start of the first request that failed since the storage
last answered. Any answer starts the count again, so blips never spend it. Once it is spent,
the request that noticed makes no more attempts, paused requests wake and give up, and every
later request of the command (removing the lock...) fails at once without reaching the
storage: a dead server ends the command after the budget, not after one full series of
retries per object in flight.

Safe to retry because every operation is idempotent: saving an object that is already there
with the same bytes succeeds, a listing is read whole before anything is returned, and a
removal retried after a lost answer finds the object already gone. Permanent failures
(permission denied, storage full, not found, a refused login, an SSH host key or a
certificate that cannot be trusted) are raised at once.

Setup errors are not retried either: a connection that cannot be made at all (ConnectFailed:
refused, unknown host, no route, a failed TLS handshake) while the storage has not answered
once during the command means a wrong host or port, or a server that is not running: the
command fails at once with the reason (StorageSetupError), instead of after the budget. Once
the storage has answered, the same failure is a server restarting, and is retried.

The clock and the pause are injected, so tests do not sleep.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from coffre.core.errors import (
    ConnectFailed,
    ObjectNotFound,
    StorageError,
    StorageSetupError,
    StorageUnreachable,
    TransientStorageError,
)
from coffre.core.i18n import N_, _, ngettext
from coffre.storage.base import Backend, Handle, ObjectInfo, seconds_from_env

T = TypeVar("T")
ATTEMPTS = 10
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0  # with 10 attempts: 2 to 4 minutes of trying before a request gives up
BUDGET_S = 240.0
MAX_BUDGET_S = 24 * 3600.0

_HINT_ONE = N_("check the network connection and the storage, then run the command again")
_HINT_DOWN = N_("check the network connection and the storage. Nothing half-done was committed: "
                "the next run resumes where this one stopped")


def retry_budget() -> float:
    """COFFRE_STORAGE_RETRY_BUDGET (seconds), or BUDGET_S."""
    return seconds_from_env("COFFRE_STORAGE_RETRY_BUDGET", BUDGET_S, MAX_BUDGET_S)


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 120:
        return _("{seconds} s").format(seconds=s)
    minutes, rest = divmod(s, 60)
    if rest:
        return _("{minutes} min {seconds} s").format(minutes=minutes, seconds=rest)
    return _("{minutes} min").format(minutes=minutes)


class RetryBackend:
    def __init__(
        self,
        inner: Backend,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], object] | None = None,
        warn: Callable[[str], None] | None = None,
        budget_s: float = BUDGET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.location = inner.location
        self.remote = inner.remote
        self.attempts = attempts
        self.budget_s = budget_s
        self.clock = clock
        self.warn = warn
        self.first_pause_s = FIRST_PAUSE_S
        self.retried = 0
        self._spent = threading.Event()  # set when the budget is spent: ends every pause
        self.sleep: Callable[[float], object] = sleep if sleep is not None else self._spent.wait
        self._state = threading.Lock()
        self._failing_since: float | None = None
        self._last_answer = -math.inf
        self._answers = 0
        self._last_error = ""
        self._gave_up: str | None = None  # the message every request raises once the budget is spent

    def _pause(self, attempt: int) -> float:
        # Full jitter: many pharmacies behind one provider do not retry in step.
        ceiling: float = min(MAX_PAUSE_S, self.first_pause_s * 2.0**attempt)
        return random.uniform(0.5, 1.0) * ceiling  # noqa: S311

    def _run(self, op: Callable[[], T]) -> T:
        answers_before = self._answers
        last_try = False
        for attempt in range(self.attempts):
            self._check_budget(last_try)
            started = self.clock()
            try:
                result = op()
            except ConnectFailed as exc:
                if self._answers == 0:  # never reached during this command: set up wrong
                    raise StorageSetupError(exc.message, exc.hint) from exc
                pause, last_try = self._failed(exc, started, attempt, answers_before)
                self._warn_and_pause(exc, pause, last_try)
            except TransientStorageError as exc:
                pause, last_try = self._failed(exc, started, attempt, answers_before)
                self._warn_and_pause(exc, pause, last_try)
            except StorageError:
                self._answered()  # not found, denied, full...: the storage is there
                raise
            else:
                self._answered()
                return result
        raise AssertionError("unreachable")

    def _warn_and_pause(self, exc: TransientStorageError, pause: float, last_try: bool) -> None:
        if self.warn:
            then = (_("{error}; last try in {seconds} s") if last_try
                    else _("{error}; trying again in {seconds} s"))
            self.warn(then.format(error=exc.message, seconds=f"{pause:.0f}"))
        self.sleep(pause)

    def _check_budget(self, last_try: bool) -> None:
        """Before an attempt: give up without reaching the storage once the budget is spent
        (a request whose pause was cut to the end of the budget still makes that last try)."""
        with self._state:
            if self._gave_up is None and self._failing_since is not None and not last_try:
                down = self.clock() - self._failing_since
                if down >= self.budget_s:
                    self._give_up(down)
            if self._gave_up is not None:
                raise StorageUnreachable(self._gave_up, _(_HINT_DOWN))

    def _failed(
        self, exc: TransientStorageError, started: float, attempt: int, answers_before: int
    ) -> tuple[float, bool]:
        """Note a transient failure; raise if this request, or the command, is out of time.
        Returns the pause before the next attempt, and whether that attempt is the last."""
        with self._state:
            now = self.clock()
            # Down since the failed request was sent, unless the storage answered after that.
            since = max(started, self._last_answer)
            if self._failing_since is None or since < self._failing_since:
                self._failing_since = since
            self._last_error = exc.message
            down = now - self._failing_since
            if self._gave_up is None and down >= self.budget_s:
                self._give_up(down)
            if self._gave_up is not None:
                raise StorageUnreachable(self._gave_up, _(_HINT_DOWN)) from exc
            if attempt + 1 >= self.attempts:
                if self._answers == answers_before:  # nothing answered while this request tried
                    raise StorageUnreachable(ngettext(
                        "{unreachable} after {n} attempt", "{unreachable} after {n} attempts",
                        self.attempts).format(unreachable=self._unreachable(down), n=self.attempts),
                        _(_HINT_DOWN)) from exc
                raise TransientStorageError(ngettext(
                    "{error} (gave up after {n} attempt)", "{error} (gave up after {n} attempts)",
                    self.attempts).format(error=exc.message, n=self.attempts), _(_HINT_ONE)) from exc
            self.retried += 1
            left = self._failing_since + self.budget_s - now
            pause = self._pause(attempt)
            return (left, True) if left <= pause else (pause, False)

    def _unreachable(self, down: float) -> str:
        return _("the storage at {location} has not answered for {duration} (last error: {error}); "
                 "gave up").format(location=self.location, duration=_duration(down), error=self._last_error)

    def _give_up(self, down: float) -> None:
        self._gave_up = self._unreachable(down)
        self._spent.set()

    def _answered(self) -> None:
        with self._state:
            self._failing_since = None
            self._last_answer = self.clock()
            self._answers += 1

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self._run(lambda: self.inner.save(handle, data))

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self._run(lambda: self.inner.load(handle, offset, length))

    def stat(self, handle: Handle) -> ObjectInfo:
        return self._run(lambda: self.inner.stat(handle))

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        return iter(self._run(lambda: list(self.inner.list(kind))))

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

        self._run(once)

    def exists(self) -> bool:
        return self._run(self.inner.exists)

    def create(self) -> None:
        self._run(self.inner.create)

    def clean_temporaries(self, older_than_ns: int) -> int:
        return self._run(lambda: self.inner.clean_temporaries(older_than_ns))

    def free_space(self) -> int | None:
        return self.inner.free_space()

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        self.inner.will_read(handle, offset, length)

    def close(self) -> None:
        self.inner.close()
