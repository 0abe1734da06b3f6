"""Progress of backup and restore, --verbose and --quiet, and the French line, through the real
coffre under a pseudo-terminal and on pipes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_progress import FAST, SIZE, frames, full_frame, in_terminal, random_tree, statuses_then_summary

from conftest import Coffre


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    return random_tree(tmp_path / "src", files=48, size=700_000)


def test_backup_on_a_terminal_shows_files_and_bytes_as_it_goes(repo: Coffre, scans: Path) -> None:
    """The line counts the files and bytes read as it goes, against the totals of the scanner
    (started before the repository was opened, so usually known from the first file on; the
    time left of longer backups: test_backup_surface), and ends at 100 %."""
    code, text = in_terminal(repo, "backup", str(scans))
    assert code == 0, text
    shown = [f for f in frames(text) if "backup: files" in f]
    going = rf"  (\d+%  )?[1-9]\d*(/48)? files  {SIZE}( of {SIZE})?  .*scan-\d\d\.jpg"
    assert any(re.search(going, f) and "100%" not in f for f in shown), text
    assert any(re.search(rf"100%  48/48 files  {SIZE} of {SIZE}", f) for f in shown), text
    assert "\r\x1b[2K" in text
    tail = text.rsplit("\x1b[2K", 1)[1]
    assert " left" not in tail, text
    res = repo.ok("backup", str(scans), env=FAST)  # on pipes: nothing of it
    assert "\r" not in res.err + res.out and "\x1b" not in res.err + res.out and " left" not in res.err


def test_restore_on_a_terminal_shows_files_bytes_and_time_left(coffre: Coffre, scans: Path,
                                                               tmp_path: Path) -> None:
    """Small files are restored a pack at a time (their blobs decoded, then the files written):
    1 MiB packs give the line dozens of steps to show, where two 16 MiB packs made it jump from
    0 to 48 files within a few milliseconds, too fast for a loaded machine to redraw between."""
    coffre.ok("init", "--pack-size", "1")
    coffre.ok("backup", str(scans))
    code, text = in_terminal(coffre, "restore", "latest", "--target", str(tmp_path / "restored"))
    assert code == 0, text
    assert any(full_frame(f, "files") for f in frames(text) if "restore" in f), text
    res = coffre.ok("restore", "latest", "--target", str(tmp_path / "again"), env=FAST)  # on pipes
    assert "\r" not in res.err + res.out and "\x1b" not in res.err + res.out and " left" not in res.err


def test_backup_and_restore_json_stream_status_then_summary(repo: Coffre, scans: Path,
                                                            tmp_path: Path) -> None:
    res = repo.ok("backup", str(scans), "--json", env=FAST)
    statuses, summary = statuses_then_summary(res.out)
    assert summary["snapshot"] and statuses[-1]["total_files"] >= 48
    res = repo.ok("restore", "latest", "--target", str(tmp_path / "restored"), "--json", env=FAST)
    statuses, summary = statuses_then_summary(res.out)
    assert statuses[-1]["files_done"] == statuses[-1]["total_files"] >= 48


def small_packs(c: Coffre, tmp_path: Path) -> Coffre:
    """A repository of 1 MiB packs holding ~32 MB: checking it takes many redraws."""
    c.ok("init", "--pack-size", "1")
    c.ok("backup", str(random_tree(tmp_path / "data", files=32, size=1_000_000)))
    return c


def test_verbose_on_pipes_gives_plain_lines(coffre: Coffre, tmp_path: Path) -> None:
    repo = small_packs(coffre, tmp_path)
    res = repo.ok("check", "--read-data", "--verbose", env=FAST)
    assert "\r" not in res.err and "\x1b" not in res.err
    assert any(re.fullmatch(rf"\[0:\d\d\] check: reading data, \d+%, \d+/\d+ packs, {SIZE} of {SIZE}.*", line)
               for line in res.err.splitlines()), res


def test_quiet_shows_nothing_on_a_terminal(repo: Coffre, scans: Path) -> None:
    code, text = in_terminal(repo, "backup", str(scans), "--quiet")
    assert code == 0 and " left" not in text and "\x1b[2K" not in text, text


def test_the_line_speaks_french(coffre: Coffre, tmp_path: Path) -> None:
    repo = small_packs(coffre, tmp_path)
    code, text = in_terminal(repo, "check", "--read-data", env={"LANG": "fr_FR.UTF-8"})
    assert code == 0, text
    french = rf"vérification : lecture des données .*\d+/\d+ paquets .*{SIZE} sur {SIZE}.*reste \d+:\d\d"
    assert any(re.search(french, f) for f in frames(text)), text
