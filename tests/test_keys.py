"""Passwords, recovery key and key slots."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from conftest import PASSWORD, Coffre

RECOVERY_RE = re.compile(r"\b([A-Z2-7]{5}(?:-[A-Z2-7]{5}){10})\b")


def _with_password(c: Coffre, tmp_path: Path, secret: str, name: str) -> Coffre:
    f = tmp_path / name
    f.write_text(secret + "\n")
    return Coffre(c.repo, f, Path(c.env["COFFRE_CACHE_DIR"]))


def test_recovery_key_printed_once_opens_the_repository(coffre: Coffre, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.txt"
    res = coffre.ok("init", "--recovery-sheet", str(sheet))
    key = RECOVERY_RE.search(res.out).group(1)  # type: ignore[union-attr]
    assert key in sheet.read_text() and "FICHE DE RÉCUPÉRATION" in sheet.read_text()
    assert oct(sheet.stat().st_mode & 0o777) == "0o600"
    by_key = _with_password(coffre, tmp_path, key.lower().replace("-", " "), "rk")
    by_key.ok("snapshots")
    # A key with one wrong character is refused (checksum / authentication).
    wrong = key[:30] + ("A" if key[30] != "A" else "B") + key[31:]
    assert _with_password(coffre, tmp_path, wrong, "bad").__call__("snapshots").code == 12


def test_key_add_passwd_remove(repo: Coffre, tmp_path: Path) -> None:
    slots = json.loads(repo.ok("key", "list", "--json").out)
    assert sorted(s["kind"] for s in slots) == ["password", "recovery"]
    new = tmp_path / "new"
    new.write_text("deuxième mot de passe\n")
    repo.ok("key", "add", "--new-password-file", str(new), "--label", "pharmacien adjoint")
    second = _with_password(repo, tmp_path, "deuxième mot de passe", "p2")
    listed = json.loads(second.ok("key", "list", "--json").out)
    assert len(listed) == 3
    current = next(s for s in listed if s["current"])
    assert current["label"] == "pharmacien adjoint"
    # Removing the slot in use is refused; removing another one works.
    assert second("key", "remove", current["id"][:8]).code == 1
    first_id = next(s["id"] for s in listed if s["kind"] == "password" and not s["current"])
    second.ok("key", "remove", first_id[:8])
    assert repo("snapshots").code == 12  # the initial password no longer opens it
    # passwd replaces the slot used to open the repository.
    third = tmp_path / "third"
    third.write_text("troisième\n")
    second.ok("key", "passwd", "--new-password-file", str(third))
    assert second("snapshots").code == 12
    _with_password(repo, tmp_path, "troisième", "p3").ok("snapshots")


def test_password_from_environment_and_command(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "coffre"]
    import subprocess

    env = {**repo.env, "COFFRE_REPOSITORY": str(repo.repo), "COFFRE_PASSWORD_FILE": str(repo.pwfile)}
    out = subprocess.run([*base, "snapshots"], env=env, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
    script.chmod(0o700)
    env = {**repo.env, "COFFRE_REPOSITORY": str(repo.repo), "COFFRE_PASSWORD_COMMAND": str(script)}
    out = subprocess.run([*base, "backup", str(tree)], env=env, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    # The password never appears in what the command prints.
    assert PASSWORD.encode() not in out.stdout + out.stderr
    failing = {**env, "COFFRE_PASSWORD_COMMAND": "false"}
    out = subprocess.run([*base, "snapshots"], env=failing, capture_output=True, check=False)
    assert out.returncode == 1 and b"COFFRE_PASSWORD_COMMAND failed" in out.stderr
