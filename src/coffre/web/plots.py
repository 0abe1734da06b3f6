"""Plots drawn on the server as SVG (no script, no library, readable without JavaScript):
a time series with its growth trend and a limit (stored size against the medium), and bars
per day (bytes sent, durations). Every text written into the SVG is escaped here; the
result is inserted as markup (render.svg).

`line_plot` and `bar_plot` take plain values: instants (Unix seconds), numbers, and a
`label` function that writes a value for people (render's `size`, `duration`...).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

W, H = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 14, 34

Label = Callable[[float], str]


@dataclass(frozen=True)
class Trend:
    """A straight line fitted to the series (least squares), and where it meets a limit."""

    slope: float  # units per second
    intercept: float  # value at t = 0
    reaches_limit_at: float | None  # instant the line crosses the limit (None: never, or falling)

    def at(self, t: float) -> float:
        return self.intercept + self.slope * t


def fit(points: Sequence[tuple[float, float]], limit: float | None = None) -> Trend | None:
    """The least-squares line through `points` (at least two, over more than an hour)."""
    if len(points) < 2 or points[-1][0] - points[0][0] < 3600:
        return None
    try:
        slope, intercept = statistics.linear_regression([t for t, _v in points], [v for _t, v in points])
    except statistics.StatisticsError:  # every point at one instant
        return None
    reaches = None
    if limit is not None and slope > 0:
        reaches = (limit - intercept) / slope
    return Trend(slope, intercept, reaches)


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def _frame(title: str, t0: float, t1: float, vmax: float, label: Label, day_label: Label) -> list[str]:
    out = [f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for v in _ticks(0, vmax):
        y = _y(v, vmax)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label(v))}</text>')
    shown = ""
    for t in _ticks(t0, t1, 3):
        text = day_label(t)
        if text == shown:  # a range of hours: one day's label once
            continue
        shown = text
        out.append(f'<text x="{_x(t, t0, t1):.1f}" y="{H - 10}" text-anchor="middle">{escape(text)}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}"/>')
    return out


def _x(t: float, t0: float, t1: float) -> float:
    return LEFT + (W - LEFT - RIGHT) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)


def _y(v: float, vmax: float) -> float:
    return H - BOTTOM - (H - TOP - BOTTOM) * (v / vmax if vmax > 0 else 0)


def line_plot(title: str, series: Sequence[tuple[float, float]], label: Label, day_label: Label, *,
              second: Sequence[tuple[float, float]] = (), limit: float | None = None,
              trend: Trend | None = None, until: float | None = None) -> Markup:
    """A line (and an optional second one) over time; the trend drawn to `until` (the date
    the medium is full, within reason); the limit as a red line."""
    points = sorted(series)
    if not points:
        return Markup("")
    t0 = points[0][0]
    t1 = max([points[-1][0], until or 0.0, *(t for t, _v in second)])
    if t1 <= t0:
        t1 = t0 + 86400
    values = [v for _t, v in points] + [v for _t, v in second]
    if trend is not None:
        values.append(max(0.0, trend.at(t1)))
    vmax = max([*values, limit or 0.0, 1.0]) * 1.05
    out = _frame(title, t0, t1, vmax, label, day_label)
    if limit is not None:
        y = _y(limit, vmax)
        out.append(f'<line class="limit" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    for cls, pts in (("series", points), ("series2", sorted(second))):
        if pts:
            path = " ".join(f"{_x(t, t0, t1):.1f},{_y(v, vmax):.1f}" for t, v in pts)
            out.append(f'<polyline class="{cls}" points="{path}"/>')
    if trend is not None:
        a, b = points[0][0], t1
        out.append(f'<line class="trend" x1="{_x(a, t0, t1):.1f}" y1="{_y(max(0.0, trend.at(a)), vmax):.1f}" '
                   f'x2="{_x(b, t0, t1):.1f}" y2="{_y(max(0.0, trend.at(b)), vmax):.1f}"/>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()


def bar_plot(title: str, bars: Sequence[tuple[float, float]], label: Label, day_label: Label, *,
             bad: Sequence[bool] = ()) -> Markup:
    """One bar per instant (a day, a run); `bad[i]` draws bar i in red (a failed run)."""
    if not bars:
        return Markup("")
    first, last = bars[0][0], bars[-1][0]
    # Half a bar's spacing on each side, so that the first and last bars stand inside the frame.
    pad = (last - first) / (2 * (len(bars) - 1)) if len(bars) > 1 and last > first else 43200.0
    t0, t1 = first - pad, last + pad
    vmax = max([v for _t, v in bars] + [1.0]) * 1.05
    out = _frame(title, t0, t1, vmax, label, day_label)
    width = max(2.0, min(24.0, (W - LEFT - RIGHT) / max(1, len(bars)) * 0.7))
    for i, (t, v) in enumerate(bars):
        x, y = _x(t, t0, t1) - width / 2, _y(v, vmax)
        cls = "bar-bad" if i < len(bad) and bad[i] else "bar"
        tip = f"{escape(day_label(t))} — {escape(label(v))}"
        out.append(f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                   f'height="{H - BOTTOM - y:.1f}"><title>{tip}</title></rect>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()
