"""Tombstones: `forget` leaves an encrypted record naming the snapshots it removed
(`forgotten/`), so the other machines sharing the repository tell a forget from a deletion by
the storage; `check` authenticates each (docs/design.md §8.1)."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

from coffre.core.errors import FormatError, StorageFull
from coffre.format.codec import encode
from coffre.format.snapshot import Snapshot
from coffre.format.tombstone import MAX_IDS, decode_tombstone, encode_tombstone
from coffre.ops.check import DataPass, in_share
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


# -- forget records a machine has read: read again with the data, as packs' bytes ---------------


def _records(repo: Coffre, n: int) -> list[str]:
    """`n` forget records in the repository (each naming a snapshot id no snapshot has)."""
    opened = Repository.open(LocalBackend(repo.repo), PASSWORD)
    return [save_tombstones(opened, [os.urandom(32).hex()])[0] for _ in range(n)]


def _damage(repo: Coffre, name: str) -> None:
    path = Path(repo.repo) / "forgotten" / name
    path.chmod(0o600)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    path.write_bytes(bytes(raw))


def test_a_forget_record_read_here_is_read_again_with_the_data(repo: Coffre, tmp_path: Path) -> None:
    """Forget records are never removed, one a day for years: a check with a share of the data
    reads again those this machine has read intact only when their names fall in the share's arc
    of the name space, so a nightly check does not read a year of them, and a turn of shares
    reads each. A check of every pack reads every record. One found damaged is no longer held
    as read: every check and every opening says so from then on."""
    days = tmp_path / "days"
    days.mkdir()
    for day in range(6):  # six backups: six data packs of the same size, no share reads all
        (days / f"scan-{day}.pdf").write_bytes(os.urandom(400_000))
        age_tree(days)
        repo.ok("backup", str(days))
    names = _records(repo, 12)
    every = repo.ok("check", "--json").json()  # every pack hashed: every record read
    assert (every["forget_records_read"], every["forget_records_known"]) == (12, 0), every
    victim = names[5]
    _damage(repo, victim)
    after, found_at = "", None
    for turn in range(4):  # a turn of shares of 34 %, and one more
        res = repo("check", "--read-data-subset", "34%", "--json")
        summary = res.json()
        assert summary["packs_read"] < summary["packs_total"], summary
        arc = [n for n in names if in_share(n, after, summary["share_end"])]
        covered, unmarked = victim in arc, found_at is not None
        assert summary["forget_records_read"] == len(arc) + (unmarked and not covered), (turn, summary)
        assert summary["forget_records_read"] + summary["forget_records_known"] == 12, summary
        said = f"forget record forgotten/{victim[:12]}"
        found = res.code == 1 and any(said in e for e in summary["errors"])
        assert found == (covered or unmarked), (turn, found, covered, unmarked)
        if found and found_at is None:
            found_at = turn
        after = summary["share_end"]
    assert found_at is not None  # within the turn
    # Found once, it is no longer held as read here: every check and every opening say so.
    assert repo("check").code == 1
    assert f"forget record forgotten/{victim[:12]} cannot be read" in repo.ok("snapshots").err


def test_a_forget_record_never_read_here_is_read_by_every_check(repo: Coffre, tree: Path) -> None:
    """One the opening could not read is read by every check, whatever share of the data it
    reads: here a slice that holds none of the records read intact."""
    repo.ok("backup", str(tree))
    read = _records(repo, 3)
    junk = os.urandom(200)
    LocalBackend(repo.repo).save(Handle("forgotten", hashlib.sha256(junk).hexdigest()), junk)
    k = next(k for k in range(1, 8) if not any(DataPass(slice=(k, 7)).covers(n) for n in read))
    for _ in range(2):
        res = repo("check", "--read-data-subset", f"{k}/7", "--json")
        assert res.code == 1, res
        summary = res.json()
        assert (summary["forget_records_read"], summary["forget_records_known"]) == (1, 3), summary


def test_the_share_of_names_a_data_pass_covers() -> None:
    names = [f"{i:02x}" + "0" * 62 for i in range(0, 256, 16)]
    assert all(DataPass(everything=True).covers(n) for n in names)
    assert not any(DataPass().covers(n) for n in names)
    # Slices n/m partition the names, as they do packs.
    slices = [[n for n in names if DataPass(slice=(k, 3)).covers(n)] for k in (1, 2, 3)]
    assert sorted(n for part in slices for n in part) == names
    # Consecutive shares' arcs partition the circle: after -> end, then end -> next end, round.
    ends = ["", names[4], names[11], names[2]]  # the last one wrapped past the end
    arcs = [[n for n in names if in_share(n, a, b)] for a, b in itertools.pairwise(ends)]
    assert arcs[0] == names[:5] and arcs[1] == names[5:12] and arcs[2] == names[:3] + names[12:]
    assert all(in_share(n, names[7], names[7]) for n in names)  # a whole turn
