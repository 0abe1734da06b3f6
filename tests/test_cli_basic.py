"""The everyday commands through the real command line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import Coffre, snapshot_ids, tree_digest


def test_backup_restore_roundtrip(repo: Coffre, tree: Path, restored: Path) -> None:
    res = repo.ok("backup", str(tree), "--tag", "midi")
    assert "snapshot" in res.out
    repo.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(tree).lstrip("/")) == tree_digest(tree)


def test_unchanged_second_backup_adds_almost_nothing_and_reads_nothing(repo: Coffre, tree: Path) -> None:
    first = repo.ok("backup", str(tree), "--json").json()["summary"]
    second = repo.ok("backup", str(tree), "--json").json()["summary"]
    assert first["data_added"] > 3_000_000
    assert second["files_unmodified"] == first["files_new"] > 20
    assert second["files_new"] == second["files_changed"] == 0
    assert second["data_added_stored"] < 2_000  # no data, at most an unchanged tree or two
    assert len(snapshot_ids(repo)) == 2


def test_changed_file_is_read_again(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    f = tree / "docs" / "lettre-3.txt"
    f.write_text("modifié\n")
    old = time.time_ns() - 1800 * 10**9
    os.utime(f, ns=(old, old))
    summary = repo.ok("backup", str(tree), "--json").json()["summary"]
    assert summary["files_changed"] == 1
    ids = snapshot_ids(repo)
    dumped = repo.ok("dump", ids[-1][:8], str(f)).outb
    assert dumped == b"modifi\xc3\xa9\n"
    old = repo.ok("dump", ids[0][:8], str(f)).outb
    assert old.startswith(b"Bonjour 3\n")


def test_listing_commands_and_json(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree), "--host", "officine", "--tag", "soir")
    (tree / "docs" / "new.txt").write_text("nouveau")
    (tree / "docs" / "lettre-0.txt").unlink()
    repo.ok("backup", str(tree), "--host", "officine")
    snaps = json.loads(repo.ok("snapshots", "--json").out)
    assert [s["hostname"] for s in snaps] == ["officine", "officine"]
    assert snaps[0]["tags"] == ["soir"] and snaps[0]["paths"] == [str(tree)]
    ls = json.loads(repo.ok("ls", "latest", str(tree / "docs"), "--json").out)
    names = {n["name"] for n in ls["nodes"]}
    assert "new.txt" in names and "lettre-0.txt" not in names
    diff = json.loads(repo.ok("diff", snaps[0]["short_id"], "latest", "--json").out)
    changes = {(c["change"], c["path"]) for c in diff["changes"]}
    assert ("+", str(tree / "docs" / "new.txt")) in changes
    assert ("-", str(tree / "docs" / "lettre-0.txt")) in changes
    stats = json.loads(repo.ok("stats", "--json").out)
    assert stats["snapshots"] == 2 and stats["restore_size"] > 6_000_000
    assert stats["stored_size"] < stats["raw_size"]  # compressed
    assert "officine" in repo.ok("snapshots").out


def test_stdin_and_command(repo: Coffre) -> None:
    repo.ok("backup", "--stdin", "--stdin-filename", "dump.sql", input=b"COPY ventes\n" * 1000)
    out = repo.ok("dump", "latest", "dump.sql").outb
    assert out == b"COPY ventes\n" * 1000
    repo.ok("backup", "--stdin-from-command", "--stdin-filename", "cmd.txt", "--",
            "printf", "hello %s", "pharmacie")
    assert repo.ok("dump", "latest", "cmd.txt").outb == b"hello pharmacie"


def test_failing_command_writes_no_snapshot(repo: Coffre) -> None:
    before = snapshot_ids(repo)
    res = repo("backup", "--stdin-from-command", "--", "sh", "-c", "echo boom >&2; echo partial; exit 3")
    assert res.code == 1
    assert "exit status 3" in res.err and "boom" in res.err
    assert snapshot_ids(repo) == before


def test_excludes(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    exf = tmp_path / "excludes"
    exf.write_text("# comment\n*.jpg\n")
    repo.ok("backup", str(tree), "--exclude", str(tree / "docs"), "--exclude-file", str(exf))
    paths = {n["path"] for n in json.loads(repo.ok("ls", "latest", "--json").out)["nodes"]}
    assert str(tree / "db" / "officine.db") in paths
    assert not any(p.endswith(".jpg") for p in paths)
    assert not any("/docs" in p for p in paths)


def test_restore_include_exclude(repo: Coffre, tree: Path, restored: Path) -> None:
    repo.ok("backup", str(tree))
    repo.ok("restore", "latest", "--target", str(restored), "--include", str(tree / "docs"),
            "--exclude", "lettre-1*")
    base = restored / str(tree).lstrip("/")
    assert (base / "docs" / "lettre-2.txt").exists()
    assert not (base / "docs" / "lettre-1.txt").exists()
    assert not (base / "db").exists()


def test_listing_folders_does_not_make_the_next_backup_store_new_trees(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    for d in (tree, tree / "docs", tree / "scans" / "2026"):
        os.utime(d, ns=(time.time_ns(), d.stat().st_mtime_ns))  # what listing a folder does
    summary = repo.ok("backup", str(tree), "--json").json()["summary"]
    assert summary["blobs_added"] <= 3  # at most the trees above the source (their mtimes move)


def test_source_below_a_symlinked_folder_is_backed_up(repo: Coffre, tree: Path, tmp_path: Path,
                                                      restored: Path) -> None:
    link = tmp_path / "raccourci"
    link.symlink_to(tree)
    repo.ok("backup", str(link / "docs"))
    paths = {n["path"] for n in json.loads(repo.ok("ls", "latest", "--json").out)["nodes"]}
    assert str(link / "docs" / "lettre-2.txt") in paths
    repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / str(link).lstrip("/") / "docs" / "lettre-2.txt").read_text() == "Bonjour 2\n" * 21


def test_stdin_filename_must_be_a_plain_name(repo: Coffre) -> None:
    for bad in ("db/dump.sql", "..", "."):
        res = repo("backup", "--stdin", "--stdin-filename", bad, input=b"x")
        assert res.code == 2 and "plain file name" in res.err
    assert snapshot_ids(repo) == []


def test_demo_runs_end_to_end(coffre: Coffre, tmp_path: Path) -> None:
    res = coffre.ok("demo", "--dir", str(tmp_path / "demo"), repo=False)
    assert res.out.strip().endswith("demo OK")
    assert "identical to the original" in res.out
    # The pharmacy's flow: the agent ran the job, the missing disk's alert reached the mail
    # sink, and the status shows the copy failing while the local backup is fine.
    assert "job officine: backup on depot: done" in res.out
    assert "Subject: No backup disk plugged in: disques" in res.out
    status = res.out[res.out.index("11. coffre status"):]
    assert "(exit status 1" in status
    rows = {line.split()[0] + " " + line.split()[2]: line for line in status.splitlines()[1:]
            if line.strip().startswith(("OK", "failing", "to check"))}
    assert set(rows) == {"OK depot", "failing disques"}, status
    again = coffre("demo", "--dir", str(tmp_path / "demo"), repo=False)
    assert again.code == 1 and "already holds a demo" in again.err
