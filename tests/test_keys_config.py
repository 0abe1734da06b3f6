"""Damaged key files and the config file's redundancy (a copy of it in every key slot, and
`coffre repair config`), through the real command line."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from coffre.core.errors import ObjectNotFound
from coffre.ops.repair_config import ensure_config_copies
from coffre.repository import keyring
from coffre.repository.repo import Repository
from coffre.storage.base import Handle, Wrapper
from coffre.storage.local import LocalBackend

from conftest import Coffre, tree_digest

FIXTURE = Path(__file__).parent / "fixtures" / "repo-v1"
RECOVERY_RE = re.compile(r"\b([A-Z2-7]{5}(?:-[A-Z2-7]{5}){10})\b")


def _as(c: Coffre, tmp_path: Path, secret: str, name: str) -> Coffre:
    f = tmp_path / name
    f.write_text(secret + "\n")
    return Coffre(c.repo, f, Path(c.env["COFFRE_CACHE_DIR"]))


def _key_files(c: Coffre, kind: str) -> list[Path]:
    files = sorted((Path(c.repo) / "keys").iterdir())
    return [p for p in files if json.loads(p.read_bytes())["kind"] == kind]


def _edit_config(c: Coffre, change: Callable[[dict[str, object]], None]) -> None:
    config = Path(c.repo) / "config"
    doc = json.loads(config.read_text())
    change(doc)
    config.chmod(0o600)
    config.write_text(json.dumps(doc, indent=1) + "\n")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "emptied": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
    "garbage": lambda p: p.write_bytes(b"\x00\x13 not json"),
    "not coffre's": lambda p: p.write_text('{"format": "something-else"}'),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_config_file_is_replaced_by_the_copy_and_repaired_byte_identical(
    repo: Coffre, tree: Path, tmp_path: Path, damage: str
) -> None:
    repo.ok("backup", str(tree))
    config = Path(repo.repo) / "config"
    original = config.read_bytes()
    config.chmod(0o600)
    DAMAGES[damage](config)
    init = repo("init")  # a damaged repository is not an empty place for a new one
    assert init.code == 1 and "nothing was changed" in init.err
    assert damage != "deleted" or "coffre repair config" in init.err
    res = repo.ok("snapshots")
    assert "1 snapshot\n" in res.out
    assert "the config file is damaged" in res.err and "coffre repair config" in res.err
    repo.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / str(tree).lstrip("/")) == tree_digest(tree)
    check = repo("check")
    assert check.code == 1 and "error: the config file is damaged" in check.out
    res = repo.ok("repair", "config")
    assert config.read_bytes() == original
    assert repo.ok("snapshots").err == ""
    assert repo.ok("check").code == 0
    again = repo("repair", "config")
    assert again.code == 1 and "nothing to repair" in again.err


def test_config_with_an_edited_id_is_reported_as_altered_not_as_a_wrong_password(
    repo: Coffre, tree: Path, tmp_path: Path
) -> None:
    repo.ok("backup", str(tree))
    original = (Path(repo.repo) / "config").read_bytes()
    _edit_config(repo, lambda d: d.update(id="00" * 16))
    res = repo.ok("snapshots")
    assert "1 snapshot\n" in res.out
    assert "the config file was altered" in res.err and "coffre repair config" in res.err
    # A wrong password is still a wrong password.
    assert _as(repo, tmp_path, "not the password", "bad")("snapshots").code == 12
    repo.ok("repair", "config")
    assert (Path(repo.repo) / "config").read_bytes() == original
    assert repo.ok("snapshots").err == ""


def test_a_copy_is_trusted_only_once_its_mac_authenticates(repo: Coffre) -> None:
    """The copies are plaintext in files the storage can write: one that was changed (here
    every copy, re-saved under valid names) never replaces the config."""
    backend = LocalBackend(repo.repo)
    forged = json.loads((Path(repo.repo) / "config").read_text())
    forged["pack_size"] = 2 * 1024 * 1024
    for slot in keyring.scan(backend)[0]:
        keyring.resave_with_config(backend, slot, forged)
    (Path(repo.repo) / "config").unlink()
    res = repo("snapshots")
    assert res.code == 1 and "config was altered (authentication failed)" in res.err


def test_damaged_key_file_is_named_and_the_recovery_key_still_opens(coffre: Coffre, tmp_path: Path) -> None:
    key = RECOVERY_RE.search(coffre.ok("init").out).group(1)  # type: ignore[union-attr]
    password_file, recovery = _key_files(coffre, "password")[0], _key_files(coffre, "recovery")[0]
    data = bytearray(password_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    password_file.chmod(0o600)
    password_file.write_bytes(bytes(data))
    short = password_file.name[:8]
    res = coffre("snapshots")
    assert res.code not in (0, 12), res
    assert f"key file {short} is damaged" in res.err and "recovery key" in res.err
    by_key = _as(coffre, tmp_path, key, "rk")
    res = by_key.ok("snapshots")
    assert f"key file {short} is damaged" in res.err
    listed = {s["id"]: s for s in json.loads(by_key.ok("key", "list", "--json").out)}
    assert listed[password_file.name]["state"] == "damaged"
    check = by_key("check")
    assert check.code == 1 and f"error: key file {short} is damaged" in check.out
    # The slot that opens the repository (the only one left that works) cannot be removed.
    assert by_key("key", "remove", recovery.name[:8]).code == 1 and recovery.exists()
    by_key.ok("key", "remove", short)
    assert not password_file.exists()
    by_key.ok("check")
    new = tmp_path / "new"
    new.write_text("nouveau mot de passe\n")
    by_key.ok("key", "add", "--new-password-file", str(new))
    _as(coffre, tmp_path, "nouveau mot de passe", "p2").ok("snapshots")


def test_empty_keys_folder_is_a_whole_message(repo: Coffre) -> None:
    for p in (Path(repo.repo) / "keys").iterdir():
        p.unlink()
    res = repo("snapshots")
    assert res.code == 1 and "no key file (keys/ is empty)" in res.err and "file: \n" not in res.err


class _NoRemove(Wrapper):
    """As if the process died after writing a re-saved key slot, before removing the old one."""

    def remove(self, handle: Handle) -> None:
        raise ObjectNotFound("simulated crash")


def test_old_repository_gains_the_copies_and_key_changes_revoke_every_copy_of_a_slot(
    tmp_path: Path,
) -> None:
    shutil.copytree(FIXTURE / "repo", tmp_path / "repo")
    c = Coffre(tmp_path / "repo", FIXTURE / "password", tmp_path / "cache")
    keys = tmp_path / "repo" / "keys"
    config = tmp_path / "repo" / "config"
    before = {json.loads(p.read_bytes())["data"] for p in keys.iterdir()}
    listed = json.loads(c.ok("key", "list", "--json").out)
    assert {s["state"] for s in listed} == {"no copy of the config"}
    # Without copies, a damaged config is said to be so (not "no repository", exit 10).
    config.chmod(0o600)
    config.write_bytes(b"")
    res = c("snapshots")
    assert res.code == 1 and "none of the 2 key files keeps a copy" in res.err
    shutil.copy(FIXTURE / "repo" / "config", config)
    # An interrupted migration leaves the old slot beside the new one: both still open.
    repo = Repository.open(LocalBackend(tmp_path / "repo"), (FIXTURE / "password").read_text().strip())
    repo.backend = _NoRemove(repo.backend)
    assert ensure_config_copies(repo) == 2 and len(list(keys.iterdir())) == 4
    c.ok("snapshots")
    # The next run finishes it: each slot is re-saved with the copy, its wrapped key unchanged.
    assert "2 key files now keep a copy" in c.ok("repair", "config").out
    assert {json.loads(p.read_bytes())["data"] for p in keys.iterdir()} == before
    for p in keys.iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
        assert "host" not in json.loads(p.read_bytes())
    config.write_bytes(b"")
    c.ok("snapshots")
    c.ok("repair", "config")
    assert config.read_bytes() == (FIXTURE / "repo" / "config").read_bytes()
    # Interrupted again, then the password is changed: no copy of the old slot survives.
    repo = Repository.open(LocalBackend(tmp_path / "repo"), (FIXTURE / "password").read_text().strip())
    repo.backend = _NoRemove(repo.backend)
    for slot in keyring.scan(repo.backend)[0]:
        keyring.resave_with_config(repo.backend, slot, {**repo.config_document(), "created": "x"})
    assert len(list(keys.iterdir())) == 4
    new = tmp_path / "new"
    new.write_text("nouveau\n")
    c.ok("key", "passwd", "--new-password-file", str(new))
    assert c("snapshots").code == 12
    _as(c, tmp_path, "nouveau", "p2").ok("snapshots")
    listed = json.loads(_as(c, tmp_path, "nouveau", "p2").ok("key", "list", "--json").out)
    assert [s["state"] for s in listed] == ["ok", "ok"]


def test_init_key_add_and_passwd_write_slots_with_the_copy(repo: Coffre, tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.write_text("deuxième\n")
    repo.ok("key", "add", "--new-password-file", str(new))
    second = _as(repo, tmp_path, "deuxième", "p2")
    third = tmp_path / "third"
    third.write_text("troisième\n")
    second.ok("key", "passwd", "--new-password-file", str(third))
    config = json.loads((Path(repo.repo) / "config").read_text())
    slots = [json.loads(p.read_bytes()) for p in (Path(repo.repo) / "keys").iterdir()]
    assert len(slots) == 3 and all(s["config"] == config for s in slots)
