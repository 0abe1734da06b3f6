"""A backup re-uploads data whose pack has disappeared, instead of referencing it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Coffre, tree_digest


def test_backup_after_a_lost_pack_stores_the_data_again(coffre: Coffre, tree: Path, tmp_path: Path) -> None:
    coffre.ok("init", "--pack-size", "1")
    coffre.ok("backup", str(tree))
    packs = sorted((coffre.repo / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    assert len(packs) >= 2
    victim = max(packs, key=lambda p: p.stat().st_size)
    victim.unlink()
    damaged = coffre("check", "--json").json()
    assert victim.name in damaged["damaged_packs"]

    res = coffre.ok("backup", str(tree), "--json")
    summary = res.json()["summary"]
    assert summary["data_added"] > 0  # the lost data was read and stored again
    assert "missing" in " ".join(res.json()["warnings"])
    dest = tmp_path / "r"
    coffre.ok("restore", "latest", "--target", str(dest), "--verify")
    assert tree_digest(dest / str(tree).lstrip("/")) == tree_digest(tree)

    # Once the index is rebuilt from the packs, both snapshots are whole again.
    coffre.ok("repair", "index")
    assert coffre.ok("check", "--read-data", "--json").json()["ok"]
    shutil.rmtree(dest)
    first = json.loads(coffre.ok("snapshots", "--json").out)[0]["short_id"]
    coffre.ok("restore", first, "--target", str(dest))
    assert tree_digest(dest / str(tree).lstrip("/")) == tree_digest(tree)
