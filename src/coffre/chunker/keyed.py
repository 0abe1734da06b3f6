"""A pyfastcdc FastCDC that cuts with a gear table of our own (format 2).

pyfastcdc takes no gear table, only a seed XORed into its own. Given a nonzero seed, its
compiled FastCDC copies `GEAR[i] ^ seed` and `GEAR_LS[i] ^ (seed << 1)` into two arrays it
allocates for the instance (`gear_holder`, `gear_holder_ls`) and points its config at them.
This module overwrites those two arrays with `T[i]` and `T[i] << 1` through ctypes, so the
compiled, GIL-free cut loop runs unchanged (measured: the same speed as the seeded one).

Nothing is written before the instance's layout is proven at run time, and the result is
checked before the instance is handed out:
- the object is the compiled class, pointers are 64-bit;
- exactly one place in the object holds its (avg, min, max) sizes, followed by the four
  masks FastCDC must use for them, then config.gear and config.gear_ls, equal to
  gear_holder and gear_holder_ls (two distinct, non-overlapping, aligned arrays);
- those arrays hold exactly pyfastcdc's pure-Python GEAR ^ seed and GEAR_LS ^ (seed << 1);
- after the write, both arrays read back as the new table and the rest of the object is
  unchanged;
- a small instance with the same table cuts a fixed 16 KiB exactly as `gear.reference_cut`.
Any difference raises GearTableError: a pyfastcdc other than the pinned 0.3.1 (pyproject.toml)
must be checked again, never trusted. The instance is private to its Chunker until all checks
pass, so nothing is ever cut with a half-installed table.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from typing import Any

from coffre.chunker.gear import MASK64, masks, reference_lengths
from coffre.core.errors import CoffreError
from coffre.core.i18n import _

# Any nonzero value below 2**63 makes pyfastcdc allocate the per-instance arrays; a value with
# many bits set makes the check that the arrays hold GEAR ^ seed tell them from GEAR itself.
ALLOC_SEED = 0x2545_F491_4F6C_DD1D
TABLE_BYTES = 256 * 8
_PYOBJECT_HEAD = 16  # ob_refcnt (changes as references come and go), ob_type
_PROBE_SIZES = (64, 256, 1024)  # min, avg, max of the self-check instance
_PROBE_DATA = b"".join(hashlib.sha256(b"coffre gear probe %d" % i).digest() for i in range(512))


class GearTableError(CoffreError):
    """The installed pyfastcdc cannot be given a keyed gear table safely."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            _("cannot install the keyed chunker table into pyfastcdc: {detail}").format(detail=detail),
            hint=_("this repository format needs pyfastcdc 0.3.1 with its compiled extension, "
                   "as pinned in Coffre's pyproject.toml; reinstall Coffre"),
        )


def _pack(values: Any) -> bytes:
    return struct.pack("=256Q", *values)


def _compiled_class() -> type:
    try:
        from pyfastcdc.cy.fastcdc import FastCDC
    except ImportError as e:
        raise GearTableError("its compiled extension does not load") from e
    return FastCDC  # type: ignore[no-any-return]


def _base_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    from pyfastcdc.py.constants import GEAR, GEAR_LS

    return tuple(GEAR), tuple(GEAR_LS)


def _masks_offset(raw: bytes, min_size: int, avg_size: int, max_size: int) -> int:
    """Where the masks are in an object's bytes: 8-aligned after its only (avg, min, max)."""
    sizes = struct.pack("=3I", avg_size, min_size, max_size)
    found = [p for p in range(_PYOBJECT_HEAD, len(raw) - 11, 4) if raw[p : p + 12] == sizes]
    if len(found) != 1:
        raise GearTableError(f"its chunk sizes are found {len(found)} times in the object, not once")
    m = (found[0] + 12 + 7) // 8 * 8
    if m + 64 > len(raw):
        raise GearTableError("the object is too small for the expected config")
    return m


