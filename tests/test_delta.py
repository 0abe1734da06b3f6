"""Byte-level incremental: changed chunks stored as zstd deltas against their previous version,
and everything that reads or deletes data understanding them (docs/design.md §3)."""

from __future__ import annotations

import concurrent.futures
import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from coffre import compress as compress_module
from coffre.chunker import PAGE_BLOCK
from coffre.chunker.align import Aligner
from coffre.core.errors import CoffreError, FormatError
from coffre.crypto.aead import KIND_DATA, KIND_TREE
from coffre.format.pack import BlobEntry
from coffre.ops.check import Checker, Share
from coffre.ops.common import find_snapshot, reachable
from coffre.ops.forget import SizeModel
from coffre.ops.inspect import iter_tree
from coffre.ops.prune import Marker
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest

ROWS = 40_000
# The dump's lines: ~1.4 MB, more than the largest chunk (1 MiB), so that it is always cut in
# two chunks at least, whatever the repository's key (at ~980 KB it was one chunk about once
# in 300 repositories, and no delta of it then outlived a day).
DUMP_LINES = 57_000


def make_db(path: Path) -> None:
    rnd = random.Random(3)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT, stock INTEGER, note TEXT)")
    db.executemany(
        "INSERT INTO ventes VALUES (?, ?, ?, ?)",
        ((i, f"produit-{rnd.randrange(10**6)}", rnd.randrange(500), rnd.randbytes(24).hex())
         for i in range(ROWS)),
    )
    db.commit()
    db.close()


def one_day(root: Path, seed: int = 1) -> None:
    """A few hundred rows updated in place across the database, a dump with a line changed
    near its start and lines appended, a log appended to."""
    rnd = random.Random(seed)
    db = sqlite3.connect(root / "officine.db")
    for _ in range(300):
        db.execute("UPDATE ventes SET stock = ? WHERE id = ?", (rnd.randrange(500), rnd.randrange(ROWS)))
    db.commit()
    db.close()
    dump = root / "dump.sql"
    lines = dump.read_bytes().split(b"\n")
    lines[10] = b"10\tproduit modifie\t1"
    lines += [f"{DUMP_LINES + i}\tnouveau {i}\t{i}".encode() for i in range(200)]
    dump.write_bytes(b"\n".join(lines))
    with open(root / "app.log", "ab") as f:
        f.write(b"14:02 vente enregistree\n" * 50)
    age_tree(root)


@pytest.fixture
def pharmacy(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    make_db(root / "officine.db")
    rnd = random.Random(5)
    (root / "dump.sql").write_bytes(
        b"\n".join(f"{i}\tproduit {rnd.randrange(10**6)}\t{rnd.randrange(500)}".encode()
                  for i in range(DUMP_LINES))
    )
    (root / "app.log").write_bytes(b"08:00 ouverture\n" * 2000)
    age_tree(root)
    return root


def summary(c: Coffre, snap: str) -> dict[str, int]:
    snaps = {s["id"]: s for s in json.loads(c.ok("snapshots", "--json").out)}
    return snaps[snap]["summary"]  # type: ignore[no-any-return]


def test_a_day_of_changes_is_stored_as_small_deltas_and_restores_exactly(
    repo: Coffre, pharmacy: Path, tmp_path: Path
) -> None:
    repo.ok("backup", str(pharmacy))
    one_day(pharmacy)
    repo.ok("backup", str(pharmacy))
    first, second = snapshot_ids(repo)
    day = summary(repo, second)
    db_size = (pharmacy / "officine.db").stat().st_size
    assert day["deltas_added"] > 0
    # Without deltas the whole database and dump would be stored again (compressed ~40 %).
    assert day["data_added_stored"] < db_size // 20, day
    snaps = {s["id"]: s for s in json.loads(repo.ok("snapshots", "--json").out)}
    assert snaps[second]["parent"] == first
    repo.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / pharmacy.relative_to("/")) == tree_digest(pharmacy)
    repo.ok("check", "--read-data")


def test_prune_keeps_the_bases_that_deltas_need(repo: Coffre, pharmacy: Path, tmp_path: Path) -> None:
    repo.ok("backup", str(pharmacy))
    one_day(pharmacy)
    repo.ok("backup", str(pharmacy))
    expected = tree_digest(pharmacy)
    # The first snapshot alone refers to the bases directly; forgetting it must not free them.
    repo.ok("forget", "--keep-last", "1")
    repo.ok("prune")
    repo.ok("check", "--read-data")
    repo.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / pharmacy.relative_to("/")) == expected


