"""Small new files read, named and compressed by helper processes during a backup.

Why processes: a tree of many small files (a copy of /usr/share, 55,000 files) keeps the
backup's threads handing Python's interpreter lock to each other at every system call and
every short compression: both cores were busy and yet a second worker thread gained only
7 %, with 80,000 context switches. Each helper has an interpreter of its own. It opens
a batch of files, reads each (one read: they are smaller than the chunker's minimum, so one
chunk each), names it with the repository's keyed hash, compresses it and checks that the
compressed form decodes to the same bytes; the backup's thread then only claims each new id,
seals it (encrypting and verifying, as for every blob) and packs it. The same backup took
5.7-6.2 s instead of 6.8-8.1 s, and 9.1-9.7 CPU-seconds instead of 11.0-12.5, with half the
context switches (cold page cache, 3 pairs alternating; bench/README.md, "Many small files").

What goes there: files smaller than the chunker's minimum and with no previous version
(a changed file becomes a delta against it, which needs the base, read by the backup). The
helpers start only once a backup has met HELPERS_AFTER such files, or HELPERS_EARLY if the
files the scanner counted ahead promise HELPERS_AFTER more (`worth_starting`): fewer would
spend more starting them than they save. Each is told the key that names blobs (never the keys
that encrypt), through its standard input, and starts with `-P`: no module is looked for in
the folder the backup was started from.

Whatever a helper does not handle exactly as the backup's own reading would, it hands back
(None): a file that cannot be opened or read, is not a regular file any more, or is not at
its end after one read; the backup reads it itself, and reports what it finds. A helper that
dies or answers what it should not (checked: an id's length, a size under the minimum, a
payload smaller than the file and whose zstd frame declares its size) is dropped, and the
backup reads its batch itself.

This module is the backup's side; what a helper runs, and the messages, are in
ops/smallhelper.py.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading

from coffre.compress import CODEC_NONE, CODEC_ZSTD, delta_declared_length
from coffre.core.errors import FormatError
from coffre.core.interpreter import python_module
from coffre.format.codec import ID_LEN
from coffre.ops.smallhelper import read_frame, write_frame

HELPERS_AFTER = 2000  # small new files met before the helpers start
# ... or this many, when the tree ahead is known to hold HELPERS_AFTER more (worth_starting).
HELPERS_EARLY = 200

# One file's answer: (id, codec, payload, size, changed), or None: the backup reads it.
Sealed = tuple[bytes, int, bytes, int, bool]


def helper_command() -> list[str]:
    return python_module("coffre.ops.smallhelper")


def worth_starting(small_new: int, files_walked: int, files_counted: int) -> bool:
    """Whether the helpers pay from now on. Two cost ~0.1 CPU-second to start and save ~60
    µs of CPU a file: they pay from ~1,700 files (bench/README.md, "Measurement log", December
    6 2026, evening). So they start once HELPERS_AFTER small new files were met, or once
    HELPERS_EARLY were if HELPERS_AFTER more are expected ahead: the files the scanner counted
    (it walks ahead of the backup) beyond those walked, at the share of small new files met
    so far. A count behind the walk (or none: 0) expects nothing."""
    if small_new >= HELPERS_AFTER:
        return True
    if small_new < HELPERS_EARLY or files_walked <= 0:
        return False
    return (files_counted - files_walked) * small_new >= HELPERS_AFTER * files_walked


class Helpers:
    """The helper processes of one backup, each serving one batch at a time."""

    def __init__(self, count: int, key: bytes, level: int, min_size: int, window: int) -> None:
        self.min_size = min_size
        # Idle helpers; None once none is left, for whoever waits for one.
        self._idle: queue.SimpleQueue[subprocess.Popen[bytes] | None] = queue.SimpleQueue()
        self._all: list[subprocess.Popen[bytes]] = []
        self._leaving: list[subprocess.Popen[bytes]] = []  # let go, not yet waited for
        self._lock = threading.Lock()
        self.files = 0  # files the helpers read (the others went back to the backup)
        self.dropped = 0  # helpers that died or answered what they should not
        settings = {"key": key, "level": level, "min": min_size, "window": window}
        for _ in range(count if sys.executable else 0):  # an embedded interpreter may have none
            try:
                proc = subprocess.Popen(helper_command(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError:
                continue  # the backup reads these files itself
            try:
                assert proc.stdin is not None
                write_frame(proc.stdin, settings)
            except OSError:  # died at once
                self._end(proc)
                continue
            self._all.append(proc)
            self._idle.put(proc)

    @property
    def alive(self) -> bool:
        with self._lock:
            return bool(self._all)

    def read(self, files: list[tuple[bytes, int]]) -> list[Sealed | None] | None:
        """Each file's answer, or None if no helper could serve the batch."""
        with self._lock:
            if not self._all:
                return None
        proc = self._idle.get()
        if proc is None:
            self._idle.put(None)
            return None
        answers = None
        try:
            assert proc.stdin is not None and proc.stdout is not None
            write_frame(proc.stdin, [[path, size] for path, size in files])
            answers = self._checked(read_frame(proc.stdout), len(files))
        except Exception:  # a broken pipe, a frame too long, or one that is no message at all
            answers = None
        finally:  # whatever happened, the helper is given back or dropped: nobody waits forever
            if answers is None:
                self._drop(proc)
            else:
                self._idle.put(proc)
        if answers is None:
            return None
        with self._lock:
            self.files += sum(1 for a in answers if a is not None)
        return answers

    def _checked(self, raw: object, count: int) -> list[Sealed | None] | None:
        """The answers, if each is one the helper may give; None otherwise (a helper that died
        mid-batch, or answers what it should not, serves no more)."""
        if type(raw) is not list or len(raw) != count:
            return None
        out: list[Sealed | None] = []
        for answer in raw:
            if answer is None:
                out.append(None)
                continue
            if type(answer) is not list or len(answer) != 5:
                return None
            blob, codec, payload, size, changed = answer
            empty = size == 0
            if not (type(blob) is bytes and len(blob) == (0 if empty else ID_LEN)
                    and type(codec) is int and codec in (CODEC_NONE, CODEC_ZSTD) and type(payload) is bytes
                    and type(size) is int and 0 <= size < self.min_size
                    and (len(payload) == size if codec == CODEC_NONE else 0 < len(payload) < size)
                    and type(changed) is bool
                    and (codec == CODEC_NONE or _declared_size(payload) == size)):
                return None
            out.append((blob, codec, payload, size, changed))
        return out

    def _drop(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self.dropped += 1
            if proc in self._all:
                self._all.remove(proc)
            if not self._all:
                self._idle.put(None)
        self._end(proc)

    def let_go(self) -> None:
        """Every file is read: the helpers' pipes are closed and they leave while the backup
        ends (an interpreter takes ~20 ms to); close() then finds them gone. A batch asked
        for after this is read by the backup."""
        with self._lock:
            procs, self._all = self._all, []
            self._leaving += procs
            self._idle.put(None)
        for proc in procs:
            self._close_pipes(proc)

    def close(self) -> None:
        """End the helpers: their input closed, they leave; killed if they do not."""
        self.let_go()
        with self._lock:
            procs, self._leaving = self._leaving, []
        for proc in procs:
            self._reap(proc)

    @classmethod
    def _end(cls, proc: subprocess.Popen[bytes]) -> None:
        cls._close_pipes(proc)
        cls._reap(proc)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        """Its input closed, a helper leaves; its output closed too, one still writing an
        answer nobody reads stops at once."""
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _declared_size(payload: bytes) -> int:
    """The size a zstd frame says it decodes to (read from its header, as for a delta), or -1."""
    try:
        return delta_declared_length(payload)
    except FormatError:
        return -1

