"""forget and prune through the real command line: retention, size budget, reclaimed space,
and the locks that keep prune from deleting what a running operation needs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from coffre.core.errors import EXIT_LOCKED, EXIT_USAGE
from coffre.ops import prune
from coffre.ops.common import load_tree
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest


def packs(c: Coffre) -> dict[str, int]:
    """Pack name -> size on disk."""
    return {p.name: p.stat().st_size for p in (c.repo / "data").glob("*/*")
            if not p.name.startswith(".")}


def repo_bytes(c: Coffre) -> int:
    return sum(packs(c).values())


def names(c: Coffre, kind: str) -> set[str]:
    return {p.name for p in (c.repo / kind).iterdir()}


def open_local(c: Coffre) -> Repository:
    return Repository.open(LocalBackend(c.repo), PASSWORD)


def write_random(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def backup(c: Coffre, src: Path, *args: str) -> tuple[str, set[str]]:
    """Back up src; the new snapshot id and the packs this backup wrote."""
    age_tree(src)
    before = set(packs(c))
    sid = c.ok("backup", str(src), "--json", *args).json()["snapshot"]
    return sid, set(packs(c)) - before


def retime(c: Coffre, times: dict[str, datetime]) -> dict[str, str]:
    """Rewrite snapshots with other times (snapshots are content-addressed: they get new
    ids). Returns old id -> new id."""
    repo = open_local(c)
    out = {}
    for snap in repo.snapshots():
        if snap.id in times:
            old = snap.id
            snap.time_ns = int(times[old].timestamp()) * 1_000_000_000
            out[old] = repo.save_snapshot(snap)
            repo.backend.remove(Handle("snapshots", old))
    return out


def days_ago(days: int, hour: int) -> datetime:
    """A local time `days` days before today."""
    today = datetime.now().replace(hour=hour, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def small_tree(root: Path, seed: int = 3) -> Path:
    root.mkdir(parents=True)
    (root / "a.txt").write_text(f"pharmacie {seed}\n" * 50)
    write_random(root / "b.bin", 20_000, seed)
    age_tree(root)
    return root


# --------------------------------------------------------------------------- forget


def test_forget_keep_last_per_host_group(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    a = [backup(repo, src, "--host", "a")[0] for _ in range(3)]
    b = [backup(repo, src, "--host", "b")[0] for _ in range(2)]
    assert snapshot_ids(repo) == a + b
    res = repo.ok("forget", "--keep-last", "1")
    assert "2 kept, 3 removed" in res.out
    assert snapshot_ids(repo) == [a[-1], b[-1]]


def test_forget_keep_daily_and_host_filter(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    a = [backup(repo, src, "--host", "a")[0] for _ in range(4)]
    b = [backup(repo, src, "--host", "b")[0] for _ in range(2)]
    ids = retime(repo, {
        a[0]: days_ago(3, 10), a[1]: days_ago(3, 18), a[2]: days_ago(2, 10), a[3]: days_ago(1, 10),
        b[0]: days_ago(3, 9), b[1]: days_ago(3, 11),
    })
    a, b = [ids[x] for x in a], [ids[x] for x in b]
    res = repo.ok("forget", "--keep-daily", "2", "--host", "a")
    day2 = days_ago(2, 10).strftime("%Y-%m-%d")
    assert f"keep   {a[2][:8]}" in res.out and f"daily {day2}" in res.out
    assert f"remove {a[0][:8]}" in res.out and "no rule keeps it" in res.out
    assert set(snapshot_ids(repo)) == {a[2], a[3], *b}  # host b untouched
    repo.ok("forget", "--keep-daily", "1")
    assert set(snapshot_ids(repo)) == {a[3], b[1]}


def test_forget_keep_within_and_tags(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    s = [backup(repo, src, *(["--tag", "garde"] if i == 0 else []))[0] for i in range(4)]
    ids = retime(repo, {s[0]: days_ago(60, 12), s[1]: days_ago(20, 12), s[2]: days_ago(3, 12)})
    old, mid, recent, now = ids[s[0]], ids[s[1]], ids[s[2]], s[3]
    res = repo.ok("forget", "--keep-within", "7d", "--keep-tag", "garde")
    assert "tagged garde" in res.out and "within 7d" in res.out
    assert f"remove {mid[:8]}" in res.out
    assert snapshot_ids(repo) == [old, recent, now]
    repo.ok("forget", "--keep-monthly", "1")  # one month: the newest snapshot only
    assert snapshot_ids(repo) == [now]


def test_no_policy_removes_the_newest_of_a_host_and_path_set(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    etc = small_tree(tmp_path / "etc", seed=4)
    a = [backup(repo, src)[0] for _ in range(2)]
    e = backup(repo, etc)[0]
    b = backup(repo, src, "--host", "b")[0]
    # No snapshot has the tag: the rules keep nothing, yet each newest stays, and says why.
    res = repo.ok("forget", "--keep-tag", "audit", "--dry-run")
    assert f"remove {a[0][:8]}" in res.out
    for sid in (a[1], e, b):
        assert f"keep   {sid[:8]}" in res.out
    assert res.out.count("newest of its host and paths (no policy removes it)") == 3
    repo.ok("forget", "--keep-tag", "audit")
    assert set(snapshot_ids(repo)) == {a[1], e, b}
    # Named by id, it goes.
    repo.ok("forget", a[1][:8])
    assert set(snapshot_ids(repo)) == {e, b}


def test_forget_dry_run_removes_nothing_and_explains(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    ids = [backup(repo, src)[0] for _ in range(3)]
    res = repo.ok("forget", "--keep-last", "1", "--dry-run")
    assert "1 kept, 2 would be removed (dry run)" in res.out
    assert f"keep   {ids[2][:8]}" in res.out and "last snapshot" in res.out
    assert f"remove {ids[0][:8]}" in res.out and "no rule keeps it" in res.out
    assert snapshot_ids(repo) == ids
    js = repo.ok("forget", "--keep-last", "2", "--dry-run", "--json").json()
    assert js["dry_run"] is True
    assert [d["keep"] for d in js["decisions"]] == [False, True, True]
    assert snapshot_ids(repo) == ids


def test_forget_without_a_rule_is_a_usage_error(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    ids = [backup(repo, src)[0] for _ in range(2)]
    res = repo("forget")
    assert res.code == EXIT_USAGE and "no keep rule" in res.err, res
    for bad in (["--keep-last", "-1"], ["--keep-daily", "-2"], ["--max-size", "0"],
                ["--max-size", "beaucoup"], ["--keep-within", "3x"], ["--prune"],
                ["--keep-last", "1", "--max-size", "0"]):
        res = repo("forget", *bad)
        assert res.code == EXIT_USAGE, (bad, res)
        assert "Traceback" not in res.err, (bad, res)
    assert snapshot_ids(repo) == ids


# ----------------------------------------------------------------------- size budget


def test_forget_max_size_removes_the_oldest_until_the_repository_fits(
        repo: Coffre, tmp_path: Path, restored: Path) -> None:
    src = tmp_path / "src"
    ids, sizes = [], []
    for i in range(4):
        write_random(src / "data.bin", 300_000 + 100_000 * i, seed=i)
        sid, new = backup(repo, src)
        ids.append(sid)
        sizes.append(sum(packs(repo)[p] for p in new))
    assert repo_bytes(repo) == sum(sizes)

    budget = sizes[2] + sizes[3]  # exactly the two newest
    dry = repo.ok("forget", "--max-size", f"{budget}B", "--dry-run")
    assert "over the size budget" in dry.out and " bytes" not in dry.out  # human sizes
    assert "2 kept, 2 would be removed" in dry.out
    assert snapshot_ids(repo) == ids and repo_bytes(repo) == sum(sizes)

    repo.ok("forget", "--max-size", f"{budget}B", "--prune")
    assert snapshot_ids(repo) == ids[2:]
    assert repo_bytes(repo) == budget

    repo.ok("forget", "--max-size", f"{budget - 1}B", "--prune")  # one byte short
    assert snapshot_ids(repo) == ids[3:]
    assert repo_bytes(repo) == sizes[3]

    res = repo.ok("forget", "--max-size", "1KiB", "--prune")
    assert "newest of its host and paths (no policy removes it)" in res.out
    assert "kept over the size budget" in res.out
    assert snapshot_ids(repo) == ids[3:]
    assert repo_bytes(repo) == sizes[3]
    assert "no errors" in repo.ok("check", "--read-data").out
    repo.ok("restore", "latest", "--target", str(restored))
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)


def test_forget_max_size_counts_other_hosts(repo: Coffre, tmp_path: Path) -> None:
    """--host limits what forget may remove, not what the repository holds."""
    src = tmp_path / "src"
    ids, sizes = [], []
    for i, host in enumerate(("a", "a", "b")):
        write_random(src / "data.bin", 300_000, seed=10 + i)
        sid, new = backup(repo, src, "--host", host)
        ids.append(sid)
        sizes.append(sum(packs(repo)[p] for p in new))
    repo.ok("forget", "--max-size", f"{sizes[1] + sizes[2]}B", "--host", "a", "--prune")
    assert snapshot_ids(repo) == ids[1:]
    assert repo_bytes(repo) == sizes[1] + sizes[2]


def test_forget_prune_json_is_one_document(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(2):
        write_random(src / "data.bin", 200_000, seed=20 + i)
        backup(repo, src)
    js = repo.ok("forget", "--keep-last", "1", "--prune", "--json").json()
    assert [d["keep"] for d in js["decisions"]] == [False, True]
    # The first backup's pack of data and its pack of folder listings.
    assert js["prune"]["packs_removed"] == 2 and js["prune"]["packs_deleted"] == 2


# ---------------------------------------------------------------------------- prune


def test_prune_deletes_packs_of_forgotten_data(repo: Coffre, tmp_path: Path,
                                               restored: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "data.bin", 1_000_000, seed=1)
    _, first = backup(repo, src)
    write_random(src / "data.bin", 1_000_000, seed=2)
    backup(repo, src)
    assert repo.ok("prune").out.count("freed 0 B") == 1  # nothing unused yet
    repo.ok("forget", "--keep-last", "1")
    before = repo_bytes(repo)
    dry = repo.ok("prune", "--dry-run")
    assert "would free" in dry.out and repo_bytes(repo) == before
    res = repo.ok("prune")
    assert "2 unused packs," in res.out and "deleted 2 packs\n" in res.out  # data and trees
    assert not first & set(packs(repo))
    assert repo_bytes(repo) < before - 1_000_000
    assert not names(repo, "trash")
    assert "no errors" in repo.ok("check", "--read-data").out
    repo.ok("restore", "latest", "--target", str(restored))
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)


def test_prune_repacks_partly_used_packs(repo: Coffre, tmp_path: Path, restored: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "keep.bin", 1_000_000, seed=1)
    write_random(src / "drop.bin", 1_000_000, seed=2)
    _, first = backup(repo, src)
    assert len([p for p in first if packs(repo)[p] > 1_000_000]) == 1  # both files in one pack
    (src / "drop.bin").unlink()
    backup(repo, src)
    repo.ok("forget", "--keep-last", "1")
    before = repo_bytes(repo)
    st = repo.ok("prune", "--json").json()
    # The data pack is repacked; the first backup's pack of folder listings is unused.
    assert st["packs_repacked"] == 1 and st["packs_removed"] == 1 and st["packs_deleted"] == 2
    assert not first & set(packs(repo))
    assert before - 1_100_000 < repo_bytes(repo) < before - 900_000
    assert "no errors" in repo.ok("check", "--read-data").out
    repo.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    # Nothing left to do.
    again = repo.ok("prune", "--json").json()
    assert again["packs_repacked"] == again["packs_removed"] == again["packs_deleted"] == 0


def test_prune_reads_a_pack_it_repacks_in_spans_not_whole(
        repo: Coffre, tmp_path: Path, restored: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pack being repacked is not held whole in memory beside the ones being filled and
    written: it is read in spans of at most REPACK_SPAN bytes (here 200 KB), and every used
    blob still arrives intact."""
    src = tmp_path / "src"
    for n in range(12):  # one pack of ~100 KB blobs, half of them forgotten
        write_random(src / f"keep{n}.bin", 100_000, seed=30 + n)
        write_random(src / f"drop{n}.bin", 100_000, seed=50 + n)
    _, first = backup(repo, src)
    for n in range(12):
        (src / f"drop{n}.bin").unlink()
    backup(repo, src)
    repo.ok("forget", "--keep-last", "1")
    data_pack = max(first, key=lambda p: packs(repo)[p])
    monkeypatch.setattr(prune, "REPACK_SPAN", 200_000)
    reads: list[tuple[int, int | None]] = []
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    real_load = r.backend.load

    def recording_load(handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if handle.name == data_pack:
            reads.append((offset, length))
        return real_load(handle, offset, length)

    monkeypatch.setattr(r.backend, "load", recording_load)
    with Lock(r, exclusive=True, command="prune") as lock:
        stats = prune.Pruner(r, lock).run()
    monkeypatch.undo()
    assert stats.packs_repacked == 1 and stats.bytes_repacked > 1_000_000
    assert len(reads) >= 6 and all(length is not None and length <= 200_000 for _, length in reads)
    assert data_pack not in packs(repo)
    assert "no errors" in repo.ok("check", "--read-data").out
    repo.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)


