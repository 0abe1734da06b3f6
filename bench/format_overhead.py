"""What format 2 costs against format 1, on the same trees: stored bytes (Padmé padding, the
per-pack salt, sealed blobs) and backup / restore wall times (restore reads blobs that a
format-2 pack stores in a random order).

    .venv/bin/python bench/format_overhead.py TREE [TREE ...] [--runs 3]

For each tree and format: a fresh repository, a backup, a full restore; the sizes of data/
and of the whole repository, the medians of the times. Prints one line per tree and the
ratios format 2 / format 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

PASSWORD = "benchmark password"  # noqa: S105 - a throwaway repository


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def coffre(repo: Path, pwfile: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coffre", *args, "--repo", str(repo),
                    "--password-file", str(pwfile)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one(tree: Path, version: int, work: Path, pwfile: Path) -> tuple[int, int, float, float]:
    repo, out = work / f"repo-v{version}", work / f"out-v{version}"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    Repository.init(LocalBackend(repo), PASSWORD, version=version)
    backup = coffre(repo, pwfile, "backup", str(tree))
    restore = coffre(repo, pwfile, "restore", "latest", "--target", str(out))
    shutil.rmtree(out, ignore_errors=True)
    return folder_size(repo / "data"), folder_size(repo), backup, restore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("COFFRE_CACHE_DIR", tempfile.mkdtemp(prefix="coffre-bench-cache-"))
    with tempfile.TemporaryDirectory(prefix="coffre-format-") as tmp:
        work = Path(tmp)
        pwfile = work / "password"
        pwfile.write_text(PASSWORD + "\n")
        pwfile.chmod(0o600)
        print(f"{'tree':<28} {'data v1':>12} {'data v2':>12} {'bytes':>7} {'backup':>7} {'restore':>7}")
        for tree in args.trees:
            runs = {v: [one(tree, v, work, pwfile) for _ in range(args.runs)] for v in (1, 2)}
            data = {v: runs[v][0][0] for v in (1, 2)}
            backup = {v: statistics.median(r[2] for r in runs[v]) for v in (1, 2)}
            restore = {v: statistics.median(r[3] for r in runs[v]) for v in (1, 2)}
            print(f"{tree.name:<28} {data[1]:>12,} {data[2]:>12,} {data[2] / data[1]:>7.4f} "
                  f"{backup[2] / backup[1]:>7.2f} {restore[2] / restore[1]:>7.2f}")
            print(f"{'':<28} backup v1 {backup[1]:.2f} s, v2 {backup[2]:.2f} s; "
                  f"restore v1 {restore[1]:.2f} s, v2 {restore[2]:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
