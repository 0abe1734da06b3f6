"""Key files planted by whoever controls the storage: one wrapping another master under a
guessed password is skipped (it was an oracle telling the attacker the guess was right), one
demanding gigabytes of Argon2 is refused unread, and removing a key says it revokes nothing.
Real `coffre` processes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

from coffre.core.clock import FixedClock
from coffre.repository import keyring
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre


def test_a_slot_opening_to_another_master_is_skipped_not_an_oracle(repo: Coffre, tmp_path: Path) -> None:
    backend = LocalBackend(repo.repo)
    repo_id = Repository.open(backend, PASSWORD).config.id
    # The attacker's guess is right: their slot opens with the pharmacy's password, and is
    # the oldest, so a machine that never opened the repository tries it first.
    planted = keyring.add_slot(backend, os.urandom(32), repo_id, "password", PASSWORD.encode(),
                               "initial password", FixedClock(0)).id
    # The machine that made the repository tries the slot that opened it here first.
    assert "key file" not in repo.ok("snapshots").err
    new_machine = Coffre(repo.repo, repo.pwfile, tmp_path / "new-machine")
    res = new_machine("snapshots")
    assert res.code == 0, res
    assert f"key file {planted[:8]} opens with this password but holds another key" in res.err
    res = new_machine.ok("key", "remove", planted[:8])
    assert "no longer opens this repository, but it is not revoked" in res.err
    assert "key file" not in new_machine.ok("snapshots").err


def _slot(params: dict[str, int]) -> tuple[str, bytes]:
    doc = {"v": 1, "kind": "password", "label": "password", "created": "1970-01-01T00:00:00Z",
           "params": params, **{k: base64.b64encode(os.urandom(n)).decode()
                                for k, n in (("salt", 32), ("nonce", 12), ("data", 48))}}
    raw = json.dumps(doc).encode()
    return hashlib.sha256(raw).hexdigest(), raw


def test_a_slot_demanding_gigabytes_of_argon2_is_refused_unread(repo: Coffre) -> None:
    name, raw = _slot({"t": 1, "m": 4 * 1024 * 1024, "p": 1})  # 4 GiB per attempt
    LocalBackend(repo.repo).save(Handle("keys", name), raw)
    # This command's own peak (wait4), not the largest of every child this test process reaped
    # (RUSAGE_CHILDREN: an earlier test's browser could exceed it).
    proc = subprocess.Popen(repo.argv("snapshots"), env={**os.environ, **repo.env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    assert usage.ru_maxrss < 1024 * 1024, usage.ru_maxrss  # nothing near the 4 GiB it asked for
    rows = {r["id"]: r for r in json.loads(repo.ok("key", "list", "--json").out)}
    assert rows[name]["state"] == "unusable"
    assert "Argon2 parameters beyond what Coffre writes" in rows[name]["reason"]


def test_password_change_says_the_old_one_is_not_revoked(repo: Coffre, tmp_path: os.PathLike[str]) -> None:
    new = os.path.join(tmp_path, "nouveau")
    with open(new, "w") as f:
        f.write("un autre mot de passe solide\n")
    os.chmod(new, 0o600)
    res = repo.ok("key", "passwd", "--new-password-file", new)
    assert "the old password no longer opens this repository, but it is not revoked" in res.err
    assert "'coffre init', then 'coffre copy'" in res.err
