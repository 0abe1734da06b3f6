"""One grammar for sizes and rates typed by a person (`--max-size`, `--max-repack-size`,
`--limit-upload`, `--limit-download`).

A size is a number and a unit, case-insensitive, with an optional space and decimals:

    B                     bytes
    KiB MiB GiB TiB       powers of 1024 (K M G T alone mean the same, as in restic)
    KB  MB  GB  TB        powers of 1000

    500MiB   1.5GiB   2 TB   300kb   4096B

A bare number is refused ("500 what? e.g. 500MiB"): `--max-size 500` meaning 500 bytes
removed snapshots in a dry run that asked for 500 GiB. Zero needs no unit.

A rate is a size per second, `/s` optional: `512KiB/s`, `1GiB/s`, `2MB`, or `unlimited`.
For compatibility with scripts written for Coffre 0.2, a bare number is still read as KiB/s,
with a warning that it will become an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

from coffre.core.errors import UsageError
from coffre.core.i18n import _

UNITS: dict[str, int] = {
    "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)\s*(/\s*s)?", re.IGNORECASE)
UNLIMITED = ("unlimited", "none", "0")


class SizeError(UsageError, ValueError):
    """A size or rate that cannot be read: a usage error (exit 2), and a ValueError for the
    callers that parse sizes outside the command line."""


def _units_hint() -> str:
    return _("units: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), "
             "e.g. 500MiB or 1.5GiB")


def _label(option: str | None, text: str) -> str:
    return f"{option} {text}" if option else repr(text)


def parse_size(text: str, option: str | None = None) -> int:
    """Bytes for a size such as `500MiB`, `1.5 GB` or `0`; a SizeError naming `option` for
    anything else, a bare number included. Fractions of a byte are dropped."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise SizeError(_("{what}: not a size").format(what=_label(option, text)), _units_hint())
    number, unit = m.group(1), m.group(2).lower()
    if not unit:
        if Fraction(number) == 0:
            return 0
        raise SizeError(_("{what}: {number} what? e.g. {number}MiB").format(
            what=_label(option, text), number=number), _units_hint())
    if unit not in UNITS:
        raise SizeError(_("{what}: unknown unit {unit!r}").format(what=_label(option, text), unit=m.group(2)),
                        _units_hint())
    return int(Fraction(number) * UNITS[unit])


def parse_rate(text: str, option: str | None = None,
               warn: Callable[[str], None] | None = None) -> float | None:
    """Bytes per second for a rate such as `512KiB/s` or `2MB` (`/s` optional), None for
    `unlimited` (or `none`, `0`). A bare number is KiB/s, said through `warn` as deprecated."""
    stripped = text.strip()
    if stripped.lower() in UNLIMITED:
        return None
    m = _RATE.fullmatch(stripped)
    hint = _("give a rate with a unit, e.g. 512KiB/s, 2MiB/s or 1GiB/s, or 'unlimited'")
    if m is None:
        raise SizeError(_("{what}: not a rate").format(what=_label(option, text)), hint)
    number, unit = m.group(1), m.group(2).lower()
    if not unit:
        if m.group(3):
            raise SizeError(_("{what}: {number} what per second? e.g. {number}KiB/s").format(
                what=_label(option, text), number=number), hint)
        if warn is not None:
            warn(_("{what}: a rate without a unit is read as {number}KiB/s; write {number}KiB/s "
                   "(a bare number will be refused in a future version)").format(
                what=_label(option, text), number=number))
        unit = "kib"
    if unit not in UNITS:
        raise SizeError(_("{what}: unknown unit {unit!r}").format(what=_label(option, text), unit=m.group(2)),
                        hint)
    rate = float(Fraction(number) * UNITS[unit])
    if rate <= 0:
        return None
    return rate
