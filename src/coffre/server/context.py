"""What every part of a running server shares: settings, metadata database, object store,
clock, and the tally of reads waiting to be journaled."""

from __future__ import annotations

from dataclasses import dataclass, field

from coffre.core.clock import Clock, SystemClock
from coffre.server.audit import ReadTally
from coffre.server.db import Database
from coffre.server.settings import Settings
from coffre.server.store import ObjectStore


@dataclass
class ServerContext:
    settings: Settings
    db: Database
    store: ObjectStore
    clock: Clock = field(default_factory=SystemClock)
    tally: ReadTally = field(default_factory=ReadTally)

    @classmethod
    def open(cls, settings: Settings, clock: Clock | None = None) -> ServerContext:
        db = Database(settings.database_url)
        db.check()
        return cls(settings, db, ObjectStore(settings.objects_location), clock or SystemClock())

    def close(self) -> None:
        self.tally.flush(self.db, self.clock.now_ns())
        self.store.close()
        self.db.close()
