"""coffre copy: snapshots to a second repository (3-2-1), sending only what it lacks; with
shared keys (init --copy-chunking-from) a day's copy is as small as the day's backup."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_storage import fresh_s3_url

from conftest import Coffre, age_tree, make_tree, snapshot_ids, tree_digest


def second(tmp_path: Path, name: str, cache_dir: Path, password: str) -> Coffre:
    pw = tmp_path / f"{name}-password"
    pw.write_text(password + "\n")
    return Coffre(tmp_path / name, pw, cache_dir)


def copy(src: Coffre, dst: Coffre, *extra: str) -> dict[str, object]:
    res = dst.ok("copy", "--from", str(src.repo), "--to", str(dst.repo), "--json", *extra,
                 env={"COFFRE_FROM_PASSWORD_FILE": str(src.pwfile), **_remote_env(src)})
    out: dict[str, object] = res.json()
    return out


def _remote_env(c: Coffre) -> dict[str, str]:
    return {k: v for k, v in c.env.items() if k.startswith(("AWS_", "COFFRE_SSH", "SSL_", "COFFRE_FTP"))}


def restored_equal(c: Coffre, src: Path, target: Path) -> bool:
    c.ok("restore", "latest", "--target", str(target))
    return tree_digest(target / str(src).lstrip("/")) == tree_digest(src)


def test_copy_to_a_repository_with_its_own_password(repo: Coffre, tmp_path: Path, cache_dir: Path) -> None:
    src = make_tree(tmp_path / "src")
    repo.ok("backup", str(src))
    b = second(tmp_path, "offsite", cache_dir, "another password entirely")
    b.ok("init")
    out = copy(repo, b)
    assert len(out["copied"]) == 1 and out["shared_keys"] is False  # type: ignore[arg-type]
    copied = json.loads(b.ok("snapshots", "--json").out)
    assert [s["original"] for s in copied] == snapshot_ids(repo)
    assert restored_equal(b, src, tmp_path / "r1")
    assert "no errors" in b.ok("check", "--read-data").out
    again = copy(repo, b)
    assert again["copied"] == [] and len(again["skipped"]) == 1 and again["bytes_added"] == 0  # type: ignore[arg-type]
    # A copy of the copy is recognised as the same snapshot too.
    c = second(tmp_path, "third", cache_dir, "a third password")
    c.ok("init")
    copy(b, c)
    assert copy(repo, c)["copied"] == []


def test_shared_keys_send_only_the_days_changes(repo: Coffre, tmp_path: Path, cache_dir: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    db = sqlite3.connect(src / "officine.db")
    db.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT, qte INTEGER)")
    db.executemany("INSERT INTO ventes (produit, qte) VALUES (?, ?)",
                   [(f"produit {i} " + "x" * 40, i % 7) for i in range(60_000)])
    db.commit()
    age_tree(src)
    repo.ok("backup", str(src))
    b = second(tmp_path, "nas", cache_dir, "nas password")
    res = b.ok("init", "--copy-chunking-from", str(repo.repo),
               env={"COFFRE_FROM_PASSWORD_FILE": str(repo.pwfile)})
    assert "shares the chunking of" in res.out and "own encryption key" in res.out
    first = copy(repo, b)
    assert first["shared_keys"] is True
    # A day: a few rows changed all over the file.
    db.executemany("UPDATE ventes SET qte = qte + 1 WHERE id = ?", [(i,) for i in range(1, 60_000, 997)])
    db.commit()
    db.close()
    age_tree(src)
    repo.ok("backup", str(src))
    day = json.loads(repo.ok("snapshots", "--json").out)[-1]["summary"]
    second_copy = copy(repo, b)
    assert len(second_copy["copied"]) == 1  # type: ignore[arg-type]
    sent = second_copy["bytes_added"]
    assert isinstance(sent, int) and sent <= day["data_added_stored"] * 1.2 + 64_000
    assert sent < first["bytes_added"] / 5  # type: ignore[operator]
    assert restored_equal(b, src, tmp_path / "r")
    assert "no errors" in b.ok("check", "--read-data").out


def test_copy_one_snapshot_and_refusals(repo: Coffre, tmp_path: Path, cache_dir: Path) -> None:
    src = make_tree(tmp_path / "src", big=200_000)
    repo.ok("backup", str(src))
    (src / "docs" / "lettre-1.txt").write_text("v2\n")
    repo.ok("backup", str(src))
    ids = snapshot_ids(repo)
    b = second(tmp_path, "b", cache_dir, "b password")
    b.ok("init")
    out = copy(repo, b, ids[0][:8])
    assert [c["source"] for c in out["copied"]] == [ids[0]]  # type: ignore[union-attr,index]
    res = b("copy", "--from", str(repo.repo), "--to", str(repo.repo),
            env={"COFFRE_FROM_PASSWORD_FILE": str(repo.pwfile)})
    assert res.code == 2 and "same repository" in res.err
    res = b("copy", "--to", str(b.repo), repo=False)
    assert res.code == 2 and "--from" in res.err
    res = b("copy", "--from", str(repo.repo), "--to", str(b.repo),
            env={"COFFRE_FROM_PASSWORD_FILE": str(b.pwfile)})
    assert res.code == 12  # the source's password is wrong: nothing copied
    assert len(snapshot_ids(b)) == 1


def test_copy_from_s3_to_sftp(
    seaweedfs: object, s3_env: dict[str, str], sshd: object, ssh_env: dict[str, str],
    pwfile: Path, cache_dir: Path, tmp_path: Path,
) -> None:
    a = Coffre(fresh_s3_url(seaweedfs), pwfile, cache_dir)
    a.env.update(s3_env)
    a.ok("init")
    src = make_tree(tmp_path / "src")
    a.ok("backup", str(src))
    b = second(tmp_path, "unused", cache_dir, "nas password")
    b.repo = sshd.url(str(tmp_path / "nas"))  # type: ignore[attr-defined]
    b.env.update(ssh_env)
    b.env.update(s3_env)
    b.ok("init", "--copy-chunking-from", str(a.repo), env={"COFFRE_FROM_PASSWORD_FILE": str(pwfile)})
    out = copy(a, b)
    assert len(out["copied"]) == 1  # type: ignore[arg-type]
    assert restored_equal(b, src, tmp_path / "r")
    assert "no errors" in b.ok("check", "--read-data").out


def test_check_against_reports_missing_and_damaged_copies(
    repo: Coffre, tmp_path: Path, cache_dir: Path
) -> None:
    src = make_tree(tmp_path / "src", big=300_000)
    repo.ok("backup", str(src))
    for shared in (False, True):
        b = second(tmp_path, f"b{shared}", cache_dir, "b password")
        env = {"COFFRE_FROM_PASSWORD_FILE": str(repo.pwfile), "COFFRE_AGAINST_PASSWORD_FILE": str(b.pwfile)}
        b.ok("init", *(["--copy-chunking-from", str(repo.repo)] if shared else []), env=env)
        copy(repo, b)
        res = repo.ok("check", "--against", str(b.repo), "--json", env=env)
        assert json.loads(res.out)["ok"] and json.loads(res.out)["shared_keys"] is shared
        assert "identical in both" in repo.ok("check", "--against", str(b.repo), env=env).out
    # The last copy loses a pack: its data is no longer complete.
    pack = next(p for p in (b.repo / "data").rglob("*") if p.is_file())
    pack.unlink()
    res = repo("check", "--against", str(b.repo), env=env)
    assert res.code == 1 and ("missing from the copy" in res.out or "cannot be read" in res.out)
    # A new backup not copied yet.
    (src / "docs" / "nouvelle.txt").write_text("ordonnance\n")
    repo.ok("backup", str(src))
    res = repo("check", "--against", str(b.repo), "--json", env=env)
    out = json.loads(res.out)
    assert res.code == 1 and out["only_here"] == [snapshot_ids(repo)[-1]]
