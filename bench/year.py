"""A year of use: a pharmacy's daily backup job, day after day, with coffre and restic side by side.

    python bench/year.py                                    # ~2 GiB data set, 365 days (very long)
    python bench/year.py --small                            # ~200 MiB, 365 days
    python bench/year.py --size-mib 20 --days 6 --prune-every 2   # a short run (minutes)

Each simulated day, one day of pharmacy activity (../shared/bench/mutate_dataset.py, with a
different seed each day) is applied to one working copy of the data set; then every tool runs
the daily job on that same tree, in its own encrypted local repository:
  1. backup, dated on the simulated day (21:00 local time);
  2. forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12;
  3. prune, every --prune-every days (7: weekly);
  4. check reading --check-subset % of the data (5 %), every --check-every days (1: daily).
Measured per day and tool: wall time, CPU time and peak RSS (wait4) of each command, the bytes
the backup added to the repository (its size after minus before), then the repository's size
on disk (sum of its files' sizes), the local cache's size, the number of index files and of
snapshots, and the size of the tree backed up.

Written in --out: one CSV per tool (a row a day, written as the run goes), summary.json, and
one PNG per measure with every tool's curve. The table printed at the end compares the
reference day (7) with the last day (--window N: the medians of N measured days at each end):
the goal is at most 1.5 times for the times and RSS.

mutate_dataset.py makes the tree grow faster every day (its new scans are 2 % of the scans
already there, its new rows a share of the rows already there): the tree-size column and plot
show it, and a long run outgrows the disk (README.md, "A year of use").
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import SHARED_BENCH, Measure, initialise, live_one_day, pristine_tree, timed, tree_sizes
from tools import Coffre, Restic, Tool, ensure_installed

RETENTION = ("--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12")
JOB_TIME = clock_time(21, 0)  # when the daily job starts, in simulated local time
TARGET_RATIO = 1.5  # the goal: the last day costs at most this much more than day 7
# Coffre's test-only switch that moves its clock (src/coffre/core/clock.py).
COFFRE_CLOCK_SHIFT_ENV = "COFFRE_TEST_CLOCK_SHIFT_FILE"


class DailyTool(Tool):
    """What a year of daily jobs needs from a tool beyond tools.Tool."""

    @abstractmethod
    def dated_env(self, moment: datetime) -> dict[str, str]:
        """The environment that makes the day's commands take `moment` as now, if needed."""

    @abstractmethod
    def dated_backup_argv(self, source: Path, day: int, moment: datetime) -> list[str]:
        """A backup whose snapshot is dated `moment`."""

    @abstractmethod
    def forget_argv(self) -> list[str]: ...

    @abstractmethod
    def prune_argv(self) -> list[str]: ...

    @abstractmethod
    def check_subset_argv(self, percent: int) -> list[str]: ...

    @property
    def index_dir(self) -> Path:
        """The repository's folder of index files (the same name in coffre and restic)."""
        return self.repo / "index"

    @property
    def snapshots_dir(self) -> Path:
        return self.repo / "snapshots"


class YearCoffre(Coffre, DailyTool):
    """Coffre has no option to date a snapshot (as restic's `backup --time`): every command of
    the day runs with its test-only clock shift, so the snapshot is dated on the simulated day
    and forget, prune and check see the same "now" (the newest snapshot is never in their
    future). The shift moves the backup's start, not the files' times: the simulated days must
    lie ahead of the real clock, or the files cache would trust no file (backup.RACY_NS)."""

    def dated_env(self, moment: datetime) -> dict[str, str]:
        shift = self.home / "clock-shift"
        temporary = shift.with_suffix(".tmp")
        temporary.write_text(f"{moment.timestamp() - time.time():.3f}\n")
        os.replace(temporary, shift)  # atomically, as the clock reads it at every call
        return {COFFRE_CLOCK_SHIFT_ENV: str(shift)}

    def dated_backup_argv(self, source: Path, day: int, moment: datetime) -> list[str]:
        return self.backup_argv(source, day)  # dated by dated_env's clock shift

    def forget_argv(self) -> list[str]:
        return self._cmd("forget", *RETENTION)

    def prune_argv(self) -> list[str]:
        return self._cmd("prune")

    def check_subset_argv(self, percent: int) -> list[str]:
        return self._cmd("check", "--read-data-subset", f"{percent}%")


