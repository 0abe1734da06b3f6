"""Memory at scale: peak RSS of backups whose size is in the number of files or in one file.

    python bench/scale.py                          # 500,000 small files, then a 20 GiB file
    python bench/scale.py --files 20000 --sparse-gib 1 --tools coffre   # quick

1. a tree of --files small files (200 B - 4 KiB each, all different, 500 per folder);
2. a single sparse file of --sparse-gib GiB (a few MiB of data scattered in it, the rest
   holes: read back as zeros, so every byte goes through the chunker and the hash).
Each is backed up into a fresh repository by each tool; the table gives wall time, CPU time
and peak RSS (from wait4). Memory that grows with the data shows as the RSS of (1) against a
backup of a few files, and of (2) against (1).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import timed
from tools import TOOLS, ensure_installed


def make_small_files(root: Path, count: int) -> None:
    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(11)  # noqa: S311 (test data, not secrets)
    for i in range(count):
        folder = root / f"d{i // 500:04d}"
        if i % 500 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:06d}.txt").write_bytes(
            f"fichier {i}\n".encode() + rnd.randbytes(rnd.randrange(100, 2000)).hex().encode()
        )
    (root / ".complete").write_text("")


def make_sparse_file(root: Path, gib: int) -> None:
    path = root / "big.img"
    if path.exists() and path.stat().st_size == gib << 30:
        return
    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(12)  # noqa: S311 (test data, not secrets)
    with open(path, "wb") as f:
        f.truncate(gib << 30)
        for _ in range(64):  # 64 islands of 64 KiB of data
            f.seek(rnd.randrange(0, (gib << 30) - 65536))
            f.write(rnd.randbytes(65536))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500_000)
    ap.add_argument("--sparse-gib", type=int, default=20)
    ap.add_argument("--tools", default="coffre,restic")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108
    ap.add_argument("--out", type=Path, default=tmp / "pharmabench" / "scale")
    args = ap.parse_args(argv)
    tools = args.tools.split(",")
    ensure_installed(tools)
    cases = {
        f"{args.files:,} small files": args.out / "small-files",
        f"one {args.sparse_gib} GiB sparse file": args.out / "sparse",
    }
    make_small_files(cases[f"{args.files:,} small files"], args.files)
    make_sparse_file(cases[f"one {args.sparse_gib} GiB sparse file"], args.sparse_gib)
    print(f"{'case':32} {'tool':8} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13}")
    for case, source in cases.items():
        for name in tools:
            home = args.out / "repos" / name
            shutil.rmtree(home, ignore_errors=True)
            tool = TOOLS[name](name, home)
            env = tool.env()
            timed(tool.init_argv(), env, args.out)
            m = timed(tool.backup_argv(source, 1), env, args.out)
            print(f"{case:32} {name:8} {m.wall:8.1f} {m.cpu:8.1f} {m.rss_mib:13.0f}", flush=True)
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
