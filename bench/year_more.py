"""More days of a kept year run (`year.py --keep-work`), on a fresh copy of its tree and
repositories: the same days lived with two versions of the code, one after the other.

    PYTHONPATH=OLD/src python bench/year_more.py --from OUT --days 8 --to /tmp/more-old
    PYTHONPATH=NEW/src python bench/year_more.py --from OUT --days 8 --to /tmp/more-new

Why: on this machine, runs hours apart differ by more than most changes (bench/README.md, "A
year of use"); the same state continued with each version in turn, minutes apart, does not.
The days follow the year's own (the next seeds, the same schedule and tools). Prints a line a
day and tool: the seconds and peak RSS of its backup, and of its prune and check on the days
they run.

The first day is not like the year's: the copy lies at another path, so its backup has no
parent snapshot and no files cache entry, reads every file and stores the day's changed
chunks whole (no previous version to make deltas against). The next days make their deltas
against those fresh bases. Compare versions on the days after the first (bench/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import year  # beside this file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", type=Path, required=True,
                    help="the --out of a year.py run made with --keep-work")
    ap.add_argument("--days", type=int, default=8, help="days to live after the run's last (8)")
    ap.add_argument("--to", type=Path, required=True, help="where the copy is made (replaced)")
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days is at least 1")
    args.summary = year.kept_summary(args.source)
    if args.summary is None:
        ap.error(f"{args.source} holds no kept year run: run year.py with --keep-work")
    if args.to.resolve() == args.source.resolve() or args.source.resolve() in args.to.resolve().parents:
        ap.error("--to must lie outside --from: the kept run is copied, never changed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = args.summary
    shutil.rmtree(args.to, ignore_errors=True)
    subprocess.run(["cp", "-a", str(args.source / "work"), str(args.to)], check=True)
    pharmacy = year.Pharmacy.resumed(args.to / "pharmacy-server", summary, summary["days"])
    schedule = year.Schedule(**summary["schedule"])
    tools = [year.YEAR_TOOLS[name](name, args.to / name) for name in sorted(summary["last_day"])]
    start = date.fromisoformat(summary["start"])
    for day in range(summary["days"] + 1, summary["days"] + 1 + args.days):
        activity = pharmacy.live_one_day(year.mutation_seed(summary["data_seed"], day))
        for tool in tools:
            moment = year.job_moment(start, day)
            done = year.run_daily_job(tool, pharmacy.tree, day, moment, schedule, activity)
            steps = [f"backup {done.backup_s:.2f} s ({done.backup_rss_mib:.0f} MiB)"]
            steps += ([f"prune {done.prune_s:.2f} s ({done.prune_rss_mib:.0f} MiB)"]
                      if done.prune_s is not None and done.prune_rss_mib is not None else [])
            steps += ([f"check {done.check_s:.2f} s ({done.check_rss_mib:.0f} MiB)"]
                      if done.check_s is not None and done.check_rss_mib is not None else [])
            print(f"day {day} {tool.name}: {', '.join(steps)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
