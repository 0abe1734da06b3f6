"""Schedules: when a job's runs are due, as a pure function of its schedule and of "now".

A schedule is plain values: ``times`` ("HH:MM" wall-clock times, in the zoneinfo zone
``tz``) on ``days`` ("mon".."sun"), and/or ``every`` (seconds). Its *slots* are the instants
(Unix seconds) a run is due at; every slot runs at most once, and any number of missed slots
collapse into one run (``due_slot``).

Daylight saving: each wall time gives exactly one slot a day. A time repeated when clocks go
back (02:30 on the last Sunday of October in Europe/Paris) is its first occurrence; a time
skipped when clocks go forward (02:30 on the last Sunday of March) runs once, at the first
instant after the gap (03:00). Times outside the changes (12:30) are not affected at all.

``every`` slots lie on a grid through an anchor, the job's last slot: anchor + k * every.
With both ``times`` and ``every`` the slots are the union of the two, the grid restarting at
each slot: the job runs at its times, and never more than ``every`` after its previous slot.

Nothing here reads a clock: "now" is a parameter, and a clock that went backwards (now before
the last slot) only means no slot is due until the next one after the last slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = 8  # days searched either side: a weekly schedule has a slot in any 7 consecutive days


@lru_cache(maxsize=64)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


@lru_cache(maxsize=256)
def _times(times: tuple[str, ...]) -> tuple[time, ...]:
    out = set()
    for text in times:
        hh, sep, mm = text.partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 1 <= len(hh) <= 2
                and int(hh) < 24 and int(mm) < 60):
            raise ValueError(f"not a time of day (HH:MM): {text!r}")
        out.add(time(int(hh), int(mm)))
    return tuple(sorted(out))


@lru_cache(maxsize=256)
def _weekdays(days: tuple[str, ...]) -> frozenset[int]:
    try:
        return frozenset(WEEKDAYS.index(d) for d in days)
    except ValueError:
        raise ValueError(f"not a day among {', '.join(WEEKDAYS)}: {days!r}") from None


def _wall_instant(day: date, at: time, tz: str) -> float:
    """The instant the wall clock shows ``day at``: its first occurrence when clocks go back,
    the end of the gap when clocks go forward and skip it."""
    zone = _zone(tz)
    wanted = datetime.combine(day, at)
    first = datetime.combine(day, at, tzinfo=zone).timestamp()  # fold=0: the first occurrence
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wanted:
        return first
    # In a gap: fold=0 reads the wall time with the offset before the change (an instant after
    # the gap), fold=1 with the one after (an instant before it). The first instant whose wall
    # time is not before the wanted one is where the gap ends.
    lo = math.floor(datetime.combine(day, at, tzinfo=zone).replace(fold=1).timestamp())
    hi = math.ceil(first)
    if lo >= hi:  # not a gap after all (a zone that defines no usable offsets around it)
        return first
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wanted:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _day_slots(day: date, times: tuple[str, ...], days: tuple[str, ...], tz: str) -> list[float]:
    if day.weekday() not in _weekdays(days):
        return []
    return sorted({_wall_instant(day, at, tz) for at in _times(times)})


def _local_day(t: float, tz: str) -> date:
    return datetime.fromtimestamp(t, _zone(tz)).date()


def _days_around(t: float, tz: str, step: int) -> Iterator[date]:
    start = _local_day(t, tz) - timedelta(days=step)  # one day of slack for odd zones
    for i in range(_SPAN + 2):
        yield start + timedelta(days=step * i)


def _clock_before(times: tuple[str, ...], days: tuple[str, ...], tz: str, t: float) -> float | None:
    if not times or not days:
        return None
    for day in _days_around(t, tz, -1):
        found = [s for s in _day_slots(day, times, days, tz) if s <= t]
        if found:
            return found[-1]
    return None


def _clock_after(times: tuple[str, ...], days: tuple[str, ...], tz: str, t: float) -> float | None:
    if not times or not days:
        return None
    for day in _days_around(t, tz, 1):
        found = [s for s in _day_slots(day, times, days, tz) if s > t]
        if found:
            return found[0]
    return None


def _grid_before(every: float, anchor: float, t: float) -> float:
    k = math.floor((t - anchor) / every)
    s = anchor + k * every
    return s - every if s > t else s  # float rounding


def _grid_after(every: float, anchor: float, t: float) -> float:
    s = _grid_before(every, anchor, t) + every
    return s + every if s <= t else s


def _check_every(every: float | None) -> float | None:
    if every is not None and not (every > 0 and math.isfinite(every)):
        raise ValueError(f"every must be a positive number of seconds: {every!r}")
    return every


def last_slot_before(times: Sequence[str], days: Sequence[str], every: float | None, tz: str,
                     t: float, *, anchor: float | None = None) -> float | None:
    """The latest slot at or before ``t``; None if the schedule has none (no times, no days,
    no ``every``). ``every`` slots lie on the grid through ``anchor`` (the job's last slot;
    without one, through the Unix epoch)."""
    every = _check_every(every)
    best = _clock_before(tuple(times), tuple(days), tz, t)
    if every is not None:
        g = _grid_before(every, 0.0 if anchor is None else anchor, t)
        best = g if best is None else max(best, g)
    return best


def next_run(times: Sequence[str], days: Sequence[str], every: float | None, tz: str,
             after: float, *, anchor: float | None = None) -> float | None:
    """The first slot strictly after ``after``; None if the schedule has none. ``every`` slots
    lie on the grid through ``anchor`` (default: ``after`` itself, so the next is
    ``after + every`` when ``after`` is the last slot)."""
    every = _check_every(every)
    best = _clock_after(tuple(times), tuple(days), tz, after)
    if every is not None:
        g = _grid_after(every, after if anchor is None else anchor, after)
        best = g if best is None else min(best, g)
    return best


def due_slot(times: Sequence[str], days: Sequence[str], every: float | None, tz: str,
             last_slot: float | None, now: float) -> float | None:
    """The slot a job must run for now: the latest slot s with ``last_slot < s <= now``, so
    that slots missed while the agent was off give one run, not one each; None when none is
    due. A job that never ran (``last_slot`` None) is due at once: ``now``. When the clock went
    backwards (``now < last_slot``) nothing is due until the first slot after ``last_slot``.
    The caller records the returned slot as the job's new ``last_slot`` once it ran."""
    if last_slot is None:
        return now
    s = last_slot_before(times, days, every, tz, now, anchor=last_slot)
    return s if s is not None and s > last_slot else None


def wall_instant(day: date, at: str, tz: str) -> float:
    """The slot the wall time ``at`` ("HH:MM") of ``day`` gives in ``tz`` (see the module note
    on daylight saving)."""
    return _wall_instant(day, _times((at,))[0], tz)


__all__ = ["WEEKDAYS", "due_slot", "last_slot_before", "next_run", "wall_instant"]