def test_successive_days_keep_deltas_at_depth_one(repo: Coffre, pharmacy: Path, tmp_path: Path) -> None:
    repo.ok("backup", str(pharmacy))
    for day in range(1, 4):
        one_day(pharmacy, seed=day)
        repo.ok("backup", str(pharmacy))
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    deltas = [loc.entry for pid, entries in r.index.packs().items() for loc in
              (r.index.lookup(e.id) for e in entries) if loc and loc.entry.base is not None]
    assert deltas
    for e in deltas:
        base = r.index.lookup(e.base)  # type: ignore[arg-type]
        assert base is not None and base.entry.base is None
    repo.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / pharmacy.relative_to("/")) == tree_digest(pharmacy)


def flip_in(c: Coffre, pid: bytes, blob: BlobEntry) -> None:
    """A bit flipped in the middle of a blob, in its pack on disk."""
    path = next((c.repo / "data").glob(f"*/{pid.hex()}"))
    data = bytearray(path.read_bytes())
    data[blob.offset + blob.length // 2] ^= 0x40
    path.write_bytes(bytes(data))


def two_days_in_small_packs(c: Coffre, pharmacy: Path) -> tuple[str, Repository]:
    """Backups of two days in 1 MiB packs: the second snapshot's id, and the repository (its
    database stored as deltas whose bases lie in the packs of the first)."""
    Repository.init(LocalBackend(c.repo), PASSWORD, pack_size=1024 * 1024)
    c.ok("backup", str(pharmacy))
    one_day(pharmacy)
    c.ok("backup", str(pharmacy))
    r = Repository.open(LocalBackend(c.repo), PASSWORD)
    r.load_index()
    return snapshot_ids(c)[1], r



def delta_bases_of_the_database(r: Repository, snapshot: str) -> set[bytes]:
    """The bases of the deltas a snapshot's officine.db is stored as."""
    db_node = next(n for _, n in iter_tree(r, find_snapshot(r, snapshot).tree) if n.name == b"officine.db")
    locations = [loc for loc in map(r.index.lookup, db_node.content) if loc is not None]
    return {loc.entry.base for loc in locations if loc.entry.base is not None}


def test_check_names_the_files_whose_delta_base_is_damaged(coffre: Coffre, pharmacy: Path) -> None:
    second, r = two_days_in_small_packs(coffre, pharmacy)
    db_node = next(n for _, n in iter_tree(r, find_snapshot(r, second).tree) if n.name == b"officine.db")
    base_packs = {}  # pack -> a delta base of the database stored in it
    for blob in db_node.content:
        loc = r.index.lookup(blob)
        assert loc is not None
        if loc.entry.base is not None:
            base = r.index.lookup(loc.entry.base)
            assert base is not None
            base_packs[base.pack] = base.entry
    holds_trees = {pid for pid, entries in r.index.packs().items()
                   if any(e.kind == KIND_TREE for e in entries)}
    victim = sorted(set(base_packs) - holds_trees)[0]
    flip_in(coffre, victim, base_packs[victim])  # inside that base
    res = coffre("check", "--read-data")
    assert res.code != 0
    # The second snapshot's database is stored as deltas whose base is in the damaged pack.
    report = res.out[res.out.index(f"snapshot {second[:8]}"):]
    assert "officine.db" in report.split("\nsnapshot")[0]


def test_check_names_the_files_whose_delta_base_is_gone(coffre: Coffre, pharmacy: Path) -> None:
    """The walk of the snapshots, without reading data: a delta whose base's pack is gone from
    the storage cannot be read, and the file that needs it is named, snapshot by snapshot."""
    second, r = two_days_in_small_packs(coffre, pharmacy)
    db_node = next(n for _, n in iter_tree(r, find_snapshot(r, second).tree) if n.name == b"officine.db")
    deltas = [loc for loc in map(r.index.lookup, db_node.content) if loc is not None and loc.entry.base]
    assert deltas
    holds = {pid for pid, entries in r.index.packs().items()
             if any(e.kind == KIND_TREE or e.id in db_node.content for e in entries)}
    bases = {b.pack for b in (r.index.lookup(loc.entry.base) for loc in deltas if loc.entry.base) if b}
    victim = sorted(bases - holds)[0]  # bases only: the second day's listings and deltas stay
    next((coffre.repo / "data").glob(f"*/{victim.hex()}")).unlink()
    res = coffre("check")
    assert res.code == 1, res
    said = [line for line in res.out.splitlines() if line.startswith(f"error: snapshot {second[:8]}: ")]
    # Once, though many of its blocks are deltas whose base is gone.
    assert [line for line in said if line.endswith("/officine.db: the base of a delta is missing")] == [
        f"error: snapshot {second[:8]}: {pharmacy}/officine.db: the base of a delta is missing"], res.out


def test_check_names_the_files_whose_delta_is_gone(coffre: Coffre, pharmacy: Path) -> None:
    """The walk, without reading data: a delta whose own pack is gone, its base intact, is data
    missing (not a missing base), and the file that needs it is named."""
    second, r = two_days_in_small_packs(coffre, pharmacy)
    db_node = next(n for _, n in iter_tree(r, find_snapshot(r, second).tree) if n.name == b"officine.db")
    deltas = [loc for loc in map(r.index.lookup, db_node.content) if loc is not None and loc.entry.base]
    bases = {loc.entry.base for loc in deltas}
    holds_others = {pid for pid, entries in r.index.packs().items()
                    if any(e.kind == KIND_TREE or e.id in bases for e in entries)}
    victim = sorted({loc.pack for loc in deltas} - holds_others)[0]
    next((coffre.repo / "data").glob(f"*/{victim.hex()}")).unlink()
    res = coffre("check")
    assert res.code == 1, res
    said = [line for line in res.out.splitlines() if line.startswith(f"error: snapshot {second[:8]}: ")]
    assert [line for line in said if "/officine.db: " in line] == [
        f"error: snapshot {second[:8]}: {pharmacy}/officine.db: data is missing"], res.out


def test_check_names_the_files_whose_delta_base_left_the_index(coffre: Coffre, pharmacy: Path) -> None:
    """Every pack stored, but the bases of the database's deltas no longer indexed (an index
    file lost): the deltas cannot be read, and the walk says so for the file that needs them."""
    second, r = two_days_in_small_packs(coffre, pharmacy)
    bases = delta_bases_of_the_database(r, second)
    assert bases
    assert r.index.retain(lambda pid, e: e.id not in bases) == len(bases)
    res = Checker(r).run()
    assert [e for e in res.errors if e.endswith("/officine.db: the base of a delta is missing")] == [
        f"snapshot {second[:8]}: {pharmacy}/officine.db: the base of a delta is missing"], res.errors


def test_prune_marks_the_bases_of_deltas_and_refuses_without_them(coffre: Coffre, pharmacy: Path) -> None:
    """Prune's marking keeps each delta's base; a base that is in no index and no pack (an
    index file lost) stops prune before it deletes anything."""
    second, r = two_days_in_small_packs(coffre, pharmacy)
    bases = delta_bases_of_the_database(r, second)
    assert bases
    newest = [find_snapshot(r, second)]  # the first snapshot holds the bases as its data
    assert bases <= Marker(r, []).mark(newest)
    r.index.retain(lambda pid, e: e.id not in bases)
    with pytest.raises(CoffreError) as refused:
        Marker(r, []).mark(newest)
    assert refused.value.message.startswith(
        f"the base of a delta blob of snapshot {second[:8]} is in no index")
    assert refused.value.message.endswith("prune refuses to run")


def test_a_share_of_the_data_checks_deltas_without_their_bases_which_their_own_turn_checks(
    coffre: Coffre, pharmacy: Path
) -> None:
    """The nightly `check --read-data-subset` authenticates a delta where its pack is read and
    decodes its base where the base's pack is read: a pack of deltas is checked without
    reading the packs of their bases, a damaged delta is found where it lies, and a damaged
    base in its own turn, with the files that need it named."""
    second, r = two_days_in_small_packs(coffre, pharmacy)
    packs = r.index.packs()
    with_trees = {pid for pid, entries in packs.items() if any(e.kind == KIND_TREE for e in entries)}
    bases = {b for entries in packs.values() for e in entries if (b := e.base) is not None}
    base_packs = {pid for pid, entries in packs.items() if any(e.id in bases for e in entries)}
    delta_pack = min(pid for pid, entries in packs.items()
                     if any(e.base is not None for e in entries) and pid not in base_packs | with_trees)
    names = sorted(p.name for p in (coffre.repo / "data").glob("*/*"))

    def share_from(pid: bytes) -> Share:
        """The smallest share, which reads one pack: this one."""
        i = names.index(pid.hex())
        return Share(0.0001, names[i - 1] if i else "")

    for pid in base_packs:  # every pack holding bases, damaged in one of them
        flip_in(coffre, pid, next(e for e in packs[pid] if e.id in bases))

    result = Checker(r).run(share=share_from(delta_pack))
    assert result.examined == {delta_pack}
    assert result.ok, (result.errors, result.damaged_packs)

    flip_in(coffre, delta_pack, next(e for e in packs[delta_pack] if e.base is not None))
    result = Checker(r).run(share=share_from(delta_pack))
    assert set(result.damaged_packs) == {delta_pack.hex()}

    # A whole turn of shares, at once: the bases are found damaged where they lie, and the
    # second snapshot's database, stored as deltas against them, is named.
    res = coffre("check", "--read-data-subset", "1/1")
    assert res.code != 0
    for pid in base_packs:
        assert pid.hex()[:12] in res.out
    report = res.out[res.out.index(f"snapshot {second[:8]}"):]
    assert "officine.db" in report.split("\nsnapshot")[0]


def three_days_with_the_middle_one_forgotten(
    c: Coffre, pharmacy: Path
) -> tuple[dict[bytes, list[BlobEntry]], set[bytes], list[tuple[bytes, BlobEntry]]]:
    """Backups of three days in 1 MiB packs, the second forgotten: the packs of its backup
    still hold deltas the third needs (database blocks changed on that day only), among
    deltas nothing needs. The packs, those partly used (which prune repacks), and the deltas
    still needed in them, each with its pack."""
    Repository.init(LocalBackend(c.repo), PASSWORD, pack_size=1024 * 1024)
    for day in range(3):
        if day:
            one_day(pharmacy, seed=day)
        c.ok("backup", str(pharmacy))
    c.ok("forget", snapshot_ids(c)[1])
    r = Repository.open(LocalBackend(c.repo), PASSWORD)
    r.load_index()
    used = set().union(*(reachable(r, s.tree) for s in r.snapshots()))
    packs = r.index.packs()
    partly_used = {pid for pid, entries in packs.items()
                   if any(e.id in used for e in entries) and not all(e.id in used for e in entries)}
    needed = [(pid, e) for pid in partly_used for e in packs[pid] if e.base is not None and e.id in used]
    return packs, partly_used, needed


def test_prune_copies_the_deltas_it_repacks_without_reading_their_bases(
    coffre: Coffre, pharmacy: Path, tmp_path: Path
) -> None:
    """Each delta a repack copies is authenticated as it is; its base is not read (that cost
    a third of a year-old repository's prune). A damaged base is no reason to stop: the
    delta is intact, and the base stays where it is, for check to report."""
    packs, partly_used, needed = three_days_with_the_middle_one_forgotten(coffre, pharmacy)
    expected = tree_digest(pharmacy)
    repacked = [e for _pid, e in needed]
    assert repacked
    bases = {e.base for e in repacked}
    damaged = {pid: [e for e in entries if e.id in bases] for pid, entries in packs.items()
               if pid not in partly_used and any(e.id in bases for e in entries)}
    assert damaged

    def flip_bases() -> None:
        for pid, held in damaged.items():
            for e in held:
                flip_in(coffre, pid, e)

    flip_bases()
    out = coffre.ok("prune").out
    assert "repacked" in out
    for pid in partly_used:
        assert not list((coffre.repo / "data").glob(f"*/{pid.hex()}"))
    r = Repository.open(LocalBackend(coffre.repo), PASSWORD)
    r.load_index()
    assert {e.id for e in repacked} <= {e.id for entries in r.index.packs().values() for e in entries}
    res = coffre("check", "--read-data")
    assert res.code != 0
    for pid in damaged:
        assert pid.hex()[:12] in res.out
    # Once the bases are whole again, the copied deltas rebuild the third day exactly.
    flip_bases()
    coffre.ok("check", "--read-data")
    coffre.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / pharmacy.relative_to("/")) == expected


