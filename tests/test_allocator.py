"""The allocator tuning every command starts with (core/memory.py): freed chunk buffers are
kept for reuse instead of being handed back to the kernel and faulted in again."""

from __future__ import annotations

import subprocess
import sys

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
