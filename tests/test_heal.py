"""Backups heal a damaged repository: what check found damaged, a lost pack, or a delta whose
base is gone is stored again from the live files by the next backup, never pointed at; and
`backup --verify` reads the new snapshot back from the repository, so its "the snapshot
matches the files" means it restores. Real `coffre` processes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from coffre.ops.prune import Pruner
from coffre.repository.index import MasterIndex
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from test_check import SMALL_CHUNKS, SMALL_PACK, flip, packs, two_snapshots

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids

PAGE = 4096


def fake_database(path: Path, seed: int) -> None:
    """A page-structured file (SQLite's magic): cut into fixed blocks, stored as deltas."""
    rnd = random.Random(seed)
    pages = [rnd.randbytes(PAGE // 2) + bytes(PAGE // 2) for _ in range(600)]
    path.write_bytes(b"SQLite format 3\x00" + b"".join(pages)[16:])


def touch_pages(path: Path, seed: int) -> None:
    data = bytearray(path.read_bytes())
    rnd = random.Random(seed)
    for page in rnd.sample(range(1, 600), 40):
        data[page * PAGE + 100 : page * PAGE + 140] = rnd.randbytes(40)
    path.write_bytes(bytes(data))


def delta_bases(c: Coffre) -> tuple[set[str], set[str]]:
    """Packs holding delta blobs, and packs holding their bases (those still indexed)."""
    repo = Repository.open(LocalBackend(c.repo), PASSWORD)
    repo.load_index()
    deltas, bases = set(), set()
    for pid, entries in repo.index.packs().items():
        for e in entries:
            if e.base is not None:
                deltas.add(pid.hex())
                base = repo.index.lookup(e.base)
                if base is not None:
                    bases.add(base.pack.hex())
    return deltas, bases


@pytest.mark.parametrize("repair_first", [True, False], ids=["after-repair-index", "without-repair"])
def test_a_backup_never_reuses_deltas_whose_base_was_lost(repo: Coffre, tmp_path: Path,
                                                          repair_first: bool) -> None:
    src = tmp_path / "src"
    src.mkdir()
    db = src / "officine.db"
    fake_database(db, 1)
    age_tree(src)
    repo.ok("backup", str(src))
    touch_pages(db, 2)
    age_tree(src)
    repo.ok("backup", str(src))
    deltas, bases = delta_bases(repo)
    assert deltas and bases and not deltas & bases
    for name in bases:
        packs(repo)[name].unlink()
    assert repo("check").code == 1
    if repair_first:
        repo.ok("repair", "index")
    res = repo("backup", "--force", "--verify", str(src))
    assert res.code == 0, res
    assert "the snapshot matches the files" in res.out
    restored = tmp_path / "restored"
    repo.ok("restore", "latest", "--target", str(restored), "--verify")
    assert (restored / str(db).lstrip("/")).read_bytes() == db.read_bytes()


@pytest.mark.parametrize("repair_first", [False, True], ids=["after-check", "after-check-and-repair-index"])
def test_a_damaged_blob_found_by_check_is_stored_again_by_the_next_backup(
        coffre: Coffre, tmp_path: Path, repair_first: bool) -> None:
    Repository.init(LocalBackend(coffre.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    d = two_snapshots(coffre, tmp_path)
    flip(packs(coffre)[d.victim])
    res = coffre("check")
    assert res.code == 1 and f"damaged pack {d.victim}" in res.out, res
    assert re.search(r"1 of \d+ blobs? damaged", res.out)  # located, not the whole pack
    assert "the next backup stores the damaged files again" in res.out
    if repair_first:
        coffre.ok("repair", "index")
    res = coffre("backup", "--verify", str(d.src), "--json")
    assert res.code == 0, res
    summary = res.json()["summary"]
    assert 0 < summary["data_added"] < 1_000_000  # the damaged piece only
    restored = tmp_path / "restored"
    coffre.ok("restore", "latest", "--target", str(restored), "--verify")
    assert (restored / str(d.big).lstrip("/")).read_bytes() == d.big.read_bytes()
    # The older snapshots share the data stored again: they restore too.
    assert coffre.ok("dump", d.snaps[0][:8], str(d.big)).outb == d.big.read_bytes()
    # Prune then lets the damaged pack go (its intact blobs move out): check is clean.
    coffre.ok("prune")
    assert d.victim not in packs(coffre)
    assert "no errors" in coffre.ok("check", "--read-data").out


def test_backup_verify_reads_the_snapshot_back_from_the_repository(
        coffre: Coffre, tmp_path: Path) -> None:
    """Damage nobody has checked yet: the live files still match, but the stored copy does
    not read back, and --verify says so instead of "matches"."""
    Repository.init(LocalBackend(coffre.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    d = two_snapshots(coffre, tmp_path)
    flip(packs(coffre)[d.victim])
    res = coffre("backup", "--verify", str(d.src))
    assert res.code == 1, res
    assert f"{d.big}: its stored copy cannot be read" in res.err
    assert "the snapshot matches the files" not in res.out
    coffre("check")  # records the damage
    coffre.ok("backup", "--verify", str(d.src))


def test_check_does_not_cry_wolf_over_deltas_no_snapshot_needs(repo: Coffre, tmp_path: Path) -> None:
    """After a prune, a kept pack may still hold unused deltas whose base it rightly removed:
    every snapshot restores, so check --read-data reports no error (a note only)."""
    src = tmp_path / "src"
    src.mkdir()
    db = src / "officine.db"
    fake_database(db, 1)
    age_tree(src)
    repo.ok("backup", str(src))  # day 1: the database's blocks (future bases)
    touch_pages(db, 2)
    (src / "scans.bin").write_bytes(random.Random(9).randbytes(3_000_000))
    age_tree(src)
    repo.ok("backup", str(src))  # day 2: deltas, packed with 3 MB of scans
    fake_database(db, 3)  # day 3: the database is rewritten whole; the scans are unchanged
    age_tree(src)
    repo.ok("backup", str(src))
    first, second, _ = [s["id"] for s in json.loads(repo.ok("snapshots", "--json").out)]
    repo.ok("forget", first, second)
    pruned = repo.ok("prune", "--json").json()
    assert pruned["packs_deleted"] >= 1  # day 1's blocks: the deltas' bases
    deltas, _ = delta_bases(repo)
    assert deltas, "the scans' pack is kept with the unused deltas in it"
    res = repo("check", "--read-data")
    assert res.code == 0, res
    assert "no errors were found" in res.out
    assert re.search(r"delta blobs? that no snapshot needs ha(s|ve) lost (its|their) base", res.out)
    restored = tmp_path / "restored"
    repo.ok("restore", "latest", "--target", str(restored), "--verify")



# ---------------------------------------------- prune after a heal keeps the healed copy


def healed_twice_stored(repo: Coffre, tmp_path: Path, damage: str) -> Path:
    """A database stored as deltas, its bases then lost (pack deleted) or damaged (one byte,
    found by check), then healed by a backup: its pieces are stored twice now, the old delta
    copies and the new whole ones."""
    src = tmp_path / "src"
    src.mkdir()
    db = src / "officine.db"
    fake_database(db, 1)
    age_tree(src)
    repo.ok("backup", str(src))
    touch_pages(db, 2)
    age_tree(src)
    repo.ok("backup", str(src))
    _, bases = delta_bases(repo)
    for name in bases:
        if damage == "lost":
            packs(repo)[name].unlink()
        else:
            flip(packs(repo)[name])
    repo("check", "--read-data")
    repo.ok("backup", "--verify", str(src))
    repo.ok("restore", "latest", "--target", str(tmp_path / "healed"), "--verify")
    return src


@pytest.mark.parametrize("damage", ["lost", "damaged"])
def test_prune_after_a_heal_keeps_the_copy_that_reads(repo: Coffre, tmp_path: Path, damage: str) -> None:
    """Prune keeps one copy of a blob stored twice: the one readers use (the whole one), never
    the old delta whose base is gone, and it never brings a damaged pack back from the trash."""
    src = healed_twice_stored(repo, tmp_path, damage)
    repo.ok("forget", snapshot_ids(repo)[0])  # the first snapshot held the bases themselves
    repo.ok("prune")
    repo.ok("restore", "latest", "--target", str(tmp_path / "after"), "--verify")
    restored = tmp_path / "after" / str(src).lstrip("/")
    assert (restored / "officine.db").read_bytes() == (src / "officine.db").read_bytes()
    assert "no errors" in repo.ok("check", "--read-data").out


def test_prune_on_another_machine_keeps_the_healed_copy_not_the_damaged_one(
        coffre: Coffre, tmp_path: Path) -> None:
    """Without this machine's damage register (the agent's user, another machine, a wiped
    cache), prune still reads the copy it keeps of a blob stored twice: the damaged one never
    wins over the healed one."""
    Repository.init(LocalBackend(coffre.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    d = two_snapshots(coffre, tmp_path)
    flip(packs(coffre)[d.victim])
    coffre("check")
    coffre.ok("backup", "--verify", str(d.src))
    # Which copy readers try first follows the order of the index files (named by their
    # hashes): the damaged one is put first, as that order may have it.
    r = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    r.load_index()
    stored = r.index.packs()
    victim = bytes.fromhex(d.victim)
    first = MasterIndex()
    for pid in [victim, *(p for p in stored if p != victim)]:
        first.add_pack(pid, stored[pid])
    first.loaded_files = r.index.loaded_files
    r.index = first
    assert any(first.lookup(e.id).pack == victim for e in stored[victim])  # type: ignore[union-attr]
    with Lock(r, exclusive=True, command="prune") as lock:
        assert Pruner(r, lock).run().blobs_damaged > 0  # no damage register given: found
    coffre.ok("restore", "latest", "--target", str(tmp_path / "r"), "--verify")
    assert (tmp_path / "r" / str(d.big).lstrip("/")).read_bytes() == d.big.read_bytes()


def test_check_does_not_excuse_a_lost_pack_with_a_delta_whose_base_is_lost_too(
        repo: Coffre, tmp_path: Path) -> None:
    """A blob stored whole (healed) and as a delta whose base is gone: lose the whole copy's
    pack too, and the snapshot no longer restores. Check must say so, even without reading
    the data: the delta is no other copy."""
    healed_twice_stored(repo, tmp_path, "lost")
    repo.ok("forget", snapshot_ids(repo)[0])  # the one that needed the lost pack itself
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    whole = {loc.pack.hex() for entries in r.index.packs().values() for e in entries if e.base is not None
             for loc in r.index.locations(e.id) if loc.entry.base is None}
    assert whole
    for name in whole:
        packs(repo)[name].unlink()
    assert repo("restore", "latest", "--target", str(tmp_path / "r")).code != 0
    res = repo("check")
    assert res.code == 1 and "no errors" not in res.out, res


def test_a_delta_prune_left_without_its_base_is_no_alarm(repo: Coffre, tmp_path: Path) -> None:
    """Prune keeps a pack for what a snapshot still uses in it, with a delta no snapshot uses
    any more, and deletes that delta's unused base elsewhere. Nothing is lost, check agrees:
    the next backups must not say that stored pieces cannot be read (a false alarm every
    night, on a pharmacy's repository after months of daily prunes)."""
    src = tmp_path / "src"
    src.mkdir()
    db = src / "officine.db"
    fake_database(db, 1)
    age_tree(src)
    repo.ok("backup", str(src))  # the database's blocks, stored whole
    touch_pages(db, 2)
    (src / "scan.jpg").write_bytes(random.Random(3).randbytes(3_000_000))
    age_tree(src)
    repo.ok("backup", str(src))  # deltas, in one pack with the scan
    db.unlink()
    age_tree(src)
    repo.ok("backup", str(src))  # the scan alone
    repo.ok("forget", "--keep-last", "1")
    repo.ok("prune")
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    left = [e for entries in r.index.packs().values() for e in entries
            if e.base is not None and r.index.lookup(e.base) is None]
    assert left, "the case this test is about: indexed deltas whose base prune deleted"
    assert repo("check", "--read-data").code == 0
    res = repo("backup", str(src))
    assert res.code == 0 and "cannot be read" not in res.out + res.err, res