def test_prune_stops_before_changing_anything_at_a_damaged_delta_it_would_copy(
    coffre: Coffre, pharmacy: Path
) -> None:
    _packs, _partly_used, targets = three_days_with_the_middle_one_forgotten(coffre, pharmacy)
    assert targets
    for pid, e in targets:
        flip_in(coffre, pid, e)
    before = {p: p.read_bytes() for p in (coffre.repo / "data").glob("*/*")}
    index_before = sorted(p.name for p in (coffre.repo / "index").iterdir())
    res = coffre("prune")
    assert res.code != 0
    assert "holds a damaged blob that a snapshot needs" in res.err
    assert {p: p.read_bytes() for p in (coffre.repo / "data").glob("*/*")} == before
    assert sorted(p.name for p in (coffre.repo / "index").iterdir()) == index_before


# -- the pieces ----------------------------------------------------------------------------------
def test_aligner_follows_data_shifted_by_an_insertion() -> None:
    old = [100_000, 250_000, 180_000, 300_000, 90_000]
    al = Aligner(old)
    # 40 kB inserted into the second chunk: it grows, the following ones keep their lengths.
    assert al.match(0, 100_000) == 0
    assert al.match(100_000, 290_000) == 1
    assert al.match(390_000, 180_000) == 2
    assert al.match(570_000, 300_000) == 3
    assert al.match(870_000, 90_000) == 4
    assert al.match(960_000, 50_000) is None  # appended: no ancestor


