"""What a user can do wrong gets a clear message, the documented exit code, no traceback,
and changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Coffre, snapshot_ids


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_wrong_password_exits_12_and_writes_nothing(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    repo.ok("backup", str(tree))
    before = _files(repo.repo)
    bad = tmp_path / "bad"
    bad.write_text("not the password\n")
    for cmd in (["backup", str(tree)], ["snapshots"], ["prune"], ["check"]):
        res = Coffre(repo.repo, bad, Path(repo.env["COFFRE_CACHE_DIR"]))(*cmd)
        assert res.code == 12, res
        assert "wrong password" in res.err and "Traceback" not in res.err
    assert _files(repo.repo) == before


def test_not_a_repository_exits_10(coffre: Coffre, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for location in (tmp_path / "empty", tmp_path / "does-not-exist"):
        res = coffre("snapshots", "--repo", str(location))
        assert res.code == 10, res
        assert "not a Coffre repository" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "does-not-exist").exists()


def test_newer_format_version_is_refused_clearly(repo: Coffre) -> None:
    config = repo.repo / "config"
    doc = json.loads(config.read_text())
    doc["version"] = 99
    config.chmod(0o600)
    config.write_text(json.dumps(doc))
    res = repo("snapshots")
    assert res.code != 0
    assert "newer Coffre" in res.err and "version 99" in res.err and "Traceback" not in res.err


def test_init_refuses_an_existing_repository_or_non_empty_directory(repo: Coffre, tmp_path: Path) -> None:
    keys = sorted(os.listdir(repo.repo / "keys"))
    res = repo("init")
    assert res.code == 1 and "already holds" in res.err
    assert sorted(os.listdir(repo.repo / "keys")) == keys
    other = tmp_path / "busy"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    res = repo("init", "--repo", str(other))
    assert res.code != 0 and "not empty" in res.err
    assert (other / "precious.txt").read_text() == "x"


def test_init_compression_level_is_checked_and_recorded(coffre: Coffre) -> None:
    res = coffre("init", "--compression-level", "25")
    assert res.code == 2 and "between 1 and 19" in res.err
    assert not coffre.repo.exists()
    coffre.ok("init", "--compression-level", "7")
    assert json.loads((coffre.repo / "config").read_text())["compression_level"] == 7


def test_missing_source_path_writes_no_snapshot(repo: Coffre, tmp_path: Path) -> None:
    res = repo("backup", str(tmp_path / "nope"))
    assert res.code == 1 and "does not exist" in res.err and "Traceback" not in res.err
    assert snapshot_ids(repo) == []


def test_no_password_source_and_no_terminal_is_a_clear_error(coffre: Coffre) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "coffre", "init", "--repo", str(coffre.repo)],
                          env=coffre.env, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 2
    assert b"COFFRE_PASSWORD_FILE" in proc.stderr and b"Traceback" not in proc.stderr
    assert not (coffre.repo / "config").exists()


def test_unknown_snapshot_and_path(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    res = repo("ls", "deadbeef")
    assert res.code == 1 and "no snapshot" in res.err
    res = repo("dump", "latest", "/no/such/file")
    assert res.code == 1 and "not in snapshot" in res.err
    res = repo("backup", str(tree), "--repo", "webdav://host/coffre")
    assert res.code == 2 and "webdav:// repositories are not supported" in res.err
    res = repo("backup", str(tree), "--repo", "s3://host")
    assert res.code == 2 and "no bucket" in res.err


def test_stray_and_planted_files_in_the_repository_do_not_crash_anything(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    (repo.repo / "data" / "notes.txt").write_text("not a pack")
    some_dir = next(p for p in (repo.repo / "data").iterdir() if p.is_dir())
    (some_dir / "readme").write_text("stray")
    # A key file that hashes to its name but holds an impossible wrapped key.
    import hashlib

    forged = json.dumps({"v": 1, "kind": "password", "label": "x", "created": "", "salt": "",
                         "params": {}, "nonce": "", "data": ""}).encode()
    (repo.repo / "keys" / hashlib.sha256(forged).hexdigest()).write_bytes(forged)
    for cmd in (["check", "--read-data"], ["prune"], ["repair", "index"], ["snapshots"],
                ["forget", "--keep-last", "1", "--max-size", "1GiB"]):
        res = repo(*cmd)
        assert res.code == 0, (cmd, res)
        assert "Traceback" not in res.err
    assert "damaged" not in repo.ok("check").out


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.chmod(0o600)
    p.write_bytes(bytes(data))


def test_one_damaged_snapshot_or_index_file_does_not_block_the_rest(
    repo: Coffre, tree: Path, tmp_path: Path
) -> None:
    repo.ok("backup", str(tree))
    repo.ok("backup", str(tree), "--force")
    first, second = snapshot_ids(repo)
    _flip(repo.repo / "snapshots" / first)
    listed = repo.ok("snapshots", "--json")
    assert [s["id"] for s in json.loads(listed.out)] == [second]
    assert first[:12] in listed.err and "skipped" in listed.err
    repo.ok("restore", "latest", "--target", str(tmp_path / "r"))
    repo.ok("forget", first[:8])  # a damaged snapshot can still be removed
    assert repo.ok("check", "--json").json()["ok"]

    for index in (repo.repo / "index").iterdir():
        _flip(index)
    res = repo.ok("backup", str(tree))  # the lost index entries count as missing data
    assert "repair index" in res.err
    repo.ok("repair", "index")
    assert repo.ok("check", "--read-data", "--json").json()["ok"]


def test_unreadable_inputs_are_clear_errors_without_secrets(coffre: Coffre, tmp_path: Path) -> None:
    bad = tmp_path / "latin1-password"
    bad.write_bytes(b"mot de passe \xe9t\xe9\n")
    res = Coffre(coffre.repo, bad, Path(coffre.env["COFFRE_CACHE_DIR"]))("init")
    assert res.code == 1 and "not UTF-8" in res.err and "Traceback" not in res.err
    assert "passe" not in res.err
    sheet = tmp_path / "existing-sheet.txt"
    sheet.write_text("do not overwrite")
    res = coffre("init", "--recovery-sheet", str(sheet))
    assert res.code == 2 and "already exists" in res.err
    assert sheet.read_text() == "do not overwrite" and not (coffre.repo / "config").exists()
    coffre.ok("init")
    res = coffre("backup", str(tmp_path), "--exclude-file", str(tmp_path / "nope"))
    assert res.code == 2 and "exclude file" in res.err and "Traceback" not in res.err
    res = coffre("key", "add", "--new-password-file", str(tmp_path / "nope"))
    assert res.code == 1 and "new password file" in res.err and "Traceback" not in res.err
