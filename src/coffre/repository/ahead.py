"""The bases of a backup's next deltas, announced to the disk before the workers load them.

A changed database or dump is stored as deltas against the previous version of each chunk,
whose base the workers read from the repository one chunk at a time: scattered reads (format 2
shuffles the blobs of a pack), each of which a worker waited for on a cold page cache while the
other core had nothing to do. The thread that reads the file announces the bases of the next
chunks (Repository.will_read_bases) as it goes, through a thread of its own: each announcement
is a few system calls, ~0.1 ms to queue the reads, which the thread every worker waits on
should not spend.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue

from coffre.repository.repo import Repository

# Chunks of the previous version whose bases are announced ahead of the one being read, as long
# as at least as many chunks of the file needed their base as did not (a file rewritten the
# same, or changed in a few places, needs few: announcing them all would read the whole
# previous version).
BASES_AHEAD = 16


class Announcer:
    """The thread that passes announcements on, started with the first."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._queue: SimpleQueue[list[bytes] | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False

    def announce(self, ancestors: list[bytes]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bases-ahead", daemon=True)
            self._thread.start()
        self._queue.put(ancestors)

    def close(self) -> None:
        """Stop the thread; what is still queued is dropped (the backup no longer reads)."""
        if self._thread is not None:
            self._closing = True
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (ancestors := self._queue.get()) is not None:
            if not self._closing:
                self.repo.will_read_bases(ancestors)  # a hint: never raises (Backend.will_read)


class BasesAhead:
    """One file's chunks of the previous version, announced ahead of the reading while their
    bases turn out to be needed (told by the workers: outcome)."""

    def __init__(self, announcer: Announcer, previous: list[bytes]) -> None:
        self.announcer = announcer
        self.previous = previous  # the previous version's chunks, in file order
        self.announced = 0  # previous[:announced] announced, or passed over
        # Counted by the workers; an update lost between two of them only shifts the estimate.
        self.needed = self.unneeded = 0

    def announce(self, j: int) -> None:
        """The chunk being read descends from previous[j]: announce up to BASES_AHEAD past it."""
        end = min(len(self.previous), j + 1 + BASES_AHEAD)
        if end <= self.announced:
            return
        start, self.announced = max(self.announced, j), end
        if self.needed >= self.unneeded:
            self.announcer.announce(self.previous[start:end])

    def outcome(self, needed: bool) -> None:
        if needed:
            self.needed += 1
        else:
            self.unneeded += 1
