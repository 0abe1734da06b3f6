"""The nightly check decodes only the folder listings no earlier check decoded on this machine
(repository/walked.py): the others are taken as remembered, each for the pack it was decoded
from, once that pack's bytes are hashed again and match its name, under a MAC of the
repository's key. Real `coffre` processes, a local repository."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import msgspec
import pytest

from coffre.crypto.aead import KIND_TREE
from coffre.format.pack import BlobEntry
from coffre.ops.check import Checker, CheckResult, Share
from coffre.ops.common import load_tree
from coffre.ops.inspect import iter_tree
from coffre.repository.cache import RepoCache
from coffre.repository.damage import DamageRegister
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.repository.walked import WalkedListings
from coffre.storage.local import LocalBackend
from test_check import (
    SMALL_CHUNKS,
    SMALL_PACK,
    Damage,
    assert_names_damage,
    cache_db,
    flip,
    open_local,
    packs,
    tree_packs,
    two_snapshots,
)

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids


@pytest.fixture
def small(coffre: Coffre) -> Coffre:
    """test_check's repository of 1 MiB packs and ~200 KiB chunks."""
    Repository.init(LocalBackend(coffre.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    return coffre


REPORT = re.compile(r"folder listings: (\d+) decoded, (\d+) known from an earlier check")


def listings_report(err: str) -> tuple[int, int] | None:
    """(decoded, remembered) as the check reported them; None if it remembered none."""
    m = REPORT.search(err)
    return (int(m.group(1)), int(m.group(2))) if m else None


def slice_without(names: set[str], m: int = 997) -> str:
    """A --read-data-subset slice k/m that reads none of these packs."""
    taken = {int(n[:8], 16) % m for n in names}
    return f"{min(set(range(m)) - taken) + 1}/{m}"


def reachable_listings(repo: Repository) -> set[bytes]:
    out: set[bytes] = set()
    stack = [s.tree for s in repo.snapshots()]
    while stack:
        tree = stack.pop()
        if tree not in out:
            out.add(tree)
            stack.extend(n.subtree for n in load_tree(repo, tree) if n.subtree is not None)
    return out


@contextmanager
def repo_cache(c: Coffre, repo: Repository) -> Iterator[RepoCache]:
    cache = RepoCache(repo.config.id, Path(c.env["COFFRE_CACHE_DIR"]))
    try:
        yield cache
    finally:
        cache.close()


def remembered_rows(c: Coffre) -> dict[bytes, tuple[bytes, bytes, bytes, bytes]]:
    with closing(cache_db(c)) as db:
        return {t: (p, place, names, mac)
                for t, p, place, names, mac in db.execute("SELECT * FROM checked_listings")}


def replace_index(c: Coffre, repo: Repository, packs: dict[bytes, list[BlobEntry]]) -> None:
    """The repository's index rewritten to list exactly these packs' entries."""
    old = set(repo.list_names("index"))
    for name in old - repo.save_full_index(packs):
        (c.repo / "index" / name).unlink()


def damage_register(c: Coffre) -> set[tuple[bytes, bytes]]:
    with repo_cache(c, open_local(c)) as cache:
        return DamageRegister(cache).pairs()


def test_the_next_check_decodes_only_the_listings_it_has_not_met(small: Coffre, tmp_path: Path) -> None:
    d = two_snapshots(small, tmp_path)
    first = small.ok("check", "--read-data-subset", "5%")
    assert listings_report(first.err) is None  # nothing remembered yet: every listing decoded
    all_listings = len(reachable_listings(open_local(small)))
    again = small.ok("check", "--read-data-subset", "5%")
    assert listings_report(again.err) == (0, all_listings)
    # A day: one file changed in a-docs makes a new listing there and in each folder above it.
    (d.src / "a-docs" / "note.txt").write_text("bonsoir\n" * 100)
    age_tree(d.src)
    small.ok("backup", str(d.src))
    depth = len(d.src.parts) + 1  # a-docs, src and every folder up to the root
    now = len(reachable_listings(open_local(small)))
    assert now == all_listings + depth
    day = small.ok("check", "--read-data-subset", "5%")
    assert listings_report(day.err) == (depth, all_listings)
    assert "no errors were found" in day.out
    # --read-data decodes every listing, whatever is remembered.
    assert listings_report(small.ok("check", "--read-data").err) is None


def test_a_damaged_listing_pack_is_found_while_its_listings_are_remembered(
        small: Coffre, tmp_path: Path) -> None:
    """The share of this night does not read the folder-listing pack: the hash taken before
    trusting what it held finds it damaged, and its listings are decoded (and fail)."""
    two_snapshots(small, tmp_path)
    small.ok("check")
    listing_packs = tree_packs(small)
    for name in listing_packs:
        flip(packs(small)[name])
    res = small("check", "--read-data-subset", slice_without(listing_packs))
    assert res.code == 1, res
    for name in listing_packs:
        assert f"damaged pack {name}" in res.out
    assert listings_report(res.err) is None  # nothing trusted from a damaged pack


def test_a_pack_lost_below_remembered_listings_is_found_and_its_files_named(
        small: Coffre, tmp_path: Path) -> None:
    """What the remembered listings name is needed as much as what decoded ones name: a pack
    of big.bin's data gone since is an error, with the file named in both snapshots."""
    d = two_snapshots(small, tmp_path)
    small.ok("check")
    packs(small)[d.victim].unlink()
    res = small("check", "--read-data-subset", slice_without({d.victim}))
    assert res.code == 1, res
    assert listings_report(res.err) == (0, len(reachable_listings(open_local(small))))
    assert_names_damage(res.out, d)


def test_errors_found_through_remembered_listings_are_worded_as_by_a_full_walk(
        small: Coffre, tmp_path: Path) -> None:
    """Blobs the index lacks (here: big.bin's, left out of the index in memory): each file
    that needs one is named with its path, as a walk that decodes every listing names it."""
    d = two_snapshots(small, tmp_path)
    small.ok("check")
    lacking = _blobs_of(small, d.big)

    def check(remember: bool) -> CheckResult:
        repo = open_local(small)
        repo.index.retain(lambda _pack, entry: entry.id not in lacking)
        with repo_cache(small, repo) as cache:
            walked = WalkedListings(cache, repo.crypter) if remember else None
            return Checker(repo, walked=walked).run(share=Share(5, ""))

    full, remembered = check(False), check(True)
    assert (full.listings_remembered, remembered.listings_decoded) == (0, 0)
    assert remembered.errors == full.errors
    assert sorted(e for e in full.errors if "data is missing" in e) == sorted(
        f"snapshot {sid[:8]}: {d.big}: data is missing" for sid in d.snaps)


def forge_without(c: Coffre, blobs: set[bytes]) -> int:
    """Rewrite, without the key, the remembered entries naming any of these blobs so that they
    no longer do (their MACs no longer hold); how many were rewritten."""
    db = cache_db(c)
    forged = 0
    for tree, names in db.execute("SELECT tree, names FROM checked_listings").fetchall():
        subtrees, content = msgspec.msgpack.decode(names)
        kept = [b for b in content if b not in blobs]
        if len(kept) != len(content):
            db.execute("UPDATE checked_listings SET names = ? WHERE tree = ?",
                       (msgspec.msgpack.encode([subtrees, kept]), tree))
            forged += 1
    db.commit()
    db.close()
    return forged


def test_a_remembered_entry_that_does_not_authenticate_is_decoded_again(
        small: Coffre, tmp_path: Path) -> None:
    """Entries rewritten without the key (here: big.bin's blobs taken out of its folder's
    listing, which would hide the pack lost below) are not trusted."""
    d = two_snapshots(small, tmp_path)
    small.ok("check")
    forged = forge_without(small, _blobs_of(small, d.big))
    assert forged == 2  # the src folder's listing in each snapshot (the second has new.bin)
    packs(small)[d.victim].unlink()
    res = small("check", "--read-data-subset", slice_without({d.victim}))
    assert res.code == 1, res
    assert listings_report(res.err) == (forged, len(reachable_listings(open_local(small))) - forged)
    assert_names_damage(res.out, d)
    assert len(trusted_rows(small)) == len(remembered_rows(small))  # the forged ones replaced


def trusted_rows(c: Coffre) -> set[bytes]:
    """The listings whose remembered entry authenticates."""
    repo = open_local(c)
    with repo_cache(c, repo) as cache:
        return set(WalkedListings(cache, repo.crypter).load())


def test_a_table_an_earlier_version_left_is_replaced(small: Coffre, tmp_path: Path) -> None:
    """The first version's rows named no place in the pack: they are dropped, not trusted."""
    two_snapshots(small, tmp_path)
    db = cache_db(small)
    db.execute("CREATE TABLE checked_listings (tree BLOB PRIMARY KEY, pack BLOB NOT NULL,"
               " names BLOB NOT NULL, mac BLOB NOT NULL)")
    db.execute("INSERT INTO checked_listings VALUES (?, ?, ?, ?)", (b"t" * 32, b"p" * 32, b"n", b"m"))
    db.commit()
    db.close()
    small.ok("check")
    assert set(remembered_rows(small)) == trusted_rows(small) == reachable_listings(open_local(small))
    # A row that does not authenticate, for no listing of tonight's snapshots, is removed too
    # (its place longer than any the check writes).
    db = cache_db(small)
    db.execute("INSERT INTO checked_listings VALUES (?, ?, ?, ?, ?)",
               (b"t" * 32, b"p" * 32, b"x" * 300, b"n", b"m"))
    db.commit()
    db.close()
    small.ok("check")
    assert set(remembered_rows(small)) == reachable_listings(open_local(small))


def _blobs_of(c: Coffre, path: Path) -> set[bytes]:
    repo = open_local(c)
    snap = repo.snapshots()[-1]
    return {b for p, node in iter_tree(repo, snap.tree) if p == str(path) for b in node.content}


def test_a_listing_stored_in_another_pack_since_is_decoded_again(small: Coffre, tmp_path: Path) -> None:
    """An entry holds for the copy it was decoded from: one that names another pack (as after
    a prune moved the listing) is decoded, then remembered for its pack."""
    two_snapshots(small, tmp_path)
    small.ok("check")
    rows = remembered_rows(small)
    repo = open_local(small)
    with repo_cache(small, repo) as cache:
        walked = WalkedListings(cache, repo.crypter)
        known = walked.load()
        assert set(known) == set(rows)
        moved = next(iter(sorted(known)))
        # Another folder-listing pack, intact and hashed: the entry is still not for that copy.
        other = next(pack for pack in sorted(map(bytes.fromhex, tree_packs(small)))
                     if pack != known[moved].pack)
        walked.keep({**known, moved: dataclasses.replace(known[moved], pack=other)})
    res = small.ok("check", "--read-data-subset", "5%")
    assert listings_report(res.err) == (1, len(rows) - 1)
    assert remembered_rows(small)[moved][0] == rows[moved][0]  # its real pack again


def test_listings_of_forgotten_snapshots_are_no_longer_remembered(small: Coffre, tmp_path: Path) -> None:
    d: Damage = two_snapshots(small, tmp_path)
    (d.src / "a-docs" / "note.txt").write_text("bonsoir\n" * 100)
    age_tree(d.src)
    small.ok("backup", str(d.src))
    small.ok("check")
    assert set(remembered_rows(small)) == reachable_listings(open_local(small))
    small.ok("forget", snapshot_ids(small)[-1])
    small.ok("check")
    assert set(remembered_rows(small)) == reachable_listings(open_local(small))


def test_a_listing_the_index_places_elsewhere_in_the_same_pack_is_decoded_again(
        small: Coffre, tmp_path: Path) -> None:
    """An entry holds for the place of the copy in its pack too: an index that gives two
    listings of one pack each other's place (a damaged or rewritten index) is not excused by
    the pack's intact bytes. Both are decoded again, and neither authenticates there."""
    two_snapshots(small, tmp_path)
    small.ok("check")
    repo = open_local(small)
    packs_now = repo.index.packs()
    pid, entries = next((pid, es) for pid, es in sorted(packs_now.items())
                        if len(es) >= 2 and all(e.kind == KIND_TREE for e in es))
    a, b = entries[0], entries[1]
    packs_now[pid] = [msgspec.structs.replace(a, offset=b.offset, length=b.length, raw_length=b.raw_length),
                      msgspec.structs.replace(b, offset=a.offset, length=a.length, raw_length=a.raw_length),
                      *entries[2:]]
    replace_index(small, repo, packs_now)
    res = small("check", "--read-data-subset", slice_without({pid.hex()}))
    assert res.code == 1, res
    swapped = f"({a.id.hex()[:12]}|{b.id.hex()[:12]})"
    assert re.search(rf"tree of .*: blob {swapped} cannot be read", res.out), res.out


def test_a_listing_stored_twice_is_not_remembered_for_a_copy_it_was_not_read_from(
        small: Coffre, tmp_path: Path) -> None:
    """The root listing's first copy was sealed damaged (its pack named after the damaged bytes,
    so hashing it finds nothing), a second copy is good: the check reads the second. Once the
    second copy is gone, the check must say the listing cannot be read, as one that decodes
    every listing does: the first copy was never the one decoded."""
    d = two_snapshots(small, tmp_path)
    repo = open_local(small)
    root = repo.snapshots()[-1].tree
    packs_now = repo.index.packs()
    first = repo.index.lookup(root)
    assert first is not None
    packer = Packer(repo)
    for e in packs_now[first.pack]:
        packer.add(KIND_TREE, e.id, repo.load_blob(e.id))
    packer.flush()
    second = packer.take_written()
    path = packs(small)[first.pack.hex()]
    data = bytearray(path.read_bytes())
    data[first.entry.offset + first.entry.length // 2] ^= 0x40
    renamed = hashlib.sha256(data).hexdigest()
    (path.parent.parent / renamed[:2]).mkdir(exist_ok=True)
    (path.parent.parent / renamed[:2] / renamed).write_bytes(bytes(data))
    path.unlink()
    listed = {bytes.fromhex(renamed): packs_now.pop(first.pack), **packs_now, **second}
    replace_index(small, repo, listed)
    assert "no errors" in small.ok("check").out  # the good copy reads
    assert root not in remembered_rows(small)
    (second_pack,) = second
    packs(small)[second_pack.hex()].unlink()
    res = small("check", "--read-data-subset", slice_without({renamed, *d.snaps}))
    assert res.code == 1, res
    assert re.search(rf"tree of /: blob {root.hex()[:12]} cannot be read", res.out), res.out


def test_a_check_that_only_hashes_a_pack_keeps_the_damage_found_inside_it(
        small: Coffre, tmp_path: Path) -> None:
    """A blob found damaged by a check that decoded its pack (here: written into the register
    as that check does) stays known until a check decodes that pack again: a pack's hash,
    which matches its name when the blob was sealed damaged, says nothing of the blob. Until
    then each backup stores what it holds again."""
    two_snapshots(small, tmp_path)
    small.ok("check")
    repo = open_local(small)
    pid, entries = next((pid, es) for pid, es in sorted(repo.index.packs().items())
                        if all(e.kind == KIND_TREE for e in es))
    pair = (pid, entries[0].id)
    with repo_cache(small, repo) as cache:
        DamageRegister(cache).update([pid], {pid: [entries[0].id]})
    small.ok("check", "--read-data-subset", slice_without({pid.hex()}))  # its listings remembered
    assert pair in damage_register(small)
    small.ok("check")  # every pack hashed
    assert pair in damage_register(small)
    small.ok("check", "--read-data-subset", "100%")  # decoded: found intact
    assert pair not in damage_register(small)
