"""Tests written for mutants that survived `./run mutation` (issue 19): each asserts a
behaviour a user relies on that no other test pinned down, and fails when the line it
guards is switched off (the mutant it kills is named in its docstring)."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffre.core.clock import FixedClock, format_ns
from coffre.core.errors import EXIT_LOCKED, LockedError
from coffre.repository.locks import STALE_S, Lock, LockInfo, list_locks
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend

from conftest import NOBODY, PASSWORD, AsNobody, Coffre, age_tree, chown_tree

HOUR_NS = 3600 * 10**9

# A running backup's stand-in: holds a shared lock, answers each line on stdin while alive.
# Signals act as they would on a backup started by cron (not as inherited from the runner).
HOLDER = """
import signal, sys
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, signal.SIG_DFL)
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend
lock = Lock(Repository.open(LocalBackend(sys.argv[1]), sys.argv[2]), exclusive=False,
            command="backup").acquire()
print("locked", flush=True)
for line in sys.stdin:
    print("alive", flush=True)
"""


def test_a_prune_does_not_disturb_a_backup_running_on_the_same_machine(repo: Coffre) -> None:
    """Whether a lock's holder still runs is asked with signal 0, which is never delivered:
    any other signal would stop the backup. Kills locks._pid_alive mutmut_5 (os.kill(pid, 1))
    and LockInfo.describe mutmut_5, 8, 9 (a shared lock described as another kind)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo.repo), PASSWORD],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=repo.env)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == b"locked\n"
        repo.ok("prune")  # reads the backup's lock and asks whether its process runs
        holder.stdin.write(b"still there?\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"alive\n"
        # unlock keeps it, and says what it is (kills LockInfo.describe mutmut_5, 8 and 9).
        res = repo.ok("unlock")
        assert f"kept live shared lock by 'backup' (PID {holder.pid} on {socket.gethostname()})" in res.out
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_by_another_users_process_is_alive(shared_dir: Path, repo: Coffre) -> None:
    """A backup run by root (cron) on this machine, seen by a prune run by another user, who
    may not signal root's processes: the lock is alive, prune waits and says who holds it.
    Kills locks._pid_alive mutmut_7 (PermissionError taken for a dead process), and
    LockInfo.describe mutmut_3..7 (which kind of lock blocks)."""
    shutil.copytree(repo.repo, shared_dir / "repo")
    r = Repository.open(LocalBackend(shared_dir / "repo"), PASSWORD)
    # This very test process (root's, and running) holds an exclusive lock.
    held = Lock(r, exclusive=True, command="forget")
    held.info.name = r.save_object("locks", held.info.to_bytes())
    pw = shared_dir / "password"
    shutil.copy(repo.pwfile, pw)
    chown_tree(shared_dir, NOBODY)
    nobody = AsNobody(shared_dir / "repo", pw, shared_dir / "cache")
    res = nobody("prune")
    assert res.code == EXIT_LOCKED, res
    assert "exclusive lock by 'forget'" in res.err
    assert [lk.lock_id for lk in list_locks(r)] == [held.lock_id]  # not removed as stale


def test_the_same_content_twice_in_one_backup_is_stored_once(repo: Coffre, tmp_path: Path) -> None:
    """Deduplication within one backup: a blob claimed by one file is not stored again for
    another with the same content, although it is not in the index yet. Kills
    packer.Packer.claim mutmut_6 (a blob already claimed claimed again)."""
    src = tmp_path / "src"
    (src / "copies").mkdir(parents=True)
    content = random.Random(19).randbytes(200_000)
    for name in ("ordonnance.pdf", "copies/ordonnance.pdf", "copies/ordonnance (2).pdf"):
        (src / name).write_bytes(content)
    age_tree(src)
    repo.ok("backup", str(src))
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    stored = [e.id for entries in r.index.packs().values() for e in entries]
    assert len(stored) == len(set(stored))


# -- locks: which one blocks which -------------------------------------------------------------
def save_lock(r: Repository, *, exclusive: bool, command: str, started_ns: int, refreshed_ns: int,
              below: str | None = None, above: str | None = None) -> str:
    """Store the lock of a process of this machine that runs (this test's), named before
    `below` or after `above` in the listing order (names are hashes: drawn again until so)."""
    while True:
        info = LockInfo("", secrets.token_hex(16), exclusive, socket.gethostname(), os.getpid(),
                        command, started_ns, refreshed_ns)
        name = r.save_object("locks", info.to_bytes())
        if (below is None or name < below) and (above is None or name > above):
            return name
        r.backend.remove(Handle("locks", name))


def test_a_live_exclusive_lock_blocks_prune_whatever_locks_are_listed_before_it(repo: Coffre) -> None:
    """A backup's shared lock and a dead command's stale lock, listed before a live forget's
    exclusive lock, do not hide it: prune refuses, and says when that lock would expire if
    its process were dead. The forget started on a host whose clock is ahead, so only the
    check before prune writes its own lock can see it. Kills Lock._check_exclusive_conflicts
    mutmut_16 and mutmut_18 (the scan stopping at them), mutmut_22 and mutmut_24 (the
    expiry time)."""
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    now = time.time_ns()
    live = save_lock(r, exclusive=True, command="forget", started_ns=now + HOUR_NS, refreshed_ns=now)
    save_lock(r, exclusive=False, command="backup", started_ns=now, refreshed_ns=now, below=live)
    save_lock(r, exclusive=True, command="prune", started_ns=now - 3 * HOUR_NS,
              refreshed_ns=now - 2 * HOUR_NS, below=live)
    res = repo("prune")
    assert res.code == EXIT_LOCKED, res
    assert "the repository is locked: exclusive lock by 'forget'" in res.err
    assert f"(this one at {format_ns(now + STALE_S * 10**9)})" in res.err


class RacingBackend(MemoryBackend):
    """Another exclusive command stores its lock right after ours, having started first, and
    its lock is listed after ours."""

    def __init__(self) -> None:
        super().__init__()
        self.repo: Repository | None = None
        self.rival = ""

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        super().save(handle, data)
        if handle.kind == "locks" and self.repo is not None and not self.rival:
            self.rival = "racing"
            now = self.repo.clock.now_ns()
            self.rival = save_lock(self.repo, exclusive=True, command="forget", started_ns=now - 10**9,
                                   refreshed_ns=now, above=handle.name)


def test_of_two_exclusive_commands_racing_for_the_lock_the_later_backs_off() -> None:
    """Both pass the check before writing their lock; the check after writing makes the one
    that started later withdraw. Kills Lock._check_exclusive_conflicts mutmut_4 (the scan
    stopping at its own lock) and mutmut_20 (no check after writing)."""
    backend = RacingBackend()
    r, _ = Repository.init(backend, PASSWORD, clock=FixedClock(1_700_000_000 * 10**9))
    backend.repo = r
    with pytest.raises(LockedError, match="exclusive lock by 'forget'"):
        Lock(r, exclusive=True, command="prune").acquire()
    assert [lk.name for lk in list_locks(r)] == [backend.rival]  # ours withdrawn, theirs kept


def test_a_recovery_slot_written_as_the_format_says_opens(repo: Coffre, tmp_path: Path) -> None:
    """The recovery key's derivation is part of the format (docs/design.md §2): a slot built
    here from the specification alone, with `cryptography` directly, opens the repository
    through the real command. Kills kdf._kek mutmut_20 (another HKDF label), which would make
    every recovery key already printed useless."""
    import base64
    import hashlib
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from coffre.crypto.kdf import format_recovery_key

    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    raw, salt, nonce = os.urandom(32), os.urandom(32), os.urandom(12)
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"coffre recovery v1").derive(raw)
    data = AESGCM(kek).encrypt(nonce, r.master, b"coffre key v1|" + r.config.id + b"|recovery")
    doc = {"v": 1, "kind": "recovery", "label": "from the spec", "created": "2026-11-30T00:00:00Z",
           "params": {}, "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
           "data": base64.b64encode(data).decode(), "config": r.config_document()}
    body = json.dumps(doc).encode()
    (repo.repo / "keys" / hashlib.sha256(body).hexdigest()).write_bytes(body)
    key_file = tmp_path / "recovery"
    key_file.write_text(format_recovery_key(raw) + "\n")
    key_file.chmod(0o600)
    res = Coffre(repo.repo, key_file, tmp_path / "cache2")("snapshots")
    assert res.code == 0, res
