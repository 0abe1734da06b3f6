"""Locks: leases that let backups run side by side and keep prune from deleting what a
running operation may need.

- Shared locks (backup, restore, check, verify, ...) never wait for anything.
- Exclusive locks (prune, forget, repair) exclude each other only.
- A lock is refreshed every REFRESH_S; one not refreshed for STALE_S, or whose process is
  gone on this host, is stale and ignored. A lock file that cannot be read (emptied,
  damaged) is judged by the time the storage last wrote it.
- A holder whose lock others may have judged stale must not commit: `check_lease()` raises
  LeaseExpired when STALE_S - SAFETY_S may have passed since its last renewal, by any of
  three clocks: the wall clock others compare with, a clock that counts suspended time
  (a laptop asleep, a paused VM), and the storage's own times of its lock objects. The
  lapse is measured before renewing, never after.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coffre.core import forks
from coffre.core.errors import CoffreError, FormatError, LockedError, ObjectNotFound, StorageError
from coffre.core.human import human_time
from coffre.core.i18n import _, ngettext
from coffre.core.posix import pid_alive
from coffre.format.codec import decode, encode, want, want_int, want_map
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

REFRESH_S = 5 * 60
STALE_S = 30 * 60
# A commit may take the storage's retry budget plus a stalled request (4 + 2 min) after its
# lease was checked, and hosts' clocks may differ by a few minutes: the margin covers both.
SAFETY_S = 10 * 60
LEASE_S = STALE_S - SAFETY_S  # past this since the last renewal, committing is unsafe
_NS = 1_000_000_000


@dataclass
class LockInfo:
    name: str
    lock_id: str
    exclusive: bool
    hostname: str
    pid: int
    command: str
    started_ns: int
    refreshed_ns: int

    def to_bytes(self) -> bytes:
        return encode(
            {
                "v": 1,
                "id": self.lock_id,
                "exclusive": self.exclusive,
                "hostname": self.hostname,
                "pid": self.pid,
                "command": self.command,
                "started": self.started_ns,
                "refreshed": self.refreshed_ns,
            }
        )

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> LockInfo:
        d: dict[str, Any] = want_map(decode(data, "lock"), "lock")
        if d.get("v") != 1:
            raise FormatError("lock: unknown version")
        return cls(
            name=name,
            lock_id=want(d.get("id"), str, "lock id"),
            exclusive=bool(d.get("exclusive")),
            hostname=want(d.get("hostname"), str, "lock host"),
            pid=want_int(d.get("pid"), "lock pid"),
            command=want(d.get("command", ""), str, "lock command"),
            started_ns=want_int(d.get("started"), "lock time"),
            refreshed_ns=want_int(d.get("refreshed"), "lock time"),
        )

    def describe(self) -> str:
        if self.command == UNREADABLE:
            return _("an unreadable lock file locks/{name} (emptied or damaged)").format(name=self.name[:12])
        kind = _("exclusive lock by {command} (PID {pid} on {host})") if self.exclusive \
            else _("shared lock by {command} (PID {pid} on {host})")
        return kind.format(command=f"'{self.command}'", pid=self.pid, host=self.hostname)


UNREADABLE = "unreadable lock file"


def boottime() -> float:
    """Seconds on a clock that is never set and keeps counting while the machine is
    suspended (Linux's CLOCK_BOOTTIME; the monotonic clock elsewhere)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


class LeaseExpired(CoffreError):
    """The lock may have been judged stale by others (a suspended machine, a lost link)."""


def is_stale(lock: LockInfo, now_ns: int) -> bool:
    if now_ns - lock.refreshed_ns > STALE_S * _NS:
        return True
    return lock.hostname == socket.gethostname() and not pid_alive(lock.pid)


def list_locks(repo: Repository) -> list[LockInfo]:
    """Every lock. A lock file that cannot be read is an exclusive lock of unknown owner,
    refreshed when the storage last wrote it: it blocks like a live one, then goes stale
    after the normal margin (fail safe, but never forever)."""
    out = []
    for info in sorted(repo.backend.list("locks"), key=lambda i: i.name):
        try:
            out.append(LockInfo.from_bytes(info.name, repo.load_object("locks", info.name)))
        except ObjectNotFound:
            continue
        except FormatError:
            # A storage that gives no time (some FTP servers): the lock blocks until removed
            # by hand (unlock --remove-all), never goes stale at once.
            written = info.mtime_ns or repo.clock.now_ns()
            out.append(LockInfo(info.name, info.name, True, "?", 0, UNREADABLE, written, written))
    return out


def live_locks(repo: Repository) -> list[LockInfo]:
    now = repo.clock.now_ns()
    return [lk for lk in list_locks(repo) if not is_stale(lk, now)]


class Lock:
    def __init__(
        self, repo: Repository, exclusive: bool, command: str, mono: Callable[[], float] = boottime
    ) -> None:
        self.repo = repo
        self.mono = mono
        now = repo.clock.now_ns()
        self.info = LockInfo(
            name="",
            lock_id=secrets.token_hex(16),
            exclusive=exclusive,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            command=command,
            started_ns=now,
            refreshed_ns=now,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.refresh_error: Exception | None = None
        self._renewed_mono = mono()  # when the lock last became readable to others
        self._stored_ns: int | None = None  # the storage's time of the last lock object
        self._objects: set[str] = set()  # lock objects this command may have stored
        self.lapse: str | None = None  # why the lease may have expired, once it may have

    @property
    def lock_id(self) -> str:
        return self.info.lock_id

    def acquire(self) -> Lock:
        if self.info.exclusive:
            self._check_exclusive_conflicts(before_write=True)
        started = self.mono()
        self.info.name = self._store(self.info)
        self._renewed_mono = started
        self._stored_ns = self._storage_time(self.info.name)
        if self.info.exclusive:
            try:
                self._check_exclusive_conflicts(before_write=False)
            except LockedError:
                self._remove_own()
                raise
        refresher = threading.Thread(target=self._refresher, name="lock-refresh", daemon=True)
        refresher.start()
        # Known to release() only once started: an interruption inside start() must not make
        # release() join a thread that never ran (the stop event ends it if it did).
        self._thread = refresher
        return self

    def _check_exclusive_conflicts(self, before_write: bool) -> None:
        now = self.repo.clock.now_ns()
        for lk in list_locks(self.repo):
            if lk.lock_id == self.info.lock_id:
                continue
            if is_stale(lk, now):
                if before_write:
                    try:
                        self.repo.backend.remove(Handle("locks", lk.name))
                    except StorageError:
                        pass
                continue
            if not lk.exclusive:
                continue
            # Two exclusive lockers racing: the older one (then the smaller id) wins.
            mine = (self.info.started_ns, self.info.lock_id)
            if before_write or (lk.started_ns, lk.lock_id) < mine:
                expires = human_time(lk.refreshed_ns + STALE_S * _NS)
                raise LockedError(
                    _("the repository is locked: {lock}").format(lock=lk.describe()),
                    _("wait for it to finish; a lock left by a dead process expires by itself "
                      "(this one at {expires}), or 'coffre unlock --remove-all' removes it now if "
                      "no other Coffre command is running").format(expires=expires),
                )

    def _refresher(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                with forks.quiet():  # a restore's processes are never copied mid-renewal
                    self.refresh()
            except Exception as exc:
                self.refresh_error = exc

    def refresh(self) -> None:
        """Write the lock anew. First notes whether it may have lapsed meanwhile (the lapse
        is measured before renewing, never hidden by it)."""
        with self._mutex:
            self._note_lapse()
            self._write_renewed()

    def _write_renewed(self) -> None:
        old = self.info.name
        started = self.mono()
        renewed = dataclasses.replace(self.info, refreshed_ns=self.repo.clock.now_ns())
        renewed.name = self._store(renewed)
        # Only a lock others can read counts as renewed.
        self.info = renewed
        self._renewed_mono = started
        self.refresh_error = None
        stored = self._storage_time(renewed.name)
        gap = stored - self._stored_ns if stored is not None and self._stored_ns is not None else 0
        if gap > LEASE_S * _NS and self.lapse is None:
            minutes = gap // (60 * _NS)
            self.lapse = ngettext("the storage's clock shows {n} minute between two renewals of this "
                                  "command's lock",
                                  "the storage's clock shows {n} minutes between two renewals of this "
                                  "command's lock", minutes).format(n=minutes)
        self._stored_ns = stored
        if old and old != self.info.name:
            try:
                self.repo.backend.remove(Handle("locks", old))
            except ObjectNotFound:
                pass
            self._objects.discard(old)

    def _store(self, info: LockInfo) -> str:
        """Write a lock object; its name. The name is known before the write starts, so that
        an interruption (SIGTERM) landing during the write, or just after it, still leaves
        release() the object to remove, never a live-looking lock left for half an hour."""
        name, envelope = self.repo.seal_object("locks", info.to_bytes())
        self._objects.add(name)
        self.repo.backend.save(Handle("locks", name), envelope)
        return name

    def _storage_time(self, name: str) -> int | None:
        """The storage's own time of a lock object it just wrote (None if it cannot say)."""
        try:
            return self.repo.backend.stat(Handle("locks", name)).mtime_ns or None
        except StorageError:
            return None

    def _note_lapse(self) -> None:
        """Record why the lease may have expired, if it may have, by the wall clock (what
        others compare with) or the clock that counts suspended time."""
        if self.lapse is not None:
            return
        wall = self.repo.clock.now_ns() - self.info.refreshed_ns
        mono = self.mono() - self._renewed_mono
        if wall > LEASE_S * _NS:
            minutes = wall // (60 * _NS)
            self.lapse = ngettext("this command's lock was last renewed {n} minute ago",
                                  "this command's lock was last renewed {n} minutes ago",
                                  minutes).format(n=minutes)
        elif mono > LEASE_S:
            minutes = int(mono // 60)
            self.lapse = ngettext(
                "this command's lock was last renewed {n} minute ago (the machine was suspended or "
                "the process stopped)",
                "this command's lock was last renewed {n} minutes ago (the machine was suspended or "
                "the process stopped)", minutes).format(n=minutes)

    def check_lease(self) -> None:
        """Raise LeaseExpired if the lock may have been seen as stale by others: stop before
        committing then. Otherwise renew it now, so what follows (the commit) starts a fresh
        lease, and so the storage's clock is consulted even when both local clocks were
        frozen (a paused VM). A renewal that fails leaves the lease as it was: younger than
        LEASE_S, which leaves the commit the time SAFETY_S allows."""
        with self._mutex:
            self._note_lapse()
            if self.lapse is None:
                try:
                    self._write_renewed()
                except Exception as exc:
                    self.refresh_error = exc
            if self.lapse is not None:
                raise LeaseExpired(
                    _("{reason}: others may have taken this command for dead").format(reason=self.lapse),
                    _("check the connection to the repository and run the command again"),
                )

    def renew(self) -> None:
        """After a lapse: take the lease again (a new lock object, live from now on). The
        caller must then check that nothing it relies on was removed meanwhile."""
        with self._mutex:
            self._write_renewed()
            self.lapse = None

    def _remove_own(self) -> None:
        for name in sorted(self._objects):
            try:
                self.repo.backend.remove(Handle("locks", name))
            except StorageError:
                continue
            self._objects.discard(name)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._mutex:
            self._remove_own()

    def __enter__(self) -> Lock:
        return self.acquire() if not self.info.name else self

    def __exit__(self, *exc: object) -> None:
        self.release()
