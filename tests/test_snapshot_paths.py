"""Paths inside snapshots as a pharmacist types them: relative to the snapshot's sources,
SNAPSHOT:PATH restores, includes that match nothing, and which snapshot 'latest' is."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Coffre, age_tree


def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    """/…/officine and /…/maison, each with docs/ (a name both hold) and their own files."""
    officine, maison = tmp_path / "officine", tmp_path / "maison"
    for root in (officine, maison):
        (root / "docs").mkdir(parents=True)
        (root / "docs" / f"{root.name}.txt").write_text(f"{root.name}\n")
    (officine / "scans" / "2025" / "03").mkdir(parents=True)
    for i in range(1, 4):
        (officine / "scans" / "2025" / "03" / f"ordonnance-03-000{i}.jpg").write_bytes(b"scan %d" % i * 700)
    age_tree(tmp_path)
    return officine, maison


def test_ls_dump_and_diff_take_paths_relative_to_the_sources(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))
    first = repo.ok("snapshots", "--json").json()[0]["id"]
    (officine / "scans" / "2025" / "03" / "ordonnance-03-0002.jpg").write_bytes(b"rescanned")
    repo.ok("backup", str(officine))

    listed = repo.ok("ls", "latest", "scans", "--json").json()["nodes"]
    assert listed[0]["path"] == str(officine / "scans")
    assert {n["path"] for n in listed} == {n["path"] for n in repo.ok(
        "ls", "latest", str(officine / "scans"), "--json").json()["nodes"]}
    assert repo.ok("dump", "latest", "scans/2025/03/ordonnance-03-0002.jpg").outb == b"rescanned"
    diff = repo.ok("diff", first, "latest", "scans/2025", "--json").json()["changes"]
    assert diff == [{"change": "M", "path": str(officine / "scans/2025/03/ordonnance-03-0002.jpg")}]
    assert repo.ok("diff", first, "latest", "docs", "--json").json()["changes"] == []


def test_ls_long_shows_human_sizes(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    (officine / "big.bin").write_bytes(b"x" * 3 * 1024 * 1024)
    repo.ok("backup", str(officine))

    line = next(x for x in repo.ok("ls", "latest", "big.bin", "-l").out.splitlines() if "big.bin" in x)

    assert " 3 MiB " in line and "3145728" not in line
    assert repo.ok("ls", "latest", "big.bin", "--json").json()["nodes"][0]["size"] == 3145728


def test_a_relative_path_under_several_sources_is_ambiguous(repo: Coffre, tmp_path: Path) -> None:
    officine, maison = two_sources(tmp_path)
    repo.ok("backup", str(officine), str(maison))

    res = repo("ls", "latest", "docs")

    assert res.code == 1, res
    assert "ambiguous" in res.err and str(officine / "docs") in res.err and str(maison / "docs") in res.err
    assert repo.ok("ls", "latest", "docs/maison.txt").out.strip() == str(maison / "docs" / "maison.txt")


def test_a_path_not_in_the_snapshot_names_the_closest(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))

    res = repo("ls", "latest", "scans/2025/03/ordonnance-03-0004.jpg")

    assert res.code == 1, res
    assert "not in snapshot" in res.err
    assert str(officine / "scans/2025/03/ordonnance-03-0003.jpg") in res.err


def test_an_include_that_matches_nothing_is_an_error(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))
    target = tmp_path / "restored"

    res = repo("restore", "latest", "--target", str(target), "--include", "docs",
               "--include", "scans/2025/03/ordonnance-03-0004.jpg")

    assert res.code == 1, res
    assert "--include scans/2025/03/ordonnance-03-0004.jpg matches nothing" in res.err
    assert str(officine / "scans/2025/03/ordonnance-03-0003.jpg") in res.err  # the hint
    assert not target.exists()  # nothing written, not even the target


def test_includes_follow_the_pattern_grammar(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    (officine / "top.jpg").write_bytes(b"top")
    repo.ok("backup", str(officine))
    target = tmp_path / "restored"

    repo.ok("restore", "latest", "--target", str(target), "--include", f"{officine}/*.jpg")

    base = target / str(officine).lstrip("/")
    assert sorted(os.listdir(base)) == ["top.jpg"]  # '*' does not cross '/': no scans
    repo.ok("restore", "latest", "--target", str(tmp_path / "r2"), "--include", "2025/03")
    assert len(list((tmp_path / "r2").rglob("*.jpg"))) == 3  # relative: at any depth


def test_snapshot_colon_path_restores_without_the_path_above(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))

    repo.ok("restore", f"latest:{officine}/scans/2025", "--target", str(tmp_path / "a"))
    assert sorted(os.listdir(tmp_path / "a")) == ["03"]
    assert len(os.listdir(tmp_path / "a" / "03")) == 3

    repo.ok("restore", "latest:scans/2025/03/ordonnance-03-0001.jpg", "--target", str(tmp_path / "b"))
    assert os.listdir(tmp_path / "b") == ["ordonnance-03-0001.jpg"]
    assert (tmp_path / "b" / "ordonnance-03-0001.jpg").read_bytes() == b"scan 1" * 700

    repo.ok("restore", "latest:scans", "--target", str(tmp_path / "c"), "--include", "*-0002.jpg")
    assert [p.name for p in (tmp_path / "c").rglob("*.jpg")] == ["ordonnance-03-0002.jpg"]
    res = repo("restore", "latest:nowhere", "--target", str(tmp_path / "d"))
    assert res.code == 1 and "not in snapshot" in res.err, res


def test_latest_is_never_a_stdin_or_database_snapshot_for_files(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))
    repo.ok("backup", "--stdin-from-command", "--stdin-filename", "base.sql", "--", "echo", "select 1;")

    assert repo.ok("ls", "latest", "scans/2025/03", "--json").json()["nodes"]
    res = repo.ok("restore", "latest", "--target", str(tmp_path / "r"), "--include", "docs")
    assert "1 file" in res.out
    assert repo.ok("dump", "latest", "docs/officine.txt").out == "officine\n"
    assert repo.ok("dump", "latest", "base.sql").out == "select 1;\n"  # the stdin snapshot's file
    found = repo.ok("find", "--snapshot", "latest", "ordonnance-03-0001.jpg", "--json").json()
    assert [m["path"] for m in found["matches"]] == [str(officine / "scans/2025/03/ordonnance-03-0001.jpg")]


def test_latest_of_a_path_and_a_host(repo: Coffre, tmp_path: Path) -> None:
    officine, maison = two_sources(tmp_path)
    repo.ok("backup", str(officine), "--host", "comptoir")
    repo.ok("backup", str(maison), "--host", "bureau")

    assert repo.ok("ls", "latest", "docs", "--json").json()["nodes"][0]["path"] == str(maison / "docs")
    by_path = repo.ok("ls", "latest", "docs", "--path", str(officine), "--json").json()["nodes"]
    assert by_path[0]["path"] == str(officine / "docs")
    inside = repo.ok("ls", "latest", "docs", "--path", str(officine / "scans"), "--json").json()["nodes"]
    assert inside[0]["path"] == str(officine / "docs")
    by_host = repo.ok("ls", "latest", "docs", "--host", "comptoir", "--json").json()["nodes"]
    assert by_host[0]["path"] == str(officine / "docs")
    res = repo("restore", "latest", "--target", str(tmp_path / "r"), "--path", str(tmp_path / "nowhere"))
    assert res.code == 1 and "no snapshot holds" in res.err, res


def test_an_include_inside_another_counts_as_matching(repo: Coffre, tmp_path: Path) -> None:
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))

    repo.ok("restore", "latest", "--target", str(tmp_path / "r"), "--include", str(officine / "scans"),
            "--include", "*-0001.jpg")
    repo.ok("restore", f"latest:{officine}/scans", "--target", str(tmp_path / "s"),
            "--include", str(officine))


def test_only_stdin_snapshots_are_still_latest(repo: Coffre, tmp_path: Path) -> None:
    repo.ok("backup", "--stdin-from-command", "--stdin-filename", "base.sql", "--", "echo", "select 2;")
    assert [n["path"] for n in repo.ok("ls", "latest", "--json").json()["nodes"]] == ["/base.sql"]
    officine, _maison = two_sources(tmp_path)
    repo.ok("backup", str(officine))
    assert repo.ok("ls", "latest", "base.sql", "--json").json()["nodes"][0]["path"] == "/base.sql"
