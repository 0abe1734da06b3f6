"""Chunking speed with the format-2 keyed gear table against today's seeded pyfastcdc.

    .venv/bin/python bench/gear_speed.py                       # 512 MiB of random bytes, 3 runs
    .venv/bin/python bench/gear_speed.py --mib 64 --runs 5 --tree "$TMPDIR/pharmabench/pristine-small"

Variants (Coffre's sizes: min 64 KiB, avg 256 KiB, max 1 MiB), each in MB/s (10^6 B/s), median:
- seeded:  pyfastcdc (compiled) with a seed, as format 1 cuts (cut_buf over the buffer);
- keyed-a: the same class with a keyed table installed by chunker/keyed.py;
- chunker-seeded / chunker-keyed: Coffre's Chunker.chunks over a BytesIO (the stream path,
  each chunk copied out to bytes), without and with a gear key;
- c-ext-b: the same cut loop in C compiled here with `cc -O3` and called through ctypes, one
  call per chunk (what an extension of our own would do); skipped without a C compiler;
- pure-c:  pyfastcdc's pure-Python FastCDC with the keyed table swapped in (--pure-mib only).
With --threads, also two threads cutting at once (aggregate MB/s: ~2x if the GIL is released).
With --tree, also the files of a real-looking tree, read into memory first, cut one by one.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import random
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyfastcdc.cy.fastcdc import FastCDC
from pyfastcdc.py.fastcdc import FastCDC as PyFastCDC

from coffre.chunker import Chunker, ChunkerParams
from coffre.chunker.gear import MASK64, gear_table, masks
from coffre.chunker.keyed import keyed_fastcdc

MIN, AVG, MAX = 64 * 1024, 256 * 1024, 1024 * 1024
SEED = 0x1234_5678_9ABC_DEF
KEY = bytes(range(32))

C_SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
size_t cut(const uint8_t *buf, size_t len, const uint64_t *gear, const uint64_t *gear_ls,
           uint64_t min_size, uint64_t avg_size, uint64_t max_size,
           uint64_t mask_s, uint64_t mask_l) {
    uint64_t remaining = len, center = avg_size, h = 0, pos;
    if (remaining <= min_size) return remaining;
    if (remaining > max_size) remaining = max_size;
    else if (remaining < center) center = remaining;
    uint64_t mask_s_ls = mask_s << 1, mask_l_ls = mask_l << 1;
    uint64_t start = min_size / 2 * 2, mid = center / 2 * 2, end = remaining / 2 * 2;
    for (pos = start; pos < mid; pos += 2) {
        h = (h << 2) + gear_ls[buf[pos]];
        if (!(h & mask_s_ls)) return pos;
        h += gear[buf[pos + 1]];
        if (!(h & mask_s)) return pos + 1;
    }
    for (pos = mid; pos < end; pos += 2) {
        h = (h << 2) + gear_ls[buf[pos]];
        if (!(h & mask_l_ls)) return pos;
        h += gear[buf[pos + 1]];
        if (!(h & mask_l)) return pos + 1;
    }
    return remaining;
}
"""


def c_cutter(table: tuple[int, ...], tmp: Path) -> Callable[[bytes], int] | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    (tmp / "cut.c").write_text(C_SOURCE)
    subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", str(tmp / "cut.so"), str(tmp / "cut.c")], check=True)
    lib = ctypes.CDLL(str(tmp / "cut.so"))  # ctypes releases the GIL during the call
    u64, p = ctypes.c_uint64, ctypes.c_void_p
    lib.cut.restype = ctypes.c_size_t
    lib.cut.argtypes = [p, ctypes.c_size_t, p, p, u64, u64, u64, u64, u64]
    gear = (u64 * 256)(*table)
    gear_ls = (u64 * 256)(*((t << 1) & MASK64 for t in table))
    mask_s, mask_l = masks(AVG)

    def run(data: bytes) -> int:
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        offset, n = 0, 0
        while offset < len(data):
            offset += lib.cut(base + offset, len(data) - offset, gear, gear_ls, MIN, AVG, MAX, mask_s, mask_l)
            n += 1
        return n

    return run


