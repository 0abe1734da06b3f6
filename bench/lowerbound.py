"""The lower bound of a day's transfer: the compressed size of what really changed.

- SQLite databases (4 KiB pages): every page that differs from the previous day, plus the
  pages appended.
- Other files: whole new files; for modified files, the bytes of the new version that are
  not found in the old one, at a fine granularity (content-defined 2 KiB pieces, so inserted
  and shifted text is matched).
The changed bytes are compressed with zstd level 3, file by file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zstandard
from pyfastcdc import FastCDC

PAGE = 4096


@dataclass
class LowerBound:
    changed_bytes: int = 0
    compressed_bytes: int = 0
    db_pages_changed: int = 0
    files_new: int = 0
    files_modified: int = 0


def _pieces(data: bytes) -> list[bytes]:
    cdc = FastCDC(2048, min_size=512, max_size=8192)
    return [bytes(c.data) for c in cdc.cut_buf(data)]


def _changed_db_pages(old: bytes, new: bytes) -> tuple[bytes, int]:
    out, pages = [], 0
    for off in range(0, len(new), PAGE):
        page = new[off : off + PAGE]
        if page != old[off : off + PAGE]:
            out.append(page)
            pages += 1
    return b"".join(out), pages


def _changed_bytes(old: bytes, new: bytes) -> bytes:
    known = set(_pieces(old))
    return b"".join(p for p in _pieces(new) if p not in known)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\0"


def lower_bound(before: Path, after: Path) -> LowerBound:
    """Compare two trees (the pristine one and the one after a day of activity)."""
    lb = LowerBound()
    zstd = zstandard.ZstdCompressor(level=3)
    for dirpath, _, files in os.walk(after):
        for name in files:
            new_path = Path(dirpath) / name
            old_path = before / new_path.relative_to(after)
            if new_path.is_symlink():
                continue
            new = new_path.read_bytes()
            if not old_path.exists():
                changed, lb.files_new = new, lb.files_new + 1
            else:
                old = old_path.read_bytes()
                if old == new:
                    continue
                lb.files_modified += 1
                if _is_sqlite(new_path):
                    changed, pages = _changed_db_pages(old, new)
                    lb.db_pages_changed += pages
                else:
                    changed = _changed_bytes(old, new)
            lb.changed_bytes += len(changed)
            if changed:
                lb.compressed_bytes += len(zstd.compress(changed))
    return lb


if __name__ == "__main__":
    # Run as its own process by run.py, so the benchmark process stays small: a child's peak
    # RSS as the kernel reports it includes what it shared with its parent when forked.
    import json
    import sys
    from dataclasses import asdict

    print(json.dumps(asdict(lower_bound(Path(sys.argv[1]), Path(sys.argv[2])))))
