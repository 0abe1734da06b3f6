"""The captures the agent runs itself for a `[continuity.NAME]` entry, each on its own thread:
`sqlite` (a SQLite database followed into the spool, continuity/sqlite_monitor.py, as `coffre
wal sqlite` does) and `mysql` (a MariaDB server's binary log, continuity/mysql_capture.py, as
`coffre wal mysql` does). The entry's shipping pass sends what they put in the spool.

- A capture that stops on an error (the database file gone, the server not answering or
  missing a setting) is started again after a pause that doubles from `RETRY_FIRST` up to
  `RETRY_MOST`; its reason is kept (`error`, `error_since`) until it runs again, for the
  status and the `capture_behind` alert.
- The stop event (SIGTERM, a reload) ends each capture after its current pass: a SQLite pass
  is never cut (continuity/sqlite_monitor.py), the binary log reader is stopped and what it
  wrote whole is kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from coffre.agent import model
from coffre.core.errors import CoffreError
from coffre.core.i18n import _

Log = Callable[[str], None]

RETRY_FIRST = 10.0  # seconds before a failed capture starts again; doubled each time
RETRY_MOST = 300.0


class Capture:
    """One capture of an entry (`kind` "sqlite" or "mysql"), run until the stop event is set."""

    def __init__(self, entry: model.Continuity, kind: str, log: Log,
                 clock: Callable[[], float] = time.time) -> None:
        self.entry, self.kind, self.log, self.clock = entry, kind, log, clock
        self.error: str | None = None  # why it is not running (None: running, or not started yet)
        self.error_since: float | None = None

    @property
    def what(self) -> str:
        if self.kind == "sqlite":
            return _("the capture of {path}").format(path=self.entry.sqlite)
        return _("the capture of the binary log of {server}").format(server=self.entry.mysql)

    @property
    def doing(self) -> str:
        if self.kind == "sqlite":
            return _("follows {path}").format(path=self.entry.sqlite)
        return _("follows the binary log of {server}").format(server=self.entry.mysql)

    def run(self, stop: threading.Event) -> None:
        """Capture; after an error, again after a pause, until `stop` is set. Never raises."""
        failures = 0
        while not stop.is_set():
            try:
                self._capture(stop)
            except Exception as exc:  # said and kept; the next start may find it fixed
                reason = exc.message if isinstance(exc, CoffreError) else f"{type(exc).__name__}: {exc}"
                if reason != self.error:
                    self.log(_("continuous capture {name}: {what} stopped: {reason}; started again in a "
                               "while").format(name=self.entry.name, what=self.what, reason=reason))
                if self.error is None:
                    self.error_since = self.clock()
                self.error = reason
                failures += 1
                if stop.wait(min(RETRY_MOST, RETRY_FIRST * 2 ** (failures - 1))):
                    return
            else:
                return  # stopped

    def _running(self) -> None:
        if self.error is not None:
            self.log(_("continuous capture {name}: {what} runs again").format(name=self.entry.name,
                                                                           what=self.what))
        self.error = self.error_since = None

    def _said(self, message: str) -> None:
        self.log(_("continuous capture {name}: {message}").format(name=self.entry.name, message=message))

    def _capture(self, stop: threading.Event) -> None:
        from coffre.continuity.spool import Spool

        assert self.entry.spool is not None
        spool = Spool(self.entry.spool)
        if self.kind == "sqlite":
            from coffre.continuity.sqlite_monitor import DEFAULT_INTERVAL, SqliteMonitor

            assert self.entry.sqlite is not None
            with SqliteMonitor(self.entry.sqlite, spool, report=self._said) as monitor:
                self._running()
                monitor.run(DEFAULT_INTERVAL, stop)
            return
        from coffre.continuity.mysql_capture import DEFAULT_WORK
        from coffre.continuity.mysql_capture import Capture as BinlogCapture
        from coffre.core.clock import SystemClock
        from coffre.sources.databases.mysql import Connection

        assert self.entry.mysql is not None
        capture = BinlogCapture(Connection(self.entry.mysql, database=False), spool,
                                Path(self.entry.spool) / DEFAULT_WORK, SystemClock(), self._said,
                                started=self._running)
        capture.run(interval=1.0, stop=stop)


def captures_of(entry: model.Continuity, log: Log, clock: Callable[[], float] = time.time) -> list[Capture]:
    """The captures the entry asks the agent to run."""
    return [Capture(entry, kind, log, clock) for kind in ("sqlite", "mysql") if getattr(entry, kind)]


__all__ = ["Capture", "captures_of"]
