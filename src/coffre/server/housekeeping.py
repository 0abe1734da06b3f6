"""The server's periodic work, run by every instance (each task is idempotent and, where two
instances must not both do it, takes a lease in the `state` table): flushing the read tally
into the audit journal, purging the recycle bin, sampling usage, anchoring audit heads,
scrubbing, watching the fleet.

A task is a module of this package with `PERIOD_S` (seconds) and `periodic(ctx, now_ns)`."""

from __future__ import annotations

import importlib
import logging

from coffre.server.context import ServerContext

log = logging.getLogger("coffre.server")

TASKS = ("coffre.server.bin", "coffre.server.metering", "coffre.server.audit",
         "coffre.server.scrub", "coffre.server.fleet")
TALLY_FLUSH_S = 5.0


class Housekeeping:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.tasks = []
        for name in TASKS:
            module = importlib.import_module(name)
            self.tasks.append((name, float(module.PERIOD_S), module.periodic))
        self._last: dict[str, int] = {}
        self._last_flush = 0

    def run_due(self) -> None:
        """Run what is due now; a failing task is logged and tried again next period."""
        now = self.ctx.clock.now_ns()
        if now - self._last_flush >= TALLY_FLUSH_S * 1e9:
            self._last_flush = now
            try:
                self.ctx.tally.flush(self.ctx.db, now)
            except Exception:
                log.exception("flushing the read tally into the audit journal failed")
        for name, period, task in self.tasks:
            if now - self._last.get(name, 0) < period * 1e9:
                continue
            self._last[name] = now
            try:
                task(self.ctx, now)
            except Exception:
                log.exception("periodic task %s failed", name)