def test_aligner_pairs_fixed_blocks_by_offset() -> None:
    block = 256 * 1024
    al = Aligner([block] * 10)
    assert [al.match(i * block, block) for i in range(10)] == list(range(10))
    assert al.match(10 * block, block) is None


def test_blob_entries_with_a_base_round_trip_and_are_validated() -> None:
    e = BlobEntry(KIND_DATA, b"a" * 32, 0, 100, 4096, b"b" * 32)
    assert BlobEntry.from_wire(e.to_wire()) == e
    assert len(BlobEntry(KIND_DATA, b"a" * 32, 0, 100, 4096).to_wire()) == 5
    with pytest.raises(FormatError):
        BlobEntry.from_wire([KIND_TREE, b"a" * 32, 0, 100, 4096, b"b" * 32])
    with pytest.raises(FormatError):
        BlobEntry.from_wire([KIND_DATA, b"a" * 32, 0, 100, 4096, b"a" * 32])


def test_a_delta_whose_base_is_a_delta_is_refused() -> None:
    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    packer = Packer(repo)
    a = bytes(random.Random(1).randbytes(4000)) * 4
    b = a[:8000] + b"change" + a[8006:]
    c = b[:100] + b"again!" + b[106:]
    ids = [repo.crypter.blob_id(x) for x in (a, b, c)]
    packer.add(KIND_DATA, ids[0], a)
    assert packer.add(KIND_DATA, ids[1], b, base=(ids[0], a)) == ids[0]
    # A writer that ignored the depth-one rule: c as a delta of the delta b.
    assert packer.add(KIND_DATA, ids[2], c, base=(ids[1], b)) == ids[1]
    packer.flush()
    for pid, entries in packer.take_written().items():
        repo.index.add_pack(pid, entries)
    assert repo.load_blob(ids[1]) == b
    with pytest.raises(FormatError, match="not a plain data blob"):
        repo.load_blob(ids[2])
    got = repo.load_many([ids[1], ids[2]])  # the restore path refuses the chain as well
    assert got[0] == b and isinstance(got[1], FormatError) and "not a plain data blob" in got[1].message


