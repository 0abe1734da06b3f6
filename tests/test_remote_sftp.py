"""Repositories on an SSH server (a real OpenSSH sshd on 127.0.0.1): host keys checked, key
logins, the whole command line end to end, and what a cut upload leaves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coffre.core.errors import StoragePermissionDenied, UsageError
from coffre.storage.base import Handle
from coffre.storage.url import open_backend, parse_sftp

from conftest import Coffre, age_tree, make_tree, snapshot_ids, tree_digest


def test_backup_restore_check_forget_prune_over_sftp(
    sshd: object, ssh_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    c = Coffre(sshd.url(str(tmp_path / "nas" / "coffre")), pwfile, cache_dir)  # type: ignore[attr-defined]
    c.env.update(ssh_env)
    c.ok("init")
    src = make_tree(tmp_path / "src")
    c.ok("backup", str(src))
    first = snapshot_ids(c)[0]
    (src / "docs" / "lettre-3.txt").write_text("modifiée\n" * 50)
    (src / "docs" / "lettre-4.txt").unlink()
    age_tree(src)
    c.ok("backup", str(src))
    restored = tmp_path / "restored"
    c.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    assert "no errors" in c.ok("check", "--read-data").out
    c.ok("forget", first, "--prune")
    assert len(snapshot_ids(c)) == 1
    assert "no errors" in c.ok("check", "--read-data").out
    # The repository on the server is an ordinary Coffre repository: no temporary file left.
    leftovers = [p for p in (tmp_path / "nas" / "coffre").rglob(".tmp-*")]
    assert leftovers == []


def test_unknown_host_key_is_refused_with_how_to_accept_it(
    sshd: object, ssh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("COFFRE_SSH_KNOWN_HOSTS", str(empty))
    b = open_backend(sshd.url(str(tmp_path / "r")))  # type: ignore[attr-defined]
    with pytest.raises(StoragePermissionDenied) as info:
        b.exists()
    assert "not known" in info.value.message and "SHA256:" in info.value.message
    assert "ssh-keyscan" in (info.value.hint or "")
    assert not (tmp_path / "r").exists()


def test_changed_host_key_is_refused_as_a_possible_attack(
    sshd: object, ssh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True, capture_output=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")  # type: ignore[attr-defined]
    monkeypatch.setenv("COFFRE_SSH_KNOWN_HOSTS", str(wrong))
    b = open_backend(sshd.url(str(tmp_path / "r")))  # type: ignore[attr-defined]
    with pytest.raises(StoragePermissionDenied) as info:
        b.exists()
    assert "different key" in info.value.message and "attack" in (info.value.hint or "")


def test_a_key_the_server_does_not_know_is_a_clear_error(
    sshd: object, ssh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
                   check=True, capture_output=True)
    monkeypatch.setenv("COFFRE_SSH_KEY", str(tmp_path / "stranger"))
    b = open_backend(sshd.url(str(tmp_path / "r")))  # type: ignore[attr-defined]
    with pytest.raises(StoragePermissionDenied) as info:
        b.exists()
    assert "refused the login" in info.value.message and "authorized_keys" in (info.value.hint or "")


def test_cut_upload_leaves_no_visible_object_and_is_cleaned(
    sshd: object, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    """What a dropped connection mid-upload leaves is a temporary file: never listed, never
    read as an object, removed by prune's clean-up once old enough."""
    root = tmp_path / "nas"
    b = open_backend(sshd.url(str(root)))  # type: ignore[attr-defined]
    b.create()
    name = "ab" + "3" * 62
    (root / "data" / "ab").mkdir()
    (root / "data" / "ab" / ".tmp-cut0123456789").write_bytes(b"half a pack")
    assert list(b.list("data")) == []
    b.save(Handle("data", name), b"whole pack")
    assert [i.name for i in b.list("data")] == [name]
    assert b.clean_temporaries(older_than_ns=0) == 0  # too recent: it may be a live upload
    assert b.clean_temporaries(older_than_ns=2**62) == 1
    assert sorted(p.name for p in (root / "data" / "ab").iterdir()) == [name]
    b.close()


@pytest.mark.parametrize(("url", "user", "port", "path"), [
    ("sftp://coffre@nas.local/volume1/coffre", "coffre", 22, "/volume1/coffre"),
    ("sftp://coffre@nas.local:2222/~/sauvegardes", "coffre", 2222, "sauvegardes"),
    ("sftp://backup@[::1]:22/srv/b", "backup", 22, "/srv/b"),
])
def test_sftp_urls(url: str, user: str, port: int, path: str) -> None:
    where = parse_sftp(url)
    assert (where.user, where.port, where.path) == (user, port, path)
    assert parse_sftp(where.display) == where


@pytest.mark.parametrize(("url", "words"), [
    ("sftp://coffre:hunter2@nas/x", "password does not belong"),
    ("sftp://coffre@nas", "no folder"),
    ("sftp://coffre@nas/~", "no folder under the login folder"),
    ("sftp://coffre@nas/a/../b", "'..'"),
])
def test_bad_sftp_urls(url: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        open_backend(url)
    assert words in info.value.message
    assert "hunter2" not in info.value.message
