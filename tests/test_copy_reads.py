"""What a copy with shared keys reads from the source: each pack's missing blobs with one
request for neighbours, several requests at once, and never a blob the destination has."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from coffre.ops.copy import Copier
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend
from test_restore_reads import backup

from conftest import tree_digest


class Counting(LocalBackend):
    """A local repository that counts its data reads and how many run at once (each made slow,
    as over a network, when `remote`)."""

    def __init__(self, path: Path, remote: bool = False) -> None:
        super().__init__(path)
        self.remote = remote
        self.reads: list[tuple[str, int]] = []
        self.running = self.most = 0
        self._lock = threading.Lock()

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if handle.kind != "data":
            return super().load(handle, offset, length)
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.remote:
                time.sleep(0.02)  # a round trip: lets the other readers start meanwhile
            data = super().load(handle, offset, length)
        finally:
            with self._lock:
                self.running -= 1
        with self._lock:
            self.reads.append((handle.name, len(data)))
        return data


def copy(source: LocalBackend, target: LocalBackend) -> None:
    src, dst = Repository.open(source, "pw"), Repository.open(target, "autre")
    src.load_index()
    dst.load_index()
    with Lock(dst, exclusive=False, command="copy") as lock:
        Copier(src, dst, lock).run(src.snapshots())


def test_a_copy_reads_each_packs_blobs_together_and_only_what_the_destination_lacks(tmp_path: Path) -> None:
    rnd = random.Random(18)
    src = tmp_path / "src"
    src.mkdir()
    for n in range(300):
        (src / f"ordonnance-{n:03}.txt").write_bytes(rnd.randbytes(rnd.randrange(2000, 20_000)))
    source = Counting(tmp_path / "nas", remote=True)
    origin = Repository.init(source, "pw", pack_size=1024 * 1024)[0]
    backup(source, src)
    target = Counting(tmp_path / "off-site")
    assert origin.content_secret is not None
    Repository.init(target, "autre", chunker=origin.config.chunker, content=origin.content_secret)
    packs = {info.name: info.size for info in source.list("data")}
    assert len(packs) >= 3  # several packs, read side by side
    source.reads.clear()
    copy(source, target)
    # The folder listings are read one by one (7 trees: the path down to src), then the 300
    # files' blobs with one request per pack, each pack's bytes read once.
    assert len(source.reads) <= len(packs) + 8, source.reads
    assert sum(n for _, n in source.reads) <= sum(packs.values()) + 64_000  # the trees twice
    assert source.most > 1  # several packs read at once
    # A day later: a few files more; the copy reads only the new pack, not what the
    # destination already has.
    for n in range(300, 305):
        (src / f"ordonnance-{n:03}.txt").write_bytes(rnd.randbytes(5000))
    backup(source, src)
    new = {info.name for info in source.list("data")} - set(packs)
    source.reads.clear()
    copy(source, target)
    assert {name for name, _ in source.reads} == new, source.reads
    restored = tmp_path / "restored"
    repo = Repository.open(target, "autre")
    repo.load_index()
    assert not Restorer(repo, RestoreOptions(target=str(restored))).run(repo.snapshots()[-1]).errors
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