def _check_pointers(gear: int, gear_ls: int, holder: int, holder_ls: int) -> None:
    if gear != holder or gear_ls != holder_ls:
        raise GearTableError("config.gear is not the instance's own table")
    if not holder or not holder_ls or holder % 8 or holder_ls % 8 or abs(holder - holder_ls) < TABLE_BYTES:
        raise GearTableError("the instance's tables are not two distinct aligned arrays")


def _locate(cdc: object, seed: int, min_size: int, avg_size: int, max_size: int,
            base_gear: tuple[int, ...], base_gear_ls: tuple[int, ...]) -> tuple[int, int, bytes]:
    """(address of gear_holder, of gear_holder_ls, the object's bytes) once proven."""
    if type(cdc) is not _compiled_class():
        raise GearTableError(f"not the compiled FastCDC class: {type(cdc)!r}")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise GearTableError("pointers are not 64-bit")
    raw = ctypes.string_at(id(cdc), type(cdc).__basicsize__)
    m = _masks_offset(raw, min_size, avg_size, max_size)
    mask_s, mask_l = masks(avg_size)
    expected_masks = (mask_s, mask_l, (mask_s << 1) & MASK64, (mask_l << 1) & MASK64)
    if struct.unpack_from("=4Q", raw, m) != expected_masks:
        raise GearTableError("the masks after the chunk sizes are not FastCDC's")
    gear, gear_ls, holder, holder_ls = struct.unpack_from("=4Q", raw, m + 32)
    _check_pointers(gear, gear_ls, holder, holder_ls)
    seed_ls = (seed << 1) & MASK64
    if ctypes.string_at(holder, TABLE_BYTES) != _pack(g ^ seed for g in base_gear):
        raise GearTableError("gear_holder does not hold GEAR ^ seed")
    if ctypes.string_at(holder_ls, TABLE_BYTES) != _pack(g ^ seed_ls for g in base_gear_ls):
        raise GearTableError("gear_holder_ls does not hold GEAR_LS ^ (seed << 1)")
    return holder, holder_ls, raw


def _install(cdc: object, table: tuple[int, ...], min_size: int, avg_size: int, max_size: int) -> None:
    base_gear, base_gear_ls = _base_tables()
    holder, holder_ls, raw = _locate(cdc, ALLOC_SEED, min_size, avg_size, max_size, base_gear, base_gear_ls)
    new, new_ls = _pack(table), _pack((t << 1) & MASK64 for t in table)
    ctypes.memmove(holder, new, TABLE_BYTES)
    ctypes.memmove(holder_ls, new_ls, TABLE_BYTES)
    if (
        ctypes.string_at(holder, TABLE_BYTES) != new
        or ctypes.string_at(holder_ls, TABLE_BYTES) != new_ls
        or ctypes.string_at(id(cdc) + _PYOBJECT_HEAD, len(raw) - _PYOBJECT_HEAD) != raw[_PYOBJECT_HEAD:]
    ):
        raise GearTableError("the table does not read back as written")


def _new(table: tuple[int, ...], min_size: int, avg_size: int, max_size: int) -> Any:
    cls = _compiled_class()
    cdc = cls(avg_size, min_size=min_size, max_size=max_size, seed=ALLOC_SEED)
    _install(cdc, table, min_size, avg_size, max_size)
    return cdc


def keyed_fastcdc(table: tuple[int, ...], min_size: int, avg_size: int, max_size: int) -> Any:
    """A pyfastcdc FastCDC (compiled) cutting with `table`, every check above passed."""
    if len(table) != 256 or not all(0 <= t <= MASK64 for t in table):
        raise ValueError("a gear table is 256 unsigned 64-bit integers")
    probe = _new(table, *_PROBE_SIZES)
    cuts = [c.length for c in probe.cut_buf(_PROBE_DATA)]
    if cuts != reference_lengths(_PROBE_DATA, table, *_PROBE_SIZES):
        raise GearTableError("a test instance does not cut where the table says")
    return _new(table, min_size, avg_size, max_size)