def cut_buf(cdc: object) -> Callable[[bytes], int]:
    return lambda data: sum(1 for _ in cdc.cut_buf(data))  # type: ignore[attr-defined]


def chunker(c: Chunker) -> Callable[[bytes], int]:
    return lambda data: sum(1 for _ in c.chunks(io.BytesIO(data)))


def timed(fn: Callable[[bytes], int], blobs: list[bytes]) -> tuple[float, int]:
    t = time.perf_counter()
    n = sum(fn(b) for b in blobs)
    return time.perf_counter() - t, n


def two_threads(fn: Callable[[bytes], int], blobs: list[bytes]) -> tuple[float, int]:
    """Both threads cut the whole set: the time for twice the bytes."""
    out = [0, 0]

    def work(i: int) -> None:
        out[i] = sum(fn(b) for b in blobs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.perf_counter() - t) / 2, out[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pure-mib", type=int, default=8)
    ap.add_argument("--tree", type=Path)
    ap.add_argument("--threads", action="store_true", help="also 2 threads at once (GIL release)")
    args = ap.parse_args()

    table = gear_table(KEY)
    params = ChunkerParams(MIN, AVG, MAX)
    variants: dict[str, Callable[[bytes], int]] = {
        "seeded": cut_buf(FastCDC(AVG, min_size=MIN, max_size=MAX, seed=SEED)),
        "keyed-a": cut_buf(keyed_fastcdc(table, MIN, AVG, MAX)),
        "chunker-seeded": chunker(Chunker(params, SEED)),
        "chunker-keyed": chunker(Chunker(params, SEED, gear_key=KEY)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        c = c_cutter(table, Path(tmp))
        if c is not None:
            variants["c-ext-b"] = c
        rng = random.Random(0)  # noqa: S311 (reproducible data; randbytes takes < 2**31 bits at once)
        data = b"".join(rng.randbytes(1 << 20) for _ in range(args.mib))
        sets = {f"random {args.mib} MiB": [data]}
        if args.tree:
            files = sorted(p for p in args.tree.rglob("*") if p.is_file() and not p.is_symlink())
            sets[f"tree {args.tree.name}"] = [p.read_bytes() for p in files]
        if args.threads:
            sets["2 threads, random"] = [data]
        for label, blobs in sets.items():
            run = two_threads if label.startswith("2 threads") else timed
            total = sum(len(b) for b in blobs)
            times: dict[str, list[float]] = {v: [] for v in variants}
            counts: dict[str, int] = {}
            names = list(variants)
            for r in range(args.runs):
                # Interleaved, in a rotated order each run: noise and order effects spread evenly.
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    dt, counts[name] = run(variants[name], blobs)
                    times[name].append(dt)
            print(f"{label}: {total / 1e6:.0f} MB in {len(blobs)} buffers, median of {args.runs} runs")
            for name, ts in times.items():
                mbs = [total / t / 1e6 for t in ts]
                print(f"  {name:15s} {statistics.median(mbs):8.0f} MB/s  (runs: "
                      f"{', '.join(f'{x:.0f}' for x in mbs)}; {counts[name]} chunks)")

        pure = PyFastCDC(AVG, min_size=MIN, max_size=MAX, seed=SEED)
        pure.config.gear = struct.unpack("=256Q", struct.pack("=256Q", *table))
        pure.config.gear_ls = tuple((t << 1) & MASK64 for t in table)
        small = data[: args.pure_mib << 20]
        ts = [timed(cut_buf(pure), [small])[0] for _ in range(args.runs)]
        mbs = [len(small) / t / 1e6 for t in ts]
        print(f"  pure-c ({args.pure_mib} MiB) {statistics.median(mbs):8.1f} MB/s  (runs: "
              f"{', '.join(f'{x:.1f}' for x in mbs)})")


if __name__ == "__main__":
    main()
