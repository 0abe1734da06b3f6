"""What real-time watching costs while nothing changes (issue 14: near zero and flat).

    .venv/bin/python bench/agent_idle.py [PATH ...] [--seconds 60] [--scan] [--scan-interval S]

Sets up a Watcher over the paths (default /tmp/pharmabench/pristine-small, the benchmark data
set), reports how many watches and how long they took, then waits as the agent does (select
on the inotify descriptor, or sleep until the next scan) for `--seconds` and reports this
process's CPU time over that wait (user + system, getrusage), the wake-ups, and the resident
memory (VmRSS) before and after it. One JSON line on stdout.

The watcher alone for now; the integrator extends it to the whole `coffre agent` process and
adds the write-to-snapshot latency under a steady write load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import tempfile
import time

from coffre.agent.watcher import Watcher


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*",
                    default=[os.path.join(tempfile.gettempdir(), "pharmabench", "pristine-small")])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle time measured (default 60)")
    ap.add_argument("--scan", action="store_true", help="force the periodic scan instead of inotify")
    ap.add_argument("--scan-interval", type=float, default=300.0)
    ap.add_argument("--exclude", action="append", default=[])
    args = ap.parse_args()

    files = folders = 0
    for p in args.paths:
        for _dirpath, _dirnames, filenames in os.walk(p):
            folders += 1
            files += len(filenames)

    cpu0, wall0 = _cpu(), time.perf_counter()
    watcher = Watcher(args.paths, exclude=args.exclude, scan_interval=args.scan_interval,
                      use_inotify=not args.scan, now=time.time())
    setup_wall, setup_cpu = time.perf_counter() - wall0, _cpu() - cpu0

    rss_before = _rss_kib()
    cpu0, start = _cpu(), time.monotonic()
    end = start + args.seconds
    wakeups = changes = 0
    fd = watcher.fileno()
    while (left := end - time.monotonic()) > 0:
        next_scan = watcher.next_scan()
        timeout = left if next_scan is None else max(0.0, min(left, next_scan - time.time()))
        if fd is not None:
            select.select([fd], [], [], timeout)
        else:
            time.sleep(timeout)
        wakeups += 1
        changes += watcher.poll(time.time())
    idle_cpu = _cpu() - cpu0
    out = {
        "paths": args.paths,
        "folders": folders,
        "files": files,
        "mode": watcher.mode,
        "reason": watcher.reason,
        "watches": watcher.watches,
        "setup_seconds": round(setup_wall, 4),
        "setup_cpu_seconds": round(setup_cpu, 4),
        "idle_seconds": args.seconds,
        "idle_cpu_seconds": round(idle_cpu, 4),
        "idle_cpu_share": round(idle_cpu / args.seconds, 6) if args.seconds else None,
        "wakeups": wakeups,
        "changes_seen": changes,
        "rss_kib_before": rss_before,
        "rss_kib_after": _rss_kib(),
    }
    watcher.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
