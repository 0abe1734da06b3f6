"""Coffre against restic and borg on the pharmacy data set, in one run on one machine.

    python bench/run.py                 # ~2 GiB data set, 3 runs, coffre + restic + borg
    python bench/run.py --small         # ~200 MiB
    python bench/run.py --size-mib 8 --small-files 100 --runs 1   # a smoke run (seconds)

Steps, for every tool and run, each on a fresh copy of the pristine tree and a fresh
repository (page cache dropped before each timed step when run as root):
  1. initial backup   2. backup with nothing changed   3. one day of activity
  (../shared/bench/mutate_dataset.py), then backup, measuring the bytes added to the
  repository   4. full restore of the latest snapshot, compared byte for byte
  5. full data check.
Prints medians of wall time, CPU time and peak RSS, the ratios Coffre/restic and
Coffre/borg, and the lower bound of step 3. Data lives under $TMPDIR/pharmabench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tools import TOOLS, Coffre, Tool, compile_coffre, ensure_installed, in_turn

# The data set generator lives in the project's shared folder, beside the repository
# (COFFRE_SHARED_BENCH names another place).
SHARED_BENCH = Path(os.environ.get("COFFRE_SHARED_BENCH")
                    or Path(__file__).resolve().parents[2] / "shared" / "bench")
STEPS = ("initial backup", "unchanged backup", "backup after one day", "restore", "check all data")


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mib: float
    warnings: tuple[str, ...] = ()  # what the command printed as a warning (Coffre's "warning: ...")


@dataclass
class RunResult:
    tool: str
    steps: dict[str, Measure] = field(default_factory=dict)
    bytes_added_day: int = 0
    repo_after_initial: int = 0
    restore_identical: bool = False


# Every run's folders (its copy of the tree, repository, cache and restored tree) stay until all
# the runs are over, then go together. On ext4 without a journal (this machine's /tmp), creating
# a file skips every free inode deleted in the last minute (six while its inode table block is
# not yet written out): recently_deleted() in the allocator, seen with perf and py-spy. A restore
# of thousands of files just after the previous run's folders were deleted spent seconds in
# that scan (remote restores of the 50 MiB set: 1.0 s to 3.4 s, whichever tool came after the
# deletion): it measured the deletion, not the tool. For the same reason, leave six minutes
# between two benches, and delete nothing meanwhile: a restore dirties the inode tables it
# allocates from, so the longer window is the one that applies (December 2026: restores of the
# 500 MiB set took 2.1-2.9 s, with 2.5-3.8 s of system time, up to three minutes after a bench's
# clean-up; 1.5-1.6 s, with 1.3-1.7 s, later). A journaled ext4, as a pharmacy's server has,
# does not make this check.
KEEP_NOTE = ("runs are kept until the end: creating files just after deleting many is slow on ext4 "
             "without a journal")


def enough_space(out: Path, needed: int) -> None:
    """Stop before the first run if `out` cannot hold every run's folders (kept until the end)."""
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < needed:
        sys.exit(f"{out} has {free / 1e9:.1f} GB free; the runs, kept until the end ({KEEP_NOTE}), "
                 f"need ~{needed / 1e9:.1f} GB (fewer --runs or tools, a smaller set, or another --out)")


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> Measure:
    """Run a command to completion; its own wall time, CPU time and peak RSS."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, warnings_in(err))


def warnings_in(stderr: bytes) -> tuple[str, ...]:
    """The lines a command printed as warnings: a backup that succeeds but warns every day (a
    false alarm, or a real problem) is something a year of them must show."""
    lines = stderr.decode(errors="replace").splitlines()
    return tuple(line for line in lines if line.lower().startswith(("warning:", "attention :")))


def tree_sizes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.stat().st_size
    return out


def bytes_added(before: dict[str, int], after: dict[str, int]) -> int:
    """What a sync of the repository to a remote would send: new or changed files."""
    return sum(size for name, size in after.items() if before.get(name) != size)


def identical(a: Path, b: Path) -> bool:
    return subprocess.run(["diff", "-r", "-q", "--no-dereference", str(a), str(b)],
                          capture_output=True, check=False).returncode == 0


def live_one_day(tree: Path, seed: int | None = None, db_fraction: float | None = None) -> None:
    """One day of pharmacy activity applied to the tree in place (mutate_dataset.py); its
    --db-fraction (the share of the database's rows the day changes) when given."""
    argv = [sys.executable, str(SHARED_BENCH / "mutate_dataset.py"), "--root", str(tree)]
    argv += ["--seed", str(seed)] if seed is not None else []
    argv += ["--db-fraction", repr(db_fraction)] if db_fraction is not None else []
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def initialise(tool: Tool) -> None:
    """A fresh repository for the tool, untimed (Coffre's modules compiled first, once)."""
    tool.home.mkdir(parents=True, exist_ok=True)
    compile_coffre()
    subprocess.run(tool.init_argv(), env={**os.environ, **tool.env()}, cwd=tool.home, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_tool(tool: Tool, pristine: Path, work: Path, cold: bool) -> RunResult:
    """One run of the steps; `work` (where the tree is copied) is new, and kept (see KEEP_NOTE)."""
    res = RunResult(tool.name)
    work.mkdir(parents=True)
    # Copy the tree itself (never a link to it): the day of activity is applied to the copy.
    subprocess.run(["cp", "-a", str(pristine.resolve() / "pharmacy-server"), str(work)], check=True)
    source = work / "pharmacy-server"
    env = tool.env()
    initialise(tool)

    def step(name: str, argv: list[str], cwd: Path | None = None) -> None:
        if cold:
            drop_caches()
        res.steps[name] = timed(argv, env, cwd or tool.home)

    step(STEPS[0], tool.backup_argv(source, 1))
    res.repo_after_initial = sum(tree_sizes(tool.repo).values())
    step(STEPS[1], tool.backup_argv(source, 2))
    live_one_day(source)
    before = tree_sizes(tool.repo)
    step(STEPS[2], tool.backup_argv(source, 3))
    res.bytes_added_day = bytes_added(before, tree_sizes(tool.repo))
    target = tool.home / "restored"
    argv, cwd = tool.restore_argv(target)
    step(STEPS[3], argv, cwd)
    res.restore_identical = identical(source, tool.restored_root(target, source))
    step(STEPS[4], tool.check_argv())
    return res


def measure_lower_bound(before: Path, after: Path) -> dict[str, int]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "lowerbound.py"),
                          str(before), str(after)], capture_output=True, text=True, check=True)
    result: dict[str, int] = json.loads(out.stdout)
    return result


