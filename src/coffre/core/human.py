"""Sizes, numbers, dates and durations as the reader of the current language writes them.

English keeps Coffre's historical forms: binary units ("1.5 GiB", "271 KiB", "12 B"), times
as "2026-11-30 12:31:05" (local time). French follows what a French Windows user reads in the
file explorer, through Babel's French locale: binary multiples written « Ko, Mo, Go, To » (the
explorer's 1 Ko is 1024 octets), a decimal comma and a space between thousands (« 1,5 Go »,
« 271 Ko », « 12 octets », « 1 234 »), dates « 30 nov. 2026 12:31 ».

Sizes keep three significant digits (« 42,7 Mo », « 271 Ko »): enough to compare, short enough
to read; the exact byte counts are in `--json`. Babel separates French thousands with a narrow
no-break space (U+202F); it is written as a plain space here, so that a log, a `grep` or a
Windows console with an old code page reads the same text.

Babel is imported on first use, and English does without it: loading a locale's data costs
about 30 ms, which an unchanged backup of a small tree would feel.
"""

from __future__ import annotations

from datetime import datetime

from coffre.core.clock import format_ns
from coffre.core.i18n import N_, _, language, locale_name, ngettext

# Binary multiples: the English unit, and its msgid (French: Ko, Mo, Go, To).
_UNITS = (N_("{size} KiB"), N_("{size} MiB"), N_("{size} GiB"), N_("{size} TiB"))
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " "})


def human_number(n: float, decimals: int = 0, keep_zeros: bool = False) -> str:
    """A count or a measure with the language's separators: "1,234" / « 1 234 »; up to
    `decimals` digits after the point, trailing zeros dropped unless `keep_zeros`."""
    if language() == "en":  # Python's own formatting: Babel's locale data costs 30 ms to load
        text = f"{n:,.{decimals}f}"
        return text.rstrip("0").rstrip(".") if decimals and not keep_zeros else text
    from babel.numbers import format_decimal

    digits = ("0" if keep_zeros else "#") * decimals
    pattern = "#,##0" + ("." + digits if decimals > 0 else "")
    return str(format_decimal(n, format=pattern, locale=locale_name())).translate(_SPACES)


def _three_digits(value: float) -> str:
    decimals = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
    return human_number(round(value, decimals), decimals)


def human_size(n: float) -> str:
    """A size in bytes for people: "1.5 GiB" / « 1,5 Go », "271 KiB" / « 271 Ko »,
    "12 B" / « 12 octets » (negative sizes keep their sign)."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1024:
        count = int(n)
        return sign + ngettext("{n} B", "{n} B", count).format(n=human_number(count))
    value = n / 1024
    for unit in _UNITS:
        if value < 1023.995 or unit is _UNITS[-1]:
            return sign + _(unit).format(size=_three_digits(value))
        value /= 1024
    raise AssertionError("unreachable")


def human_time(moment: int | datetime) -> str:
    """A moment for people, in local time: nanoseconds since the epoch (what snapshots and
    files carry) or a datetime (a naive one is local time). English: "2026-11-30 12:31:05";
    French: « 30 nov. 2026 12:31 ». A time the local calendar cannot express is given in
    UTC and says so (as `core.clock.format_ns`)."""
    if isinstance(moment, datetime):
        local = moment.astimezone()  # a naive datetime is taken as local time
        if language() == "en":
            return local.strftime("%Y-%m-%d %H:%M:%S")
    else:
        if language() == "en":
            return format_ns(moment)
        try:
            local = datetime.fromtimestamp(moment // 1_000_000_000).astimezone()
        except (OverflowError, OSError, ValueError):
            return format_ns(moment)
    from babel.dates import format_datetime

    text = format_datetime(local, "d MMM y HH:mm", tzinfo=local.tzinfo, locale=locale_name())
    return str(text).translate(_SPACES)


def human_duration(seconds: float) -> str:
    """A duration for people: "12.3 s", "4 min 05 s", "2 h 07 min" (French: « 12,3 s »)."""
    if seconds < 60:
        return _("{seconds} s").format(seconds=human_number(round(seconds, 1), 1))
    whole = round(seconds)
    if whole < 3600:
        return _("{minutes} min {seconds:02d} s").format(minutes=whole // 60, seconds=whole % 60)
    return _("{hours} h {minutes:02d} min").format(hours=human_number(whole // 3600),
                                                    minutes=whole % 3600 // 60)


def human_when(moment: float, now: float, timezone: str) -> str:
    """A moment (Unix seconds) near `now`, as a status screen says it, in `timezone` (a zoneinfo
    name): "today 12:31", "yesterday 19:30", "tomorrow 12:30", "Monday 12:30" within the week
    around now (the column says whether it is past or to come), else the date:
    « aujourd'hui 12:31 », « hier 19:30 », « lundi 12:30 », « 3 mars 12:30 », « 3 mars 2025 12:30 »."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    try:
        local = datetime.fromtimestamp(moment, zone)
        today = datetime.fromtimestamp(now, zone).date()
    except (OverflowError, OSError, ValueError):
        return format_ns(int(moment * 1e9))
    clock = local.strftime("%H:%M")
    days = (local.date() - today).days
    if days == 0:
        return _("today {time}").format(time=clock)
    if days == -1:
        return _("yesterday {time}").format(time=clock)
    if days == 1:
        return _("tomorrow {time}").format(time=clock)
    if language() == "en":
        if abs(days) < 7:
            return local.strftime("%A %H:%M")
        return local.strftime("%Y-%m-%d %H:%M")
    from babel.dates import format_datetime

    pattern = ("EEEE HH:mm" if abs(days) < 7 else "d MMM HH:mm" if local.year == today.year
               else "d MMM y HH:mm")
    return str(format_datetime(local, pattern, tzinfo=zone, locale=locale_name())).translate(_SPACES)
