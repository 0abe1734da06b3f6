"""One size grammar (coffre.core.sizes) for --max-size, --max-repack-size and the bandwidth
limits: units required for sizes, rates with an optional /s, a table of cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coffre.core.errors import EXIT_USAGE, UsageError
from coffre.core.sizes import SizeError, parse_rate, parse_size
from coffre.storage.pacing import parse_limit

from conftest import Coffre

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(("text", "expected"), [
    ("500MiB", 500 * MIB),
    ("500mib", 500 * MIB),
    ("500 MiB", 500 * MIB),
    (" 2GiB ", 2 * GIB),
    ("1.5GiB", 3 * GIB // 2),
    ("1.5GB", 1_500_000_000),
    ("300kb", 300_000),
    ("300KiB", 300 * KIB),
    ("2TB", 2 * 10**12),
    ("1TiB", TIB),
    ("4096B", 4096),
    ("4096 b", 4096),
    ("3K", 3 * KIB),
    ("1G", GIB),
    ("0", 0),
    ("0B", 0),
])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("500", "500 what? e.g. 500MiB"),
    ("1.5", "1.5 what? e.g. 1.5MiB"),
    ("", "not a size"),
    ("GiB", "not a size"),
    ("-1GiB", "not a size"),
    ("1,5GiB", "not a size"),
    ("1 2", "not a size"),
    ("12XB", "unknown unit 'XB'"),
    ("1PB", "unknown unit 'PB'"),
    ("5 Go", "unknown unit 'Go'"),
])
def test_sizes_refused(text: str, message: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text, "--max-size")
    assert message in info.value.message
    assert info.value.message.startswith("--max-size")
    assert "KiB" in (info.value.hint or "")
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(("text", "expected"), [
    ("512KiB/s", 512 * KIB),
    ("512KiB", 512 * KIB),
    ("512 kib / s", 512 * KIB),
    ("1GiB/s", GIB),
    ("2MB/s", 2_000_000),
    ("1.5MiB/s", 1.5 * MIB),
    ("unlimited", None),
    ("none", None),
    ("0", None),
])
def test_rates(text: str, expected: float | None) -> None:
    warnings: list[str] = []
    assert parse_rate(text, "--limit-upload", warnings.append) == expected
    assert warnings == []


def test_a_bare_rate_is_still_kib_per_second_with_a_warning() -> None:
    warnings: list[str] = []
    assert parse_rate("500", "--limit-upload", warnings.append) == 500 * KIB
    assert len(warnings) == 1 and "500KiB/s" in warnings[0] and "--limit-upload 500" in warnings[0]
    warnings.clear()
    schedule = parse_limit("08:00-19:00=100,*=unlimited", "--limit-download", warnings.append)
    assert schedule.windows[0].rate == 100 * KIB
    assert len(warnings) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("500/s", "500 what per second?"),
    ("fast", "not a rate"),
    ("5 bananas/s", "unknown unit"),
    ("-5KiB/s", "not a rate"),
])
def test_rates_refused(text: str, message: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_rate(text, "--limit-upload")
    assert message in info.value.message


def test_limits_take_every_unit() -> None:
    assert parse_limit("1GiB/s").default == GIB  # was refused: only K and M were units
    assert parse_limit("08:30-19:30=512KiB/s,*=2TB/s").windows[0].rate == 512 * KIB
    with pytest.raises(UsageError) as info:
        parse_limit("08:30-19:30=vite,*=unlimited", "--limit-upload")
    assert info.value.message.startswith("--limit-upload") and "vite" in info.value.message


def test_max_size_without_a_unit_is_a_usage_error(repo: Coffre, tmp_path: Path) -> None:
    res = repo("forget", "--max-size", "500", "--dry-run")
    assert res.code == EXIT_USAGE, res
    assert "--max-size 500: 500 what? e.g. 500MiB" in res.err
    res = repo("prune", "--max-repack-size", "2048", "--dry-run")
    assert res.code == EXIT_USAGE and "--max-repack-size 2048: 2048 what?" in res.err, res
    repo.ok("prune", "--max-repack-size", "0", "--dry-run")  # zero needs no unit


def test_limits_on_the_command_line(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    res = repo.ok("backup", str(src), "--limit-upload", "1GiB/s",
                  "--limit-download", "08:00-18:00=2MiB/s,*=unlimited")
    assert "warning" not in res.err
    res = repo.ok("backup", str(src), "--limit-upload", "500")
    assert "--limit-upload 500: a rate without a unit is read as 500KiB/s" in res.err
    res = repo("backup", str(src), env={"COFFRE_LIMIT_DOWNLOAD": "lent"})
    assert res.code == EXIT_USAGE and "COFFRE_LIMIT_DOWNLOAD lent: not a rate" in res.err, res


def test_forget_shows_sizes_for_people_and_bytes_in_json(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / "data").write_bytes(bytes([i]) * 200_000 + b"x" * i)
        repo.ok("backup", str(src))
    res = repo.ok("forget", "--max-size", "1KiB", "--dry-run")
    assert re.search(r"budget 1(\.0+)? KiB\)", res.out), res
    assert " bytes" not in res.out
    doc = json.loads(repo.ok("forget", "--max-size", "1KiB", "--dry-run", "--json").out)
    reasons = " ".join(r for d in doc["decisions"] for r in d["reasons"])
    assert "budget 1024)" in reasons and " bytes" in reasons