class YearRestic(Restic, DailyTool):
    """restic dates the snapshot itself (`backup --time`, local time); its forget counts days,
    weeks and months over the snapshots' dates, not from the clock."""

    def dated_env(self, moment: datetime) -> dict[str, str]:
        return {}

    def dated_backup_argv(self, source: Path, day: int, moment: datetime) -> list[str]:
        return [*self.backup_argv(source, day), "--time", moment.strftime("%Y-%m-%d %H:%M:%S")]

    def forget_argv(self) -> list[str]:
        return ["restic", "forget", "-q", *RETENTION]

    def prune_argv(self) -> list[str]:
        return ["restic", "prune", "-q"]

    def check_subset_argv(self, percent: int) -> list[str]:
        return ["restic", "check", "-q", "--read-data-subset", f"{percent}%"]


YEAR_TOOLS: dict[str, type[DailyTool]] = {"coffre": YearCoffre, "restic": YearRestic}


@dataclass(frozen=True)
class Schedule:
    """Which days prune and check run, and how much data the check reads."""

    prune_every: int
    check_every: int
    check_percent: int

    def prunes(self, day: int) -> bool:
        return day % self.prune_every == 0

    def checks(self, day: int) -> bool:
        return day % self.check_every == 0


@dataclass
class Day:
    """One tool's day: a CSV row. Prune and check figures are None on days they do not run."""

    day: int
    date: str
    tree_bytes: int
    backup_s: float
    backup_cpu_s: float
    backup_rss_mib: float
    bytes_added: int
    forget_s: float
    forget_rss_mib: float
    prune_s: float | None
    prune_rss_mib: float | None
    check_s: float | None
    check_rss_mib: float | None
    peak_rss_mib: float
    repo_bytes: int
    cache_bytes: int
    index_files: int
    snapshots: int


COLUMNS = [f.name for f in dataclasses.fields(Day)]


@dataclass(frozen=True)
class Quantity:
    """A measure of the report: its Day field, how to say it, and whether the goal applies."""

    field: str
    label: str
    unit: str
    scale: float = 1.0
    targeted: bool = False

    def value(self, row: Day) -> float | None:
        raw = getattr(row, self.field)
        return None if raw is None else raw / self.scale

    def show(self, value: float) -> str:
        return f"{value:.0f} {self.unit}".strip() if self.unit in ("", "MiB") else f"{value:.2f} {self.unit}"


QUANTITIES = [
    Quantity("backup_s", "backup time", "s", targeted=True),
    Quantity("prune_s", "prune time", "s", targeted=True),
    Quantity("check_s", "check time", "s", targeted=True),
    Quantity("peak_rss_mib", "peak RSS of the day", "MiB", targeted=True),
    Quantity("backup_rss_mib", "backup RSS", "MiB", targeted=True),
    Quantity("prune_rss_mib", "prune RSS", "MiB", targeted=True),
    Quantity("check_rss_mib", "check RSS", "MiB", targeted=True),
    Quantity("bytes_added", "bytes added", "MB", scale=1e6),
    Quantity("repo_bytes", "repository size", "MB", scale=1e6),
    Quantity("cache_bytes", "local cache size", "MB", scale=1e6),
    Quantity("index_files", "index files", ""),
    Quantity("snapshots", "snapshots kept", ""),
    Quantity("tree_bytes", "tree backed up", "MB", scale=1e6),
]
PLOTTED = ("backup_s", "bytes_added", "prune_s", "check_s", "repo_bytes", "peak_rss_mib", "cache_bytes",
           "index_files", "tree_bytes")


# -- the simulated calendar ------------------------------------------------------------------------

def job_moment(start: date, day: int) -> datetime:
    """When day `day` (1-based) of the year runs its job, in naive local time."""
    return datetime.combine(start + timedelta(days=day - 1), JOB_TIME)


def default_start() -> date:
    """The first of January after today: a calendar year, ahead of the real clock."""
    return date(date.today().year + 1, 1, 1)


def mutation_seed(data_seed: int | None, day: int) -> int:
    """A different mutate_dataset.py seed each day, reproducible for a given data set seed."""
    return (data_seed or 0) * 1000 + day


# -- one day ---------------------------------------------------------------------------------------

def folder_bytes(path: Path) -> int:
    """The sum of the sizes of the files under `path` (0 if there is none)."""
    return sum(tree_sizes(path).values())


def file_count(path: Path) -> int:
    return len(tree_sizes(path))


