"""Tombstones: `forget` leaves an encrypted record naming the snapshots it removed
(`forgotten/`), so the other machines sharing the repository tell a forget from a deletion by
the storage; `check` authenticates each (docs/design.md §8.1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from coffre.core.errors import FormatError, StorageFull
from coffre.format.codec import encode
from coffre.format.snapshot import Snapshot
from coffre.format.tombstone import MAX_IDS, decode_tombstone, encode_tombstone
from coffre.ops.forget import remove_snapshots
from coffre.repository.repo import Repository
from coffre.repository.tombstones import load_tombstone, save_tombstones, tombstone_names
from coffre.storage.base import Backend, Handle, Wrapper
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids


def test_tombstones_name_ids_only_and_are_validated() -> None:
    ids = ["ab" * 32, "cd" * 32]
    assert decode_tombstone(encode_tombstone(ids)) == ids
    for bad in ({"v": 2, "snapshots": [b"\0" * 32]}, {"v": 1, "snapshots": []},
                {"v": 1, "snapshots": [b"\0" * 31]}, {"v": 1, "snapshots": "x"}, [1]):
        with pytest.raises(FormatError):
            decode_tombstone(encode(bad))
    with pytest.raises(FormatError):
        decode_tombstone(encode({"v": 1, "snapshots": [b"\0" * 32] * (MAX_IDS + 1)}))


def test_a_large_forget_writes_several_tombstones(monkeypatch: pytest.MonkeyPatch) -> None:
    import coffre.repository.tombstones as t

    repo, _ = Repository.init(MemoryBackend(), "pw")
    monkeypatch.setattr(t, "MAX_IDS", 2)
    ids = [f"{i:x}" * 64 for i in range(5)]
    names = save_tombstones(repo, ids)
    assert len(names) == 3
    assert sorted(i for n in names for i in load_tombstone(repo, n)) == ids
    # Another object kind's envelope under that name does not authenticate as a tombstone.
    raw = repo.backend.load(Handle("forgotten", names[0]))
    repo.backend.save(Handle("snapshots", names[0]), raw)
    with pytest.raises(FormatError):
        repo.load_object("snapshots", names[0])


def test_forget_leaves_a_tombstone_naming_what_it_removed(repo: Coffre, tree: Path) -> None:
    for i in range(2):
        (tree / f"f{i}").write_bytes(os.urandom(1000))
        age_tree(tree)
        repo.ok("backup", str(tree))
    old = snapshot_ids(repo)[0]
    repo.ok("forget", old[:8], "--prune")
    opened = Repository.open(LocalBackend(repo.repo), PASSWORD)
    (name,) = tombstone_names(opened)
    assert load_tombstone(opened, name) == [old]
    repo.ok("check", "--read-data")


def test_a_damaged_tombstone_is_a_check_error(repo: Coffre) -> None:
    junk = os.urandom(200)
    LocalBackend(repo.repo).save(Handle("forgotten", hashlib.sha256(junk).hexdigest()), junk)
    res = repo("check")
    assert res.code == 1 and "forget record forgotten/" in res.out, res


class FullFor(Wrapper):
    """A medium with no room for the next `times` tombstones."""

    def __init__(self, inner: Backend, times: int) -> None:
        super().__init__(inner)
        self.times = times

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        if handle.kind == "forgotten" and self.times:
            self.times -= 1
            raise StorageFull("no space left on the backup medium")
        super().save(handle, data)


@pytest.mark.parametrize("full_for", [1, 2])
def test_on_a_full_medium_the_tombstone_follows_the_removal(full_for: int) -> None:
    repo, _ = Repository.init(MemoryBackend(), "pw")
    sid = repo.save_snapshot(Snapshot(time_ns=1, hostname="h", username="", paths=["/"], tree=b"\1" * 32))
    repo.backend = FullFor(repo.backend, full_for)
    said: list[str] = []
    remove_snapshots(repo, [sid], said.append)
    assert repo.list_names("snapshots") == []
    if full_for == 1:  # the removal freed enough
        (name,) = tombstone_names(repo)
        assert load_tombstone(repo, name) == [sid] and said == []
    else:
        assert tombstone_names(repo) == []
        assert "will report this snapshot as vanished" in said[0]  # one snapshot
