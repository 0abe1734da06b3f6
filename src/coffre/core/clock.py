"""The clock. Code that needs "now" receives a Clock; tests pass a FixedClock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from coffre.core.errors import CoffreError


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """The machine's clock.

    Test-only switch: when the environment variable COFFRE_TEST_CLOCK_SHIFT_FILE is set, it
    names a file holding a number of seconds (a float, may be negative) added to the machine's
    time. The file is read again at each call, so a test can move a running process's clock
    (replace the file atomically: write a temporary file, then rename it). When the variable
    is unset, nothing is read."""

    def now_ns(self) -> int:
        shift_file = os.environ.get(SHIFT_FILE_ENV)
        if shift_file is None:
            return time.time_ns()
        return time.time_ns() + _shift_ns(shift_file)


SHIFT_FILE_ENV = "COFFRE_TEST_CLOCK_SHIFT_FILE"


def _shift_ns(path: str) -> int:
    """The test-only clock shift, in nanoseconds."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        seconds = Decimal(text)
        if not seconds.is_finite():
            raise ValueError(text)
        return int(seconds * 1_000_000_000)
    except (OSError, ValueError, ArithmeticError) as exc:
        raise CoffreError(f"{SHIFT_FILE_ENV}: cannot read a number of seconds from {path}",
                          "this switch is for the test suite only: unset it") from exc


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ns: int) -> None:
        self._now = now_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1e9)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CYCLE_S = 146_097 * 86_400  # the Gregorian calendar repeats every 400 years, to the second


def ns_to_datetime(ns: int) -> datetime:
    """Exact to the microsecond; a time beyond what datetime holds (years 1 to 9999) is
    clamped to its bounds."""
    try:
        return _EPOCH + timedelta(microseconds=ns // 1000)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if ns > 0 else datetime.min.replace(tzinfo=UTC)


def _fields(moment: datetime) -> tuple[int, int, int, int, int, int]:
    return moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second


def _utc_fields(seconds: int) -> tuple[int, int, int, int, int, int]:
    """The UTC calendar date and time of any second, years before 1 and after 9999 included
    (proleptic Gregorian, astronomical years: 0 is 1 BC), by whole 400-year cycles."""
    cycles, rest = divmod(seconds, _CYCLE_S)
    m = _EPOCH + timedelta(seconds=rest)
    return m.year + 400 * cycles, m.month, m.day, m.hour, m.minute, m.second


def _render(fields: tuple[int, int, int, int, int, int], sep: str) -> str:
    year, month, day, hour, minute, second = fields
    # ISO 8601: four digits, a sign beyond (expanded years).
    y = f"{year:04d}" if 0 <= year <= 9999 else f"{'+' if year > 0 else '-'}{abs(year):04d}"
    return f"{y}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"


def format_ns(ns: int) -> str:
    """Local-time rendering for people, to the second; in UTC (and saying so) for a time the
    local calendar cannot express (before year 1, after 9999)."""
    seconds = ns // 1_000_000_000
    try:
        return _render(_fields(datetime.fromtimestamp(seconds)), " ")
    except (OverflowError, OSError, ValueError):
        return _render(_utc_fields(seconds), " ") + " UTC"


def iso_ns(ns: int) -> str:
    """ISO 8601 in UTC, to the nanosecond, for any time."""
    secs, frac = divmod(ns, 1_000_000_000)
    return f"{_render(_utc_fields(secs), 'T')}.{frac:09d}Z"