def run_daily_job(tool: DailyTool, tree: Path, day: int, moment: datetime, schedule: Schedule) -> Day:
    """The agent's daily job on `tree` with `tool`, as of `moment`: every command timed."""
    env = {**tool.env(), **tool.dated_env(moment)}
    before = folder_bytes(tool.repo)
    backup = timed(tool.dated_backup_argv(tree, day, moment), env, tool.home)
    added = folder_bytes(tool.repo) - before
    forget = timed(tool.forget_argv(), env, tool.home)
    prune = timed(tool.prune_argv(), env, tool.home) if schedule.prunes(day) else None
    check = (timed(tool.check_subset_argv(schedule.check_percent), env, tool.home)
             if schedule.checks(day) else None)
    ran = [m for m in (backup, forget, prune, check) if m is not None]
    return Day(
        day=day, date=moment.date().isoformat(), tree_bytes=folder_bytes(tree),
        backup_s=backup.wall, backup_cpu_s=backup.cpu, backup_rss_mib=backup.rss_mib, bytes_added=added,
        forget_s=forget.wall, forget_rss_mib=forget.rss_mib,
        prune_s=wall_of(prune), prune_rss_mib=rss_of(prune),
        check_s=wall_of(check), check_rss_mib=rss_of(check),
        peak_rss_mib=max(m.rss_mib for m in ran),
        repo_bytes=folder_bytes(tool.repo), cache_bytes=folder_bytes(tool.cache_dir),
        index_files=file_count(tool.index_dir), snapshots=file_count(tool.snapshots_dir),
    )


def wall_of(measure: Measure | None) -> float | None:
    return None if measure is None else measure.wall


def rss_of(measure: Measure | None) -> float | None:
    return None if measure is None else measure.rss_mib


def day_line(day: int, moment: datetime, rows: dict[str, Day]) -> str:
    """The progress line printed after each day."""
    parts = []
    for name, row in rows.items():
        extra = "".join(f", {label} {value:.2f}s" for label, value in (("prune", row.prune_s),
                                                                         ("check", row.check_s))
                        if value is not None)
        parts.append(f"{name} backup {row.backup_s:.2f}s +{row.bytes_added / 1e6:.1f} MB{extra}, "
                     f"repo {row.repo_bytes / 1e6:.1f} MB, {row.peak_rss_mib:.0f} MiB")
    return f"day {day} ({moment:%Y-%m-%d}): " + " | ".join(parts)


# -- outputs ---------------------------------------------------------------------------------------

def start_csv(path: Path) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerow(COLUMNS)


def append_csv(path: Path, row: Day) -> None:
    """One more day, written at once so an interrupted year keeps what it measured."""
    values = dataclasses.asdict(row)
    with path.open("a", newline="") as f:
        csv.writer(f).writerow(csv_cell(values[c]) for c in COLUMNS)


def csv_cell(value: object) -> object:
    """Empty for what did not run that day; times and sizes in MiB to the 1/10000."""
    if value is None:
        return ""
    return round(value, 4) if isinstance(value, float) else value


def reference_day(days: int, wanted: int) -> int:
    """The day the last one is compared with: `wanted` (7), or day 2 in a run too short for it
    (day 1 is the first, full backup: no reference for the daily ones)."""
    return wanted if days > wanted else min(2, days)


