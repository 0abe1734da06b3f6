"""A small file is read to its end, whatever size fstat gives: a /proc file says 0 bytes and
holds more (a reader that trusted the size would store it empty)."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import Coffre, age_tree


def test_a_file_whose_size_says_nothing_is_read_to_its_end(repo: Coffre, tmp_path: Path,
                                                           restored: Path) -> None:
    proc_file = Path("/proc/version")
    assert proc_file.stat().st_size == 0 and proc_file.read_bytes()  # what makes it a case
    rnd = random.Random(5)
    files = {"empty": b"", "one": b"x", **{f"f{n}": rnd.randbytes(n) for n in (100, 4096, 40_000)}}
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    age_tree(src)
    repo.ok("backup", str(proc_file), str(src))
    repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / "proc/version").read_bytes() == proc_file.read_bytes()
    for name, data in files.items():
        assert (restored / str(src / name).lstrip("/")).read_bytes() == data
