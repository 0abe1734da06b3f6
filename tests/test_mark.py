"""What a malicious or broken storage could do undetected (issue 12, item 3), reproduced with
real files and real `coffre` processes: the newest snapshot deleted with its index and pack,
a forgotten snapshot put back, a removed key slot put back, an index file put back after a
prune. Each passed `check --read-data` before this machine kept a mark of what it saw
(repository/mark.py, repository/watch.py). Also: no false alarm when another machine
forgets, the mark's files are private, and planted key slots do not lock out a machine that
opened the repository before."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from pathlib import Path

from coffre.core.clock import FixedClock
from coffre.repository import keyring
from coffre.repository.repo import Repository
from coffre.repository.tombstones import save_tombstones
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids


def files(c: Coffre, kind: str) -> set[Path]:
    return {p for p in (Path(c.repo) / kind).rglob("*") if p.is_file() and not p.name.startswith(".")}


def new_backup(c: Coffre, tree: Path, seed: int, size: int = 60_000) -> dict[str, set[Path]]:
    """A backup with one new random file; the snapshot, index and pack files it wrote."""
    before = {k: files(c, k) for k in ("snapshots", "index", "data")}
    (tree / "docs" / f"nouveau-{seed}.bin").write_bytes(random.Random(seed).randbytes(size))
    age_tree(tree)
    c.ok("backup", str(tree))
    return {k: files(c, k) - before[k] for k in before}


def repo_id(c: Coffre) -> str:
    return str(json.loads((Path(c.repo) / "config").read_text())["id"])


def test_the_newest_snapshot_deleted_with_its_index_and_pack_is_reported_until_acknowledged(
        repo: Coffre, tree: Path) -> None:
    new_backup(repo, tree, 1)
    written = new_backup(repo, tree, 2)
    (newest,) = written["snapshots"]
    assert written["index"] and written["data"]
    saved = newest.read_bytes()
    for paths in written.values():
        for p in paths:
            p.unlink()
    # What the review saw: the repository is consistent without it.
    res = repo("snapshots")
    assert res.code == 0, res
    assert f"snapshot {newest.name[:8]}" in res.err and "vanished" in res.err
    res = repo("check", "--read-data")
    assert res.code == 1, res
    assert newest.name[:8] in res.out and "vanished" in res.out
    assert "coffre acknowledge" in res.err
    res = repo.ok("acknowledge")
    assert newest.name[:8] in res.out
    res = repo.ok("check", "--read-data")
    assert "warning" not in res.err and "vanished" not in res.out
    assert repo.ok("snapshots").err == ""
    # Accepted as gone: if the storage puts it back, that is an alarm again.
    newest.write_bytes(saved)
    res = repo("snapshots")
    assert f"snapshot {newest.name[:8]}" in res.err and "stored again" in res.err, res


def test_a_forgotten_snapshot_put_back_is_reported(repo: Coffre, tree: Path) -> None:
    (old,) = new_backup(repo, tree, 1)["snapshots"]
    new_backup(repo, tree, 2)
    saved = old.read_bytes()
    repo.ok("forget", old.name[:8])  # not pruned: what it needs is still stored once put back
    old.write_bytes(saved)
    res = repo("snapshots")
    assert res.code == 0, res
    assert f"snapshot {old.name[:8]}" in res.err and "forgotten" in res.err
    res = repo("check")
    assert res.code == 1, res
    assert old.name[:8] in res.out
    repo.ok("acknowledge")
    repo.ok("check")


def test_a_removed_key_slot_put_back_is_reported_and_its_password_refused(
        repo: Coffre, tmp_path: Path) -> None:
    new = tmp_path / "remplacant"
    new.write_text("mot de passe du remplaçant\n")
    new.chmod(0o600)
    repo.ok("key", "add", "--new-password-file", str(new))
    replacement = Coffre(repo.repo, new, Path(repo.env["COFFRE_CACHE_DIR"]))
    slot = next(r["id"] for r in json.loads(replacement.ok("key", "list", "--json").out) if r["current"])
    saved = (Path(repo.repo) / "keys" / slot).read_bytes()
    repo.ok("key", "remove", slot[:8])
    assert replacement("snapshots").code == 12
    (Path(repo.repo) / "keys" / slot).write_bytes(saved)
    res = repo("snapshots")
    assert res.code == 0, res
    assert f"key slot {slot[:8]}" in res.err and "removed" in res.err
    res = replacement("snapshots")
    assert res.code == 12, res
    assert f"key slot {slot[:8]}" in res.err and "removed on this machine" in res.err
    assert "mot de passe" not in res.out + res.err
    assert repo("check").code == 1
    rows = {r["id"]: r for r in json.loads(repo.ok("key", "list", "--json").out)}
    assert rows[slot]["state"] == "removed on this machine, put back: refused"
    # Accepting the present state does not make the removed password open again.
    repo.ok("acknowledge")
    repo.ok("check")
    assert replacement("snapshots").code == 12
    # Removed again, and put back again: an alarm again.
    repo.ok("key", "remove", slot[:8])
    (Path(repo.repo) / "keys" / slot).write_bytes(saved)
    assert f"key slot {slot[:8]}" in repo.ok("snapshots").err


def test_an_index_file_put_back_after_prune_is_reported(repo: Coffre, tree: Path) -> None:
    (old,) = new_backup(repo, tree, 1, size=2_000_000)["snapshots"]
    (tree / "docs" / "nouveau-1.bin").unlink()  # data only the first snapshot holds
    new_backup(repo, tree, 2)
    saved = {p.name: p.read_bytes() for p in files(repo, "index")}
    repo.ok("forget", old.name[:8], "--prune")
    gone = sorted(set(saved) - {p.name for p in files(repo, "index")})
    assert gone, "prune rewrote no index file"
    (Path(repo.repo) / "index" / gone[0]).write_bytes(saved[gone[0]])
    res = repo("snapshots")
    assert f"index file {gone[0][:8]}" in res.err, res
    assert repo("check").code == 1


def test_a_forget_on_another_machine_is_not_an_alarm(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    other = Coffre(repo.repo, repo.pwfile, tmp_path / "cache-b")  # its own cache and state
    for seed in range(1, 5):
        new_backup(repo, tree, seed)
    first, second, *_ = snapshot_ids(repo)  # seen by this machine
    other.ok("forget", first[:8], "--prune")
    other.ok("forget", "--keep-last", "2")
    assert len(files(repo, "forgotten")) == 2  # one record per forget
    res = repo.ok("snapshots")
    assert res.err == ""
    assert "warning" not in repo.ok("check", "--read-data").err
    assert second not in snapshot_ids(repo)
    # The other machine saw the snapshots vanish through its own forgets: no alarm there either.
    assert "warning" not in other.ok("check").err


def test_the_mark_is_private_and_says_what_this_machine_saw(repo: Coffre, tree: Path) -> None:
    new_backup(repo, tree, 1)
    (sid,) = snapshot_ids(repo)
    state = Path(repo.env["COFFRE_STATE_DIR"])
    folder = state / repo_id(repo)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert "mark.json" in names
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    doc = json.loads((folder / "mark.json").read_text())
    assert doc["format"] == "coffre-mark" and doc["version"] == 1
    assert doc["repository"] == repo_id(repo)
    assert list(doc["snapshots"]) == [sid]
    # Not the disposable cache: deleting the cache keeps the mark.
    assert Path(repo.env["COFFRE_CACHE_DIR"]) not in folder.parents


def test_planted_slots_do_not_lock_out_a_machine_that_opened_before(repo: Coffre, tmp_path: Path) -> None:
    repo.ok("snapshots")  # this machine has opened the repository
    backend = LocalBackend(repo.repo)
    rid = bytes.fromhex(repo_id(repo))
    for _ in range(keyring.MAX_SLOTS_TRIED + 1):
        # Older than the real slots, so a machine without a mark tries them first.
        keyring.add_slot(backend, os.urandom(32), rid, "password", os.urandom(8).hex().encode(),
                         "password", FixedClock(0))
    res = repo("snapshots")
    assert res.code == 0, res
    # What remains: a machine opening it for the first time tries the planted slots first.
    assert Coffre(repo.repo, repo.pwfile, tmp_path / "new-machine")("snapshots").code == 12


def test_an_interrupted_forget_is_reported_with_how_to_finish_it(repo: Coffre, tree: Path,
                                                                  tmp_path: Path) -> None:
    new_backup(repo, tree, 1)
    (sid,) = snapshot_ids(repo)
    # A forget that wrote its record and died before removing the snapshot (or a storage
    # that put the snapshot back): evidence a new machine sees too.
    save_tombstones(Repository.open(LocalBackend(repo.repo), PASSWORD), [sid])
    for c in (repo, Coffre(repo.repo, repo.pwfile, tmp_path / "new-machine")):
        res = c("snapshots")
        assert f"snapshot {sid[:8]}" in res.err and f"coffre forget {sid[:8]}" in res.err, res
        assert c("check").code == 1
    repo.ok("forget", sid[:8])
    repo.ok("check")


def test_a_damaged_forget_record_is_a_check_error_and_prune_goes_on(repo: Coffre, tree: Path) -> None:
    new_backup(repo, tree, 1)
    junk = os.urandom(200)
    LocalBackend(repo.repo).save(Handle("forgotten", hashlib.sha256(junk).hexdigest()), junk)
    res = repo("check")
    assert res.code == 1 and "forget record" in res.out, res
    repo.ok("prune")
    assert "forget record" in repo.ok("snapshots").err


def test_a_new_machine_trusts_what_it_first_sees(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    """Trust on first use: a deletion before a machine's first look is not seen by it."""
    new_backup(repo, tree, 1)
    (newest,) = new_backup(repo, tree, 2)["snapshots"]
    newest.unlink()
    fresh = Coffre(repo.repo, repo.pwfile, tmp_path / "new-machine")
    assert fresh.ok("snapshots").err == ""
    fresh.ok("check")
    assert "vanished" in repo("snapshots").err  # the machine that saw it knows
