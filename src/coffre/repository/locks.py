"""Locks: leases that let backups run side by side and keep prune from deleting what a
running operation may need.

- Shared locks (backup, restore, check, verify, ...) never wait for anything.
- Exclusive locks (prune, forget, repair) exclude each other only.
- A lock is refreshed every REFRESH_S; one not refreshed for STALE_S, or whose process is
  gone on this host, is stale and ignored. A holder that could not refresh for
  STALE_S - SAFETY_S must stop writing: `check_lease()` raises.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

from coffre.core.errors import CoffreError, FormatError, LockedError, ObjectNotFound, StorageError
from coffre.format.codec import decode, encode, want, want_int, want_map
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

REFRESH_S = 5 * 60
STALE_S = 30 * 60
SAFETY_S = 5 * 60
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
        kind = "exclusive" if self.exclusive else "shared"
        return f"{kind} lock by '{self.command}' (PID {self.pid} on {self.hostname})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(lock: LockInfo, now_ns: int) -> bool:
    if now_ns - lock.refreshed_ns > STALE_S * _NS:
        return True
    return lock.hostname == socket.gethostname() and not _pid_alive(lock.pid)


def list_locks(repo: Repository) -> list[LockInfo]:
    """Every readable lock. Unreadable lock files are treated as live (fail safe)."""
    out = []
    for name in repo.list_names("locks"):
        try:
            out.append(LockInfo.from_bytes(name, repo.load_object("locks", name)))
        except ObjectNotFound:
            continue
        except FormatError:
            out.append(LockInfo(name, name, True, "?", 0, "unreadable lock", 0, 2**62))
    return out


def live_locks(repo: Repository) -> list[LockInfo]:
    now = repo.clock.now_ns()
    return [lk for lk in list_locks(repo) if not is_stale(lk, now)]


class Lock:
    def __init__(self, repo: Repository, exclusive: bool, command: str) -> None:
        self.repo = repo
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

    @property
    def lock_id(self) -> str:
        return self.info.lock_id

    def acquire(self) -> Lock:
        if self.info.exclusive:
            self._check_exclusive_conflicts(before_write=True)
        self.info.name = self.repo.save_object("locks", self.info.to_bytes())
        if self.info.exclusive:
            try:
                self._check_exclusive_conflicts(before_write=False)
            except LockedError:
                self._remove_own()
                raise
        self._thread = threading.Thread(target=self._refresher, name="lock-refresh", daemon=True)
        self._thread.start()
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
                raise LockedError(
                    f"the repository is locked: {lk.describe()}",
                    "wait for it to finish; a lock from a dead process expires by itself",
                )

    def _refresher(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:
                self.refresh_error = exc

    def refresh(self) -> None:
        with self._mutex:
            old = self.info.name
            renewed = dataclasses.replace(self.info, refreshed_ns=self.repo.clock.now_ns())
            renewed.name = self.repo.save_object("locks", renewed.to_bytes())
            # Only a lock others can read counts as renewed.
            self.info = renewed
            self.refresh_error = None
            if old and old != self.info.name:
                try:
                    self.repo.backend.remove(Handle("locks", old))
                except ObjectNotFound:
                    pass

    def check_lease(self) -> None:
        """Raise if the lock may have been seen as stale by others: stop writing then."""
        age = self.repo.clock.now_ns() - self.info.refreshed_ns
        if age > REFRESH_S * _NS:
            try:  # the refresher may be late (a suspended machine): try once now
                self.refresh()
            except Exception as exc:
                self.refresh_error = exc
            age = self.repo.clock.now_ns() - self.info.refreshed_ns
        if age > (STALE_S - SAFETY_S) * _NS:
            raise CoffreError(
                "the repository lock could not be renewed in time; stopping before writing more",
                "check the connection to the repository and run the command again",
            )

    def _remove_own(self) -> None:
        if self.info.name:
            try:
                self.repo.backend.remove(Handle("locks", self.info.name))
            except StorageError:
                pass

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
