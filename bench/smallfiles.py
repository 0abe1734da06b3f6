"""Trees of many small files: Coffre against restic where per-file costs dominate.

    python bench/smallfiles.py                                  # both trees, 3 runs
    python bench/smallfiles.py --trees generated --files 2000 --runs 1   # a smoke run (seconds)

Two trees:
  * generated: --files files (100,000) of 1-64 KiB (uniform), 40 to a folder, folders nested
    three deep; two in three are text (slices of a generated French-like corpus, each made
    unique), one in three incompressible (like scanned images). Made once under --out.
  * system: a copy of a real system folder (--system, /usr/share: ~50,000 files, ~740 MB of
    documentation, locales, icons, scripts), copied once under --out so every run reads the
    same bytes.
For every tree, tool and run, on a fresh repository, page cache dropped before each step when
run as root: 1. initial backup  2. backup with nothing changed  3. full restore, compared byte
for byte with the source. Prints the medians of wall time, CPU time and peak RSS, and the
ratios Coffre/restic with the worst of the runs' ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Measure, drop_caches, identical, initialise, timed
from tools import TOOLS, ensure_installed, in_turn

STEPS = ("initial backup", "unchanged backup", "restore")
WORDS = ["ordonnance", "patient", "pharmacie", "médicament", "délivrance", "tiers", "payant", "mutuelle",
         "carte", "vitale", "posologie", "comprimé", "gélule", "sirop", "boîte", "lot", "péremption",
         "stock", "commande", "grossiste", "facture", "remboursement", "assurance", "maladie",
         "prescripteur", "docteur", "renouvellement", "générique"]


def make_generated(root: Path, files: int, seed: int) -> None:
    """--files files of 1-64 KiB in folders nested three deep, made once (.complete marks it)."""
    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(seed)  # noqa: S311 (test data, not secrets)
    corpus = " ".join(rnd.choice(WORDS) + (f" {rnd.randrange(10**6)}" if rnd.random() < 0.2 else "")
                      for _ in range(400_000)).encode()
    for i in range(files):
        folder = root / f"a{i // 16000:02d}" / f"b{i // 800 % 20:02d}" / f"c{i // 40 % 20:02d}"
        if i % 40 == 0:
            folder.mkdir(parents=True)
        size = rnd.randrange(1024, 65537)
        if i % 3 == 2:
            data = rnd.randbytes(size)
        else:
            start = rnd.randrange(len(corpus) - size)
            data = f"{i}\n".encode() + corpus[start:start + size - 16] + rnd.randbytes(8).hex().encode()
        (folder / (f"f{i:06d}.bin" if i % 3 == 2 else f"f{i:06d}.txt")).write_bytes(data[:size])
    (root / ".complete").write_text("")


def copy_system(source: Path, root: Path) -> None:
    """A private copy of a system folder (its regular files, links and folders), made once."""
    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--no-preserve=ownership", str(source), str(root / source.name)], check=True)
    (root / ".complete").write_text("")


def measure(tool_name: str, source: Path, home: Path, cold: bool) -> dict[str, Measure]:
    """One run of the steps in a fresh `home`, left in place: see `main` for why."""
    tool = TOOLS[tool_name](tool_name, home)
    initialise(tool)
    env = tool.env()
    out: dict[str, Measure] = {}

    def step(name: str, argv: list[str], cwd: Path) -> None:
        if cold:
            drop_caches()
        out[name] = timed(argv, env, cwd)

    step(STEPS[0], tool.backup_argv(source, 1), home)
    step(STEPS[1], tool.backup_argv(source, 2), home)
    target = home / "restored"
    argv, cwd = tool.restore_argv(target)
    step(STEPS[2], argv, cwd)
    if not identical(source, tool.restored_root(target, source)):
        sys.exit(f"{tool_name}: the restored tree differs from {source}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", default="generated,system", help="generated, system or both")
    ap.add_argument("--files", type=int, default=100_000, help="files in the generated tree")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--system", type=Path, default=Path("/usr/share"), help="the real tree to copy")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="coffre,restic")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108
    ap.add_argument("--out", type=Path, default=tmp / "pharmabench" / "smallfiles")
    args = ap.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    ensure_installed(tools)
    trees: dict[str, Path] = {}
    for name in [t for t in args.trees.split(",") if t]:
        if name == "generated":
            root = args.out / f"generated-{args.files}-seed{args.seed}"
            make_generated(root, args.files, args.seed)
        elif name == "system":
            root = args.out / f"system-{args.system.name}"
            copy_system(args.system, root)
        else:
            ap.error(f"unknown tree {name!r}: generated or system")
        trees[name] = root
    shutil.rmtree(args.out / "runs", ignore_errors=True)  # a previous run's, interrupted
    sizes = {tree: sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(root) for f in files)
             for tree, root in trees.items()}
    # Each tool's run keeps a restored copy and a repository (at most the tree's size again)
    # until the tree's runs are over (see below); a full disk would fail the run half-way.
    needed = max(sizes.values()) * 2 * len(tools) * args.runs * 1.1
    free = shutil.disk_usage(args.out).free
    if free < needed:
        sys.exit(f"{args.out} has {free / 1e9:.1f} GB free; the runs need ~{needed / 1e9:.1f} GB "
                 "(fewer --runs or --files, or another --out)")
    cold = not args.warm and drop_caches()
    print(f"{'cold' if cold else 'warm'} page cache; {args.runs} run(s); tools: {', '.join(tools)}",
          flush=True)
    try:
        compare(trees, sizes, tools, args.runs, args.out / "runs", cold)
    finally:
        shutil.rmtree(args.out / "runs", ignore_errors=True)  # also after a failed step
    return 0


def compare(trees: dict[str, Path], sizes: dict[str, int], tools: list[str], run_count: int, out: Path,
            cold: bool) -> None:
    """Every tool's runs on every tree, and the table of each tree."""
    for tree, root in trees.items():
        count = sum(len(files) for _, _, files in os.walk(root))
        print(f"\n{tree}: {count:,} files, {sizes[tree] / 1e6:.0f} MB ({root})", flush=True)
        runs: dict[str, list[dict[str, Measure]]] = {t: [] for t in tools}
        # Every run's repository and restored tree stay until all the runs are over (run.py,
        # KEEP_NOTE: ext4 without a journal skips recently deleted inodes when it creates
        # files): a restore of 100,000 files just after deleting the previous run's took twice
        # as much system time, whichever tool. All are deleted at the end, or when a step fails
        # (main checks the space they need).
        homes = out / tree
        for run in range(run_count):
            for t in in_turn(tools, run):
                runs[t].append(measure(t, root, homes / f"{t}-{run}", cold))
                done = runs[t][-1].items()
                print(f"  run {run + 1} {t}: " + ", ".join(f"{s} {m.wall:.2f}s" for s, m in done), flush=True)
        print(f"  {'step':<18}" + "".join(f"{t:>26}" for t in tools)
              + ("  coffre/restic median (worst)" if {"coffre", "restic"} <= set(tools) else ""))
        for step in STEPS:
            row = f"  {step:<18}"
            for t in tools:
                m = [r[step] for r in runs[t]]
                wall, cpu = statistics.median(x.wall for x in m), statistics.median(x.cpu for x in m)
                row += f"{wall:.2f}s {cpu:.1f}cpu {statistics.median(x.rss_mib for x in m):.0f}MiB".rjust(26)
            if {"coffre", "restic"} <= set(tools):
                pairs = zip(runs["coffre"], runs["restic"], strict=True)
                ratios = [c[step].wall / r[step].wall for c, r in pairs]
                row += f"  {statistics.median(ratios):.2f} ({max(ratios):.2f})"
            print(row, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
