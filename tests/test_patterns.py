"""The one pattern grammar of include and exclude (docs/patterns.md), against a table of cases,
and the case reported in issue 13 end to end: `--exclude '/srv/officine/*.tmp'` must not
exclude a .tmp file deeper down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coffre.core.errors import UsageError
from coffre.sources.patterns import PathMatcher, escape

from conftest import Coffre

# (pattern, path, matches: the path itself or a folder above it)
CASES = [
    # `*` never crosses '/'.
    ("/srv/officine/*.tmp", "/srv/officine/a.tmp", True),
    ("/srv/officine/*.tmp", "/srv/officine/scans/2025/keep.tmp", False),
    ("/srv/*/a.txt", "/srv/officine/a.txt", True),
    ("/srv/*/a.txt", "/srv/officine/scans/a.txt", False),
    ("/srv/officine/*", "/srv/officine/scans/2025/keep.tmp", True),  # the folder scans matches
    # `**` crosses any number of folders, none included.
    ("/srv/**/*.tmp", "/srv/officine/scans/2025/keep.tmp", True),
    ("/srv/**/*.tmp", "/srv/a.tmp", True),
    ("/srv/**/*.tmp", "/home/a.tmp", False),
    ("**/cache", "/home/pharmacie/.local/cache", True),
    ("/srv/**", "/srv/officine/a", True),
    # Anchored patterns match from the root only.
    ("/officine", "/srv/officine", False),
    ("/srv/officine", "/srv/officine", True),
    ("/srv/officine", "/srv/officine2", False),
    ("/srv/offi", "/srv/officine", False),
    # A pattern with '/' that does not start with one matches at any depth, whole components.
    ("scans/*.tmp", "/srv/officine/scans/a.tmp", True),
    ("scans/*.tmp", "/srv/officine/scans/2025/a.tmp", False),
    ("scans/*.tmp", "/srv/officine/myscans/a.tmp", False),
    ("officine/scans", "/srv/officine/scans/2025/a.jpg", True),
    ("scans/**/*.tmp", "/srv/officine/scans/2025/03/a.tmp", True),
    # A pattern without '/' is matched against the file name alone, at any depth.
    ("*.tmp", "/srv/officine/scans/2025/keep.tmp", True),
    ("*.tmp", "/srv/officine/tmp", False),
    ("*.tmp", "/srv/officine/a.tmp.jpg", False),
    ("cache", "/home/pharmacie/cache/x/y", True),
    ("cache", "/home/pharmacie/cache2", False),
    ("Thumbs.db", "/srv/officine/scans/Thumbs.db", True),
    # `?` is one character: a letter, é included (two bytes in UTF-8), never '/'.
    ("ordonnance-?.jpg", "/s/ordonnance-7.jpg", True),
    ("ordonnance-?.jpg", "/s/ordonnance-17.jpg", False),
    ("caf?.txt", "/s/café.txt", True),
    ("/s?x", "/s/x", False),
    # Sets.
    ("[a-c]*.log", "/var/b-1.log", True),
    ("[a-c]*.log", "/var/d-1.log", False),
    ("[!x]*.log", "/var/a.log", True),
    ("[!x]*.log", "/var/x.log", False),
    ("[^x]*.log", "/var/x.log", False),  # '^' negates too (Go's and restic's form)
    ("[^x]*.log", "/var/a.log", True),
    ("[é]t[é].txt", "/s/été.txt", True),
    # A backslash takes the next character literally.
    ("a\\*b", "/s/a*b", True),
    ("a\\*b", "/s/axb", False),
    ("\\!important", "/s/!important", True),
    # Dot files are matched like any other.
    ("*", "/home/p/.bashrc", True),
    (".cache", "/home/p/.cache/thumbnails/a.png", True),
    ("/home/*/.cache", "/home/p/.cache", True),
    ("*.tmp", "/home/p/.tmp", True),
    # A trailing '/' is ignored: the pattern still names the folder and all it holds.
    ("/srv/officine/scans/", "/srv/officine/scans/2025/a.jpg", True),
    ("scans/", "/srv/officine/scans", True),
    # Case-sensitive.
    ("*.TMP", "/s/a.tmp", False),
    # A name ending with a newline is not the name without it.
    ("*.tmp", "/s/a.tmp\n", False),
    # The root pattern covers everything.
    ("/", "/srv/officine", True),
]

# Names that are not UTF-8 (Latin-1 from an old system): each odd byte is one character.
BYTES_CASES = [
    ("*.jpg", b"/srv/scans/ordonnance-\xe9t\xe9.jpg", True),
    ("ordonnance-?t?.jpg", b"/srv/scans/ordonnance-\xe9t\xe9.jpg", True),
    ("/srv/scans/*", b"/srv/scans/\xe9\xe9/a.jpg", True),
    ("/srv/*.jpg", b"/srv/scans/\xe9.jpg", False),
    ("ordonnance-\udce9t\udce9.jpg", b"/srv/scans/ordonnance-\xe9t\xe9.jpg", True),  # as argv gives it
    ("ordonnance-été.jpg", b"/srv/scans/ordonnance-\xe9t\xe9.jpg", False),  # UTF-8 é is not \xe9
]


@pytest.mark.parametrize(("pattern", "path", "expected"), CASES)
def test_the_pattern_table(pattern: str, path: str, expected: bool) -> None:
    assert PathMatcher([pattern]).matches_or_under(os.fsencode(path)) is expected


@pytest.mark.parametrize(("pattern", "path", "expected"), BYTES_CASES)
def test_names_that_are_not_utf8(pattern: str, path: bytes, expected: bool) -> None:
    assert PathMatcher([pattern]).matches_or_under(path) is expected


def test_matches_is_the_path_itself_and_matches_or_under_its_folders() -> None:
    m = PathMatcher(["/srv/officine/scans"])
    assert m.matches(b"/srv/officine/scans")
    assert not m.matches(b"/srv/officine/scans/a.jpg")  # the walks stop at the folder instead
    assert m.matches_or_under(b"/srv/officine/scans/a.jpg")


def test_several_patterns_and_empty_ones() -> None:
    m = PathMatcher(["*.tmp", "", "  ", "/srv/cache"])
    assert m.patterns == ["*.tmp", "/srv/cache"]
    assert m.matches(b"/a/b.tmp") and m.matches(b"/srv/cache") and not m.matches(b"/srv/a")
    assert not PathMatcher([]) and not PathMatcher([]).matches(b"/a")


def test_a_re_include_pattern_is_refused_with_the_way_to_write_a_literal_bang() -> None:
    with pytest.raises(UsageError) as caught:
        PathMatcher(["*.tmp", "!keep.tmp"])
    assert "'!keep.tmp'" in caught.value.message and "\\!" in (caught.value.hint or "")


@pytest.mark.parametrize("path", ["/srv/a*b/[c]?.txt", "/srv/plain/name.txt", "/srv/x\\y"])
def test_escape_makes_a_pattern_of_exactly_one_path(path: str) -> None:
    m = PathMatcher([escape(path)])
    assert m.matches(os.fsencode(path))
    assert not m.matches(os.fsencode(path.replace("/srv/", "/srv/z")))


def test_the_reported_case_end_to_end(repo: Coffre, tmp_path: Path) -> None:
    """issue 13: `--exclude '<root>/*.tmp'` excluded `<root>/scans/2025/keep.tmp` too."""
    root = tmp_path / "officine"
    (root / "scans" / "2025").mkdir(parents=True)
    (root / "top.tmp").write_text("scratch")
    (root / "keep.txt").write_text("keep")
    (root / "scans" / "2025" / "keep.tmp").write_text("a scan's sidecar, to keep")
    (root / "scans" / "2025" / "ordonnance.jpg").write_bytes(b"\xff\xd8scan")
    repo.ok("backup", str(root), "--exclude", f"{root}/*.tmp", "--exclude", "*.jpg")
    listed = json.loads(repo.ok("ls", "latest", "--json").out)["nodes"]
    paths = {n["path"] for n in listed if n["type"] == "file"}
    assert paths == {f"{root}/keep.txt", f"{root}/scans/2025/keep.tmp"}
    # verify knows what was excluded, so the excluded files are not reported as missing
    repo.ok("verify", "latest")


def test_a_re_include_pattern_is_a_usage_error_in_backup(repo: Coffre, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    res = repo("backup", str(tmp_path / "a"), "--exclude", "!a.txt")
    assert res.code == 2, res
    assert "'!a.txt'" in res.err and "nothing" not in res.out
