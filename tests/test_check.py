"""check and repair index through the real command line, on repositories damaged on purpose."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffre.chunker import ChunkerParams
from coffre.core.errors import EXIT_USAGE
from coffre.crypto.aead import KIND_TREE
from coffre.ops.check import Share, share_packs
from coffre.ops.inspect import iter_tree
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest

# Small packs and chunks: a few MB of data spread over several packs.
SMALL_PACK = 1024 * 1024
SMALL_CHUNKS = ChunkerParams(64 * 1024, 128 * 1024, 256 * 1024)


def init_small(c: Coffre) -> Coffre:
    """A repository with 1 MiB packs and ~200 KiB chunks."""
    Repository.init(LocalBackend(c.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    return c


@pytest.fixture
def small(coffre: Coffre) -> Coffre:
    return init_small(coffre)


def packs(c: Coffre) -> dict[str, Path]:
    """Pack name -> file, as stored on disk."""
    return {p.name: p for p in (c.repo / "data").glob("*/*") if not p.name.startswith(".")}


def flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


def open_local(c: Coffre) -> Repository:
    repo = Repository.open(LocalBackend(c.repo), PASSWORD)
    repo.load_index()
    return repo


def cache_db(c: Coffre) -> sqlite3.Connection:
    """This machine's cache database of the repository, opened directly (to read or forge rows)."""
    return sqlite3.connect(Path(c.env["COFFRE_CACHE_DIR"]) / open_local(c).config.id.hex() / "cache.sqlite")


def forget_remembered_listings(c: Coffre) -> None:
    """Empty this machine's memory of the listings earlier checks decoded."""
    db = cache_db(c)
    try:
        with db:
            db.execute("DELETE FROM checked_listings")
    finally:
        db.close()


def file_packs(c: Coffre, snap_id: str) -> dict[str, set[str]]:
    """Path of every file of a snapshot -> the packs holding its content (from the index)."""
    repo = open_local(c)
    snap = next(s for s in repo.snapshots() if s.id == snap_id)
    out: dict[str, set[str]] = {}
    for path, node in iter_tree(repo, snap.tree):
        if node.type == "file":
            locs = [repo.index.lookup(b) for b in node.content]
            out[path] = {loc.pack.hex() for loc in locs if loc}
    return out


def tree_packs(c: Coffre) -> set[str]:
    repo = open_local(c)
    return {pid.hex() for pid, entries in repo.index.packs().items()
            if all(e.kind == KIND_TREE for e in entries)}


@dataclass
class Damage:
    """Two snapshots of one folder and a pack that holds only data of one of its files."""

    src: Path
    snaps: list[str]  # oldest first
    victim: str  # pack name
    big: Path  # the file with data in the victim pack
    spared: list[Path]  # files with no data in it


def two_snapshots(c: Coffre, tmp_path: Path) -> Damage:
    rnd = random.Random(1)
    src = tmp_path / "src"
    # a-docs' few chunks (at most 4) may wait in any of the packs open when big.bin is read,
    # which then fill up with big.bin's: big.bin fills more 1 MiB packs than that (a CI run
    # once found every pack of a 3 MB big.bin shared with a-docs), so one holds it alone.
    (src / "a-docs").mkdir(parents=True)
    (src / "a-docs" / "note.txt").write_text("bonjour\n" * 100)
    (src / "a-docs" / "other.bin").write_bytes(rnd.randbytes(200_000))
    big = src / "big.bin"
    big.write_bytes(rnd.randbytes(6_000_000))
    age_tree(src)
    c.ok("backup", str(src))
    (src / "new.bin").write_bytes(rnd.randbytes(300_000))
    age_tree(src)
    c.ok("backup", str(src))
    snaps = snapshot_ids(c)
    files = file_packs(c, snaps[1])
    assert file_packs(c, snaps[0])[str(big)] == files[str(big)]  # deduplicated
    others = set().union(*(p for f, p in files.items() if f != str(big)))
    candidates = sorted(files[str(big)] - others - tree_packs(c))
    assert candidates, "the chunking should leave a pack holding only big.bin data"
    spared = [Path(f) for f, p in sorted(files.items()) if candidates[0] not in p]
    assert len(spared) == 3
    return Damage(src, snaps, candidates[0], big, spared)