def early_and_late(rows: list[Day], quantity: Quantity, reference: int,
                   window: int) -> tuple[list[Day], list[Day]] | None:
    """The first `window` days from `reference` on, and the last `window` days, on which
    `quantity` was measured (prune and check do not run every day); the windows are shortened
    so they do not overlap. None if it was never measured from `reference` on."""
    measured = [r for r in rows if r.day >= reference and quantity.value(r) is not None]
    if not measured:
        return None
    width = max(1, min(window, len(measured) // 2))
    return measured[:width], measured[-width:]


def day_span(days: list[int]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]}-{days[-1]}"


@dataclass
class Comparison:
    """One row of the final table: the median over each window of days."""

    measure: str
    tool: str
    early_days: list[int]
    early: float
    late_days: list[int]
    late: float
    ratio: float | None
    targeted: bool

    @property
    def within_target(self) -> bool | None:
        if not self.targeted or self.ratio is None:
            return None
        return self.ratio <= TARGET_RATIO


def compare(rows: dict[str, list[Day]], reference: int, window: int) -> list[Comparison]:
    out = []
    for quantity in QUANTITIES:
        for name, tool_rows in rows.items():
            windows = early_and_late(tool_rows, quantity, reference, window)
            if windows is None:
                continue
            early, late = (statistics.median(quantity.value(r) or 0.0 for r in w) for w in windows)
            out.append(Comparison(quantity.label, name, [r.day for r in windows[0]], early,
                                  [r.day for r in windows[1]], late, late / early if early > 0 else None,
                                  quantity.targeted))
    return out


def comparison_table(comparisons: list[Comparison]) -> str:
    units = {q.label: q for q in QUANTITIES}
    header = (f"{'measure':<22}{'tool':<8}{'day':>8}{'value':>12}{'day':>9}{'value':>12}{'last/ref':>10}"
              f"  goal ≤ {TARGET_RATIO}")
    lines = [header, "-" * len(header)]
    for c in comparisons:
        q = units[c.measure]
        ratio = "—" if c.ratio is None else f"{c.ratio:.2f}"
        verdict = {None: "", True: "met", False: "MISSED"}[c.within_target]
        lines.append(f"{c.measure:<22}{c.tool:<8}{day_span(c.early_days):>8}{q.show(c.early):>12}"
                     f"{day_span(c.late_days):>9}{q.show(c.late):>12}{ratio:>10}  {verdict}")
    return "\n".join(lines)


def last_repository_bytes(rows: dict[str, list[Day]]) -> dict[str, int]:
    """Each tool's repository size on the last day."""
    return {name: tool_rows[-1].repo_bytes for name, tool_rows in rows.items() if tool_rows}


def coffre_over_restic(sizes: dict[str, int]) -> float | None:
    """Coffre's repository over restic's, when both ran."""
    if "coffre" not in sizes or not sizes.get("restic"):
        return None
    return sizes["coffre"] / sizes["restic"]


def plot(rows: dict[str, list[Day]], out: Path) -> list[Path]:
    """One PNG per plotted measure, with one curve per tool against the simulated day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    for quantity in (q for q in QUANTITIES if q.field in PLOTTED):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for name, tool_rows in rows.items():
            points = [(r.day, v) for r in tool_rows if (v := quantity.value(r)) is not None]
            if points:
                days, values = zip(*points, strict=True)
                ax.plot(days, values, marker="." if len(points) < 60 else "", label=name)
        ax.set_title(quantity.label)
        ax.set_xlabel("simulated day")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(quantity.unit or "count")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / f"{quantity.field}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def finite(value: float | None) -> float | None:
    """JSON has no NaN nor infinity."""
    return value if value is None or math.isfinite(value) else None


# -- the year --------------------------------------------------------------------------------------

@dataclass
class Year:
    """The run's settings."""

    days: int
    start: date
    schedule: Schedule
    data_seed: int | None
    reference: int
    window: int


def prepare(tools: list[DailyTool], pristine: Path, work: Path, out: Path) -> Path:
    """A fresh working copy of the data set, fresh repositories, empty CSVs; the tree's path."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(pristine.resolve() / "pharmacy-server"), str(work)], check=True)
    for tool in tools:
        initialise(tool)
        start_csv(out / f"{tool.name}.csv")
    return work / "pharmacy-server"


def live_the_year(tools: list[DailyTool], tree: Path, year: Year, out: Path,
                  say: Callable[[str], None]) -> dict[str, list[Day]]:
    """Every day: one day of activity on the tree, then each tool's daily job on it."""
    rows: dict[str, list[Day]] = {tool.name: [] for tool in tools}
    for day in range(1, year.days + 1):
        live_one_day(tree, mutation_seed(year.data_seed, day))
        moment = job_moment(year.start, day)
        today = {}
        for tool in tools:
            today[tool.name] = run_daily_job(tool, tree, day, moment, year.schedule)
            rows[tool.name].append(today[tool.name])
            append_csv(out / f"{tool.name}.csv", today[tool.name])
        say(day_line(day, moment, today))
    return rows


def summary(rows: dict[str, list[Day]], year: Year, comparisons: list[Comparison], pristine: Path,
            out: Path, plots: list[Path], elapsed: float) -> dict[str, object]:
    return {
        "days": year.days, "start": year.start.isoformat(), "job_time": JOB_TIME.isoformat(),
        "data_set": str(pristine), "data_set_bytes": folder_bytes(pristine),
        "data_seed": year.data_seed, "schedule": dataclasses.asdict(year.schedule),
        "retention": " ".join(RETENTION), "reference_day": year.reference, "window_days": year.window,
        "goal_ratio": TARGET_RATIO,
        "dating": {"coffre": f"test-only clock shift ({COFFRE_CLOCK_SHIFT_ENV}): coffre backup has no "
                             "option to date a snapshot",
                   "restic": "backup --time"},
        "comparisons": [{**dataclasses.asdict(c), "ratio": finite(c.ratio), "within_target": c.within_target}
                        for c in comparisons],
        "repository_bytes_last_day": last_repository_bytes(rows),
        "repository_coffre_over_restic": coffre_over_restic(last_repository_bytes(rows)),
        "last_day": {name: dataclasses.asdict(days[-1]) for name, days in rows.items() if days},
        "csv": {name: str(out / f"{name}.csv") for name in rows},
        "plots": [str(p) for p in plots],
        "elapsed_s": elapsed,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="~200 MiB data set")
    size.add_argument("--size-mib", type=int, help="data set size (default ~2048)")
    ap.add_argument("--small-files", type=int, help="number of small config/log files")
    ap.add_argument("--seed", type=int, help="data set seed (make_dataset.py's default otherwise); the "
                                             "days' seeds derive from it")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--start", type=date.fromisoformat, default=default_start(),
                    help="the first simulated day, YYYY-MM-DD (default: next 1 January); it must be "
                         "ahead of the real clock (see YearCoffre)")
    ap.add_argument("--tools", default="coffre,restic", help=f"among {', '.join(YEAR_TOOLS)}")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108
    ap.add_argument("--out", type=Path, default=tmp / "pharmabench" / "year",
                    help="CSVs, summary.json, plots; the working tree and repositories under work/")
    ap.add_argument("--data", type=Path, default=tmp / "pharmabench",
                    help="where the generated data set is kept between runs (shared with run.py)")
    ap.add_argument("--prune-every", type=int, default=7, help="prune every N days (7)")
    ap.add_argument("--check-every", type=int, default=1, help="check every N days (1)")
    ap.add_argument("--check-subset", type=int, default=5, help="share of the data the check reads, in %%")
    ap.add_argument("--reference-day", type=int, default=7, help="the day the last is compared with (7)")
    ap.add_argument("--window", type=int, default=1,
                    help="compare the medians of N measured days from the reference day on and of the "
                         "last N (1: the reference day against the last; more smooths a busy machine)")
    ap.add_argument("--keep-work", action="store_true", help="keep the working tree and repositories")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in YEAR_TOOLS]
    if unknown:
        ap.error(f"unknown tool(s): {', '.join(unknown)}")
    counts = (args.days, args.prune_every, args.check_every, args.window, args.reference_day)
    if min(counts) < 1 or not 0 < args.check_subset <= 100:
        ap.error("--days, --prune-every, --check-every, --window and --reference-day are at least 1; "
                 "--check-subset is in 1..100")
    if job_moment(args.start, 1).timestamp() < time.time() + 3600:
        ap.error("--start must lie ahead of the real clock (by more than an hour): coffre's snapshots are "
                 "dated by moving its clock, and its files cache trusts only files older than the backup")
    if not (SHARED_BENCH / "make_dataset.py").is_file():
        sys.exit(f"the data set generator is not in {SHARED_BENCH}; set COFFRE_SHARED_BENCH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_installed(args.tools)
    started = time.monotonic()
    pristine = pristine_tree(args.data, args.small, args.size_mib, args.small_files, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    tools = [YEAR_TOOLS[name](name, work / name) for name in args.tools]
    year = Year(args.days, args.start, Schedule(args.prune_every, args.check_every, args.check_subset),
                args.seed, reference_day(args.days, args.reference_day), args.window)
    print(f"data set: {folder_bytes(pristine) / 1e6:.0f} MB in {pristine}; {year.days} days from "
          f"{year.start}; prune every {args.prune_every} days, check {args.check_subset} % every "
          f"{args.check_every} days; tools: {', '.join(args.tools)}", flush=True)
    tree = prepare(tools, pristine, work, args.out)
    rows = live_the_year(tools, tree, year, args.out, lambda line: print(line, flush=True))
    comparisons = compare(rows, year.reference, year.window)
    plots = plot(rows, args.out)
    elapsed = time.monotonic() - started
    (args.out / "summary.json").write_text(json.dumps(
        summary(rows, year, comparisons, pristine, args.out, plots, elapsed), indent=1))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(comparison_table(comparisons))
    sizes = last_repository_bytes(rows)
    ratio = coffre_over_restic(sizes)
    if ratio is not None:
        print(f"\nrepository on day {year.days}: coffre {sizes['coffre'] / 1e6:.1f} MB, restic "
              f"{sizes['restic'] / 1e6:.1f} MB, coffre/restic {ratio:.2f}")
    print(f"\n{year.days} days in {elapsed:.0f} s; results in {args.out}:")
    for path in [*(args.out / f"{name}.csv" for name in args.tools), args.out / "summary.json", *plots]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
