"""The per-module table of a mutation run (`./run mutation`), read from mutmut's results in
mutants/, and the mutants that are still alive.

    python tests/mutation_report.py               the table and the names of the survivors
    python tests/mutation_report.py --sample N    N names drawn per module among the mutants
                                                  not checked yet (seeded: the same draw
                                                  each time), to pass to `./run mutation`
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ["killed", "caught by type check", "timeout", "survived", "no tests", "suspicious",
           "segfault", "not checked"]
HEADINGS = ["killed", "mypy", "timeout", "survived", "no tests", "suspicious", "segfault",
            "unchecked"]


def results() -> dict[str, dict[str, int | None]]:
    """Exit code of each mutant, by module."""
    found = {}
    for meta in sorted(Path("mutants/src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            found[str(meta.relative_to("mutants/src"))[: -len(".py.meta")]] = codes
    return found


def table(found: dict[str, dict[str, int | None]]) -> None:
    total: Counter[str] = Counter()
    alive: list[str] = []
    print(f"{'module':30} {'mutants':>7} " + " ".join(f"{c:>9}" for c in HEADINGS) + "  kill rate")
    for module, codes in found.items():
        row = Counter(status_by_exit_code[code] for code in codes.values())
        alive += [name for name, code in codes.items()
                  if status_by_exit_code[code] in ("survived", "no tests", "suspicious")]
        total += row
        total["mutants"] += len(codes)
        print(_line(module, row, len(codes)))
    print(_line("total", total, total.pop("mutants")))
    print("\nkill rate: (killed + caught by mypy + timeout) / mutants checked;"
          " `mutmut show NAME` shows a mutant")
    for name in sorted(alive):
        print("alive:", name)


def _line(module: str, row: Counter[str], mutants: int) -> str:
    checked = mutants - row["not checked"] - row["skipped"]
    caught = row["killed"] + row["caught by type check"] + row["timeout"]
    rate = f"{100 * caught / checked:8.1f}%" if checked else "        -"
    return f"{module:30} {mutants:>7} " + " ".join(f"{row[c]:>9}" for c in COLUMNS) + f"  {rate}"


def sample(found: dict[str, dict[str, int | None]], per_module: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    for codes in found.values():
        unchecked = sorted(name for name, code in codes.items() if code is None)
        names += sorted(rng.sample(unchecked, min(per_module, len(unchecked))))
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, metavar="N")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    found = results()
    if not found:
        print("no mutation results in mutants/: run ./run mutation first", file=sys.stderr)
        return 1
    if args.sample:
        print("\n".join(sample(found, args.sample, args.seed)))
    else:
        table(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
