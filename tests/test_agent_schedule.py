"""Schedules over simulated weeks: an injected clock steps through days (daylight-saving
changes in Europe/Paris included) and the agent's rule "run the due slot, remember it" must
run each slot exactly once, collapse missed ones, and survive a clock that jumps backwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.policy import due_slot, last_slot_before, next_run
from coffre.policy.schedule import WEEKDAYS, wall_instant

PARIS = "Europe/Paris"
Z = ZoneInfo(PARIS)
PHARMACY = ("12:30", "19:30")
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=Z, fold=fold).timestamp()


def local(t: float) -> datetime:
    return datetime.fromtimestamp(t, Z)


def agent(clock: Iterable[float], times: tuple[str, ...] = PHARMACY, days: tuple[str, ...] = WEEKDAYS,
          every: float | None = None, last_slot: float | None = None) -> list[tuple[float, float]]:
    """The scheduler's loop, reduced to its decision: (when it ran, the slot it answered)."""
    runs = []
    for now in clock:
        slot = due_slot(times, days, every, PARIS, last_slot, now)
        if slot is not None:
            runs.append((now, slot))
            last_slot = slot
    return runs


def minutes(start: float, end: float) -> list[float]:
    return [start + MINUTE * i for i in range(int((end - start) // MINUTE) + 1)]


@pytest.mark.parametrize("change", [date(2026, 3, 29), date(2026, 10, 25)], ids=["spring", "autumn"])
def test_twice_a_day_over_three_weeks_around_a_daylight_saving_change(change: date) -> None:
    start = at(change.year, change.month, change.day) - 10 * DAY
    end = start + 21 * DAY
    runs = agent(minutes(start, end), last_slot=last_slot_before(PHARMACY, WEEKDAYS, None, PARIS, start))
    per_day = Counter(local(now).date() for now, _slot in runs)
    assert len(per_day) == 21 and set(per_day.values()) == {2}
    assert per_day[change] == 2
    # On time, at the wall-clock times, on the changing day as on the others.
    assert {(local(now).hour, local(now).minute) for now, _ in runs} == {(12, 30), (19, 30)}
    assert all(now == slot for now, slot in runs)


def test_a_time_in_the_spring_gap_runs_once_at_the_end_of_the_gap() -> None:
    start, end = at(2026, 3, 27), at(2026, 4, 1)
    runs = agent(minutes(start, end), times=("02:30",), last_slot=start)
    on_change = [now for now, _ in runs if local(now).date() == date(2026, 3, 29)]
    assert [local(t).strftime("%H:%M %z") for t in on_change] == ["03:00 +0200"]
    assert len(runs) == 5  # the 27th to the 31st
    assert wall_instant(date(2026, 3, 29), "02:30", PARIS) == at(2026, 3, 29, 3, 0)


def test_a_time_in_the_repeated_autumn_hour_runs_once_at_its_first_occurrence() -> None:
    start, end = at(2026, 10, 24), at(2026, 10, 27)
    runs = agent(minutes(start, end), times=("02:30",), last_slot=start)
    on_change = [now for now, _ in runs if local(now).date() == date(2026, 10, 25)]
    assert on_change == [at(2026, 10, 25, 2, 30, fold=0)]
    assert local(on_change[0]).strftime("%z") == "+0200"  # before the clocks went back
    # The wall clock shows 02:30 again an hour later: nothing runs then.
    assert at(2026, 10, 25, 2, 30, fold=1) - on_change[0] == HOUR
    assert len(runs) == 3


def test_missed_slots_while_the_agent_was_off_give_one_run_at_start() -> None:
    start = at(2026, 5, 4)  # a Monday
    clock = [t for t in minutes(start, start + 4 * DAY)
             if not at(2026, 5, 4, 12) <= t < at(2026, 5, 5, 21)]  # off over four slots
    runs = agent(clock, last_slot=last_slot_before(PHARMACY, WEEKDAYS, None, PARIS, start))
    catch_up = [(now, slot) for now, slot in runs if now == at(2026, 5, 5, 21)]
    assert catch_up == [(at(2026, 5, 5, 21), at(2026, 5, 5, 19, 30))]  # the latest missed slot
    assert [local(now).strftime("%d %H:%M") for now, _ in runs] == [
        "05 21:00", "06 12:30", "06 19:30", "07 12:30", "07 19:30"]


def test_a_job_that_never_ran_runs_at_once() -> None:
    now = at(2026, 5, 4, 9, 17)
    assert due_slot(PHARMACY, WEEKDAYS, None, PARIS, None, now) == now
    runs = agent(minutes(now, at(2026, 5, 4, 23)))
    assert [local(t).strftime("%H:%M") for t, _ in runs] == ["09:17", "12:30", "19:30"]


def test_a_clock_jumping_back_an_hour_after_a_run_does_not_run_it_again() -> None:
    day = (2026, 6, 10)
    before = minutes(at(*day, 11), at(*day, 12, 31))
    # At 12:31 the clock is put back to 11:31 (a wrong NTP server, a person) and goes on.
    after = minutes(at(*day, 11, 31), at(*day, 23))
    runs = agent(before + after, last_slot=at(2026, 6, 9, 19, 30))
    assert [(local(now).strftime("%H:%M"), local(slot).strftime("%H:%M")) for now, slot in runs] == [
        ("12:30", "12:30"), ("19:30", "19:30")]


def test_a_clock_jumping_back_over_slots_waits_for_the_first_slot_after_the_last_run() -> None:
    last = at(2026, 6, 10, 19, 30)
    clock = minutes(at(2026, 6, 9, 8), at(2026, 6, 11, 20))  # a day and a half back
    runs = agent(clock, last_slot=last)
    assert [slot for _, slot in runs] == [at(2026, 6, 11, 12, 30), at(2026, 6, 11, 19, 30)]
    assert due_slot(PHARMACY, WEEKDAYS, None, PARIS, last, last - HOUR) is None


def test_days_of_the_week() -> None:
    weekdays = ("mon", "tue", "wed", "thu", "fri")
    friday_evening = at(2026, 5, 8, 20)
    assert next_run(PHARMACY, weekdays, None, PARIS, friday_evening) == at(2026, 5, 11, 12, 30)
    runs = agent(minutes(at(2026, 5, 4), at(2026, 5, 18)), days=weekdays, last_slot=at(2026, 5, 3))
    assert len(runs) == 20
    assert {local(now).strftime("%a") for now, _ in runs} == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert last_slot_before(PHARMACY, weekdays, None, PARIS, at(2026, 5, 10, 23)) == at(2026, 5, 8, 19, 30)


def test_no_slots_at_all() -> None:
    now = at(2026, 5, 4)
    assert next_run((), WEEKDAYS, None, PARIS, now) is None
    assert next_run(PHARMACY, (), None, PARIS, now) is None
    assert last_slot_before((), WEEKDAYS, None, PARIS, now) is None
    assert due_slot((), WEEKDAYS, None, PARIS, now - DAY, now) is None


def test_every_runs_on_a_grid_from_the_last_slot_and_collapses_missed_ones() -> None:
    start = at(2026, 3, 29, 1)  # across the spring change: every counts real seconds
    clock = [t for t in minutes(start, start + 3 * HOUR) if not start + 35 * MINUTE < t < start + 72 * MINUTE]
    runs = agent(clock, times=(), every=600.0)
    assert [(now - start, slot - start) for now, slot in runs] == [
        (0, 0), (600, 600), (1200, 1200), (1800, 1800),
        (4320, 4200),  # back after 37 minutes off (four slots missed): one run, for the latest missed slot
        *((k * 600.0, k * 600.0) for k in range(8, 19))]
    assert next_run((), WEEKDAYS, 600.0, PARIS, start + 30, anchor=start) == start + 600
    assert next_run((), WEEKDAYS, 600.0, PARIS, start) == start + 600


def test_every_and_times_together_run_at_the_times_and_never_longer_than_every_apart() -> None:
    start = at(2026, 5, 4, 10)
    runs = agent(minutes(start, at(2026, 5, 4, 23)), times=("12:30", "20:00"), every=3 * HOUR,
                 last_slot=start)
    # The grid restarts from each slot: 10:00 + 3 h is after 12:30, so 12:30 comes first.
    assert [local(slot).strftime("%H:%M") for _, slot in runs] == [
        "12:30", "15:30", "18:30", "20:00", "23:00"]


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        next_run(("25:00",), WEEKDAYS, None, PARIS, 0.0)
    with pytest.raises(ValueError):
        next_run(PHARMACY, ("lundi",), None, PARIS, 0.0)
    with pytest.raises(ValueError):
        next_run((), WEEKDAYS, 0.0, PARIS, 0.0)


ZONES = ("Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "UTC")
clock_times = st.lists(st.sampled_from(["00:00", "00:30", "01:59", "02:00", "02:30", "03:00", "12:30",
                                        "19:30", "23:59"]), min_size=1, max_size=4).map(tuple)
instants = st.floats(min_value=1.2e9, max_value=1.9e9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(times=clock_times, tz=st.sampled_from(ZONES), t=instants)
def test_slots_around_any_instant_are_consistent(times: tuple[str, ...], tz: str, t: float) -> None:
    before = last_slot_before(times, WEEKDAYS, None, tz, t)
    after = next_run(times, WEEKDAYS, None, tz, t)
    assert before is not None and after is not None
    assert before <= t < after
    assert next_run(times, WEEKDAYS, None, tz, before) == after  # no slot in between
    assert after - before <= DAY + 2 * HOUR + 1  # a slot every day (Apia lost a day in 2011)
    assert last_slot_before(times, WEEKDAYS, None, tz, after) == after


@settings(max_examples=60, deadline=None)
@given(times=clock_times, tz=st.sampled_from(ZONES), t=instants,
       steps=st.lists(st.floats(min_value=-2 * HOUR, max_value=9 * HOUR), min_size=1, max_size=60))
def test_no_slot_ever_runs_twice_whatever_the_clock_does(times: tuple[str, ...], tz: str, t: float,
                                                         steps: list[float]) -> None:
    last: float | None = last_slot_before(times, WEEKDAYS, None, tz, t)
    answered = []
    for step in steps:
        t += step
        slot = due_slot(times, WEEKDAYS, None, tz, last, t)
        if slot is not None:
            assert last is not None and last < slot <= t
            assert last_slot_before(times, WEEKDAYS, None, tz, slot) == slot  # a real slot
            answered.append(slot)
            last = slot
    assert answered == sorted(set(answered))


@settings(max_examples=12, deadline=None)
@given(times=clock_times, tz=st.sampled_from(ZONES[:3]), start=st.floats(min_value=1.7e9, max_value=1.8e9))
def test_a_steady_clock_runs_every_slot_exactly_once(times: tuple[str, ...], tz: str, start: float) -> None:
    start = float(int(start) // 60 * 60)
    end = start + 4 * DAY
    last = last_slot_before(times, WEEKDAYS, None, tz, start)
    expected, s = [], next_run(times, WEEKDAYS, None, tz, start)
    while s is not None and s <= end:
        expected.append(s)
        s = next_run(times, WEEKDAYS, None, tz, s)
    answered = []
    for now in minutes(start, end):
        slot = due_slot(times, WEEKDAYS, None, tz, last, now)
        if slot is not None:
            answered.append(slot)
            last = slot
    assert answered == expected
    assert len(expected) >= 4 * len(set(times)) - len(set(times))


def test_daily_slots_near_the_changes_in_paris() -> None:
    for day in (date(2026, 3, 28) + timedelta(days=i) for i in range(3)):
        assert local(wall_instant(day, "12:30", PARIS)).strftime("%Y-%m-%d %H:%M") == f"{day} 12:30"