def pristine_tree(out: Path, small: bool, size_mib: int | None, small_files: int | None,
                  seed: int | None = None) -> Path:
    """The folder holding the generated `pharmacy-server` tree, under `out`: generated by
    make_dataset.py the first time, reused afterwards (one folder per size and seed)."""
    label = "small" if small else f"{size_mib or 2048}mib-{small_files or 'default'}"
    pristine = out / (f"pristine-{label}" if seed is None else f"pristine-{label}-seed{seed}")
    if not (pristine / "pharmacy-server").exists():
        gen = [sys.executable, str(SHARED_BENCH / "make_dataset.py"), "--out", str(pristine), "--force"]
        gen += ["--small"] if small else (["--size-mib", str(size_mib)] if size_mib else [])
        gen += ["--small-files", str(small_files)] if small_files else []
        gen += ["--seed", str(seed)] if seed is not None else []
        subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
    return pristine


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: list[RunResult], tools: list[str], source_bytes: int, lb: dict[str, int]) -> str:
    by_tool = {t: [r for r in results if r.tool == t] for t in tools}
    lines = []
    header = f"{'step':<22}" + "".join(f"{t:>26}" for t in tools)
    others = [t for t in tools if t != "coffre"]

    def ratios(values: dict[str, float]) -> str:
        """Coffre's value over each other tool's, when Coffre was measured."""
        return "".join(f"{values['coffre'] / values[o]:>16.2f}" for o in others) if "coffre" in tools else ""

    if "coffre" in tools:
        header += "".join(f"{'coffre/' + o:>16}" for o in others)
    lines += [header, "-" * len(header)]
    for step in STEPS:
        med = {t: Measure(median([r.steps[step].wall for r in rs]), median([r.steps[step].cpu for r in rs]),
                          median([r.steps[step].rss_mib for r in rs])) for t, rs in by_tool.items()}
        row = f"{step:<22}" + "".join(
            f"{f'{m.wall:.2f}s {m.cpu:.1f}cpu {m.rss_mib:.0f}MiB':>26}" for m in med.values())
        lines.append(row + ratios({t: m.wall for t, m in med.items()}))
    added = {t: median([float(r.bytes_added_day) for r in rs]) for t, rs in by_tool.items()}
    row = f"{'day: bytes added':<22}" + "".join(
        f"{f'{a / 1e6:.1f} MB ({100 * a / source_bytes:.1f} %)':>26}" for a in added.values())
    lines.append(row + ratios(added))
    initial = {t: median([float(r.repo_after_initial) for r in rs]) for t, rs in by_tool.items()}
    lines.append(f"{'repo after initial':<22}" + "".join(
        f"{f'{a / 1e6:.1f} MB ({100 * a / source_bytes:.1f} %)':>26}" for a in initial.values()))
    same = {t: all(r.restore_identical for r in rs) for t, rs in by_tool.items()}
    lines.append(f"{'restore identical':<22}" + "".join(f"{v!s:>26}" for v in same.values()))
    lines.append("")
    lines.append(f"lower bound of the day's transfer: {lb['compressed_bytes'] / 1e6:.1f} MB "
                 f"({100 * lb['compressed_bytes'] / source_bytes:.2f} % of the source): "
                 f"{lb['changed_bytes'] / 1e6:.1f} MB really changed ({lb['db_pages_changed']} database "
                 f"pages, {lb['files_new']} new and {lb['files_modified']} modified files), zstd-3")
    return "\n".join(lines)