def assert_names_damage(out: str, d: Damage) -> None:
    assert f"damaged pack {d.victim}" in out  # the full pack name
    for sid in d.snaps:
        assert f"snapshot {sid[:8]} depends on damaged data for 1 path:" in out
    assert f"    {d.big}\n" in out
    for f in d.spared:
        assert str(f) not in out


def assert_partial_restore(c: Coffre, d: Damage, restored: Path) -> None:
    """Files that do not depend on the damaged pack restore; the one that does is an error."""
    sid = d.snaps[1][:8]
    for f in d.spared:
        c.ok("restore", sid, "--target", str(restored / "ok"), "--include", str(f))
        assert (restored / "ok" / str(f).lstrip("/")).read_bytes() == f.read_bytes()
    res = c("restore", sid, "--target", str(restored / "bad"), "--include", str(d.big))
    assert res.code == 1, res
    assert f"error: {restored / 'bad' / str(d.big).lstrip('/')}:" in res.err
    # A full restore goes on past the damaged file: everything else comes back.
    res = c("restore", sid, "--target", str(restored / "full"))
    assert res.code == 1 and "Traceback" not in res.err, res
    assert f"error: {restored / 'full' / str(d.big).lstrip('/')}:" in res.err
    for f in d.spared:
        assert (restored / "full" / str(f).lstrip("/")).read_bytes() == f.read_bytes()


# ------------------------------------------------------------------------ healthy


