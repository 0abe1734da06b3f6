"""The keyed gear table of format 2 and a reference FastCDC cut function.

Format 1 cuts with pyfastcdc's built-in gear table XOR a 63-bit seed; the attacks of IACR
ePrint 2025/532 and 2025/558 recover such a seed from chunk lengths. Format 2 draws every
entry of the table from a keyed PRF instead (docs/design.md §3, "Keyed gear table"):

    table = HKDF-SHA256(IKM = gear_key (32 bytes), salt = none (32 zero bytes, RFC 5869),
                        info = b"coffre chunker gear table v2", L = 2048 bytes)
    T[i]  = unsigned 64-bit little-endian integer of table[8*i : 8*i + 8], i = 0 .. 255

`reference_cut` is FastCDC 2020 as pyfastcdc 0.3.1 (a port of fastcdc-rs v2020) computes it,
written byte by byte in plain Python: the specification of where a chunk ends, and the
check that an installed table really cuts where it should (slow: tests and self-checks only).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GEAR_KEY_LEN = 32
GEAR_TABLE_INFO = b"coffre chunker gear table v2"
MASK64 = (1 << 64) - 1

# FastCDC's normalisation masks by log2 of the average size (pyfastcdc 0.3.1 constants.py,
# the same as fastcdc-rs v2020), with normalisation level 1: small mask below the average,
# large mask above it.
MASKS = (
    0, 0, 0, 0, 0,
    0x0000000001804110, 0x0000000001803110, 0x0000000018035100, 0x0000001800035300,
    0x0000019000353000, 0x0000590003530000, 0x0000D90003530000, 0x0000D90103530000,
    0x0000D90303530000, 0x0000D90313530000, 0x0000D90F03530000, 0x0000D90303537000,
    0x0000D90703537000, 0x0000D90707537000, 0x0000D91707537000, 0x0000D91747537000,
    0x0000D91767537000, 0x0000D93767537000, 0x0000D93777537000, 0x0000D93777577000,
    0x0000DB3777577000,
)
NORMALIZATION = 1


def gear_table(key: bytes) -> tuple[int, ...]:
    """The 256 unsigned 64-bit gear values derived from `key` (module docstring)."""
    if len(key) != GEAR_KEY_LEN:
        raise ValueError(f"the gear key must be {GEAR_KEY_LEN} bytes")
    raw = HKDF(algorithm=hashes.SHA256(), length=256 * 8, salt=None, info=GEAR_TABLE_INFO).derive(key)
    return tuple(int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(256))


def log2_rounded(value: int) -> int:
    """round(log2(value)) as fastcdc-rs computes it, exactly, for the positive integers."""
    # 2**k * sqrt(2) is irrational, so value rounds up iff value**2 > 2**(2k+1).
    k = value.bit_length() - 1
    return k + 1 if value * value > 1 << (2 * k + 1) else k


def masks(avg_size: int) -> tuple[int, int]:
    """(mask below the average size, mask above it)."""
    bits = log2_rounded(avg_size)
    return MASKS[bits + NORMALIZATION], MASKS[bits - NORMALIZATION]


def reference_cut(data: bytes | memoryview, table: tuple[int, ...], min_size: int, avg_size: int,
                  max_size: int) -> int:
    """Length of the chunk that starts at data[0] (data holds the rest of the stream, or at
    least max_size bytes of it).

    The hash starts at 0 at offset min_size rounded down to even; after byte k is added
    (h = 2h + T[byte] mod 2**64) the chunk is cut before that byte, i.e. its length is k, when
    h & mask == 0, the small mask while k is below the average size (rounded down to even),
    the large one after; at the end (max_size, or the data, rounded down to even) the chunk
    is cut at max_size or at the end of the data. 2020's two-bytes-per-step form computes the
    same thing."""
    remaining = len(data)
    if remaining <= min_size:
        return remaining
    center = avg_size
    if remaining > max_size:
        remaining = max_size
    elif remaining < center:
        center = remaining
    mask_s, mask_l = masks(avg_size)
    mid, end = center // 2 * 2, remaining // 2 * 2
    h = 0
    for k in range(min_size // 2 * 2, end):
        h = ((h << 1) + table[data[k]]) & MASK64
        if h & (mask_s if k < mid else mask_l) == 0:
            return k
    return remaining


def reference_lengths(data: bytes, table: tuple[int, ...], min_size: int, avg_size: int,
                      max_size: int) -> list[int]:
    """The lengths of all the chunks of `data` (reference_cut applied from each cut)."""
    view, lengths, offset = memoryview(data), [], 0
    while offset < len(data):
        n = reference_cut(view[offset:], table, min_size, avg_size, max_size)
        lengths.append(n)
        offset += n
    return lengths