def parse_sets(text: str) -> list[tuple[bool, int | None, int | None]]:
    """--sets "small,small:2,500:3": data sets as (small, size in MiB, seed)."""
    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        size, _, seed = item.partition(":")
        small = size == "small"
        if not small and not size.isdigit():
            raise SystemExit(f"--sets: {item!r}: a size is 'small' or MiB, then ':SEED' if wanted")
        out.append((small, None if small else int(size), int(seed) if seed else None))
    return out


def set_label(small: bool, size_mib: int | None, seed: int | None) -> str:
    return ("small" if small else f"{size_mib} MiB") + (f", seed {seed}" if seed is not None else "")


def robustness(per_set: dict[str, list[RunResult]]) -> str:
    """Coffre/restic per data set (medians of its runs), then the median and the worst over the
    sets: the figures the targets must hold for."""
    lines = [f"{'coffre/restic':<22}" + "".join(f"{label:>20}" for label in per_set)
             + f"{'median':>10}{'worst':>10}"]
    for step in STEPS:
        ratios = []
        for results in per_set.values():
            mine = median([r.steps[step].wall for r in results if r.tool == "coffre"])
            theirs = median([r.steps[step].wall for r in results if r.tool == "restic"])
            ratios.append(mine / theirs)
        lines.append(f"{step:<22}" + "".join(f"{x:>20.2f}" for x in ratios)
                     + f"{statistics.median(ratios):>10.2f}{max(ratios):>10.2f}")
    return "\n".join(lines)


