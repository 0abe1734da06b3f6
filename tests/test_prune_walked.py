"""Prune marks the data snapshots use through the folder listings earlier checks decoded and
this machine's cache remembers (repository/walked.py), each under a MAC of the repository's
key: what a listing names depends on its id alone, so a remembered one is not decoded again.
A row that does not authenticate is never trusted: prune decodes that listing, and keeps
what it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffre.ops.prune import SMALL_PACKS_MERGED_AT, Pruner
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.repository.walked import WalkedListings
from coffre.storage.local import LocalBackend
from test_check import SMALL_CHUNKS, SMALL_PACK, open_local, tree_packs, two_snapshots
from test_check_walked import _blobs_of, forge_without, listings_report, reachable_listings, repo_cache
from test_concurrency import listings_prune_decodes

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest


@pytest.fixture
def small(coffre: Coffre) -> Coffre:
    Repository.init(LocalBackend(coffre.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    return coffre


def restored_digest(c: Coffre, snap_id: str, src: Path, tmp_path: Path) -> dict[str, tuple[str, int, bytes]]:
    dest = tmp_path / f"restored-{snap_id[:8]}"
    c.ok("restore", snap_id, "--target", str(dest))
    return tree_digest(dest / str(src).lstrip("/"))


def test_prune_takes_the_listings_a_check_remembered_without_decoding_them(
        small: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = two_snapshots(small, tmp_path)
    (d.src / "a-docs" / "note.txt").write_text("bonsoir\n" * 100)
    age_tree(d.src)
    small.ok("backup", str(d.src))
    digest = tree_digest(d.src)
    small.ok("check")  # remembers every listing of the three snapshots
    small.ok("forget", snapshot_ids(small)[0])
    decoded = listings_prune_decodes(monkeypatch)
    repo = Repository.open(LocalBackend(small.repo), PASSWORD)
    with repo_cache(small, repo) as cache, Lock(repo, exclusive=True, command="prune") as lock:
        stats = Pruner(repo, lock, walked=WalkedListings(cache, repo.crypter)).run()
    monkeypatch.undo()
    assert decoded == []
    assert stats.listings_decoded == 0
    assert stats.listings_remembered == len(reachable_listings(open_local(small)))
    assert stats.packs_deleted + stats.packs_repacked > 0  # the forgotten snapshot's data went
    assert small.ok("check", "--read-data", "--json").json()["ok"]
    assert restored_digest(small, snapshot_ids(small)[-1], d.src, tmp_path) == digest


def test_the_prune_command_marks_through_this_machines_remembered_listings(
        small: Coffre, tmp_path: Path) -> None:
    two_snapshots(small, tmp_path)
    first = small.ok("prune", "--json").json()
    assert first["listings_remembered"] == 0  # no check yet: every listing decoded
    assert first["listings_decoded"] == len(reachable_listings(open_local(small)))
    small.ok("check", "--read-data-subset", "5%")
    again = small.ok("prune", "--json").json()
    assert (again["listings_decoded"], again["listings_remembered"]) == (0, first["listings_decoded"])


def test_a_remembered_listing_that_does_not_authenticate_cannot_make_prune_drop_data(
        small: Coffre, tmp_path: Path) -> None:
    """Rows rewritten without the key (big.bin's blobs taken out of its folder's listing, so
    that its pack would look unused) are decoded again: big.bin stays restorable."""
    d = two_snapshots(small, tmp_path)
    digest = tree_digest(d.src)
    small.ok("check")
    forged = forge_without(small, _blobs_of(small, d.big))
    assert forged == 2  # the src folder's listing in each snapshot
    small.ok("forget", snapshot_ids(small)[0])
    stats = small.ok("prune", "--json").json()
    assert stats["listings_decoded"] == 1  # the second snapshot's forged listing
    assert stats["listings_remembered"] == len(reachable_listings(open_local(small))) - 1
    assert d.victim in {p.name for p in (small.repo / "data").glob("*/*")}
    assert small.ok("check", "--read-data", "--json").json()["ok"]
    assert restored_digest(small, snapshot_ids(small)[-1], d.src, tmp_path) == digest


def test_listings_a_prune_moves_stay_remembered_for_their_new_copy(small: Coffre, tmp_path: Path) -> None:
    """Prune merges small packs: the listings it copies are remembered for their new place, so
    the check after it decodes none of them (it still hashes their new packs)."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for day in range(SMALL_PACKS_MERGED_AT):  # a small pack of listings (and one of data) a day
        (src / "docs" / f"day-{day}.txt").write_text(f"jour {day}\n" * 50)
        age_tree(src)
        small.ok("backup", str(src))
    small.ok("check")
    listings = len(reachable_listings(open_local(small)))
    before = tree_packs(small)
    assert small.ok("prune", "--json").json()["packs_merged"] >= SMALL_PACKS_MERGED_AT
    assert not before & tree_packs(small)  # every listing moved to a new pack
    res = small.ok("check", "--read-data-subset", "5%")
    assert listings_report(res.err) == (0, listings)
