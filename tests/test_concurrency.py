"""Backups never wait for each other or for prune, and prune never deletes what a running
backup relies on."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from coffre.ops import prune
from coffre.ops.backup import Backup, BackupOptions, BackupResult
from coffre.ops.prune import Pruner
from coffre.repository.locks import Lock
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, make_tree, snapshot_ids, tree_digest


def test_two_backups_at_once_both_succeed(coffre: Coffre, tmp_path: Path) -> None:
    coffre.ok("init", "--pack-size", "1")
    a = make_tree(tmp_path / "a", seed=1)
    b = make_tree(tmp_path / "b", seed=2)
    procs = [coffre.popen("backup", str(a)), coffre.popen("backup", str(b))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(snapshot_ids(coffre)) == 2
    coffre.ok("check", "--read-data")
    snaps = {s["paths"][0]: s["short_id"] for s in json.loads(coffre.ok("snapshots", "--json").out)}
    for src in (a, b):
        dest = tmp_path / f"r-{src.name}"
        coffre.ok("restore", snaps[str(src)], "--target", str(dest))
        assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)


def test_prune_during_backup_does_not_block_it_nor_delete_what_it_needs(
    coffre: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    coffre.ok("backup", str(src), "--host", "first")


    # A second backup of the same tree deduplicates against the first snapshot's data.
    # It is paused just before it commits, while the first snapshot is forgotten and pruned.
    paused, resume = threading.Event(), threading.Event()
    real_flush = Packer.flush

    def pausing_flush(self: Packer) -> None:
        paused.set()
        assert resume.wait(120)
        real_flush(self)

    monkeypatch.setattr(Packer, "flush", pausing_flush)
    repo = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    results: list[BackupResult] = []
    errors: list[BaseException] = []

    def run_backup() -> None:
        try:
            with Lock(repo, exclusive=False, command="backup") as lock:
                repo.load_index()
                opts = BackupOptions(paths=[str(src)], host="second", force_read=True)
                results.append(Backup(repo, lock, opts).run())
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=run_backup)
    worker.start()
    try:
        assert paused.wait(120)
        coffre.ok("forget", *snapshot_ids(coffre))  # the first host's only snapshot, by id
        pruned = coffre.ok("prune", "--json").json()  # does not wait for the backup
        assert pruned["packs_removed"] > 0  # it did find the first snapshot's data unused
        assert pruned["packs_deleted"] == 0  # but deleted nothing the backup may need
    finally:
        resume.set()
        worker.join(120)
    assert not errors, errors
    snap = results[0].snapshot
    assert snapshot_ids(coffre) == [snap.id]
    coffre.ok("check", "--read-data")
    dest = tmp_path / "restored"
    coffre.ok("restore", snap.id[:8], "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)
    # Once the backup is over, a prune keeps what the new snapshot uses.
    coffre.ok("prune")
    assert coffre.ok("check", "--read-data", "--json").json()["ok"]
    shutil.rmtree(dest)
    coffre.ok("restore", snap.id[:8], "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)


def test_backup_that_starts_and_ends_during_a_prune_keeps_its_data(
    coffre: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving where a backup begins after prune marked the used data and commits
    before prune records its trash: the new snapshot reuses data prune found unused."""
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    other = make_tree(tmp_path / "other", seed=9)
    shutil.rmtree(other / "docs")  # the letters are the same in both trees: nothing shared
    coffre.ok("backup", str(src), "--host", "a")
    coffre.ok("backup", str(other), "--host", "b")
    coffre.ok("forget", snapshot_ids(coffre)[0])  # host a's, by id: src's data is now unused

    def backup_now() -> str:
        # The old data, and a new file: the backup writes an index file prune has not read.
        (src / "ordonnance-du-jour.txt").write_bytes(b"nouvelle ordonnance\n" * 1000)
        r = Repository.open(LocalBackend(coffre.repo), PASSWORD)
        with Lock(r, exclusive=False, command="backup") as lock:
            r.load_index()
            opts = BackupOptions(paths=[str(src)], host="a", force_read=True)
            return Backup(r, lock, opts).run().snapshot.id

    real_repack = Pruner._repack
    new_snaps: list[str] = []
    backup_index: set[str] = set()

    def repack_while_a_backup_runs(self: Pruner, repack: dict) -> dict:  # type: ignore[type-arg]
        before = set(self.repo.list_names("index"))
        new_snaps.append(backup_now())
        backup_index.update(set(self.repo.list_names("index")) - before)
        return real_repack(self, repack)

    monkeypatch.setattr(Pruner, "_repack", repack_while_a_backup_runs)
    repo = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    with Lock(repo, exclusive=True, command="prune") as lock:
        stats = Pruner(repo, lock).run()
    assert stats.packs_removed > 0 and new_snaps
    assert backup_index and backup_index <= repo.index.loaded_files  # read before the trash went
    monkeypatch.undo()
    assert coffre.ok("check", "--read-data", "--json").json()["ok"]
    dest = tmp_path / "restored"
    coffre.ok("restore", new_snaps[0][:8], "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)
    coffre.ok("prune")
    assert coffre.ok("check", "--read-data", "--json").json()["ok"]


def listings_prune_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The ids of the folder listings prune decodes from now on, in order."""
    reads: list[bytes] = []
    real_load_tree = prune.load_tree

    def counting_load_tree(repo: Repository, tree_id: bytes, data: bytes | None = None) -> list:  # type: ignore[type-arg]
        reads.append(tree_id)
        return real_load_tree(repo, tree_id, data)

    monkeypatch.setattr(prune, "load_tree", counting_load_tree)
    return reads


def test_prune_reads_each_folder_listing_once_when_no_backup_ran_meanwhile(
    coffre: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marking before the trash is emptied starts from the first one: listings already
    read are not read again (a year's history made this second pass 39 % of a prune)."""
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    coffre.ok("backup", str(src))
    (src / "docs" / "lettre-3.txt").write_text("changed\n")
    shutil.rmtree(src / "scans")
    coffre.ok("backup", str(src))
    coffre.ok("forget", "--keep-last", "1")
    reads = listings_prune_decodes(monkeypatch)
    repo = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    with Lock(repo, exclusive=True, command="prune") as lock:
        stats = Pruner(repo, lock).run()
    assert stats.packs_deleted > 0  # the trash was emptied, after marking a second time
    assert len(set(reads)) >= 4  # the root, db, docs, empty-dir
    assert sorted(reads) == sorted(set(reads))  # each read once
    monkeypatch.undo()
    dest = tmp_path / "restored"
    coffre.ok("restore", "latest", "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)


def test_prune_reads_each_index_file_once_and_none_it_wrote(
    coffre: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the trash is emptied, the index is taken as prune wrote it, plus what other
    writers added since: the files it has just written are not read back (with a year's
    history, loading the index a second time was a tenth of a prune)."""
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    coffre.ok("backup", str(src))
    shutil.rmtree(src / "scans")
    coffre.ok("backup", str(src))
    coffre.ok("forget", "--keep-last", "1")
    repo = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    first = set(repo.list_names("index"))
    reads: list[str] = []
    real_load = Repository.load_object

    def counting_load(self: Repository, kind: str, name: str) -> bytes:
        if kind == "index":
            reads.append(name)
        return real_load(self, kind, name)

    monkeypatch.setattr(Repository, "load_object", counting_load)
    with Lock(repo, exclusive=True, command="prune") as lock:
        stats = Pruner(repo, lock).run()
    assert stats.packs_deleted > 0  # the trash was emptied, after marking a second time
    written = set(repo.list_names("index"))
    assert written.isdisjoint(first) and written == repo.index.loaded_files
    assert sorted(reads) == sorted(first)  # each read once, and nothing prune wrote
    monkeypatch.undo()
    assert coffre.ok("check", "--read-data", "--json").json()["ok"]
    dest = tmp_path / "restored"
    coffre.ok("restore", "latest", "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == tree_digest(src)


def test_prune_merges_the_small_packs_of_many_backups_and_every_snapshot_still_restores(
    tmp_path: Path,
) -> None:
    """Each backup leaves a partly filled data pack and a tree pack; once enough have gathered,
    prune merges them into full packs (the trash protocol as for any repack), so a year of
    daily backups does not leave hundreds of small packs for a restore to fetch."""
    from coffre.ops.prune import SMALL_PACKS_MERGED_AT
    from coffre.ops.restore import RestoreOptions, Restorer

    repo, _ = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    src = tmp_path / "src"
    src.mkdir()
    days = SMALL_PACKS_MERGED_AT // 2 + 1  # two small packs a day: a data pack and a tree pack
    digests = []
    for day in range(days):
        (src / f"day-{day}.txt").write_text(f"ventes du jour {day}\n" * 2000)
        with Lock(repo, exclusive=False, command="backup") as lock:
            repo.load_index()
            Backup(repo, lock, BackupOptions(paths=[str(src)], host="h")).run()
        digests.append(tree_digest(src))
    before = set(repo.index.pack_ids())
    assert len(before) >= SMALL_PACKS_MERGED_AT
    with Lock(repo, exclusive=True, command="prune") as lock:
        stats = Pruner(repo, lock).run()
    assert stats.packs_merged == len(before) and stats.packs_removed == 0
    assert any("small packs merged" in n for n in stats.notes)
    repo = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD)
    repo.load_index()
    after = set(repo.index.pack_ids())
    assert not after & before and len(after) == 2  # one pack of listings, one of data
    with Lock(repo, exclusive=True, command="prune") as lock:  # the trash is emptied
        assert Pruner(repo, lock).run().packs_merged == 0  # two small packs: left alone
    assert not list((tmp_path / "repo" / "data").glob(f"*/{next(iter(before)).hex()}"))
    for snap, digest in zip(repo.snapshots(), digests, strict=True):
        target = tmp_path / f"r-{snap.id[:8]}"
        assert not Restorer(repo, RestoreOptions(target=str(target))).run(snap).errors
        assert tree_digest(target / str(src).lstrip("/")) == digest
