"""Small files restored by copies of the restore process (ops/restoreprocs.py): what the
copies restore and count comes back to the command, as the threads' would; a copy that dies
costs the files it had not answered for, reported, never a hang or a success; from remote
storage, a copy reads through the parent and never on the connections it inherited."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffre.core.progress import Progress
from coffre.ops import restoreprocs
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.base import Backend
from coffre.storage.local import LocalBackend
from coffre.storage.url import open_backend
from test_storage import fresh_s3_url

from conftest import age_tree, tree_digest

FILES = 300  # small files, in 10 folders


def small_tree(src: Path) -> Path:
    rnd = random.Random(5)
    for f in range(10):
        folder = src / f"dossier-{f}"
        folder.mkdir(parents=True)
        for i in range(FILES // 10):
            (folder / f"f-{f}-{i:03d}.txt").write_bytes(
                f"ordonnance {f} {i}\n".encode() * rnd.randrange(1, 800))
    (src / "base.db").write_bytes(rnd.randbytes(3_000_000))  # a large file: the parent's threads
    os.link(src / "dossier-0" / "f-0-000.txt", src / "lien")
    os.symlink("dossier-1", src / "raccourci")
    os.chmod(src / "dossier-2" / "f-2-000.txt", 0o640)
    age_tree(src)
    return src


def backed_up(tmp_path: Path, backend: Backend | None = None) -> tuple[Repository, Path]:
    src = small_tree(tmp_path / "src")
    backend = backend or LocalBackend(tmp_path / "repo")
    Repository.init(backend, "pw")
    repo = Repository.open(backend, "pw")
    with Lock(repo, exclusive=False, command="backup") as lock:
        Backup(repo, lock, BackupOptions(paths=[str(src)], host="h")).run()
    repo = Repository.open(backend, "pw")
    repo.load_index()
    return repo, src


def restorer(repo: Repository, target: Path, processes: bool, batch_files: int | None = None,
             progress: Progress | None = None) -> Restorer:
    r = Restorer(repo, RestoreOptions(target=str(target), processes=processes),
                 **({"progress": progress} if progress else {}))
    if batch_files:
        r.batch_files = batch_files  # several batches, spread over the copies
    return r


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per copy of the process made."""
    made: list[int] = []
    fork = restoreprocs.forks.fork
    monkeypatch.setattr(restoreprocs.forks, "fork", lambda: made.append(1) or fork())
    return made


def test_copies_restore_and_count_what_threads_do(tmp_path: Path, made: list[int]) -> None:
    repo, src = backed_up(tmp_path)
    progress = Progress()
    copies = restorer(repo, tmp_path / "copies", True, batch_files=40, progress=progress)
    problems = copies.run(repo.snapshots()[0])
    assert made == [1, 1]  # the default two workers: two copies
    assert problems.errors == []
    assert tree_digest(tmp_path / "copies" / src.relative_to("/")) == tree_digest(src)
    threads = restorer(repo, tmp_path / "threads", False, batch_files=40)
    threads.run(repo.snapshots()[0])
    assert copies.stats == threads.stats
    assert copies.stats.files == FILES + 2  # the large file and the hard link's other name
    status = progress.status()
    assert (status.files_done, status.bytes_done) == (copies.stats.files, copies.stats.bytes)
    lien = tmp_path / "copies" / src.relative_to("/") / "lien"
    assert lien.stat().st_nlink == 2