def test_prune_stops_before_changing_anything_when_a_blob_it_would_move_is_damaged(
        repo: Coffre, tmp_path: Path) -> None:
    """A damaged blob a snapshot needs, in one of the packs to repack, stops the prune with
    the old index and every pack in place."""
    src = tmp_path / "src"
    for n in range(3):  # three packs, each to be repacked: one file kept, one forgotten
        write_random(src / f"keep{n}.bin", 1_000_000, seed=10 + n)
        write_random(src / f"drop{n}.bin", 1_000_000, seed=20 + n)
        backup(repo, src)
        (src / f"drop{n}.bin").unlink()
    backup(repo, src)
    repo.ok("forget", "--keep-last", "1")
    assert repo.ok("prune", "--dry-run", "--json").json()["packs_repacked"] == 3
    r = open_local(repo)
    r.load_index()
    nodes = {n.name: n for n in load_tree(r, r.snapshots()[-1].tree)}
    path = next(iter(nodes))
    while nodes[path].subtree is not None:  # down to the folder backed up
        nodes = {n.name: n for n in load_tree(r, nodes[path].subtree)}
        path = next(iter(nodes))
    loc = r.index.lookup(nodes[b"keep1.bin"].content[0])
    assert loc is not None
    pack = packs(repo)
    victim = next((repo.repo / "data").glob(f"*/{loc.pack.hex()}"))
    raw = bytearray(victim.read_bytes())
    raw[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    victim.write_bytes(bytes(raw))
    indexes = names(repo, "index")
    res = repo("prune")
    assert res.code != 0 and "damaged blob that a snapshot needs" in res.err, res
    assert names(repo, "index") == indexes and not names(repo, "trash")
    assert set(pack) <= set(packs(repo))  # every pack still there (new ones are not indexed)
    assert repo("check", "--read-data").code == 1


def test_prune_refuses_when_an_indexed_pack_is_missing(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "data.bin", 500_000, seed=1)
    _, first = backup(repo, src)
    write_random(src / "data.bin", 500_000, seed=2)
    _, second = backup(repo, src)
    repo.ok("forget", "--keep-last", "1")  # the first packs are now unused
    lost = max(second, key=lambda p: packs(repo)[p])  # the data, not the folder listings
    (repo.repo / "data" / lost[:2] / lost).unlink()
    state = (set(packs(repo)), names(repo, "index"), names(repo, "snapshots"))
    res = repo("prune")
    assert res.code == 1, res
    assert "missing" in res.err and "refuses" in res.err and lost[:12] in res.err
    assert "data of snapshot" in res.err  # what needs it
    assert (set(packs(repo)), names(repo, "index"), names(repo, "snapshots")) == state
    assert first <= set(packs(repo)) and not names(repo, "trash")


# ---------------------------------------------------------------------------- locks


def test_prune_keeps_trashed_packs_while_a_backup_holds_a_lock(repo: Coffre,
                                                               tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src / "data.bin", 500_000, seed=1)
    _, first = backup(repo, src)
    write_random(src / "data.bin", 500_000, seed=2)
    backup(repo, src)
    repo.ok("forget", "--keep-last", "1")
    held = Lock(open_local(repo), exclusive=False, command="backup").acquire()
    try:
        res = repo.ok("prune")
        assert "deleted 0 packs" in res.out and "wait in the trash" in res.out
        assert first <= set(packs(repo)) and names(repo, "trash")
        res = repo.ok("prune")  # still running: still waiting
        assert "deleted 0 packs" in res.out and first <= set(packs(repo))
        assert "no errors" in repo.ok("check", "--read-data").out
    finally:
        held.release()
    res = repo.ok("prune")
    assert "deleted 2 packs\n" in res.out  # the first backup's data and folder listings
    assert not first & set(packs(repo)) and not names(repo, "trash")
    assert "no errors" in repo.ok("check", "--read-data").out


def test_a_live_exclusive_lock_blocks_prune(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    backup(repo, src)
    held = Lock(open_local(repo), exclusive=True, command="forget").acquire()
    try:
        for cmd in (["prune"], ["forget", "--keep-last", "1"], ["repair", "index"]):
            res = repo(*cmd)
            assert res.code == EXIT_LOCKED, (cmd, res)
            assert "locked" in res.err and "forget" in res.err
        assert "no errors" in repo.ok("check").out  # shared locks do not wait
    finally:
        held.release()
    repo.ok("prune")


CHILD = """
import sys
import time
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
repo = Repository.open(LocalBackend(sys.argv[1]), sys.argv[2])
Lock(repo, exclusive=True, command="prune").acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_stale_lock_does_not_block_prune(repo: Coffre, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    backup(repo, src)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(repo.repo), PASSWORD],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=repo.env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"locked\n"
        assert repo("prune").code == EXIT_LOCKED  # alive: it counts
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert len(names(repo, "locks")) == 1  # left behind by the killed process
    res = repo.ok("prune")
    assert "freed" in res.out
    assert not names(repo, "locks")


def test_forget_named_snapshots(repo: Coffre, tree: Path) -> None:
    for _ in range(3):
        repo.ok("backup", str(tree))
    ids = snapshot_ids(repo)
    res = repo.ok("forget", ids[1][:8])
    assert "named on the command line" in res.out
    assert snapshot_ids(repo) == [ids[0], ids[2]]
    bad = repo("forget", ids[0][:8], "--keep-last", "1")
    assert bad.code == 2 and snapshot_ids(repo) == [ids[0], ids[2]]


def test_prune_removes_partial_uploads_of_crashed_writers_only_when_old(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    folder = next(p for p in (repo.repo / "data").iterdir() if p.is_dir())
    old, recent = folder / ".tmp-crashed", folder / ".tmp-running"
    old.write_bytes(b"half a pack")
    recent.write_bytes(b"being written")
    two_days_ago = time.time_ns() - 2 * 24 * 3600 * 10**9
    os.utime(old, ns=(two_days_ago, two_days_ago))
    assert repo.ok("prune", "--json").json()["temporaries_removed"] == 1
    assert not old.exists() and recent.exists()