def test_a_delta_against_an_unrelated_base_is_not_kept() -> None:
    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    packer = Packer(repo)
    rnd = random.Random(2)
    base = rnd.randbytes(20_000)
    data = b"".join(f"ligne {i} {rnd.randrange(10**9)}\n".encode() for i in range(2000))
    base_id, data_id = repo.crypter.blob_id(base), repo.crypter.blob_id(data)
    packer.add(KIND_DATA, base_id, base)
    assert packer.add(KIND_DATA, data_id, data, base=(base_id, base)) is None
    packer.flush()
    for pid, entries in packer.take_written().items():
        repo.index.add_pack(pid, entries)
    loc = repo.index.lookup(data_id)
    assert loc is not None and loc.entry.base is None
    assert repo.load_blob(data_id) == data


STOCK_ROWS = 5000
_day_0 = random.Random(0)
STOCK = tuple(_day_0.randrange(10**6) for _ in range(STOCK_ROWS))  # each row's stock on day 0


def stock_rows(rest: Callable[[int], str]) -> bytes:
    """A stock table's rows as a dump or a database page holds them: id, product, then
    `rest(id)` (the stock, and whatever follows it)."""
    return b"".join(f"{i}\tDOLIPRANE 1000MG CPR B/8\t{rest(i)}\n".encode() for i in range(STOCK_ROWS))


def test_a_chunk_that_drifted_far_from_its_base_is_stored_whole_to_become_the_next_base() -> None:
    """A chunk changed every day drifts from its base; once its delta is no longer small
    (here ~half its plain compression), the chunk is stored whole, so that the next days'
    deltas start small again (over a year, deltas kept up to 0.8 times the plain size made a
    steady pharmacy's day twice larger: packer.py, DELTA_GAIN)."""
    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    packer = Packer(repo)

    def rows(day: int, share: float) -> bytes:
        """A table's rows, `share` of them changed since day 0."""
        rnd = random.Random(day)
        drifted = set(random.Random(-day).sample(range(STOCK_ROWS), int(STOCK_ROWS * share)))
        return stock_rows(lambda i: f"{rnd.randrange(10**6)}\t{day}" if i in drifted
                          else f"{STOCK[i]}\t0")[: 256 * 1024]

    base = rows(0, 0)
    base_id = repo.crypter.blob_id(base)
    packer.add(KIND_DATA, base_id, base)
    stored = {}
    for day, share, drifted in ((1, 0.02, True), (40, 0.4, True), (41, 0.4, False)):
        data = rows(day, share)
        ratio = len(compress_module.compress_delta(data, base, 3)) / len(compress_module.compress(data, 1)[1])
        stored[day] = (ratio, packer.add(KIND_DATA, repo.crypter.blob_id(data), data, base=(base_id, base),
                                         drifted=drifted))
    assert stored[1][0] < 0.1 and stored[1][1] == base_id  # a little drift: a small delta
    assert 0.4 < stored[40][0] < 0.8 and stored[40][1] is None  # far: stored whole
    # As far on the first day after the base (its previous version was the base itself): a
    # delta still, as it pays (a log's last chunk, appended to, is such a chunk every day).
    assert 0.4 < stored[41][0] < 0.8 and stored[41][1] == base_id


