"""Bandwidth limits, so a backup does not choke a pharmacy's connection during opening hours.

A limit is a rate or a schedule of rates by time of day (local time):

    512                                 512 KiB/s at all times
    2MiB                                2 MiB/s
    08:30-19:30=512KiB,*=unlimited      512 KiB/s during opening hours, no limit otherwise
    12:00-14:00=2MiB,08:00-20:00=256KiB,*=unlimited     the first matching range wins

The remote backends pass every block they send or receive through a Pacer (a token bucket
refilled at the rate in force), so the limit holds during a transfer, not only on average
over whole objects. The clock and the pause are injected: tests do not wait.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from coffre.core.errors import UsageError
from coffre.core.i18n import _

BLOCK = 64 * 1024  # the largest piece a Pacer lets through at once
_UNITS = {"": 1024, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:/s)?\s*$", re.IGNORECASE)
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    start_min: int  # minutes after midnight
    end_min: int  # may be smaller than start: the window spans midnight
    rate: float | None  # bytes per second; None = unlimited

    def contains(self, minute: int) -> bool:
        if self.start_min <= self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...]
    default: float | None

    def rate_at(self, when: datetime) -> float | None:
        minute = when.hour * 60 + when.minute
        for w in self.windows:
            if w.contains(minute):
                return w.rate
        return self.default


def _rate(text: str, spec: str) -> float | None:
    if text.strip().lower() in ("unlimited", "none", "0"):
        return None
    m = _RATE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise UsageError(_("invalid rate {rate} in the limit {limit}").format(
            rate=repr(text), limit=repr(spec)),
                         _("give KiB/s as a number, or with a unit: 512KiB, 2MiB, or 'unlimited'"))
    return float(m.group(1)) * _UNITS[unit]


def parse_limit(spec: str) -> Schedule:
    """A rate or a schedule (see the module's docstring); a clear error for anything else."""
    if "=" not in spec:
        return Schedule((), _rate(spec, spec))
    windows: list[Window] = []
    default: float | None = None
    for part in spec.split(","):
        when, sep, rate_text = part.partition("=")
        if not sep:
            raise UsageError(_("{part} in the limit {limit} has no '='").format(
                part=repr(part), limit=repr(spec)),
                             _("write ranges as HH:MM-HH:MM=RATE and the rest as *=RATE"))
        if when.strip() == "*":
            default = _rate(rate_text, spec)
            continue
        m = _RANGE.match(when)
        if not m:
            raise UsageError(_("invalid time range {range} in the limit {limit}").format(
                range=repr(when.strip()), limit=repr(spec)),
                _("write it as HH:MM-HH:MM, for example 08:30-19:30"))
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise UsageError(_("invalid time in {range} in the limit {limit}").format(
                range=repr(when.strip()), limit=repr(spec)))
        windows.append(Window(h1 * 60 + m1, h2 * 60 + m2, _rate(rate_text, spec)))
    return Schedule(tuple(windows), default)


class Pacer:
    """Lets bytes through at the rate the schedule gives for the current time; shared by
    every thread of one direction (upload or download)."""

    def __init__(
        self,
        schedule: Schedule,
        now: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.schedule = schedule
        self.now, self.monotonic, self.sleep = now, monotonic, sleep
        self._lock = threading.Lock()
        self._allowed_at = monotonic()  # when the next byte may go

    def take(self, n: int) -> None:
        while n > 0:
            piece = min(n, BLOCK)
            n -= piece
            rate = self.schedule.rate_at(self.now())
            if rate is None:
                continue
            with self._lock:
                now = self.monotonic()
                # A burst of at most half a second is allowed after an idle time.
                start = max(self._allowed_at, now - 0.5)
                self._allowed_at = start + piece / rate
                wait = self._allowed_at - now
            if wait > 0:
                self.sleep(wait)
