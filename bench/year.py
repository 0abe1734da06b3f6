"""A year of use: a pharmacy's daily backup job, day after day, with coffre and restic side by side.

    python bench/year.py                                    # ~2 GiB data set, 365 days (very long)
    python bench/year.py --small                            # ~200 MiB, 365 days
    python bench/year.py --days 60 --window 7               # ~2 GiB, 60 days, read on day 365
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
the goal is at most 1.5 times for the times and RSS. A run shorter than a year is also read on
day 365, along each measure's least-squares line from the reference day on (`fit_at`).

How the tree grows. mutate_dataset.py (shared: used as it is, never changed) compounds: a day's
new scans are 2 % of the scans already there (at least 5), the database rows it changes 1 % of
the rows already there (55 % of them inserted), the rows it appends to each table of the pg dump
0.5 % of that table's (at least 1). Over a year the tree would grow hundreds of times, fill the disk,
and the last day against day 7 would measure the pharmacy's growth, not the tools'. A real
pharmacy scans and sells about as much every day, so every day is held to the first (Pharmacy):
  * scans: the day's new scan files (those not in the tree before it) beyond day 1's count are
    deleted, the highest numbers first;
  * database: --db-fraction = 0.01 x rows on day 1 / rows today (products, patients,
    prescriptions and sales, the rows the mutator's budget counts; read-only sqlite3), so each
    day inserts and updates as many rows as day 1;
  * pg dump: the rows appended to each table's COPY block beyond day 1's count are dropped (one
    more pass over the file, which the mutator rewrites anyway); its in-place modifications
    stay 0.5 % of the rows, so they grow with the dump, linearly.
The rest does not compound and is left as it is: a fixed number of new files a day (3 daily
logs, a CSV export, 2 XML orders) and of appends and edits (the 3 "current" logs grow ~300 KB
each a day, 5 % of the fixed set of var/log files, 8 documents, 2 CSV exports, 2 configuration
files). The current logs are rotated every 7th day as Debian's logrotate does by default
(weekly, rotate 4, create, no compression: NAME -> NAME.1 ... NAME.4, the oldest deleted): a
real server never lets a log grow all year, and a log that did would be read whole every day by
every tool (~110 MB each on day 365; --no-log-rotation measures that). Linear is not flat: the
files that change every day still grow, so a tool that reads them whole reads more on day 365
than on day 7 (the SQLite database ~3 times its first size, the pg dump ~2.8 times). The mutator
still writes its compounding count of scans before the extras are deleted: on the default set,
~170 a day by day 365 (~21 kept).

--steady measures history alone: the tree keeps its size, so every day's job has the same work
and whatever grows comes from the repository's history (its snapshots, index and packs). Each
day, after the linear rules, as much of the oldest data as the day added is removed, as a
pharmacy archiving and purging its oldest records would: the scans of lowest number (day 1's
count of them), the database rows of lowest id (as many as the day inserted into each table;
SQLite reuses their pages, so the file stops growing), the first rows of each COPY block of the
pg dump (as many as the day appended), and the day's new files other than scans (daily logs,
sales export, orders) 28 days later; and each var/log file appended to loses as many bytes from
its start, up to a line's end (a size cap, as journald keeps). What still grows: the edited
documents, a paragraph each.

Each day's tree size is printed, written in the CSVs (tree_bytes, with scan_files, scans_added
and db_rows) and plotted; the end of the run gives the mean growth a day and where it leads on
day 365. Estimates from short runs, not from a year: --small grew 4.7 MB a day over 3 days (5
scans a day, the mutator's minimum; ~1 MB of logs, ~0.65 MB of documents, ~0.5 MB of
database, ~0.35 MB of var/log, ~0.1 MB of pg dump), ~6 MB with scans of their mean size
(0.66 MB): ~1.9 to 2.4 GB on day 365. The default set (not run): ~23 MB a day (~21 scans, 2 %
of its ~1,080; the database and dump growth of --small times 10), ~10 GB on day 365. A 20 MiB
set: 6.8 MB a day over 6 days, ~2.1 to 2.5 GB. The repositories come on top. --compound lets
the mutator compound as before, for comparison (then ~110 GiB from --small by day 365, ~900 GiB
from the default set: beyond the disk).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    SHARED_BENCH,
    Measure,
    add_data_set_options,
    initialise,
    live_one_day,
    pristine_tree,
    timed,
    tree_sizes,
)
from tools import Coffre, Restic, Tool, ensure_installed

RETENTION = ("--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12")
JOB_TIME = clock_time(21, 0)  # when the daily job starts, in simulated local time
YEAR_DAYS = 365
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
    scan_files: int
    scans_added: int
    db_rows: int
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
    packs: int | None = None  # pack files in data/ (absent from the CSVs of older runs)
    warnings: int | None = None  # warning lines the day's commands printed (idem)


COLUMNS = [f.name for f in dataclasses.fields(Day)]


@dataclass(frozen=True)
class Quantity:
    """A measure of the report: its Day field, how to say it, and whether the goal applies."""

    field: str
    label: str
    unit: str
    scale: float = 1.0
    targeted: bool = False
    per: str | None = None  # a Day field the value is divided by (in GB): a cost per GB

    def value(self, row: Day) -> float | None:
        raw = getattr(row, self.field)
        if raw is None:
            return None
        if self.per is not None:
            size = getattr(row, self.per) / 1e9
            return float(raw) / size if size > 0 else None
        return float(raw) / self.scale

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
    Quantity("packs", "pack files", ""),
    Quantity("snapshots", "snapshots kept", ""),
    Quantity("tree_bytes", "tree backed up", "MB", scale=1e6),
    # The same times per GB of what each command goes through: the tree grows ~5 MB a day (the
    # scans and the database accumulate), and `check --read-data-subset 5%` reads 5 % of a
    # repository that grows with it, so the raw times measure the workload's growth as well.
    Quantity("backup_s", "backup per GB of tree", "s/GB", per="tree_bytes"),
    Quantity("prune_s", "prune per GB of repo", "s/GB", per="repo_bytes"),
    Quantity("check_s", "check per GB of repo", "s/GB", per="repo_bytes"),
]
PLOTTED = ("backup_s", "bytes_added", "prune_s", "check_s", "repo_bytes", "peak_rss_mib", "cache_bytes",
           "index_files", "packs", "tree_bytes")  # the per-GB times too, as FIELD_per_gb.png


# -- the simulated calendar ------------------------------------------------------------------------

def kept_summary(out: Path) -> dict[str, Any] | None:
    """The summary.json of a run kept in `out` (--keep-work: its `work` folder left there), or
    None if `out` holds none; read by year_more.py and year_pair.py."""
    if not (out / "work").is_dir() or not (out / "summary.json").is_file():
        return None
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def job_moment(start: date, day: int) -> datetime:
    """When day `day` (1-based) of the year runs its job, in naive local time."""
    return datetime.combine(start + timedelta(days=day - 1), JOB_TIME)


def default_start() -> date:
    """The first of January after today: a calendar year, ahead of the real clock."""
    return date(date.today().year + 1, 1, 1)


def mutation_seed(data_seed: int | None, day: int) -> int:
    """A different mutate_dataset.py seed each day, reproducible for a given data set seed."""
    return (data_seed or 0) * 1000 + day


# -- how the pharmacy grows ------------------------------------------------------------------------

# What mutate_dataset.py changes, under the tree (the mutator is read, never modified: it is shared).
SCANS_DIR = Path("scans/ordonnances")
DATABASE = Path("app/officine/data/officine.db")
PG_DUMP = Path("dbdump/officine_pg.sql")
DB_TABLES = ("products", "patients", "prescriptions", "sales")  # whose rows set mutate_db's budget
MUTATOR_DB_FRACTION = 0.01  # mutate_dataset.py's default --db-fraction
SCAN_NAME = re.compile(r"ORD-(\d+)\.(?:jpg|pdf)")


def scan_ids(tree: Path) -> dict[Path, int]:
    """Every scanned prescription in the tree: its path under the tree and its number (rid).
    make_dataset.py numbers its scans from 1,000,000; mutate_dataset.py a day's from
    9,000,000 + 1000 x (the day's offset from make_dataset.py's END_DATE), which can be negative
    on the first days (8,998,001 on the first day of a 20 MiB set, 9,001,001 of the small set):
    a day's new scans are told by the set of files before and after it, not by their number."""
    out = {}
    for dirpath, _, files in os.walk(tree / SCANS_DIR):
        for name in files:
            if match := SCAN_NAME.fullmatch(name):
                out[Path(dirpath, name).relative_to(tree)] = int(match.group(1))
    return out