def test_check_is_clean_on_a_healthy_repository(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    assert "no errors" in repo.ok("check").out
    full = repo.ok("check", "--read-data")
    assert "no errors" in full.out
    n = len(packs(repo))
    assert (f"read all {n} packs" if n > 1 else "read 1 pack\n") in full.out
    js = repo.ok("check", "--read-data", "--json").json()
    assert js["ok"] is True and js["errors"] == [] and js["damaged_packs"] == {}
    assert js["packs_read"] == js["packs_total"] == len(packs(repo)) > 0
    assert js["snapshots"] == 1


# ---------------------------------------------------------------------- damaged packs


def test_flipped_byte_in_a_pack_is_found_by_check(small: Coffre, tmp_path: Path,
                                                      restored: Path) -> None:
    d = two_snapshots(small, tmp_path)
    assert "no errors" in small.ok("check", "--read-data").out
    flip(packs(small)[d.victim])
    res = small("check", "--read-data")
    assert res.code == 1, res
    assert_names_damage(res.out, d)
    assert "the repository has errors" in res.out
    js = small("check", "--read-data", "--json").json()
    assert list(js["damaged_packs"]) == [d.victim]
    assert js["affected"] == {sid: [str(d.big)] for sid in d.snaps}
    # The plain check finds it too: it hashes every pack (no key needed for that).
    plain = small("check", "--json").json()
    assert list(plain["damaged_packs"]) == [d.victim]
    assert "does not match its name" in plain["damaged_packs"][d.victim]
    assert_partial_restore(small, d, restored)


def test_truncated_pack_is_found_by_plain_check(small: Coffre, tmp_path: Path,
                                                 restored: Path) -> None:
    d = two_snapshots(small, tmp_path)
    victim = packs(small)[d.victim]
    data = victim.read_bytes()
    victim.write_bytes(data[:-3])  # only the end of the pack header is lost
    res = small("check")
    assert res.code == 1, res
    assert_names_damage(res.out, d)
    assert "truncated" in res.out
    victim.write_bytes(data[: len(data) // 2])
    res = small("check")
    assert res.code == 1, res
    assert_names_damage(res.out, d)
    assert_partial_restore(small, d, restored)


def test_deleted_pack_is_found_by_plain_check(small: Coffre, tmp_path: Path,
                                              restored: Path) -> None:
    d = two_snapshots(small, tmp_path)
    packs(small)[d.victim].unlink()
    res = small("check")
    assert res.code == 1, res
    assert_names_damage(res.out, d)
    assert "missing" in res.out
    assert_partial_restore(small, d, restored)


def test_damaged_tree_pack_names_whole_directories(small: Coffre, tmp_path: Path) -> None:
    d = two_snapshots(small, tmp_path)
    repo = open_local(small)
    root = next(s for s in repo.snapshots() if s.id == d.snaps[1]).tree
    trees = {loc.pack.hex() for loc in repo.index.locations(root)}  # the second backup's tree pack
    assert trees <= tree_packs(small)
    for name in trees:
        packs(small)[name].unlink()
    res = small("check")
    assert res.code == 1, res
    assert f"snapshot {d.snaps[1][:8]} depends on damaged data" in res.out
    assert "/ (whole directory)" in res.out
    assert f"snapshot {d.snaps[0][:8]} depends" not in res.out


# ------------------------------------------------------------------------- subsets


def test_read_data_subsets_read_every_pack_once(small: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(random.Random(2).randbytes(4_000_000))
    small.ok("backup", str(src))
    names = set(packs(small))
    assert len(names) >= 4

    def read(subset: str) -> int:
        js = small.ok("check", "--json", "--read-data-subset", subset).json()
        assert js["ok"] and js["packs_total"] == len(names)
        return int(js["packs_read"])

    assert read("1/2") + read("2/2") == len(names)
    assert read("1/1") == len(names)
    assert read("100%") == len(names)
    out = small.ok("check", "--read-data-subset", "1/3").out
    assert f" of {len(names)} (slice 1/3)" in out and "no errors" in out

    # Which packs each run reads: damage them all and see which each run reports.
    for p in packs(small).values():
        flip(p)

    def damaged(subset: str) -> set[str]:
        # As on a machine where no check ran: a check hashes the packs of the listings it
        # remembers, whatever the share (test_check_walked.py).
        forget_remembered_listings(small)
        res = small("check", "--json", "--read-data-subset", subset)
        js = res.json()
        assert res.code == (1 if js["packs_read"] or js["errors"] else 0), res
        assert js["packs_read"] == len(js["damaged_packs"])
        return set(js["damaged_packs"])

    first, second = damaged("1/2"), damaged("2/2")
    assert first | second == names and not first & second
    thirds = [damaged(f"{i}/3") for i in (1, 2, 3)]
    assert set().union(*thirds) == names and sum(map(len, thirds)) == len(names)
    # A rotating half: each run goes on where the last stopped, so two runs read every pack.
    rot = [damaged("50%") for _ in range(3)]
    assert rot[0] | rot[1] == names and rot[1] | rot[2] == names
    assert rot[0] != rot[1]


def test_a_rotating_share_reads_as_much_data_each_run_and_every_pack_in_one_turn(
        small: Coffre, tmp_path: Path) -> None:
    """`--read-data-subset 10%`, the agent's nightly check: each run reads at least a tenth of
    the stored bytes and less than a tenth and one pack more, whatever the packs' names, and
    ten runs read every pack. (Slices by name held from none to twice their share of packs.)"""
    src = tmp_path / "src"
    src.mkdir()
    (src / "scans.bin").write_bytes(random.Random(3).randbytes(30_000_000))
    small.ok("backup", str(src))
    sizes = {name: path.stat().st_size for name, path in packs(small).items()}
    total, largest = sum(sizes.values()), max(sizes.values())
    assert len(sizes) >= 25

    def run() -> int:
        js = small.ok("check", "--json", "--read-data-subset", "10%").json()
        assert js["ok"] and js["packs_total"] == len(sizes)
        return int(js["bytes_read"])

    runs = [run() for _ in range(10)]
    for read in runs:
        assert total / 10 <= read < total / 10 + largest, (runs, total, largest)
    assert sum(runs) >= total
    # Every pack read in that turn: damage them all, and the next ten runs name each of them.
    for p in packs(small).values():
        flip(p)
    seen: set[str] = set()
    for _ in range(10):
        res = small("check", "--json", "--read-data-subset", "10%")
        seen |= set(res.json()["damaged_packs"])
    assert seen == set(sizes)
    out = small("check", "--read-data-subset", "10%").out
    assert f" of {len(sizes)}, " in out
    assert "(10% of the data, continuing where the last check stopped)" in out


def test_bad_subset_values_are_usage_errors(repo: Coffre) -> None:
    for bad in ("0/2", "3/2", "1/0", "0/0", "2", "abc", "0%", "101%", "-5%", "1/2/3", ""):
        res = repo("check", f"--read-data-subset={bad}")
        assert res.code == EXIT_USAGE, (bad, res)
        assert "--read-data-subset" in res.err and "Traceback" not in res.err, (bad, res)


# ------------------------------------------------------------------------- repair index


def test_repair_index_rebuilds_a_lost_index(repo: Coffre, tree: Path, restored: Path) -> None:
    repo.ok("backup", str(tree))
    for f in (repo.repo / "index").iterdir():
        f.unlink()
    res = repo("check")
    assert res.code == 1 and "missing" in res.out, res
    assert "not in any index" in res.out
    out = repo.ok("repair", "index").out
    n = len(packs(repo))
    assert f"index rebuilt: {n} pack{'s' if n > 1 else ''}, " in out
    assert list((repo.repo / "index").iterdir())
    full = repo.ok("check", "--read-data").out
    assert "no errors" in full and "note:" not in full
    repo.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(tree).lstrip("/")) == tree_digest(tree)


def test_backup_after_repair_uploads_lost_data_again(small: Coffre, tmp_path: Path,
                                                      restored: Path) -> None:
    d = two_snapshots(small, tmp_path)
    packs(small)[d.victim].unlink()
    small.ok("repair", "index")
    res = small("check")
    for sid in d.snaps:  # said for each snapshot, though both name the same blobs
        assert res.code == 1 and f"snapshot {sid[:8]}: {d.big}: data is missing" in res.out, res
    summary = small.ok("backup", str(d.src), "--json").json()["summary"]
    assert 0 < summary["data_added"] < 1_500_000  # the lost part only
    assert summary["files_changed"] + summary["files_new"] == 1  # big.bin was read again
    assert "no errors" in small.ok("check", "--read-data").out
    small.ok("restore", "latest", "--target", str(restored), "--include", str(d.big))
    assert (restored / str(d.big).lstrip("/")).read_bytes() == d.big.read_bytes()
    # The older snapshots share the re-uploaded data: they are whole again.
    assert small.ok("dump", d.snaps[0][:8], str(d.big)).outb == d.big.read_bytes()


# ------------------------------------------------------------------ index and snapshots


def test_damaged_index_file_is_reported(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    (index,) = (repo.repo / "index").iterdir()
    flip(index)
    res = repo("check")
    assert res.code == 1, res
    assert f"error: index {index.name[:12]}:" in res.out and "damaged" in res.out


def test_damaged_snapshot_file_is_reported(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    repo.ok("backup", str(tree))
    first = (repo.repo / "snapshots" / snapshot_ids(repo)[0])
    flip(first, 10)
    res = repo("check")
    assert res.code == 1, res
    assert f"error: snapshot {first.name[:12]}:" in res.out and "damaged" in res.out
    assert repo("check", "--json").json()["snapshots"] == 1


def test_a_size_no_pack_can_have_does_not_make_the_rotating_share_read_everything() -> None:
    """A storage listing a pack at a petabyte (damaged, or hostile) must not turn a
    10 % share into the whole repository: that size counts as the largest a pack can have
    (1 GiB)."""
    names = [f"{i:02x}" * 32 for i in range(40)]
    stored = dict.fromkeys(names, 16 * 1024 * 1024)
    stored[names[7]] = 2**50
    chosen = share_packs(stored, Share(10.0))
    assert chosen == names[:8]  # 10 % of 39 x 16 MiB + 1 GiB: reached with the eighth
    # The next run goes on from the last pack this one read, round past the end.
    after = share_packs(stored, Share(10.0, after=names[-1]))
    assert after[0] == names[0]
