"""What Coffre keeps on this machine is private to its user: the cache holds plaintext paths
(patients' names are in file names). Real `coffre` processes started with umask 022, the
usual default."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree


def open_to_others(root: Path) -> list[str]:
    """Everything under root (root included) that group or others may read or enter."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for path in [Path(dirpath), *(Path(dirpath) / n for n in filenames)]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                found.append(f"{path} {mode:04o}")
    return sorted(set(found))


def test_the_cache_and_the_repository_are_private_and_an_old_open_cache_is_narrowed(
        coffre: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "ordonnances").mkdir(parents=True)
    (src / "ordonnances" / "DUPONT Marie 2026-11-30.pdf").write_bytes(b"%PDF scan" * 1000)
    age_tree(src)
    before = os.umask(0o022)  # what the commands inherit, whatever the test runner's
    try:
        coffre.ok("init")
        # The cache as an older version left it: folder 0755, database 0644.
        repo_id = Repository.open(LocalBackend(coffre.repo), PASSWORD).config.id.hex()
        cache = coffre.env["COFFRE_CACHE_DIR"]
        old = Path(cache) / repo_id
        old.mkdir(parents=True, mode=0o755)
        Path(cache).chmod(0o755)
        old.chmod(0o755)
        (old / "cache.sqlite").write_bytes(b"")
        (old / "cache.sqlite").chmod(0o644)
        coffre.ok("backup", str(src))
    finally:
        os.umask(before)
    assert open_to_others(Path(cache)) == []
    assert (old / "cache.sqlite").stat().st_size > 0  # the cache that was narrowed is in use
    assert open_to_others(coffre.repo) == []


def test_a_password_file_others_can_read_is_warned_about(coffre: Coffre, tmp_path: Path) -> None:
    coffre.ok("init")
    coffre.pwfile.chmod(0o644)
    res = coffre("snapshots")
    assert res.code == 0, res
    assert f"the password file {coffre.pwfile} can be read by other users" in res.err
    assert f"chmod 600 {coffre.pwfile}" in res.err
    assert PASSWORD not in res.err + res.out
    coffre.pwfile.chmod(0o600)
    assert "password file" not in coffre("snapshots").err


def test_restored_files_keep_their_own_modes_under_the_private_umask(coffre: Coffre,
                                                                     tmp_path: Path) -> None:
    """The umask makes what Coffre creates private, not what it restores: a shared document
    comes back 0644, a folder 0755, as they were."""
    src = tmp_path / "src"
    (src / "partage").mkdir(parents=True)
    (src / "partage" / "tarifs.csv").write_text("CIP;prix\n")
    (src / "partage").chmod(0o755)
    (src / "partage" / "tarifs.csv").chmod(0o644)
    age_tree(src)
    coffre.ok("init")
    coffre.ok("backup", str(src))
    coffre.ok("restore", "latest", "--target", str(tmp_path / "r"))
    restored = tmp_path / "r" / str(src).lstrip("/") / "partage"
    assert stat.S_IMODE(restored.stat().st_mode) == 0o755
    assert stat.S_IMODE((restored / "tarifs.csv").stat().st_mode) == 0o644
