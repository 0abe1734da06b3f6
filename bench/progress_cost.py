"""What backup progress and exclude patterns cost (issue 13: at most 2 % of a backup).

    .venv/bin/python bench/progress_cost.py progress SOURCE [--rounds N] [--force-scanner]
    .venv/bin/python bench/progress_cost.py patterns SOURCE

`progress`: the same backup, in this process, with NULL_PROGRESS (nobody watches: no
scanner, no-op counters) and with a Progress (counters, and the scanner child process that
counts the totals), runs interleaved: first backups into a fresh repository, then second
backups into it (nothing changed: the files cache answers). It reports wall time and CPU time
(this process's user+sys, and the scanner child's): on a shared machine wall time moves by
±20 % from run to run, CPU time much less. `--force-scanner` starts the scanner at once
instead of after 2 s (the worst case: short backups never start it).

`patterns`: PathMatcher's cost per path over every path under SOURCE, for name patterns and
for path patterns.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="coffre-bench-cache-"))

from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.ops.backup import Backup, BackupOptions
from coffre.repository.cache import RepoCache
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.sources import scan
from coffre.sources.patterns import PathMatcher
from coffre.storage.local import LocalBackend


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _backup(repo_dir: Path, source: str, progress: Progress) -> tuple[float, float, float]:
    """(wall, own CPU, children's CPU) seconds of one backup."""
    backend = LocalBackend(repo_dir)
    repo = Repository.open(backend, "pw") if backend.exists() else Repository.init(backend, "pw")[0]
    repo.load_index()
    cache = RepoCache(repo.config.id)
    own, children, wall = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    with Lock(repo, exclusive=False, command="backup") as lock:
        Backup(repo, lock, BackupOptions(paths=[source], host="bench"), cache=cache, progress=progress).run()
    out = (time.perf_counter() - wall, _cpu(resource.RUSAGE_SELF) - own,
           _cpu(resource.RUSAGE_CHILDREN) - children)
    cache.close()
    return out


def progress_cost(source: str, rounds: int) -> None:
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {
        (k, w): [] for k in ("null", "progress") for w in ("first", "again")}
    for r in range(rounds):
        for kind in ("null", "progress") if r % 2 == 0 else ("progress", "null"):
            folder = Path(tempfile.mkdtemp(prefix="coffre-bench-repo-", dir="/tmp"))
            for when in ("first", "again"):
                progress = NULL_PROGRESS if kind == "null" else Progress()
                runs[kind, when].append(_backup(folder / "r", source, progress))
            shutil.rmtree(folder)
    for when in ("first", "again"):
        n = [statistics.median(x) for x in zip(*runs["null", when], strict=True)]
        p = [statistics.median(x) for x in zip(*runs["progress", when], strict=True)]
        print(f"{when} backup, median of {rounds}: NULL_PROGRESS {n[0]:.2f} s wall, {n[1]:.2f} s CPU; "
              f"Progress {p[0]:.2f} s wall ({100 * (p[0] - n[0]) / n[0]:+.1f} %), {p[1]:.2f} s CPU "
              f"({100 * (p[1] - n[1]) / n[1]:+.1f} %), scanner {p[2]:.3f} s CPU "
              f"(all CPU {100 * (p[1] + p[2] - n[1]) / n[1]:+.1f} %)")


def patterns_cost(source: str) -> None:
    paths = [os.fsencode(os.path.join(root, n))
             for root, dirs, files in os.walk(source) for n in dirs + files]
    for patterns in (["*.tmp"], ["*.tmp", "*.log", "Thumbs.db", ".cache", "~*"],
                     ["/srv/officine/*.tmp", "scans/**/*.bak", "*.tmp", "*.log", ".cache"]):
        matcher = PathMatcher(patterns)
        start = time.perf_counter()
        for _ in range(3):
            for p in paths:
                matcher.matches(p)
        seconds = (time.perf_counter() - start) / 3
        print(f"{len(paths)} paths, {patterns}: {seconds * 1e3:.1f} ms, "
              f"{seconds / len(paths) * 1e6:.2f} µs a path")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["progress", "patterns"])
    ap.add_argument("source")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--force-scanner", action="store_true", help="start the scanner at once")
    args = ap.parse_args()
    if args.force_scanner:
        scan.START_AFTER = 0.0
    if args.what == "progress":
        progress_cost(args.source, args.rounds)
    else:
        patterns_cost(args.source)


if __name__ == "__main__":
    main()
