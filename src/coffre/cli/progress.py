"""Showing a running operation's progress: a line redrawn on a terminal, JSON status events
with --json, periodic plain lines under --verbose in logs; nothing otherwise.

`progress_for(args, title)` yields the `Progress` the operation updates, and shows it from a
background thread that reads `progress.status()` on its own schedule, so the work never waits
for the display:

- stderr is a terminal (and not --quiet, not --json): one line redrawn in place by `rich`
  (elapsed time, phase, count and bytes done of the total, throughput, time left once the
  total is known, the current item shortened to fit), 4 times a second, erased at the end.
  Meanwhile what is printed (warnings on stderr, and stdout when it is the terminal too) goes
  above the line, never through it.
- --json: restic's JSON-lines convention on stdout, one `status` event a second and one when
  the block ends; the command then prints its result as the `summary` (`emit_summary`).
- neither, with --verbose: a plain line on stderr every 10 seconds, for logs.

COFFRE_PROGRESS_INTERVAL (seconds) replaces all three periods (tests make it short).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coffre.cli.output import human_size
from coffre.core import forks
from coffre.core.errors import UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.progress import NULL_PROGRESS, Progress, Status

INTERVAL_ENV = "COFFRE_PROGRESS_INTERVAL"
TERMINAL_EVERY = 0.25  # redraws a second: rich's default, smooth enough, cheap
JSON_EVERY = 1.0  # restic's status events: one a second
LOG_EVERY = 10.0  # a log is read afterwards: a line every 10 seconds is enough
JOIN_TIMEOUT = 5.0  # a display stuck on a blocked output never holds the command back longer

_active: Progress | None = None  # the progress being shown (a nested block shares it)


@contextmanager
def progress_for(args: argparse.Namespace, title: str) -> Iterator[Progress]:
    """The Progress to hand to an operation, shown as the command's options and output ask
    while the block runs; NULL_PROGRESS when nothing is shown (it costs nothing, and a backup
    then starts no scanner). `title`: the command, translated (`_("backup")`)."""
    global _active
    if _active is not None:  # an operation inside another: one display, one set of counters
        yield _active
        return
    view = choose_view(args, title, intervals())
    if view is None:  # nobody watches: no counting, and no scanner beside a backup
        yield NULL_PROGRESS
        return
    progress = Progress()
    _active = progress
    try:
        with view.showing(progress):
            yield progress
    finally:
        _active = None


def emit_summary(doc: dict[str, Any]) -> None:
    """The command's result under --json, after its status events: one `summary` line."""
    sys.stdout.write(json.dumps({"message_type": "summary", **doc}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def intervals() -> tuple[float, float, float]:
    """Seconds between redraws on a terminal, JSON status events, and log lines."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return TERMINAL_EVERY, JSON_EVERY, LOG_EVERY
    try:
        every = float(text)
    except ValueError:
        every = math.nan
    if not (math.isfinite(every) and every > 0):
        raise UsageError(_("{name} must be a number of seconds greater than zero, not {value}").format(
            name=INTERVAL_ENV, value=repr(text)))
    return every, every, every


def choose_view(args: argparse.Namespace, title: str,
                every: tuple[float, float, float]) -> _View | None:
    """How progress is shown for these options and this output (None: it is not)."""
    if getattr(args, "quiet", False):
        return None
    if getattr(args, "json", False):
        return JsonStatus(every[1])
    if is_terminal(sys.stderr):
        return TerminalLine(title, every[0])
    if getattr(args, "verbose", False):
        return LogLines(title, every[2])
    return None


def is_terminal(stream: Any) -> bool:
    """A terminal that can redraw a line (not a dumb one, as in an editor's shell)."""
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


# -- what is said ------------------------------------------------------------------------------
def clock(seconds: float) -> str:
    """0:07, 12:34, 1:02:03."""
    s = max(0, int(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle: a path keeps its start and its
    file name, whole when there is room for it."""
    if len(text) <= width:
        return text
    if width < 5:
        return ""
    name = text[text.rfind("/"):] if "/" in text else ""
    if name and len(name) + 4 <= width:
        return text[:width - 1 - len(name)] + "…" + name
    tail = (width - 1) * 2 // 3
    head = width - 1 - tail
    return text[:head] + "…" + text[len(text) - tail:]


def heading(status: Status, title: str) -> str:
    return (_("{title}: {phase}").format(title=title, phase=_(status.phase)) if status.phase
            else title)


def parts(status: Status, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The figures of a status, each a short phrase: percentage, count and bytes done of their
    totals, rate, time left, errors. `leave_out`: "count", "rate" (for a narrow terminal)."""
    out = []
    fraction = status.fraction
    if fraction is not None:
        out.append(_("{percent}%").format(percent=f"{fraction * 100:.0f}"))
    unit = _(status.unit)
    if "count" in leave_out:
        pass
    elif status.files_total:
        out.append(_("{done}/{total} {unit}").format(done=status.files_done, total=status.files_total,
                                                     unit=unit))
    elif status.files_done:
        out.append(_("{done} {unit}").format(done=status.files_done, unit=unit))
    if status.bytes_total:
        out.append(_("{done} of {total}").format(done=human_size(status.bytes_done),
                                                 total=human_size(status.bytes_total)))
    elif status.bytes_done:
        out.append(human_size(status.bytes_done))
    if status.bytes_done and status.phase_elapsed >= 1 and "rate" not in leave_out:
        out.append(_("{size}/s").format(size=human_size(status.rate)))
    eta = status.eta
    if eta is not None and fraction is not None and fraction < 1:
        out.append(_("{time} left").format(time=clock(math.ceil(eta))))  # never "0:00 left" too soon
    if status.errors:
        out.append(ngettext("{n} error", "{n} errors", status.errors).format(n=status.errors))
    return out


def status_event(status: Status) -> dict[str, Any]:
    """A JSON status event, as restic's (`percent_done` is a fraction from 0 to 1), with the
    phase and what `files` counts."""
    event: dict[str, Any] = {
        "message_type": "status", "seconds_elapsed": int(status.elapsed),
        "percent_done": round(status.share, 4), "total_files": status.files_total,
        "files_done": status.files_done, "total_bytes": status.bytes_total,
        "bytes_done": status.bytes_done, "error_count": status.errors,
        "current_files": [status.current] if status.current else [],
        "phase": status.phase, "unit": status.unit, "total_known": status.total_known,
    }
    if status.eta is not None:
        event["seconds_remaining"] = math.ceil(status.eta)
    return event


# -- how it is shown ---------------------------------------------------------------------------
class _View:
    """A way of showing progress while a block runs."""

    @contextmanager
    def showing(self, progress: Progress) -> Iterator[None]:
        raise NotImplementedError


class _Ticker:
    """Calls `show` with the status every `every` seconds on its own thread, until stopped.
    An output that fails (a closed pipe) ends the display, never the operation."""

    def __init__(self, progress: Progress, every: float, show: Callable[[Status], None]) -> None:
        self.progress, self.every, self.show = progress, every, show
        self.shown = 0
        self.broken = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(JOIN_TIMEOUT)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            if not self.tick():
                return

    def tick(self) -> bool:
        try:
            with forks.quiet():  # no copy of a restore made mid-line (ops/restoreprocs.py)
                self.show(self.progress.status())
        except (OSError, ValueError):  # the output is closed or gone
            self.broken = True
            return False
        self.shown += 1
        return True


class JsonStatus(_View):
    """restic's --json: a `status` line every `every` seconds on stdout, and a last one when
    the block ends (the command's `summary` follows)."""

    def __init__(self, every: float) -> None:
        self.every = every

    @staticmethod
    def write(status: Status) -> None:
        sys.stdout.write(json.dumps(status_event(status), ensure_ascii=False) + "\n")
        sys.stdout.flush()

    @contextmanager
    def showing(self, progress: Progress) -> Iterator[None]:
        ticker = _Ticker(progress, self.every, self.write)
        with ticker:
            yield
        if not ticker.broken:
            ticker.tick()


class LogLines(_View):
    """--verbose without a terminal: a plain line on stderr every `every` seconds, and one
    when the block ends if the operation lasted long enough to show any."""

    def __init__(self, title: str, every: float) -> None:
        self.title, self.every = title, every

    def line(self, status: Status) -> str:
        text = ", ".join([f"[{clock(status.elapsed)}] {heading(status, self.title)}", *parts(status)])
        return text + (f", {status.current}" if status.current else "")

    def write(self, status: Status) -> None:
        print(self.line(status), file=sys.stderr, flush=True)

    @contextmanager
    def showing(self, progress: Progress) -> Iterator[None]:
        ticker = _Ticker(progress, self.every, self.write)
        with ticker:
            yield
        if ticker.shown and not ticker.broken:
            ticker.tick()


class TerminalLine(_View):
    """One line on stderr, redrawn in place by rich (its own thread refreshes it), erased at
    the end. While it is shown, rich prints what goes to stderr (and to stdout when stdout is
    the terminal too) above it."""

    def __init__(self, title: str, every: float) -> None:
        self.title, self.every = title, every

    def line(self, status: Status, width: int) -> str:
        """The line for a terminal `width` columns wide: on a narrow one, the rate then the
        count give way (the time left stays), and the current item shows if there is room."""
        head = f"[{clock(status.elapsed)}] {heading(status, self.title)}"
        for leave_out in ((), ("rate",), ("rate", "count")):
            text = "  ".join([head, *parts(status, leave_out)])
            if len(text) < width:
                break
        room = width - len(text) - 3  # the last column stays free: some terminals wrap there
        if status.current and room >= 8:
            text += "  " + shorten(status.current, room)
        return text

    @contextmanager
    def showing(self, progress: Progress) -> Iterator[None]:
        from rich.console import Console  # only when a terminal shows progress: import is not free
        from rich.live import Live
        from rich.text import Text

        console = Console(file=sys.stderr, highlight=False)

        def render() -> Text:
            try:
                text = self.line(progress.status(), console.width)
            except Exception:  # a display must never break: show nothing this time
                text = ""
            return Text(text, no_wrap=True, overflow="ellipsis")

        live = Live(console=console, get_renderable=render, refresh_per_second=1 / self.every,
                    transient=True, redirect_stdout=is_terminal(sys.stdout), redirect_stderr=True)
        with live:
            yield
