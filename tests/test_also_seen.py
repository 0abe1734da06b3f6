"""The smaller things the data-safety campaign also saw (issue 11, "also seen"): files of the
previous snapshot counted as new, prune not saying how to get past a damaged snapshot, check
suggesting prune when the index lacks data."""

from __future__ import annotations

from pathlib import Path

from test_check import flip

from conftest import Coffre, snapshot_ids


def test_files_of_the_previous_snapshot_are_changed_not_new_without_a_cache(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", "--no-cache", str(tree))
    (tree / "docs" / "lettre-3.txt").write_text("changée\n")
    summary = repo.ok("backup", "--no-cache", "--json", str(tree)).json()["summary"]
    assert summary["files_new"] == 0, summary
    assert summary["files_changed"] > 0


def test_prune_over_a_damaged_snapshot_says_forget_resolves_it(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    repo.ok("backup", str(tree), "--tag", "two")
    first = snapshot_ids(repo)[0]
    flip(repo.repo / "snapshots" / first, 10)
    res = repo("prune")
    assert res.code == 1, res
    assert f"coffre forget {first[:8]}" in res.err, res
    repo.ok("forget", first[:8])
    repo.ok("prune")


def test_check_points_to_repair_index_not_prune_when_an_index_file_is_lost(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    for f in (repo.repo / "index").iterdir():
        f.unlink()
    res = repo("check")
    assert res.code == 1 and "not in any index" in res.out, res
    assert "'coffre repair index'" in res.out and "'coffre prune' removes" not in res.out
