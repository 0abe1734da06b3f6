"""The initial backup part by part: an empty folder, each top folder of the pharmacy data set
and the whole set, each backed up alone into a fresh repository by Coffre and by restic, the
tools in turns, on a warm page cache (the parts are read once before). It prints the medians,
Coffre/restic, and each part's time above the empty folder's: what the start costs each tool
apart from the work. Where the whole set's ratio comes from (bench/README.md, "December 7
2026, evening").

    python bench/parts.py --small --runs 3
    python bench/parts.py --size-mib 4 --small-files 40 --runs 1    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Measure, add_data_set_options, median, pristine_tree, timed
from tools import TOOLS, Tool, compile_coffre, ensure_installed, in_turn

PART_TOOLS = ("coffre", "restic")


def parts_of(tree: Path, empty: Path) -> dict[str, Path]:
    """The parts measured: the empty folder, each top folder of the tree, the whole tree."""
    folders = sorted(p for p in tree.iterdir() if p.is_dir() and not p.is_symlink())
    return {"(empty folder)": empty, **{p.name + "/": p for p in folders}, "(whole set)": tree}


def files_and_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def read_all(path: Path) -> None:
    """The part's files into the page cache: the first tool would otherwise pay for the disk."""
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass


def backup_once(name: str, part: Path, home: Path) -> Measure:
    """A fresh repository (untimed), then the timed initial backup of `part`."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    tool: Tool = TOOLS[name](name, home)
    env = tool.env()
    timed(tool.init_argv(), env, home)
    return timed(tool.backup_argv(part, 1), env, home)


def report(parts: dict[str, Path], results: dict[tuple[str, str], list[Measure]]) -> str:
    wall = {key: median([m.wall for m in ms]) for key, ms in results.items()}
    cpu = {key: median([m.cpu for m in ms]) for key, ms in results.items()}
    start = {tool: wall[("(empty folder)", tool)] for tool in PART_TOOLS}
    lines = [f"{'part':<18}{'files':>7}{'MB':>8}{'coffre':>16}{'restic':>16}{'ratio':>7}"
             f"{'coffre above start':>20}{'restic above start':>20}"]
    for label, path in parts.items():
        files, size = files_and_bytes(path)
        c, r = wall[(label, "coffre")], wall[(label, "restic")]
        coffre = "{:.3f}s {:.2f}cpu".format(c, cpu[(label, "coffre")])
        restic = "{:.3f}s {:.2f}cpu".format(r, cpu[(label, "restic")])
        lines.append(f"{label:<18}{files:>7}{size / 1e6:>8.1f}{coffre:>16}{restic:>16}{c / r:>7.2f}"
                     f"{c - start['coffre']:>19.3f}s{r - start['restic']:>19.3f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_set_options(ap)
    ap.add_argument("--seed", type=int, help="data set seed (make_dataset.py's default otherwise)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pharmabench",
                    help="where the data set is generated and the repositories made")
    args = ap.parse_args(argv)
    ensure_installed(list(PART_TOOLS))
    compile_coffre()
    tree = pristine_tree(args.out, args.small, args.size_mib, args.small_files, args.seed) / "pharmacy-server"
    work = args.out / "parts"
    empty = work / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    parts = parts_of(tree, empty)
    read_all(tree)
    results: dict[tuple[str, str], list[Measure]] = {}
    try:
        for run in range(args.runs):
            for label, path in parts.items():
                for name in in_turn(PART_TOOLS, run):
                    m = backup_once(name, path, work / name)
                    results.setdefault((label, name), []).append(m)
                    print(f"run {run + 1} {name}: {label} {m.wall:.3f}s", flush=True)
    finally:
        for name in PART_TOOLS:
            shutil.rmtree(work / name, ignore_errors=True)
    print()
    print(f"initial backup of each part alone, warm page cache, medians of {args.runs} run(s)")
    print(report(parts, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
