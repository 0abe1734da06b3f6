"""Repositories written by earlier versions stay readable: tests/fixtures/repo-v1 was written
by Coffre 0.1.0 (format 1) and is never regenerated."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from conftest import Coffre

FIXTURE = Path(__file__).parent / "fixtures" / "repo-v1"


def test_format_v1_repository_opens_checks_and_restores(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE / "repo", tmp_path / "repo")
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    c = Coffre(tmp_path / "repo", FIXTURE / "password", tmp_path / "cache")
    snaps = json.loads(c.ok("snapshots", "--json").out)
    assert [s["id"] for s in snaps] == [manifest["snapshot"]]
    assert c.ok("check", "--read-data", "--json").json()["ok"]
    c.ok("restore", "latest", "--target", str(tmp_path / "out"), "--verify")
    root = tmp_path / "out" / manifest["source"].lstrip("/")
    restored = {
        os.fsencode(str(p.relative_to(root))).hex(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }
    assert restored == manifest["files"]
    assert os.readlink(root / "officine" / "lien") == "ventes.csv"
    mtime = (root / "officine" / "ventes.csv").stat().st_mtime_ns
    assert mtime == manifest["mtime_ns"]["officine/ventes.csv"]
    # A new backup into the old repository works too.
    c.ok("backup", str(root))
    assert c.ok("check", "--json").json()["ok"]
