"""`coffre find`: the versions of a file across snapshots, by name or path pattern."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Coffre, age_tree


def pharmacy(tmp_path: Path) -> Path:
    root = tmp_path / "officine"
    for month in ("02", "03"):
        folder = root / "scans" / "2025" / month
        folder.mkdir(parents=True)
        for name in ("ordonnance-Dupont.jpg", "ordonnance-Martin.jpg"):
            (folder / name).write_bytes(f"{month} {name}".encode() * 100)
    (root / "docs").mkdir()
    (root / "docs" / "ordonnance-Dupont.txt").write_text("note\n")
    age_tree(root)
    return root


def test_find_lists_each_version_once_with_its_snapshots(repo: Coffre, tmp_path: Path) -> None:
    root = pharmacy(tmp_path)
    repo.ok("backup", str(root))
    repo.ok("backup", str(root))
    scan = root / "scans" / "2025" / "03" / "ordonnance-Dupont.jpg"
    scan.write_bytes(b"rescanned, larger" * 200)
    os.utime(scan, (1_700_000_000, 1_700_000_000))
    repo.ok("backup", str(root))
    ids = [s["id"] for s in repo.ok("snapshots", "--json").json()]

    found = repo.ok("find", "ordonnance-Dupont.jpg", "--json").json()

    assert found["snapshots_searched"] == 3
    by_path = {m["path"]: m["versions"] for m in found["matches"]}
    assert set(by_path) == {str(root / "scans/2025/02/ordonnance-Dupont.jpg"), str(scan)}
    old, new = by_path[str(scan)]
    assert [s["id"] for s in old["snapshots"]] == ids[:2] and [s["id"] for s in new["snapshots"]] == ids[2:]
    assert new["size"] == len(b"rescanned, larger" * 200) and new["mtime"].startswith("2023-11-14T22:13:20")
    text = repo.ok("find", "ordonnance-Dupont.jpg").out
    assert str(scan) in text and "in 2 snapshots" in text and ids[2][:8] in text
    assert "3 versions of 2 paths in 3 snapshots (3 searched)" in text


def test_patterns_case_and_paths(repo: Coffre, tmp_path: Path) -> None:
    root = pharmacy(tmp_path)
    repo.ok("backup", str(root))

    def paths(*args: str) -> list[str]:
        return [m["path"] for m in repo.ok("find", *args, "--json").json()["matches"]]

    assert paths("ordonnance-dupont.*") == []
    assert paths("-i", "ordonnance-dupont.*") == [str(root / "docs/ordonnance-Dupont.txt"),
                                                 str(root / "scans/2025/02/ordonnance-Dupont.jpg"),
                                                 str(root / "scans/2025/03/ordonnance-Dupont.jpg")]
    assert paths("03/*Martin*") == [str(root / "scans/2025/03/ordonnance-Martin.jpg")]
    assert paths(f"{root}/*.txt") == []  # '*' never crosses '/'
    assert paths(f"{root}/**/*.txt") == [str(root / "docs/ordonnance-Dupont.txt")]
    assert paths("2025") == [str(root / "scans/2025")]  # a folder, as itself


def test_find_limits_to_hosts_paths_and_snapshots(repo: Coffre, tmp_path: Path) -> None:
    root = pharmacy(tmp_path)
    other = tmp_path / "maison"
    (other / "scans").mkdir(parents=True)
    (other / "scans" / "ordonnance-Dupont.jpg").write_bytes(b"chez moi")
    repo.ok("backup", str(root), "--host", "comptoir")
    repo.ok("backup", str(other), "--host", "bureau")
    first = repo.ok("snapshots", "--json").json()[0]["id"]

    def searched(*args: str) -> tuple[int, set[str]]:
        out = repo.ok("find", "ordonnance-Dupont.jpg", *args, "--json").json()
        return out["snapshots_searched"], {m["path"] for m in out["matches"]}

    assert searched()[0] == 2
    assert searched("--host", "bureau") == (1, {str(other / "scans/ordonnance-Dupont.jpg")})
    assert searched("--path", str(root))[0] == 1
    assert searched("--snapshot", first[:8])[1] == {str(root / "scans/2025/02/ordonnance-Dupont.jpg"),
                                                     str(root / "scans/2025/03/ordonnance-Dupont.jpg")}
    nothing = repo.ok("find", "absent.pdf")
    assert "0 versions of 0 paths in 0 snapshots (2 searched)" in nothing.out


def test_folders_shared_by_snapshots_are_read_once(repo: Coffre, tmp_path: Path) -> None:
    root = pharmacy(tmp_path)
    for _ in range(4):
        repo.ok("backup", str(root))
    (root / "docs" / "new.txt").write_text("new\n")
    repo.ok("backup", str(root))

    out = repo.ok("find", "*.jpg", "--json").json()

    assert out["snapshots_searched"] == 5
    # A snapshot's folders: from the root down to the source (their times change with each
    # backup: the repository is beside the source), then scans, 2025, 02, 03 and docs, which
    # are read once each (docs twice: it changed). Without the memory, 5 times each.
    depth = len(root.parts)
    assert out["folders_read"] <= 5 * depth + 6
    assert out["folders_read"] < 5 * (depth + 5)
