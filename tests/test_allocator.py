"""The memory tuning every command starts with (core/memory.py): freed chunk buffers are
kept for reuse instead of being handed back to the kernel and faulted in again, and the cyclic
garbage collector does not walk the live objects again and again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Coffre

# Run in a fresh interpreter: what it imports, and the allocator's state, are the process's own.
# Rounds of chunk-sized buffers are made and freed, as a restore's workers do. Tuned, the next
# round reuses the memory the last one freed: no page is faulted in again. glibc's default
# hands the freed heap top back to the kernel, and every round faults its pages in anew
# (~240 faults a round here).
PROBE = """
import resource, sys
from coffre.core.memory import tune_allocator
tuned = tune_allocator()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

for _ in range(5):  # warm up: the heap grows once
    buffers = [bytes(1024 * 1024) for _ in range(8)]
    del buffers
before = faults()
for _ in range(100):
    buffers = [bytes(1024 * 1024) for _ in range(8)]
    del buffers
unwanted = sorted(m for m in ("subprocess", "tempfile", "ctypes.util") if m in sys.modules)
print(tuned, (faults() - before) // 100, unwanted)
"""


def test_freed_chunk_buffers_are_reused_and_the_tuning_costs_no_subprocess() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    tuned, faults_a_round, imported = out.stdout.split(" ", 2)
    assert tuned == "True"  # Linux with glibc, as in CI: mallopt was found and took the values
    assert int(faults_a_round) < 8, f"{faults_a_round} faults a round: freed buffers went back to the kernel"
    # ctypes.util.find_library would import these and run `ldconfig -p` at every start.
    assert imported.strip() == "[]"


# A restore through the command line, in a fresh interpreter, counting the cyclic garbage
# collector's passes (gc.callbacks) and the full ones among them.
RESTORE_COUNTING_PASSES = """
import gc, sys
from coffre.cli.main import main
passes = [0, 0, 0]
gc.callbacks.append(lambda phase, info: phase == "start" and passes.__setitem__(
    info["generation"], passes[info["generation"]] + 1))
code = main(sys.argv[1:])
print("passes", code, *passes)
"""


def test_a_restore_of_many_small_files_runs_few_garbage_collector_passes(repo: Coffre,
                                                                         tmp_path: Path) -> None:
    """Each full pass walks every live object (the index, the listings held): with Python's
    defaults a restore of 55,000 files ran ~800 passes, six of them full (0.27 s)."""
    src = tmp_path / "ordonnances"
    for folder in range(60):
        (src / f"patient-{folder:02d}").mkdir(parents=True)
        for i in range(50):
            (src / f"patient-{folder:02d}" / f"scan-{i:02d}.txt").write_text(f"{folder} {i}\n")
    repo.ok("backup", str(src))
    argv = repo.argv("restore", "latest", "--target", str(tmp_path / "restored"))[3:]
    out = subprocess.run([sys.executable, "-c", RESTORE_COUNTING_PASSES, *argv], capture_output=True,
                         text=True, env=repo.env, check=True)
    code, young, middle, full = map(int, out.stdout.splitlines()[-1].split()[1:])
    assert code == 0, out.stderr
    assert len(list((tmp_path / "restored").rglob("scan-*.txt"))) == 3000
    assert young < 10 and middle <= 1 and full == 0, (young, middle, full)
