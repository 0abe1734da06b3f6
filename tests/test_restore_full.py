"""A restore into a target that fills up, or is read-only, or is an empty string.

The counts a restore reports are checked against what is really on disk afterwards: a file
counted as restored is there with its content, a file that could not be restored is not left
behind half-written, and a full target ends with one message instead of an error per file."""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from coffre.ops.inspect import iter_tree
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, Mount, age_tree

SMALL = 8 * 1024
BIG = 9 * 1024 * 1024  # more than 8 blobs (at most 1 MiB each, whatever the key): written by ranges
FULL = "the restore target is full"

@pytest.fixture
def oversized(tmp_path: Path) -> dict[str, bytes]:
    """A tree of ~11.6 MB (relative path -> content): 200 small files in a/ (written first, in
    batches), one 9 MiB file of random bytes, 60 small files in z/."""
    rnd = random.Random(18)
    files = {f"a/{i:03}.bin": rnd.randbytes(SMALL) for i in range(200)}
    files["big.bin"] = rnd.randbytes(BIG)
    files.update({f"z/{i:03}.bin": rnd.randbytes(SMALL) for i in range(60)})
    src = tmp_path / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    age_tree(src)
    return files


def on_disk(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.mark.parametrize("output", ["json", "text"])
def test_restore_into_a_full_target_reports_only_what_is_on_disk(
    repo: Coffre, tmp_path: Path, oversized: dict[str, bytes], mount: Mount, output: str
) -> None:
    repo.ok("backup", str(tmp_path / "src"))
    # The big file and 1 MiB: whichever the workers write first, the big file or the small
    # ones, at least 1 MiB of small files is on disk when the target fills up (the tree does
    # not fit: 2 MB of small files beside the big one).
    target = mount("small", "-t", "tmpfs", "-o", f"size={BIG + 2**20}", "tmpfs")

    res = repo("restore", "latest", "--target", str(target), *(["--json"] if output == "json" else []))

    assert res.code == 1, res
    base = target / str(tmp_path / "src").lstrip("/")
    found = on_disk(base)
    # Every file left on disk is complete and right: none at full size around unwritten holes.
    assert all(data == oversized[rel] for rel, data in found.items()), sorted(
        rel for rel, data in found.items() if data != oversized[rel])
    if output == "json":
        out = res.json()
        restored, failed, errors = out["files"], out["files_failed"], out["errors"]
        assert out["bytes"] == sum(len(d) for d in found.values())
    else:
        # Singular or plural: which files fit depends on the order the workers write them in.
        m = re.search(r": (\d+) files?, \d+ director(?:y|ies), .*; (\d+) files? could not be restored\n",
                      res.out)
        assert m, res
        restored, failed = int(m[1]), int(m[2])
        errors = [line.removeprefix("error: ") for line in res.err.splitlines()
                  if line.startswith("error: ")]
    assert restored == len(found) >= 1, res
    assert failed == len(oversized) - len(found), res
    # One message for the whole target, not one error per file.
    counts = f"{restored} file{'s' if restored > 1 else ''} restored, {failed} not restored"
    assert errors == [f"{FULL}: {counts}; free space and run the restore again"], res


def test_a_large_file_with_damaged_data_is_not_left_with_a_hole(
    repo: Coffre, tmp_path: Path, oversized: dict[str, bytes]
) -> None:
    """The same accounting when the repository, not the target, fails one file (and its
    hard link)."""
    os.link(tmp_path / "src" / "big.bin", tmp_path / "src" / "hard.bin")
    repo.ok("backup", str(tmp_path / "src"))
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    node = next(n for p, n in iter_tree(stored, stored.snapshots()[0].tree) if p.endswith("/big.bin"))
    loc = stored.index.lookup(node.content[-2])  # one blob inside the file's ranged part
    assert loc is not None and len(node.content) > 8
    pack = next((repo.repo / "data").glob(f"*/{loc.pack.hex()}"))
    data = bytearray(pack.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    target = tmp_path / "restored"

    res = repo("restore", "latest", "--target", str(target), "--json")

    assert res.code == 1, res
    base = target / str(tmp_path / "src").lstrip("/")
    found = on_disk(base)
    assert "big.bin" not in found and "hard.bin" not in found
    assert found == {rel: data for rel, data in oversized.items() if rel != "big.bin"}
    out = res.json()
    assert (out["files"], out["files_failed"]) == (len(oversized) - 1, 2), res
    assert [e for e in out["errors"] if e.startswith(f"{base}/big.bin: ")], res
    assert f"{base}/hard.bin: not restored: it is a hard link to {base}/big.bin, which was not " \
        "restored" in out["errors"], res


def test_restore_into_a_read_only_target_says_so_once(
    repo: Coffre, tmp_path: Path, oversized: dict[str, bytes], mount: Mount
) -> None:
    repo.ok("backup", str(tmp_path / "src"))
    (tmp_path / "empty").mkdir()
    target = mount("readonly", "--bind", "-o", "ro", str(tmp_path / "empty"))

    res = repo("restore", "latest", "--target", str(target), "--json")

    assert res.code == 1, res
    out = res.json()
    assert (out["files"], out["files_failed"]) == (0, len(oversized)), res
    assert out["errors"] == [f"the restore target is read-only: 0 files restored, {len(oversized)} "
                             "not restored; make it writable (or restore elsewhere) and run the "
                             "restore again"], res


def test_empty_target_is_a_usage_error(repo: Coffre, tmp_path: Path) -> None:
    """`--target "$UNSET"` run from / would restore over the live files themselves."""
    live = tmp_path / "work" / "ordonnances.txt"
    live.parent.mkdir()
    live.write_bytes(b"old version\n")
    age_tree(live.parent)
    repo.ok("backup", str(live.parent))
    live.write_bytes(b"today's version\n")

    proc = subprocess.run(repo.argv("restore", "latest", "--target", ""), cwd="/",
                          env=repo.env, capture_output=True, check=False)

    assert proc.returncode == 2, proc
    assert b"--target is empty" in proc.stderr, proc
    assert live.read_bytes() == b"today's version\n"
