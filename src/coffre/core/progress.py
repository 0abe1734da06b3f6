"""Progress of a long operation, counted by the operation and read by whoever shows it.

An operation (backup, restore, check, copy, prune, drill) receives a `Progress` and calls it as
it goes: `phase` when it moves to another stage, `add_total` while it learns how much there is
(a backup counts its total while it scans, as restic does, so the total grows at first and is
`total_known` once the scan ends), and `advance` as work is done (from any thread). It never
prints. A renderer (the terminal line, the JSON status stream, periodic log lines) reads
`status()` on its own schedule, so a slow terminal never slows the work, and a
`NULL_PROGRESS` costs nothing when nobody watches.

Names are given in English and marked for translation, `progress.phase(N_("reading data"),
unit=N_("packs"))`: the terminal shows them translated, the JSON stream as they are (its
values are never translated). `files` counts whatever the phase's `unit` names (files by
default: packs for check, pieces for copy, databases for drill).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from coffre.core.i18n import N_

FILES = N_("files")  # the default unit


@dataclass(frozen=True)
class Status:
    """What has been done so far, as one consistent reading."""

    phase: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    total_known: bool  # the totals are final (the scan is over)
    current: str | None  # the item being worked on, as the user would name it
    elapsed: float  # seconds since the operation started
    errors: int
    phase_elapsed: float = 0.0  # seconds since the current phase started
    unit: str = FILES  # what files_done and files_total count

    @property
    def fraction(self) -> float | None:
        """Share of the work done (by bytes, by files when there are no bytes), once known."""
        if not self.total_known:
            return None
        return self.share

    @property
    def share(self) -> float:
        """Share of the work counted so far that is done (the totals may still grow): restic's
        `percent_done`, which it gives while it scans too."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.files_total:
            return min(1.0, self.files_done / self.files_total)
        return 1.0 if self.total_known else 0.0

    @property
    def rate(self) -> float:
        """Bytes per second since the phase started."""
        return self.bytes_done / self.phase_elapsed if self.phase_elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in this phase at its average rate so far, once the totals are known."""
        fraction = self.fraction
        if fraction is None or fraction <= 0 or self.phase_elapsed <= 0:
            return None
        return self.phase_elapsed * (1 - fraction) / fraction


class Progress:
    """Counters an operation updates and a renderer reads. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = self._phase_started = clock()
        self._phase = ""
        self._unit = FILES
        self._files_done = self._files_total = 0
        self._bytes_done = self._bytes_total = 0
        self._total_known = False
        self._current: str | bytes | None = None
        self._errors = 0

    def phase(self, name: str, *, files_total: int = 0, bytes_total: int = 0, known: bool = False,
              unit: str = FILES) -> None:
        """Start a new stage: its counters (and its rate and ETA) start again from zero.
        `name` and `unit` in English, marked with N_()."""
        with self._lock:
            self._phase, self._unit = name, unit
            self._phase_started = self._clock()
            self._files_done = self._bytes_done = 0
            self._files_total, self._bytes_total = files_total, bytes_total
            self._total_known = known
            self._current = None

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self._files_total += files
            self._bytes_total += nbytes

    def total_known(self) -> None:
        """The totals are complete: the fraction and the ETA can be shown."""
        with self._lock:
            self._total_known = True

    def advance(self, files: int = 0, nbytes: int = 0, current: str | bytes | None = None) -> None:
        """Work done; `current`: what is being worked on (a path as bytes is decoded only when
        shown, so a backup pays nothing for it per file)."""
        with self._lock:
            self._files_done += files
            self._bytes_done += nbytes
            if current is not None:
                self._current = current

    def error(self) -> None:
        with self._lock:
            self._errors += 1

    def status(self) -> Status:
        with self._lock:
            now = self._clock()
            current = self._current
            return Status(self._phase, self._files_done, self._files_total, self._bytes_done,
                          self._bytes_total, self._total_known,
                          os.fsdecode(current) if isinstance(current, bytes) else current,
                          now - self._started, self._errors, now - self._phase_started, self._unit)


class _NullProgress(Progress):
    """Nobody watches: every update is a no-op."""

    def phase(self, name: str, *, files_total: int = 0, bytes_total: int = 0, known: bool = False,
              unit: str = FILES) -> None:
        pass

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        pass

    def total_known(self) -> None:
        pass

    def advance(self, files: int = 0, nbytes: int = 0, current: str | bytes | None = None) -> None:
        pass

    def error(self) -> None:
        pass


NULL_PROGRESS: Progress = _NullProgress()
