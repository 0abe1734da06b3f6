"""Allocator and garbage collector tuning for a process that churns through chunk-sized
buffers and keeps large indexes and folder listings alive.

glibc serves allocations above 128 KiB with mmap and gives freed heap tops back to the kernel,
so every fresh 256 KiB chunk buffer costs page faults and zeroing: on this project's machine
that made AES-GCM 3x slower and restores spend half their time in the kernel
(../shared/reference/perf-baseline.md §7). Keeping freed buffers for reuse trades a few tens
of MiB of resident memory for it.

Python's cyclic collector runs a young-generation pass every 700 container objects allocated
and, every hundred of those, a full pass over every live object: the index (one entry per
blob) and the listings a restore holds. A restore of 55,000 files ran 800 passes (0.27 s, with
the interpreter lock held); an unchanged backup 0.21 s of its 1.7 s. Coffre makes few cycles
(reference counting frees the rest at once), so passes every COLLECT_EVERY objects cost a
few MiB at most and leave 20 passes (0.07 s) to that restore.
"""

from __future__ import annotations

import ctypes
import gc

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 32 * 1024 * 1024
TOP_PAD = 4 * 1024 * 1024
COLLECT_EVERY = 20_000  # young container objects between two passes (Python's default: 700)
OLDER_EVERY = 20  # young passes between two passes of the middle generation (default 10)


def tune_allocator() -> bool:
    """Ask glibc to keep freed buffers; False where there is no glibc (nothing changes).

    mallopt is looked up among the symbols the interpreter already has loaded (libc's, on
    Linux), not through ctypes.util.find_library: that one imports subprocess and tempfile and
    runs `ldconfig -p` at every start (~4 ms)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, TypeError, AttributeError):  # no dlopen(NULL) (Windows), no mallopt (musl, macOS)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )


def tune_collector() -> None:
    """Fewer cyclic garbage collector passes (the module's docstring says why)."""
    _young, _middle, old = gc.get_threshold()
    gc.set_threshold(COLLECT_EVERY, OLDER_EVERY, old)
