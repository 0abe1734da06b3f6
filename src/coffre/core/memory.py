"""Allocator tuning for a process that churns through chunk-sized buffers.

glibc serves allocations above 128 KiB with mmap and gives freed heap tops back to the kernel,
so every fresh 256 KiB chunk buffer costs page faults and zeroing: on this project's machine
that made AES-GCM 3x slower and restores spend half their time in the kernel
(../shared/reference/perf-baseline.md §7). Keeping freed buffers for reuse trades a few tens
of MiB of resident memory for it.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 32 * 1024 * 1024
TOP_PAD = 4 * 1024 * 1024


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