def table_rows(tree: Path) -> dict[str, int]:
    """The rows of each table whose count sets the share of rows mutate_dataset.py changes
    (read-only)."""
    con = sqlite3.connect((tree / DATABASE).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {table: int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
                for table in DB_TABLES}
    finally:
        con.close()


def database_rows(tree: Path) -> int:
    return sum(table_rows(tree).values())


def delete_oldest_rows(tree: Path, count: dict[str, int]) -> int:
    """--steady: deletes the count[table] rows of lowest id of each table (the mutator numbers
    its rows in order), as a pharmacy purging its oldest sales would. SQLite keeps the freed
    pages for the next inserts, so the file stops growing. The number of rows deleted."""
    con = sqlite3.connect(tree / DATABASE)
    try:
        with con:
            return sum(con.execute(f"DELETE FROM {table} WHERE id IN "  # noqa: S608
                                   f"(SELECT id FROM {table} ORDER BY id LIMIT ?)", (n,)).rowcount
                       for table, n in count.items() if n > 0)
    finally:
        con.close()


def dump_lines(dump: BinaryIO) -> Iterator[tuple[str | None, bytes]]:
    """The pg dump's lines, each with the table it is a row of (inside a COPY block), else None."""
    table: str | None = None
    for line in dump:
        row_of = table if table is not None and line != b"\\.\n" else None
        if line.startswith(b"COPY public."):
            table = line.split()[1].decode().removeprefix("public.")
        elif line == b"\\.\n":
            table = None
        yield row_of, line


def dump_rows(path: Path) -> dict[str, int]:
    """The rows of each table of the pg dump."""
    rows: dict[str, int] = {}
    with path.open("rb") as dump:
        for table, _ in dump_lines(dump):
            if table is not None:
                rows[table] = rows.get(table, 0) + 1
    return rows


def trim_dump(path: Path, keep: dict[str, int], drop_first: dict[str, int] | None = None) -> tuple[int, int]:
    """Drops the rows of each table's COPY block beyond its first keep[table] (mutate_dataset.py
    appends its new rows at the end of the block) and, --steady, its first drop_first[table]
    rows (the oldest), rewriting the file as the mutator does; the numbers of rows dropped at
    the end and at the start."""
    rows: dict[str, int] = {}
    beyond = oldest = 0
    first = drop_first or {}
    temporary = path.with_name(path.name + ".trim")
    with path.open("rb") as dump, temporary.open("wb") as out:
        for table, line in dump_lines(dump):
            if table is not None:
                rows[table] = rows.get(table, 0) + 1
                if rows[table] > keep.get(table, rows[table]):
                    beyond += 1
                    continue
                if rows[table] <= first.get(table, 0):
                    oldest += 1
                    continue
            out.write(line)
    if beyond or oldest:
        os.replace(temporary, path)
    else:
        temporary.unlink()
    return beyond, oldest


# The logs mutate_dataset.py appends to every day (~300 KB each), and how the year rotates
# them: as Debian's /etc/logrotate.conf does by default (weekly, rotate 4, create, no compress).
CURRENT_LOGS = ("officine-current.log", "sesam-current.log", "scheduler.log")
LOG_DIR = Path("app/officine/logs")
ROTATE_EVERY, ROTATE_KEEP = 7, 4


def rotate_logs(tree: Path) -> bool:
    """Rotate the current logs: NAME.4 deleted, NAME.3 -> NAME.4 ... NAME -> NAME.1, NAME
    created empty. Whether there was a log to rotate."""
    rotated = False
    for name in CURRENT_LOGS:
        path = tree / LOG_DIR / name
        if not path.exists():
            continue
        path.with_name(f"{name}.{ROTATE_KEEP}").unlink(missing_ok=True)
        for n in range(ROTATE_KEEP - 1, 0, -1):
            older = path.with_name(f"{name}.{n}")
            if older.exists():
                older.rename(path.with_name(f"{name}.{n + 1}"))
        path.rename(path.with_name(f"{name}.1"))
        path.touch()
        rotated = True
    return rotated


@dataclass(frozen=True)
class Activity:
    """What one day of activity did to the tree, counted in the tree afterwards."""

    scans_added: int  # the new scan files the day kept
    scans_removed: int  # the mutator's new scans beyond day 1's count, deleted (linear growth)
    dump_rows_removed: int  # the same for the rows appended to the pg dump
    scan_files: int
    db_rows: int
    logs_rotated: bool = False  # the current logs were rotated after the day (weekly)
    # --steady: the oldest data removed for what the day added
    old_scans_removed: int = 0
    old_db_rows_removed: int = 0
    old_dump_rows_removed: int = 0
    old_files_removed: int = 0  # the day's new exports, orders and logs of EXPIRE_DAYS ago
    old_log_bytes_removed: int = 0  # from the start of the var/log files the day appended to


@dataclass(frozen=True)
class OldestRemoved:
    """--steady: the oldest data a day removed for what it added."""

    scans: int = 0
    db_rows: int = 0
    files: int = 0  # the new files of EXPIRE_DAYS ago (exports, orders, daily logs)


GROWTHS = ("linear", "compound", "steady")
EXPIRE_DAYS = 28  # --steady: a day's new exports, orders and daily logs are removed this much later


VAR_LOG = Path("var/log")


def file_sizes(folder: Path) -> dict[Path, int]:
    return {Path(dirpath, name): os.path.getsize(os.path.join(dirpath, name))
            for dirpath, _, names in os.walk(folder) for name in names}


def cut_log_heads(before: dict[Path, int]) -> int:
    """--steady: each log that grew since `before` loses as many bytes from its start, up to
    the end of a line (a size cap, as journald keeps one). The bytes cut."""
    cut = 0
    for path, size in before.items():
        grown = os.path.getsize(path) - size
        if grown <= 0:
            continue
        data = path.read_bytes()
        end = data.find(b"\n", grown - 1)
        end = len(data) if end < 0 else end + 1
        path.write_bytes(data[end:])
        cut += end
    return cut


def regular_files(tree: Path) -> set[str]:
    """Every regular file under the tree, as a path relative to it."""
    return {os.path.relpath(os.path.join(dirpath, name), tree)
            for dirpath, _, names in os.walk(tree) for name in names
            if os.path.isfile(os.path.join(dirpath, name))}


class Pharmacy:
    """The days of activity on the working tree (mutate_dataset.py, one seed a day).

    `growth`: "linear" holds each day to the first: as many new scans (the newest beyond are
    deleted), as many database rows changed (through --db-fraction) and as many rows appended
    to each table of the pg dump (the last ones beyond are dropped), so the tree grows linearly.
    "steady" also removes each day as much of the oldest data as the day added (the scans of
    lowest number, the database rows and dump rows of lowest id, the new files of EXPIRE_DAYS
    ago), so the tree keeps its size and only the repositories' history grows. "compound"
    leaves the mutator as it is."""

    def __init__(self, tree: Path, growth: str, rotating: bool = True) -> None:
        if growth not in GROWTHS:
            raise ValueError(f"growth is one of {GROWTHS}")
        self.tree = tree
        self.growth = growth
        self.rotating = rotating  # the current logs, every ROTATE_EVERY days
        self.days_lived = 0
        self.scans_per_day: int | None = None  # day 1's figures, once it has run
        self.db_rows_day_1: int | None = None
        self.dump_rows_per_day: dict[str, int] | None = None
        self.expiring: list[tuple[int, str]] = []  # --steady: (day, path) of the days' new files

    @property
    def compound(self) -> bool:
        return self.growth == "compound"

    @property
    def steady(self) -> bool:
        return self.growth == "steady"

    @property
    def db_rows_per_day(self) -> int | None:
        """The rows day 1 changed (inserted or updated): mutate_dataset.py's int(rows x fraction)."""
        return None if self.db_rows_day_1 is None else int(self.db_rows_day_1 * MUTATOR_DB_FRACTION)

    def db_fraction(self, rows_now: int) -> float:
        """Today's --db-fraction: 0.01 x rows on day 1 / rows now, so the mutator changes as many
        rows as on day 1; half a row more so float rounding cannot take one off its int()."""
        budget = self.db_rows_per_day
        if budget is None or rows_now == self.db_rows_day_1:
            return MUTATOR_DB_FRACTION
        return (budget + 0.5) / rows_now

    def live_one_day(self, seed: int) -> Activity:
        self.days_lived += 1
        scans_before = scan_ids(self.tree)
        tables_before = table_rows(self.tree)
        rows = sum(tables_before.values())
        if self.db_rows_day_1 is None:
            self.db_rows_day_1 = rows
        files_before = regular_files(self.tree) if self.steady else set()
        logs_before = file_sizes(self.tree / VAR_LOG) if self.steady else {}
        dump = self.tree / PG_DUMP
        dump_before = None if self.compound else dump_rows(dump)
        live_one_day(self.tree, seed, None if self.compound else self.db_fraction(rows))
        scans_after = scan_ids(self.tree)
        new = sorted((rid, path) for path, rid in scans_after.items() if path not in scans_before)
        if self.scans_per_day is None:
            self.scans_per_day = len(new)
        extra = [] if self.compound else new[self.scans_per_day:]  # the highest numbers
        for _, path in extra:
            (self.tree / path).unlink()
            del scans_after[path]
        dump_removed = old_dump_rows = 0
        if dump_before is not None:
            per_day = self.dump_rows_per_day
            first_day = per_day is None
            if per_day is None:
                after = dump_rows(dump)
                per_day = self.dump_rows_per_day = {table: after.get(table, 0) - n
                                                    for table, n in dump_before.items()}
            if self.steady or not first_day:  # a linear day 1 sets the count: nothing lies beyond it
                # --steady: also each block's first rows, as many as the day appends to it
                dump_removed, old_dump_rows = trim_dump(
                    dump, {table: n + per_day.get(table, 0) for table, n in dump_before.items()},
                    per_day if self.steady else None)
        old = (self._remove_oldest(scans_after, tables_before, files_before) if self.steady
               else OldestRemoved())
        log_bytes = cut_log_heads(logs_before)
        rotated = self.rotating and self.days_lived % ROTATE_EVERY == 0 and rotate_logs(self.tree)
        return Activity(scans_added=len(new) - len(extra), scans_removed=len(extra),
                        dump_rows_removed=dump_removed, scan_files=len(scans_after) - old.scans,
                        db_rows=database_rows(self.tree), logs_rotated=rotated,
                        old_scans_removed=old.scans, old_db_rows_removed=old.db_rows,
                        old_dump_rows_removed=old_dump_rows, old_files_removed=old.files,
                        old_log_bytes_removed=log_bytes)

    def _remove_oldest(self, scans: dict[Path, int], tables_before: dict[str, int],
                       files_before: set[str]) -> OldestRemoved:
        """--steady: as many of the oldest scans and database rows as the day added, and the
        new files of EXPIRE_DAYS ago."""
        tables_after = table_rows(self.tree)
        inserted = {t: tables_after[t] - n for t, n in tables_before.items()}
        rows = delete_oldest_rows(self.tree, inserted)
        new_scans = self.scans_per_day or 0
        oldest = sorted((rid, path) for path, rid in scans.items())[:new_scans]
        for _, path in oldest:
            (self.tree / path).unlink()
        scan_dir = str(SCANS_DIR) + os.sep
        new_files = sorted(f for f in regular_files(self.tree) - files_before if not f.startswith(scan_dir))
        self.expiring += [(self.days_lived, f) for f in new_files]
        due = [f for day, f in self.expiring if day <= self.days_lived - EXPIRE_DAYS]
        self.expiring = [(day, f) for day, f in self.expiring if day > self.days_lived - EXPIRE_DAYS]
        for f in due:
            (self.tree / f).unlink(missing_ok=True)
        return OldestRemoved(scans=len(oldest), db_rows=rows, files=len(due))

    def figures(self) -> dict[str, object]:
        """For summary.json: how the tree grew, and day 1's figures the later days were held to."""
        return {"growth": self.growth, "logs_rotated": self.rotating,
                "scans_per_day": self.scans_per_day, "db_rows_day_1": self.db_rows_day_1,
                "db_rows_changed_per_day": self.db_rows_per_day,
                "dump_rows_appended_per_day": self.dump_rows_per_day,
                **({"expiring": self.expiring} if self.steady else {})}

    @classmethod
    def resumed(cls, tree: Path, figures: dict[str, Any], days_lived: int) -> Pharmacy:
        """The pharmacy of a kept run (`figures()` as summary.json holds them), going on from
        its last day (year_more.py)."""
        pharmacy = cls(tree, figures["growth"], figures["logs_rotated"])
        pharmacy.days_lived = days_lived
        pharmacy.scans_per_day = figures["scans_per_day"]
        pharmacy.db_rows_day_1 = figures["db_rows_day_1"]
        pharmacy.dump_rows_per_day = figures["dump_rows_appended_per_day"]
        pharmacy.expiring = [(int(day), str(f)) for day, f in figures.get("expiring", [])]
        return pharmacy


# -- one day ---------------------------------------------------------------------------------------

def folder_bytes(path: Path) -> int:
    """The sum of the sizes of the files under `path` (0 if there is none)."""
    return sum(tree_sizes(path).values())


def file_count(path: Path) -> int:
    return len(tree_sizes(path))


def run_daily_job(tool: DailyTool, tree: Path, day: int, moment: datetime, schedule: Schedule,
                  activity: Activity) -> Day:
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
    for line in (w for m in ran for w in m.warnings):
        print(f"  day {day}, {tool.name}: {line}", flush=True)
    return Day(
        day=day, date=moment.date().isoformat(), tree_bytes=folder_bytes(tree),
        scan_files=activity.scan_files, scans_added=activity.scans_added, db_rows=activity.db_rows,
        backup_s=backup.wall, backup_cpu_s=backup.cpu, backup_rss_mib=backup.rss_mib, bytes_added=added,
        forget_s=forget.wall, forget_rss_mib=forget.rss_mib,
        prune_s=wall_of(prune), prune_rss_mib=rss_of(prune),
        check_s=wall_of(check), check_rss_mib=rss_of(check),
        peak_rss_mib=max(m.rss_mib for m in ran),
        repo_bytes=folder_bytes(tool.repo), cache_bytes=folder_bytes(tool.cache_dir),
        index_files=file_count(tool.index_dir), snapshots=file_count(tool.snapshots_dir),
        packs=file_count(tool.repo / "data"),
        warnings=sum(len(m.warnings) for m in ran),
    )


def wall_of(measure: Measure | None) -> float | None:
    return None if measure is None else measure.wall


def rss_of(measure: Measure | None) -> float | None:
    return None if measure is None else measure.rss_mib


def day_line(day: int, moment: datetime, rows: dict[str, Day], activity: Activity, tree_bytes: int,
             previous_bytes: int) -> str:
    """The progress line printed after each day: the tree, then each tool."""
    removed = [f"{n} {what} beyond day 1's removed" for n, what in
               ((activity.scans_removed, "scans"), (activity.dump_rows_removed, "dump rows")) if n]
    old = [f"{n} {what}" for n, what in ((activity.old_scans_removed, "scans"),
                                         (activity.old_db_rows_removed, "database rows"),
                                         (activity.old_dump_rows_removed, "dump rows"),
                                         (activity.old_files_removed, "files")) if n]
    if activity.old_log_bytes_removed:
        old.append(f"{activity.old_log_bytes_removed / 1e3:.0f} KB of var/log")
    removed += [f"oldest removed: {', '.join(old)}"] if old else []
    parts = [f"tree {tree_bytes / 1e6:.1f} MB ({(tree_bytes - previous_bytes) / 1e6:+.1f} MB, "
             f"+{activity.scans_added} scans{''.join(', ' + r for r in removed)}"
             f"{', logs rotated' if activity.logs_rotated else ''})"]
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


def read_csv(path: Path) -> list[Day]:
    """The days a run wrote (--report reads them back)."""
    types = {f.name: f.type for f in dataclasses.fields(Day)}
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            values: dict[str, object] = {}
            for name, text in raw.items():
                kind = str(types[name])
                if text == "":
                    values[name] = None
                elif kind.startswith("int"):
                    values[name] = int(text)
                elif kind.startswith("float"):
                    values[name] = float(text)
                else:
                    values[name] = text
            rows.append(Day(**values))  # type: ignore[arg-type]
    return rows


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
    # A run shorter than a year: the least-squares line through the measured days from the
    # reference on, at day `projected_day` (365), and that value over the early median.
    projected_day: int | None = None
    projected: float | None = None

    @property
    def within_target(self) -> bool | None:
        return self._within(self.ratio)

    @property
    def projected_ratio(self) -> float | None:
        if self.projected is None or self.early <= 0:
            return None
        return self.projected / self.early

    @property
    def projected_within_target(self) -> bool | None:
        return self._within(self.projected_ratio)

    def _within(self, ratio: float | None) -> bool | None:
        if not self.targeted or ratio is None:
            return None
        return ratio <= TARGET_RATIO


def fit_at(points: list[tuple[int, float]], day: int) -> float | None:
    """The least-squares line through `points` (day, value), at `day`: where a measure that grows
    linearly, as the tree does, leads. None for fewer than 3 days measured."""
    if len(points) < 3:
        return None
    days, values = zip(*points, strict=True)
    slope, intercept = statistics.linear_regression(days, values)
    return intercept + slope * day


def compare(rows: dict[str, list[Day]], reference: int, window: int,
            project_to: int | None = None) -> list[Comparison]:
    """Each measure's early and late medians; `project_to`: a day beyond the run (365 for a
    shorter one) each measure's fitted line is read at."""
    out = []
    for quantity in QUANTITIES:
        for name, tool_rows in rows.items():
            windows = early_and_late(tool_rows, quantity, reference, window)
            if windows is None:
                continue
            early, late = (statistics.median(quantity.value(r) or 0.0 for r in w) for w in windows)
            projected = None
            if project_to is not None:
                projected = fit_at([(r.day, v) for r in tool_rows
                                    if r.day >= reference and (v := quantity.value(r)) is not None],
                                   project_to)
            out.append(Comparison(quantity.label, name, [r.day for r in windows[0]], early,
                                  [r.day for r in windows[1]], late, late / early if early > 0 else None,
                                  quantity.targeted, project_to if projected is not None else None,
                                  projected))
    return out


def projection_day(days: int) -> int | None:
    """A run shorter than a year is read on day 365 along each measure's fitted line."""
    return YEAR_DAYS if days < YEAR_DAYS else None


def comparison_table(comparisons: list[Comparison]) -> str:
    units = {q.label: q for q in QUANTITIES}
    fitted = next((c.projected_day for c in comparisons if c.projected_day is not None), None)
    header = f"{'measure':<22}{'tool':<8}{'day':>8}{'value':>12}{'day':>9}{'value':>12}{'last/ref':>10}"
    if fitted is not None:
        header += f"{f'fit, day {fitted}':>15}{'fit/ref':>9}"
    header += f"  goal ≤ {TARGET_RATIO}"
    lines = [header, "-" * len(header)]
    verdicts = {None: "", True: "met", False: "MISSED"}
    for c in comparisons:
        q = units[c.measure]
        ratio = "—" if c.ratio is None else f"{c.ratio:.2f}"
        line = (f"{c.measure:<22}{c.tool:<8}{day_span(c.early_days):>8}{q.show(c.early):>12}"
                f"{day_span(c.late_days):>9}{q.show(c.late):>12}{ratio:>10}")
        verdict = verdicts[c.within_target]
        if fitted is not None:
            shown = "—" if c.projected is None else q.show(c.projected)
            fit_ratio = "—" if c.projected_ratio is None else f"{c.projected_ratio:.2f}"
            line += f"{shown:>15}{fit_ratio:>9}"
            if c.projected_within_target is not None:
                verdict += f", fit {verdicts[c.projected_within_target]}"
        lines.append(f"{line}  {verdict}")
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
        path = out / (f"{quantity.field}.png" if quantity.per is None else f"{quantity.field}_per_gb.png")
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


def live_the_year(tools: list[DailyTool], pharmacy: Pharmacy, year: Year, out: Path,
                  say: Callable[[str], None]) -> dict[str, list[Day]]:
    """Every day: one day of activity on the tree, then each tool's daily job on it."""
    rows: dict[str, list[Day]] = {tool.name: [] for tool in tools}
    previous = folder_bytes(pharmacy.tree)
    for day in range(1, year.days + 1):
        activity = pharmacy.live_one_day(mutation_seed(year.data_seed, day))
        moment = job_moment(year.start, day)
        today = {}
        for tool in tools:
            today[tool.name] = run_daily_job(tool, pharmacy.tree, day, moment, year.schedule, activity)
            rows[tool.name].append(today[tool.name])
            append_csv(out / f"{tool.name}.csv", today[tool.name])
        tree_bytes = folder_bytes(pharmacy.tree)
        say(day_line(day, moment, today, activity, tree_bytes, previous))
        previous = tree_bytes
    return rows


@dataclass(frozen=True)
class TreeGrowth:
    """The tree before day 1 and on the last day, and where that pace leads in a year."""

    start_bytes: int
    last_bytes: int
    days: int

    @property
    def per_day(self) -> float:
        return (self.last_bytes - self.start_bytes) / self.days

    def on_day(self, day: int) -> float:
        """The tree's size on `day` at the run's mean daily growth: an estimate (with --compound,
        an underestimate: the growth speeds up every day)."""
        return self.start_bytes + self.per_day * day


def tree_growth(start_bytes: int, rows: dict[str, list[Day]]) -> TreeGrowth | None:
    tool_rows = next((r for r in rows.values() if r), None)
    return None if tool_rows is None else TreeGrowth(start_bytes, tool_rows[-1].tree_bytes, tool_rows[-1].day)


def growth_line(growth: TreeGrowth, compound: bool) -> str:
    caveat = ("; --compound: the growth speeds up every day, so this underestimates it" if compound
              else ": an estimate, at this run's mean pace")
    return (f"tree: {growth.start_bytes / 1e6:.1f} MB before day 1, {growth.last_bytes / 1e6:.1f} MB on day "
            f"{growth.days}, {growth.per_day / 1e6:+.2f} MB a day; at that pace "
            f"{growth.on_day(365) / 1e9:.2f} GB on day 365{caveat}")


def summary(rows: dict[str, list[Day]], year: Year, pharmacy: Pharmacy, comparisons: list[Comparison],
            pristine: Path, out: Path, plots: list[Path], elapsed: float) -> dict[str, object]:
    start_bytes = folder_bytes(pristine)
    growth = tree_growth(start_bytes, rows)
    return {
        "days": year.days, "start": year.start.isoformat(), "job_time": JOB_TIME.isoformat(),
        "data_set": str(pristine), "data_set_bytes": start_bytes,
        "data_seed": year.data_seed, "schedule": dataclasses.asdict(year.schedule),
        **pharmacy.figures(),
        "tree_bytes_per_day": None if growth is None else growth.per_day,
        "tree_bytes_day_365_estimate": None if growth is None else growth.on_day(365),
        "retention": " ".join(RETENTION), "reference_day": year.reference, "window_days": year.window,
        "goal_ratio": TARGET_RATIO,
        "dating": {"coffre": f"test-only clock shift ({COFFRE_CLOCK_SHIFT_ENV}): coffre backup has no "
                             "option to date a snapshot",
                   "restic": "backup --time"},
        "comparisons": [{**dataclasses.asdict(c), "ratio": finite(c.ratio), "within_target": c.within_target,
                         "projected": finite(c.projected), "projected_ratio": finite(c.projected_ratio),
                         "projected_within_target": c.projected_within_target}
                        for c in comparisons],
        "days_with_warnings": {name: [d.day for d in days if d.warnings] for name, days in rows.items()},
        "repository_bytes_last_day": last_repository_bytes(rows),
        "repository_coffre_over_restic": coffre_over_restic(last_repository_bytes(rows)),
        "last_day": {name: dataclasses.asdict(days[-1]) for name, days in rows.items() if days},
        "csv": {name: str(out / f"{name}.csv") for name in rows},
        "plots": [str(p) for p in plots],
        "elapsed_s": elapsed,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_options(ap)
    ap.add_argument("--seed", type=int, help="data set seed (make_dataset.py's default otherwise); the "
                                             "days' seeds derive from it")
    ap.add_argument("--days", type=int, default=YEAR_DAYS)
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
    ap.add_argument("--report", action="store_true",
                    help="run nothing: the table and plots again from the CSVs a run left in --out")
    ap.add_argument("--no-log-rotation", action="store_true",
                    help="never rotate the current logs: each grows ~300 KB a day all year (~110 MB on "
                         "day 365), and every tool reads it whole every day")
    growth = ap.add_mutually_exclusive_group()
    growth.add_argument("--compound", action="store_true",
                        help="let mutate_dataset.py compound (each day's new scans and rows a share of "
                             "those already there) instead of holding every day to the first: the old "
                             "growth, for comparison")
    growth.add_argument("--steady", action="store_true",
                        help="hold the tree's size: every day also removes as much of the oldest data as "
                             "it added (scans, database rows, pg dump rows; its new exports, orders and "
                             f"daily logs {EXPIRE_DAYS} days later), so that every day's job has the same "
                             "work and only the repositories' history grows")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in YEAR_TOOLS]
    if unknown:
        ap.error(f"unknown tool(s): {', '.join(unknown)}")
    counts = (args.days, args.prune_every, args.check_every, args.window, args.reference_day)
    if min(counts) < 1 or not 0 < args.check_subset <= 100:
        ap.error("--days, --prune-every, --check-every, --window and --reference-day are at least 1; "
                 "--check-subset is in 1..100")
    if args.report:
        return args
    if job_moment(args.start, 1).timestamp() < time.time() + 3600:
        ap.error("--start must lie ahead of the real clock (by more than an hour): coffre's snapshots are "
                 "dated by moving its clock, and its files cache trusts only files older than the backup")
    if not (SHARED_BENCH / "make_dataset.py").is_file():
        sys.exit(f"the data set generator is not in {SHARED_BENCH}; set COFFRE_SHARED_BENCH")
    return args


def report_again(args: argparse.Namespace) -> int:
    """--report: the final table and the plots from the CSVs of an earlier run."""
    rows = {name: read_csv(args.out / f"{name}.csv") for name in args.tools
            if (args.out / f"{name}.csv").exists()}
    if not rows:
        sys.exit(f"no CSV of {', '.join(args.tools)} in {args.out}")
    days = max(len(r) for r in rows.values())
    plots = plot(rows, args.out)
    print_results(rows, compare(rows, reference_day(days, args.reference_day), args.window,
                                projection_day(days)), days)
    print("\n" + "\n".join(f"  {p}" for p in plots))
    return 0


def print_results(rows: dict[str, list[Day]], comparisons: list[Comparison], days: int) -> None:
    """The final table, then both repositories' sizes on the last day."""
    print(comparison_table(comparisons))
    sizes = last_repository_bytes(rows)
    ratio = coffre_over_restic(sizes)
    if ratio is not None:
        print(f"\nrepository on day {days}: coffre {sizes['coffre'] / 1e6:.1f} MB, restic "
              f"{sizes['restic'] / 1e6:.1f} MB, coffre/restic {ratio:.2f}")
    for name, tool_rows in rows.items():
        warned = [d.day for d in tool_rows if d.warnings]
        if any(d.warnings is not None for d in tool_rows):
            which = f" (days {shorten_days(warned)})" if warned else ""
            print(f"{name}: {len(warned)} day(s) with warnings{which}")


def shorten_days(days: list[int]) -> str:
    return ", ".join(map(str, days)) if len(days) <= 10 else f"{', '.join(map(str, days[:10]))}, ..."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report_again(args)
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
    growth = "compound" if args.compound else "steady" if args.steady else "linear"
    mode = {"compound": "compound (mutate_dataset.py as is)", "linear": "linear (every day held to day 1)",
            "steady": "steady (every day held to day 1, and as much of the oldest data removed)"}[growth]
    rotating = not (args.no_log_rotation or args.compound)
    rotation = f"rotated every {ROTATE_EVERY} days, {ROTATE_KEEP} kept" if rotating else "never rotated"
    print(f"growth: {mode}; current logs {rotation}", flush=True)
    pharmacy = Pharmacy(prepare(tools, pristine, work, args.out), growth, rotating)
    rows = live_the_year(tools, pharmacy, year, args.out, lambda line: print(line, flush=True))
    comparisons = compare(rows, year.reference, year.window, projection_day(year.days))
    plots = plot(rows, args.out)
    elapsed = time.monotonic() - started
    (args.out / "summary.json").write_text(json.dumps(
        summary(rows, year, pharmacy, comparisons, pristine, args.out, plots, elapsed), indent=1))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print()
    growth = tree_growth(folder_bytes(pristine), rows)
    if growth is not None:
        print(growth_line(growth, args.compound))
        print()
    print_results(rows, comparisons, year.days)
    print(f"\n{year.days} days in {elapsed:.0f} s; results in {args.out}:")
    for path in [*(args.out / f"{name}.csv" for name in args.tools), args.out / "summary.json", *plots]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