def add_data_set_options(ap: argparse.ArgumentParser) -> None:
    """The options that choose the generated data set (pristine_tree's size and small files)."""
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="~200 MiB data set")
    size.add_argument("--size-mib", type=int, help="data set size (default ~2048)")
    ap.add_argument("--small-files", type=int, help="number of small config/log files")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_options(ap)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="coffre,restic,borg", help=f"among {', '.join(TOOLS)}")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pharmabench")  # noqa: S108
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="coffre compiles every module it imports at every command (no cached "
                         "bytecode, which an installed coffre has)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--sets", help="several data sets, e.g. 'small,small:2,500:3' (size or 'small', then "
                                   ":SEED): each is run as above, then Coffre/restic per set with the "
                                   "median and the worst")
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tool(s): {', '.join(unknown)}")
    if not (SHARED_BENCH / "make_dataset.py").is_file():
        sys.exit(f"the data set generator is not in {SHARED_BENCH}; set COFFRE_SHARED_BENCH")
    ensure_installed(tools)
    Coffre.bytecode = not args.no_bytecode

    sets = parse_sets(args.sets) if args.sets else [(args.small, args.size_mib, None)]
    if args.sets and not {"coffre", "restic"} <= set(tools):
        ap.error("--sets compares coffre with restic: keep both in --tools")
    per_set: dict[str, list[RunResult]] = {}
    raw: dict[str, dict[str, object]] = {}
    runs_dir = args.out / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # an interrupted run's
    try:
        for n, (small, size_mib, seed) in enumerate(sets):
            label = set_label(small, size_mib, seed)
            folder = runs_dir / f"set-{n + 1}"  # not the label: a space breaks borg's BORG_PASSCOMMAND
            per_set[label], raw[label] = run_set(args, tools, small, size_mib, seed, folder)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)  # also after a failed step
    if len(sets) > 1:
        print()
        print(robustness(per_set))
    if args.json:
        args.json.write_text(json.dumps(raw if len(sets) > 1 else next(iter(raw.values())), indent=1))
    return 0 if all(r.restore_identical for rs in per_set.values() for r in rs) else 1


def run_set(args: argparse.Namespace, tools: list[str], small: bool, size_mib: int | None,
            seed: int | None, runs_dir: Path) -> tuple[list[RunResult], dict[str, object]]:
    """Every run of every tool on one data set, its table printed; the results, and what
    --json writes of them. Each run's folders are made under `runs_dir`, and kept."""
    pristine = pristine_tree(args.out, small, size_mib, args.small_files, seed)
    source_bytes = sum(tree_sizes(pristine / "pharmacy-server").values())
    # Each run: a copy of the tree, a restored one, and a repository (at most the tree again).
    enough_space(args.out, int(source_bytes * 3.3) * args.runs * len(tools))
    cold = not args.warm and drop_caches()
    print(f"data set: {source_bytes / 1e6:.0f} MB in {pristine}; {args.runs} run(s); "
          f"{'cold' if cold else 'warm'} page cache; tools: {', '.join(tools)}"
          + ("" if Coffre.bytecode else "; coffre without cached bytecode"), flush=True)

    results: list[RunResult] = []
    lb_done: dict[str, int] = {}
    for run in range(args.runs):
        for name in in_turn(tools, run):
            home = runs_dir / f"{name}-{run}"
            tool = TOOLS[name](name, home)
            work = runs_dir / f"{name}-{run}-work"
            results.append(run_tool(tool, pristine, work, cold))
            if not lb_done:
                lb_done = measure_lower_bound(pristine / "pharmacy-server", work / "pharmacy-server")
            r = results[-1]
            print(f"run {run + 1} {name}: " + ", ".join(f"{s} {m.wall:.2f}s" for s, m in r.steps.items())
                  + f", day added {r.bytes_added_day / 1e6:.1f} MB", flush=True)
    print()
    print(report(results, tools, source_bytes, lb_done))
    return results, {"source_bytes": source_bytes, "lower_bound": lb_done,
                     "results": [asdict(r) for r in results]}


if __name__ == "__main__":
    raise SystemExit(main())