def test_a_delta_well_under_the_estimated_plain_size_is_kept_without_compressing_the_chunk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The backup estimates a chunk's plain compression from its base's stored size; a delta
    well under it is kept without compressing the chunk too, one over it is compared with the
    chunk's real plain compression, which decides."""
    import coffre.repository.packer as packer_module

    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    packer = Packer(repo)
    rnd = random.Random(3)
    base = b"".join(f"{i}\tDOLIPRANE\t{rnd.randrange(10**6)}\n".encode() for i in range(12_000))[:200_000]
    data = bytearray(base)
    for at in rnd.sample(range(0, 199_000, 40), 2000):  # drifted: a delta over 1/32 of the chunk
        data[at : at + 6] = b"%06d" % rnd.randrange(10**6)
    delta = compress_module.compress_delta(bytes(data), base, 3)
    plain = len(compress_module.compress(bytes(data), 1)[1])
    assert len(data) / 32 < len(delta) < plain * 0.3
    base_id = repo.crypter.blob_id(base)
    packer.add(KIND_DATA, base_id, base)
    calls = []
    real = packer_module.compress

    def counted(chunk: bytes, level: int) -> tuple[int, bytes]:
        calls.append(len(chunk))
        return real(chunk, level)

    monkeypatch.setattr(packer_module, "compress", counted)
    kept = packer.add(KIND_DATA, repo.crypter.blob_id(bytes(data)), bytes(data), base=(base_id, base),
                      drifted=True, plain_estimate=plain)
    assert kept == base_id and calls == []
    # An estimate too low to keep the delta: the real plain compression is made, and decides.
    again = bytes(data[:-1]) + b"!"
    kept = packer.add(KIND_DATA, repo.crypter.blob_id(again), again, base=(base_id, base),
                      drifted=True, plain_estimate=len(delta))
    assert kept == base_id and calls == [len(again)]


def test_a_backup_stores_whole_a_block_whose_previous_version_had_drifted_already(
        repo: Coffre, tmp_path: Path) -> None:
    """Day after day, a database block's delta is against the same base: the backup tells the
    packer when the previous version was a delta already, and such a drifted block is stored
    whole once its delta is large, while a first delta as large is kept."""
    root = tmp_path / "src"
    root.mkdir()

    def write(changed: dict[int, int]) -> None:
        rows = stock_rows(lambda i: str(changed.get(i, STOCK[i])))
        (root / "stock.mdb").write_bytes(rows[:PAGE_BLOCK])  # one fixed block (an Access file)
        age_tree(root)

    def stored_as() -> bytes | None:
        """The base of the block's blob in the latest snapshot (None: stored whole)."""
        r = Repository.open(LocalBackend(repo.repo), PASSWORD)
        r.load_index()
        [node] = [n for _, n in iter_tree(r, find_snapshot(r, "latest").tree) if n.name == b"stock.mdb"]
        [blob] = node.content
        loc = r.index.lookup(blob)
        assert loc is not None
        return loc.entry.base

    rnd = random.Random(1)
    write({})
    repo.ok("backup", str(root))
    assert stored_as() is None
    drift: dict[int, int] = {}
    verdicts = []
    for _day in range(3):  # ~40 % of the rows changed each day
        drift |= {i: rnd.randrange(10**6) for i in rnd.sample(range(STOCK_ROWS), 2000)}
        write(drift)
        repo.ok("backup", str(root))
        verdicts.append(stored_as() is not None)
    # Day 1: a first delta, kept. Day 2: drifted further from the same base: stored whole.
    # Day 3: a first delta again, against day 2's whole block.
    assert verdicts == [True, False, True]
    repo.ok("check", "--read-data")