def damage_one_file(repo: Repository, src: Path, stored: Path) -> Path:
    """Flip a byte in the middle of one small file's stored blob (in its pack under
    `stored`, the repository's folder); the file."""
    damaged = src / "dossier-3" / "f-3-004.txt"
    loc = repo.index.lookup(repo.crypter.blob_id(damaged.read_bytes()))
    assert loc is not None
    pack = next(stored.rglob(loc.pack.hex()))
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(loc.entry.offset + loc.entry.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return damaged


def test_a_damaged_file_restored_by_a_copy_is_reported(tmp_path: Path, made: list[int]) -> None:
    repo, src = backed_up(tmp_path)
    damaged = damage_one_file(repo, src, tmp_path / "repo")
    r = restorer(repo, tmp_path / "out", True, batch_files=40)
    problems = r.run(repo.snapshots()[0])
    assert made == [1, 1]
    assert len(problems.errors) == 1 and "f-3-004.txt" in problems.errors[0]
    assert (r.stats.files, r.stats.files_failed) == (FILES + 1, 1)
    assert not (tmp_path / "out" / damaged.relative_to("/")).exists()


def test_a_copy_that_dies_costs_its_files_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, src = backed_up(tmp_path)
    parent = os.getpid()
    restore_file = Restorer._restore_file

    def dying(self: Restorer, path: bytes, *args: object) -> None:
        if os.getpid() != parent and path.endswith(b"/f-4-007.txt"):
            os.kill(os.getpid(), signal.SIGKILL)
        restore_file(self, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Restorer, "_restore_file", dying)
    r = restorer(repo, tmp_path / "out", True, batch_files=40)
    problems = r.run(repo.snapshots()[0])
    assert len(problems.errors) == 1
    assert "SIGKILL" in problems.errors[0] and "restore again" in problems.errors[0]
    assert 1 <= r.stats.files_failed <= 2 * 40  # the batches it held
    assert r.stats.files + r.stats.files_failed == FILES + 2
    out = tmp_path / "out" / src.relative_to("/")
    restored = tree_digest(out)
    whole = tree_digest(src)
    complete = [p for p, entry in restored.items() if entry[0] == "file" and entry == whole[p]]
    assert len(complete) >= r.stats.files  # every file counted restored is there, whole



@pytest.fixture(params=["s3", "sftp"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        backend = open_backend(fresh_s3_url(request.getfixturevalue("seaweedfs")))
    else:  # one SSH connection, its transport run by a thread the copies do not have
        request.getfixturevalue("ssh_env")
        backend = open_backend(request.getfixturevalue("sshd").url(str(tmp_path / "nas")))
    yield backend
    backend.close()


def test_copies_restore_from_remote_storage_through_the_parent(
    tmp_path: Path, remote: Backend, made: list[int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, src = backed_up(tmp_path, remote)
    parent = os.getpid()
    inner: Any = remote.inner if hasattr(remote, "inner") else remote
    load = type(inner).load

    def parent_only(self: Any, *args: Any, **kwargs: Any) -> bytes:
        if os.getpid() != parent:  # a copy writing on the parent's connection would corrupt it
            os._exit(99)
        return load(self, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(type(inner), "load", parent_only)
    r = restorer(repo, tmp_path / "copies", True, batch_files=40)
    problems = r.run(repo.snapshots()[0])
    assert made == [1, 1]  # the cores asked for, not the remote threads
    assert problems.errors == []
    assert r.stats.files == FILES + 2
    assert tree_digest(tmp_path / "copies" / src.relative_to("/")) == tree_digest(src)
    repo.load_index()  # the parent's connections still work after its copies ended


def test_a_large_file_first_in_the_walk_does_not_keep_the_copies_waiting(
    tmp_path: Path, made: list[int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The large file's ranges wait until a copy has answered for a batch of small files:
    that happens only if the walk reaches the small files while the threads hold the ranges."""
    repo, src = backed_up(tmp_path)
    answered = threading.Event()
    add_counts, restore_range = Restorer.add_counts, Restorer._restore_range
    late: list[bool] = []

    def counted(self: Restorer, counts: restoreprocs.Counts) -> None:
        add_counts(self, counts)
        answered.set()

    def waiting(self: Restorer, *args: Any) -> None:
        if not late and not answered.wait(30):
            late.append(True)  # once: the walk waited for this range instead
        restore_range(self, *args)

    monkeypatch.setattr(Restorer, "add_counts", counted)
    monkeypatch.setattr(Restorer, "_restore_range", waiting)
    r = restorer(repo, tmp_path / "out", True, batch_files=40)
    r.range_blobs = 1  # base.db, first in the walk, in ranges of one blob
    r._slots = threading.BoundedSemaphore(1)  # one range queued at a time
    problems = r.run(repo.snapshots()[0])
    assert made == [1, 1]
    assert late == [] and problems.errors == []
    assert tree_digest(tmp_path / "out" / src.relative_to("/")) == tree_digest(src)


def test_a_damaged_file_restored_by_a_copy_from_remote_storage_is_reported(
    tmp_path: Path, sshd: Any, ssh_env: dict[str, str], made: list[int],
) -> None:
    """The copy's reads through the parent, its checks and its fallback to the blob alone
    (Repository.load_blob, asked too) end as with threads: that file reported, the rest whole."""
    nas = tmp_path / "nas"
    remote = open_backend(sshd.url(str(nas)))
    try:
        repo, src = backed_up(tmp_path, remote)
        damaged = damage_one_file(repo, src, nas)
        r = restorer(repo, tmp_path / "out", True, batch_files=40)
        problems = r.run(repo.snapshots()[0])
        assert made == [1, 1]
        assert len(problems.errors) == 1 and "f-3-004.txt" in problems.errors[0]
        assert (r.stats.files, r.stats.files_failed) == (FILES + 1, 1)
        out = tmp_path / "out" / src.relative_to("/")
        assert not (out / damaged.relative_to(src)).exists()
        neighbour = Path("dossier-3") / "f-3-005.txt"
        assert (out / neighbour).read_bytes() == (src / neighbour).read_bytes()
    finally:
        remote.close()
