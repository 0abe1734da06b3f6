"""Day 7 against day 365 side by side: the next day's job on two kept year runs, in turns.

    python bench/year.py --small --days 7 --keep-work --out /tmp/year-7        # ~1 minute
    python bench/year.py --small --days 364 --keep-work --out /tmp/year-364    # ~25 minutes
    python bench/year_pair.py --early /tmp/year-7 --late /tmp/year-364 --rounds 5

Why: year.py compares day 365 with day 7 of one run, and the two lie ~25 minutes apart. This
machine's speed moves by more than the issue's margin within such a span (a run of December 7
2026 slowed by a third from its 110th day on, for every command alike: bench/README.md). Here
each round lives the day after each kept run's last (days 8 and 365 above), one run then the
other, minutes apart, the order alternating from round to round; so both days of a round meet
the same machine, and the ratio of their medians measures the repositories and trees, not
the hour.

Every round starts from the kept state itself: before each day, the run's `work` folder is put
back as it was (rsync from a copy made at the start: the files the day changed and the ones it
made or removed), at its own path, so the backup has its parent snapshot and its files cache.
The day's job is year.py's (backup, forget, prune, check --read-data-subset), prune and check
both run every round: with runs of 7 and 364 days (multiples of the weekly prune), each day's
prune comes the day after a weekly one. Both kept runs are left as they were. Prints each
round's line, then a table (medians, late over early, the goal of at most 1.5 times); --json
writes the figures.

Tools kept in separate runs (a year of restic beside one of Coffre, each run with --tools
alone) are paired in the same rounds by giving --early and --late once per pair, in the same
order: every round then lives each pair's two days, so each tool's ratio meets the same hours.

    python bench/year_pair.py --early /tmp/coffre-7 --late /tmp/coffre-364 \
                              --early /tmp/restic-7 --late /tmp/restic-364
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import year  # beside this file

# The day's measures compared, and how each is said.
MEASURES = (("backup_s", "backup time", "s"), ("backup_cpu_s", "backup CPU", "s"),
            ("prune_s", "prune time", "s"), ("check_s", "check time", "s"),
            ("peak_rss_mib", "peak RSS", "MiB"))


@dataclass
class KeptRun:
    """A year.py --out made with --keep-work, and the copy its rounds start from."""

    out: Path
    summary: dict[str, Any]

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def saved(self) -> Path:
        return self.out / "work-before-pairing"

    @property
    def days(self) -> int:
        return int(self.summary["days"])

    def put_back(self) -> None:
        """The work folder as the run left it (what a day changed, made or removed)."""
        subprocess.run(["rsync", "-a", "--delete", f"{self.saved}/", f"{self.work}/"], check=True)

    def next_day(self, tools: list[str], check_percent: int) -> dict[str, year.Day]:
        """The day after the run's last, lived on its tree, then every tool's job on it."""
        pharmacy = year.Pharmacy.resumed(self.work / "pharmacy-server", self.summary, self.days)
        day = self.days + 1
        activity = pharmacy.live_one_day(year.mutation_seed(self.summary["data_seed"], day))
        moment = year.job_moment(date.fromisoformat(self.summary["start"]), day)
        every_day = year.Schedule(prune_every=1, check_every=1, check_percent=check_percent)
        return {name: year.run_daily_job(year.YEAR_TOOLS[name](name, self.work / name),
                                         pharmacy.tree, day, moment, every_day, activity)
                for name in tools}


def kept_run(out: Path, ap: argparse.ArgumentParser) -> KeptRun:
    summary = year.kept_summary(out)
    if summary is None:
        ap.error(f"{out} holds no kept year run: run year.py with --keep-work")
    run = KeptRun(out, summary)
    if run.saved.exists():
        ap.error(f"{run.saved} exists: an earlier pairing was interrupted. If it said the copy was "
                 f"unfinished, remove it; otherwise put it back as {run.work} "
                 f"(rsync -a --delete {run.saved}/ {run.work}/), then remove it")
    return run


@dataclass
class Pair:
    """Two ages of one year (the same data set, seed and growth) and the tools both ran."""

    early: KeptRun
    late: KeptRun

    @property
    def tools(self) -> list[str]:
        return sorted(set(self.early.summary["last_day"]) & set(self.late.summary["last_day"]))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Pair]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--early", type=Path, action="append", required=True,
                    help="a kept run of a few days (day 7: --days 7); once per pair")
    ap.add_argument("--late", type=Path, action="append", required=True,
                    help="a kept run of a year (--days 364); once per pair, in --early's order")
    ap.add_argument("--rounds", type=int, default=5, help="days lived on each run, in turns (5)")
    ap.add_argument("--check-subset", type=int, default=5, help="percent of the data the check reads (5)")
    ap.add_argument("--json", type=Path, help="write the rounds and the table there")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds is at least 1")
    if len(args.early) != len(args.late):
        ap.error(f"--early is given {len(args.early)} times and --late {len(args.late)}: "
                 "one of each per pair")
    outs = [out.resolve() for out in args.early + args.late]
    if len(set(outs)) < len(outs):
        ap.error("a run is given twice (--early and --late are the same run, or one run is in two pairs)")
    if shutil.which("rsync") is None:
        ap.error("rsync is needed to put each run back between rounds (apt-get install rsync)")
    pairs = [Pair(kept_run(early, ap), kept_run(late, ap))
             for early, late in zip(args.early, args.late, strict=True)]
    first = pairs[0].early
    seen: set[str] = set()
    for pair in pairs:
        for run in (pair.early, pair.late):
            for key in ("data_set", "data_seed", "growth"):
                if run.summary.get(key) != first.summary.get(key):
                    ap.error(f"{first.out} and {run.out} differ in {key} ({first.summary.get(key)} and "
                             f"{run.summary.get(key)}): they must be the same year at two ages")
        if pair.early.days >= pair.late.days:
            ap.error(f"--early {pair.early.out} ({pair.early.days} days) must be younger than "
                     f"--late {pair.late.out} ({pair.late.days} days)")
        if not pair.tools:
            ap.error(f"{pair.early.out} and {pair.late.out} have no tool in common")
        if seen & set(pair.tools):
            ap.error(f"{', '.join(sorted(seen & set(pair.tools)))} is in two pairs: give each tool one pair")
        seen |= set(pair.tools)
    return args, pairs


def median_of(rows: list[year.Day], field: str) -> float | None:
    values = [v for v in (getattr(r, field) for r in rows) if v is not None]
    return statistics.median(values) if values else None


def table(rows: dict[str, dict[str, list[year.Day]]],
          pairs: list[Pair]) -> tuple[str, list[dict[str, object]]]:
    lines = [f"{tool}: day {p.early.days + 1} ({p.early.out}) against day {p.late.days + 1} ({p.late.out})"
             for p in pairs for tool in p.tools]
    lines += [f"{'measure':<14}{'tool':<8}{'early':>12}{'late':>12}{'late/early':>12}"
              f"  goal ≤ {year.TARGET_RATIO}", "-" * 70]
    figures: list[dict[str, object]] = []
    for tool, by_age in rows.items():
        for field, label, unit in MEASURES:
            a, b = median_of(by_age["early"], field), median_of(by_age["late"], field)
            if a is None or b is None:
                continue
            ratio = b / a if a else float("inf")
            verdict = "" if field == "backup_cpu_s" else ("met" if ratio <= year.TARGET_RATIO else "MISSED")
            lines.append(f"{label:<14}{tool:<8}{f'{a:.2f} {unit}':>12}{f'{b:.2f} {unit}':>12}"
                         f"{ratio:>12.2f}  {verdict}")
            figures.append({"tool": tool, "measure": field, "early": a, "late": b, "ratio": ratio})
    return "\n".join(lines), figures


def main(argv: list[str] | None = None) -> int:
    args, pairs = parse_args(argv)
    runs = [run for pair in pairs for run in (pair.early, pair.late)]
    rows: dict[str, dict[str, list[year.Day]]] = {t: {"early": [], "late": []}
                                                   for p in pairs for t in p.tools}
    rounds: list[dict[str, object]] = []
    copied: list[KeptRun] = []  # runs whose copy is whole: only those are put back from it
    try:
        for run in runs:
            subprocess.run(["cp", "-a", str(run.work), str(run.saved)], check=True)
            copied.append(run)
        turns = [(pair, age, run) for pair in pairs
                 for age, run in (("early", pair.early), ("late", pair.late))]
        for n in range(args.rounds):
            for pair, age, run in (turns if n % 2 == 0 else turns[::-1]):
                run.put_back()
                days = run.next_day(pair.tools, args.check_subset)
                for tool, day in days.items():
                    rows[tool][age].append(day)
                    rounds.append({"round": n + 1, "age": age, "tool": tool, **asdict(day)})
                    print(f"round {n + 1}, day {day.day}, {tool}: backup {day.backup_s:.2f} s "
                          f"({day.backup_cpu_s:.2f} CPU-s), prune {day.prune_s:.2f} s, "
                          f"check {day.check_s:.2f} s, {day.peak_rss_mib:.0f} MiB", flush=True)
    finally:
        # A copy is removed only once the run is put back from it (a failed rsync keeps it);
        # a copy left half made (a full disk) is never put back over the run: it is reported.
        for run in copied:
            run.put_back()
            shutil.rmtree(run.saved)
        for run in runs:
            if run not in copied and run.saved.exists():
                print(f"{run.saved}: an unfinished copy ({run.work} is unchanged); remove it",
                      file=sys.stderr)
    text, figures = table(rows, pairs)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"pairs": [{"early": str(p.early.out), "late": str(p.late.out),
                                                    "tools": p.tools} for p in pairs],
                                         "rounds": rounds, "table": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
