"""repair index never loses what it cannot replace: a pack whose header is damaged keeps the
entries the old index gave it, and its blobs are salvaged from its body when the index is
lost too. Real `coffre` processes on repositories damaged on purpose."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from coffre.chunker import ChunkerParams
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, tree_digest


def pack_files(c: Coffre) -> list[Path]:
    return sorted(p for p in (c.repo / "data").glob("*/*") if not p.name.startswith("."))


def data_pack(c: Coffre) -> Path:
    """The pack of the one_pack backup's data (its folder listings have a small pack of their
    own)."""
    return max(pack_files(c), key=lambda p: p.stat().st_size)


def damage_header(pack: Path) -> None:
    """Flip one byte inside the pack's encrypted header (its blobs stay intact)."""
    data = bytearray(pack.read_bytes())
    (hlen,) = struct.unpack("<I", data[-4:])
    data[len(data) - 4 - hlen + hlen // 2] ^= 0x01
    pack.write_bytes(bytes(data))


@pytest.fixture(params=[1, 2], ids=["format-1", "format-2"])
def one_pack(coffre: Coffre, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Coffre, Path]:
    """A repository whose whole backup fits in one data pack (data, a delta) and one pack of
    trees; in each format
    (format 1's walk looks for session ids, format 2's follows the sealed lengths)."""
    Repository.init(LocalBackend(coffre.repo), PASSWORD, version=request.param,
                    chunker=ChunkerParams(64 * 1024, 128 * 1024, 256 * 1024))
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    rnd = random.Random(4)
    for i in range(12):
        (src / "docs" / f"lettre-{i}.txt").write_text(f"Madame, Monsieur {i},\n" * (50 + i * 40))
    (src / "scan.jpg").write_bytes(rnd.randbytes(700_000))
    # A database's empty pages: zstd stores runs of one byte as RLE blocks, which salvage
    # must measure (one stored byte for a whole block).
    (src / "vide.db").write_bytes(bytes(600_000))
    (src / "empty").write_bytes(b"")
    age_tree(src)
    coffre.ok("backup", str(src))
    assert len(pack_files(coffre)) == 2
    return coffre, src


def restores(c: Coffre, src: Path, target: Path) -> bool:
    res = c("restore", "latest", "--target", str(target), "--verify")
    return res.code == 0 and tree_digest(target / str(src).lstrip("/")) == tree_digest(src)


def test_a_damaged_header_keeps_the_entries_of_the_old_index(one_pack: tuple[Coffre, Path],
                                                             tmp_path: Path) -> None:
    c, src = one_pack
    pack = data_pack(c)
    damage_header(pack)
    assert restores(c, src, tmp_path / "before")  # every blob is intact
    res = c("repair", "index")
    assert res.code == 0, res
    assert "unreadable header" in res.out and "kept from the old index" in res.out
    assert restores(c, src, tmp_path / "after")  # nothing was thrown away
    assert pack.exists()
    # check tells the truth: the pack is damaged, no file is lost.
    res = c("check")
    assert res.code == 1 and "header is damaged, its blobs are intact" in res.out, res
    assert "depends on damaged data" not in res.out


def test_a_damaged_header_and_a_lost_index_are_salvaged_from_the_pack_body(
        one_pack: tuple[Coffre, Path], tmp_path: Path) -> None:
    c, src = one_pack
    pack = data_pack(c)
    damage_header(pack)
    for index in (c.repo / "index").iterdir():
        index.unlink()
    res = c("repair", "index")
    assert res.code == 0, res
    assert "salvaged" in res.out
    assert restores(c, src, tmp_path / "after")


@pytest.mark.parametrize("where", [5, 200], ids=["first-session-id", "first-blob-body"])
def test_a_damaged_blob_and_header_salvage_the_others(one_pack: tuple[Coffre, Path], tmp_path: Path,
                                                      where: int) -> None:
    """Damage inside a blob as well (format 1: its session id, or its body; format 2: its
    nonce, or its body): the walk skips it and finds the blobs after it (format 1 looks for
    the session the header was written with; format 2 follows the blob's sealed length)."""
    c, src = one_pack
    pack = data_pack(c)
    repo = Repository.open(LocalBackend(c.repo), PASSWORD)
    hides_the_rest = repo.version >= 2 and where < 12
    # The largest data blob: a chunk of the scan alone (format 2 shuffles a pack's blobs, so
    # the first one may be a tree that every file needs).
    hit = max((e for e in repo.read_pack_header(bytes.fromhex(pack.name)) if e.kind == 1),
              key=lambda e: e.length)
    damage_header(pack)
    data = bytearray(pack.read_bytes())
    data[hit.offset + where] ^= 0x01
    pack.write_bytes(bytes(data))
    for index in (c.repo / "index").iterdir():
        index.unlink()
    c.ok("repair", "index")
    if hides_the_rest:
        # Format 2 has no clear marks: a first blob whose nonce is damaged hides where the
        # next one starts, and without an old index nothing after it is found. What cannot be
        # found is said, never taken wrong: check fails and names the lost snapshot.
        res = c("check")
        assert res.code == 1 and "snapshot" in res.out, res
        return
    res = c("restore", "latest", "--target", str(tmp_path / "r"))
    restored = tmp_path / "r" / str(src).lstrip("/")
    assert res.code in (0, 1), res
    # Every file but the one whose blob was hit comes back whole.
    intact = [f for f in src.rglob("*") if f.is_file()
              and (restored / f.relative_to(src)).is_file()
              and (restored / f.relative_to(src)).read_bytes() == f.read_bytes()]
    assert len(intact) >= len([f for f in src.rglob("*") if f.is_file()]) - 1