def delta_pairs() -> list[tuple[str, bytes, bytes]]:
    """(what, new chunk, its base) as backups pair them."""
    rnd = random.Random(5)
    block = bytearray(rnd.randbytes(2048) * 128)  # 256 KiB of database pages
    old_block = bytes(block)
    for page in rnd.sample(range(64), 5):  # a day: a row changed in 5 of its 64 pages
        block[page * 4096 + 300 : page * 4096 + 340] = rnd.randbytes(40)
    dump = b"".join(f"{i}\tDoliprane 1000\t{rnd.randrange(10**6)}\n".encode() for i in range(40_000))
    moved = dump[:100_000] + b"42\tnouvelle ligne\n" + dump[100_000:]  # shifted by an insertion
    huge = rnd.randbytes(1 << 20) * 9  # larger than zstd's window at these levels
    return [("block", bytes(block), old_block), ("dump", moved, dump), ("grown", dump + dump[:5000], dump),
            ("shrunk", dump[:30_000], dump), ("huge", huge[:-7] + b"changed", huge)]


@pytest.mark.parametrize("level", [3, 9])
def test_deltas_decode_with_their_base_and_stay_small(level: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deltas go through a zstd context kept per thread (compress/__init__.py: four times
    cheaper than a compressor per delta); the frames decode with the base as a raw-content
    dictionary, as every reader does, and are as small as the slower path's."""
    assert compress_module._zstd_binding() is not None  # the fast path is the one measured
    kept = [(what, new, old, compress_module.compress_delta(new, old, level))
            for what, new, old in delta_pairs()]
    monkeypatch.setattr(compress_module, "_zstd_binding", lambda: None)
    for what, new, old, delta in kept:
        assert compress_module.decompress_delta(delta, old, len(new)) == new, what
        slower = compress_module.compress_delta(new, old, level)
        assert compress_module.decompress_delta(slower, old, len(new)) == new, what
        # What a check of a share of the data reads of a delta without its base.
        assert compress_module.delta_declared_length(delta) == len(new), what
        assert compress_module.delta_declared_length(slower) == len(new), what
        assert len(delta) <= len(slower) * 1.1 + 64, what
    assert len(kept[0][3]) < 2000  # 5 pages changed in 256 KiB


def test_a_delta_checked_without_its_base_must_name_it_and_declare_its_length() -> None:
    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    _what, new, old = delta_pairs()[0]
    base_id, new_id = repo.crypter.blob_id(old), repo.crypter.blob_id(new)
    payload = compress_module.compress_delta(new, old, 3)
    body = bytes([compress_module.CODEC_ZSTD_DELTA]) + base_id + payload

    def entry(raw_length: int = len(new), base: bytes = base_id) -> BlobEntry:
        return BlobEntry(KIND_DATA, new_id, 0, len(body), raw_length, base)

    repo.check_delta_form(entry(), body)
    for bad_entry, bad_body in [
        (entry(len(new) + 1), body),  # declares another length than the index records
        (entry(base=b"c" * 32), body),  # names another base
        (entry(), bytes([compress_module.CODEC_ZSTD]) + body[1:]),  # not a delta
        (entry(), body[: 1 + 32] + b"not a zstd frame"),
        (entry(), b""),
    ]:
        with pytest.raises(FormatError):
            repo.check_delta_form(bad_entry, bad_body)


def test_deltas_made_by_several_threads_at_once_decode() -> None:
    """Each worker thread has its own context: deltas made at the same time never mix."""
    pairs = [(new, old) for _what, new, old in delta_pairs()] * 4
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        deltas = list(pool.map(lambda p: compress_module.compress_delta(p[0], p[1], 3), pairs))
    for (new, old), delta in zip(pairs, deltas, strict=True):
        assert compress_module.decompress_delta(delta, old, len(new)) == new


def test_database_files_are_cut_in_page_aligned_blocks(repo: Coffre, pharmacy: Path) -> None:
    repo.ok("backup", str(pharmacy))
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    root = find_snapshot(r, "latest").tree
    nodes = {n.name: n for _, n in iter_tree(r, root)}
    lengths = []
    for blob in nodes[b"officine.db"].content:
        loc = r.index.lookup(blob)
        assert loc is not None
        lengths.append(loc.entry.raw_length)
    assert lengths[:-1] == [PAGE_BLOCK] * (len(lengths) - 1) and 0 < lengths[-1] <= PAGE_BLOCK
    dump = [r.index.lookup(b) for b in nodes[b"dump.sql"].content]
    assert len({loc.entry.raw_length for loc in dump if loc}) > 1  # content-defined: varied


def test_size_budget_counts_the_bases_a_kept_snapshot_needs(repo: Coffre, pharmacy: Path) -> None:
    repo.ok("backup", str(pharmacy))
    one_day(pharmacy)
    repo.ok("backup", str(pharmacy))
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    r.load_index()
    first, second = r.snapshots()
    model = SizeModel(r, [first, second], [])
    both = model([first.id, second.id])
    # The second snapshot's database is deltas: keeping it alone keeps most of the first.
    assert model([second.id]) > both * 0.8


def pairings(old: list[int], new: list[int]) -> list[int | None]:
    """The old chunk each new chunk pairs with, new chunks given by length in file order."""
    al = Aligner(old)
    offsets = [sum(new[:i]) for i in range(len(new))]
    return [al.match(offset, n) for offset, n in zip(offsets, new, strict=True)]


def test_aligner_follows_a_dump_whose_rows_moved_away() -> None:
    """A day of updates: ~1 % of each chunk's rows left for the end of the table, so each
    chunk is a little shorter than its ancestor and the offsets drift behind."""
    old = [160_320, 672_887, 346_198, 479_355, 346_081, 408_514, 173_374, 94_218]
    new = [159_249, 668_271, 343_633, 476_183, 343_397, 405_066, 172_494, 93_521]
    assert pairings(old, new) == list(range(len(old)))
    # Lengths that match nothing: the old chunk overlapping most, not the one holding the
    # first byte.
    al = Aligner([100_000, 500_000, 100_000])
    assert al.match(95_000, 300_000) == 1


def test_aligner_is_not_misled_by_a_lookalike_length_elsewhere() -> None:
    """A chunk that lost 3 % of its rows must still pair with the chunk it overlaps, not
    with another one two places on whose length happens to be close (which would also throw
    every following pairing off)."""
    old = [200_000, 300_000, 250_000, 290_000, 180_000]
    new = [199_000, 291_000, 249_000, 288_000, 179_000]
    assert pairings(old, new) == [0, 1, 2, 3, 4]


def test_aligner_resyncs_after_an_insertion_followed_by_edits() -> None:
    """300 kB inserted (a table's new rows), then the next chunks edited a little: a nearly
    equal length further on is tried, and kept because the next chunk agrees."""
    old = [100_000, 250_000, 180_000, 300_000, 90_000]
    new = [100_000, 550_000, 180_100, 300_050, 90_000]
    assert pairings(old, new) == [0, 1, 2, 3, 4]


def refused_field_by_field(good: list[object], bad: dict[int, list[object]]) -> None:
    """Every entry made from `good` with one field replaced by one of its bad values is refused."""
    for field, values in bad.items():
        for value in values:
            wire = list(good)
            wire[field] = value
            with pytest.raises(FormatError):
                BlobEntry.from_wire(wire)


def test_an_index_entry_is_checked_field_by_field_on_the_quick_path_too() -> None:
    """BlobEntry.from_wire checks the common five-field entry in one expression: it must
    refuse everything the field-by-field checks refuse (a bool for an integer, an id of the
    wrong length, a value out of its range), and build the same entry from a valid one."""
    from coffre.format.pack import MAX_PACK, max_raw, max_stored

    good = [KIND_DATA, b"a" * 32, 7, 100, 4096]
    entry = BlobEntry.from_wire(list(good), b"s" * 16)
    assert entry == BlobEntry(KIND_DATA, b"a" * 32, 7, 100, 4096, None, b"s" * 16)
    assert BlobEntry.from_wire([KIND_TREE, b"t" * 32, 0, max_stored(KIND_TREE), max_raw(KIND_TREE)])
    bad = {0: [0, 3, True, "1", 1.0], 1: [b"a" * 31, b"a" * 33, "a" * 32, bytearray(b"a" * 32)],
           2: [-1, MAX_PACK + 1, True, None], 3: [0, max_stored(KIND_DATA) + 1, False],
           4: [-1, max_raw(KIND_DATA) + 1, True]}
    refused_field_by_field(good, bad)
    for wire in ([KIND_DATA, b"a" * 32, 7, 100], (KIND_DATA, b"a" * 32, 7, 100, 4096), "entry"):
        with pytest.raises(FormatError):
            BlobEntry.from_wire(wire)
    # A delta's six fields: the same checks, and its base an id that is not its own.
    delta = [*good, b"b" * 32]
    assert BlobEntry.from_wire(list(delta), b"s" * 16) == BlobEntry(
        KIND_DATA, b"a" * 32, 7, 100, 4096, b"b" * 32, b"s" * 16)
    bad[0] = [*bad[0], KIND_TREE]  # only data blobs are deltas
    bad[5] = [b"b" * 31, b"b" * 33, "b" * 32, bytearray(b"b" * 32), None, b"a" * 32]
    refused_field_by_field(delta, bad)
    with pytest.raises(FormatError):
        BlobEntry.from_wire((*delta,))
