"""Bandwidth limits, so a backup does not choke a pharmacy's connection during opening hours.

A limit is a rate or a schedule of rates by time of day (local time):

    512KiB/s                                512 KiB/s at all times (`/s` is optional)
    2MiB/s                                  2 MiB/s
    08:30-19:30=512KiB/s,*=unlimited        512 KiB/s during opening hours, no limit otherwise
    12:00-14:00=2MiB/s,08:00-20:00=256KiB/s,*=unlimited   the first matching range wins

Rates follow the one size grammar of `coffre.core.sizes` (KiB MiB GiB TiB, KB MB GB TB); a
bare number is still read as KiB/s, with a warning that it will become an error.

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
from coffre.core.sizes import SizeError, parse_rate

BLOCK = 64 * 1024  # the largest piece a Pacer lets through at once
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


def _rate(text: str, spec: str, option: str, warn: Callable[[str], None] | None) -> float | None:
    if text == spec:
        return parse_rate(text, option, warn)
    try:
        return parse_rate(text, warn=warn)
    except SizeError as exc:
        raise UsageError(_("{option}: in the limit {spec!r}: {problem}").format(
            option=option, spec=spec, problem=exc.message), exc.hint) from None


def parse_limit(spec: str, option: str = "--limit-upload",
                warn: Callable[[str], None] | None = None) -> Schedule:
    """A rate or a schedule (see the module's docstring); a clear error naming `option` for
    anything else. `warn` hears about deprecated forms (a rate without a unit)."""
    if "=" not in spec:
        return Schedule((), _rate(spec, spec, option, warn))
    windows: list[Window] = []
    default: float | None = None
    for part in spec.split(","):
        when, sep, rate_text = part.partition("=")
        if not sep:
            raise UsageError(_("{option}: {part!r} in the limit {spec!r} has no '='").format(
                option=option, part=part, spec=spec),
                _("write ranges as HH:MM-HH:MM=RATE and the rest as *=RATE"))
        if when.strip() == "*":
            default = _rate(rate_text, spec, option, warn)
            continue
        m = _RANGE.match(when)
        if not m:
            raise UsageError(_("{option}: invalid time range {range!r} in the limit {spec!r}").format(
                option=option, range=when.strip(), spec=spec),
                _("write it as HH:MM-HH:MM, for example 08:30-19:30"))
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise UsageError(_("{option}: invalid time in {range!r} in the limit {spec!r}").format(
                option=option, range=when.strip(), spec=spec))
        windows.append(Window(h1 * 60 + m1, h2 * 60 + m2, _rate(rate_text, spec, option, warn)))
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
