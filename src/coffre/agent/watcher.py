"""Real-time mode: noticing that a job's source files changed, and deciding when to back up.

`Watcher` owns the noticing. It watches every folder under the job's paths with inotify
(`inotify_simple`), one watch per folder, each added BEFORE the folder is listed, so a file or
folder created while the tree is being set up is either seen by the listing or reported by the
watch (the lesson of Litestream's directory_watcher). New folders are watched as they appear,
and listed once watched: what was created inside them before the watch counts as a change
(their subfolders get their watches that way too). Events are merged per path on each drain.
A lost event queue (IN_Q_OVERFLOW) counts as a change and the watches are set up again, since
folders created meanwhile were not seen.

Where inotify cannot be had (no inotify, too many instances) or the watch limit is reached
(ENOSPC from inotify_add_watch, `fs.inotify.max_user_watches`), the watcher drops inotify
entirely and scans instead: every `scan_interval` seconds it stats every file and folder under
the paths and compares a digest of (path, mode, size, mtime, ctime, inode) with the previous
scan's. A digest rather than a map: the same answer ("something changed") with flat memory
whatever the number of files. `mode` says which is in use, `reason` why inotify was dropped.

Excludes are the backup's patterns (coffre.sources.patterns through sources.files.Excluder):
an excluded path is ignored, an excluded folder neither watched nor scanned. Symbolic links
are not followed below the paths (the backup stores them as links).

`Debouncer` owns the deciding, as a pure function of the change times, the last run's start
and now (see its docstring for the rule)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Any

from coffre.core.i18n import _, ngettext
from coffre.sources.files import Excluder

log = logging.getLogger(__name__)


class flags(IntFlag):  # named as inotify_simple's: its values are Linux's own
    """The inotify event bits (<sys/inotify.h>). Defined here so that this module imports where
    inotify_simple cannot (it needs termios: Windows); the library is imported when watching."""

    MODIFY = 0x2
    ATTRIB = 0x4
    CLOSE_WRITE = 0x8
    MOVED_FROM = 0x40
    MOVED_TO = 0x80
    CREATE = 0x100
    DELETE = 0x200
    DELETE_SELF = 0x400
    MOVE_SELF = 0x800
    UNMOUNT = 0x2000
    Q_OVERFLOW = 0x4000
    IGNORED = 0x8000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    ISDIR = 0x40000000

_MASK = (flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_FROM | flags.MOVED_TO
         | flags.DELETE | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
         | flags.EXCL_UNLINK)
_CHANGES = (flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_FROM | flags.MOVED_TO
            | flags.DELETE | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT)
_APPEARS = flags.CREATE | flags.MOVED_TO
_GOES = flags.DELETE | flags.MOVED_FROM
_GONE_SELF = flags.IGNORED  # the kernel dropped the watch: folder deleted, moved, unmounted


class _WatchLimit(Exception):
    """The watch limit is reached: inotify is dropped for the scan."""


class Watcher:
    """Tells whether anything changed under `paths` since the last `poll`.

    Use: select on `fileno()` (None: no descriptor, just wake up by time) with a timeout, then
    call `poll(now)`; in scan mode `poll` rescans when `scan_interval` seconds passed since the
    last scan, so wake up at least that often (`next_scan`). `max_watches` is for tests: more
    watches than that behave as ENOSPC. `use_inotify=False` forces the scan."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], exclude: Sequence[str] = (),
                 scan_interval: float = 300.0, *, use_inotify: bool = True,
                 max_watches: int | None = None, now: float | None = None) -> None:
        self.roots = [os.fsencode(os.path.abspath(p)) for p in paths]
        self.scan_interval = scan_interval
        self.reason: str | None = None  # why inotify is not used, for the log and the status
        self.changes: set[bytes] = set()  # the paths changed at the last poll (inotify mode)
        self._excluder = Excluder(list(exclude))
        self._max_watches = max_watches
        self._inotify: Any = None  # an inotify_simple.INotify while watching
        self._dirs: dict[int, bytes] = {}  # watch descriptor -> folder
        self._trees: set[int] = set()  # watches of folders inside the paths (all names count)
        self._names: dict[int, set[bytes]] = {}  # watches of a path's parent: only these names
        self._digest = b""
        self._closed = False
        self._last_scan = time.time() if now is None else now
        if not use_inotify:
            self._drop_inotify(_("Inotify is not used.") + " " + self._scanned(), logging.INFO)
            return
        try:
            from inotify_simple import INotify  # type: ignore[import-untyped]

            self._inotify = INotify(nonblocking=True)
        except ImportError:
            self._drop_inotify(_("Inotify cannot be used (not on this system).") + " " + self._scanned())
            return
        except OSError as exc:
            self._drop_inotify(_("Inotify cannot be used ({error}).").format(
                error=os.strerror(exc.errno or 0)) + " " + self._scanned())
            return
        try:
            self._watch_roots()
        except _WatchLimit:
            self._drop_watch_limit()

    # -- the public surface ------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "inotify" if self._inotify is not None else "scan"

    @property
    def watches(self) -> int:
        return len(self._dirs)

    def fileno(self) -> int | None:
        return int(self._inotify.fileno()) if self._inotify is not None else None

    def next_scan(self) -> float | None:
        """When the next scan is due (scan mode), for the caller's select timeout."""
        return None if self._inotify is not None else self._last_scan + self.scan_interval

    def poll(self, now: float) -> bool:
        """Non-blocking: drain the pending events (inotify) or rescan when due (scan). True
        when something changed since the previous call."""
        self.changes = set()
        if self._closed:
            return False
        if self._inotify is not None:
            try:
                return self._drain()
            except _WatchLimit:
                self._drop_watch_limit()
                self._last_scan = now
                return True  # a folder appeared: that is a change
        if now - self._last_scan >= self.scan_interval or now < self._last_scan:
            self._last_scan = now
            digest = self._scan()
            changed = digest != self._digest
            self._digest = digest
            return changed
        return False

    def close(self) -> None:
        self._closed = True
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._dirs.clear()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inotify -----------------------------------------------------------------------------

    def _add_watch(self, folder: bytes, *, follow: bool) -> int | None:
        """Watches `folder`; None when it is gone or unreadable (nothing to watch there)."""
        assert self._inotify is not None
        if self._max_watches is not None and len(self._dirs) >= self._max_watches:
            raise _WatchLimit
        mask = _MASK if follow else _MASK | flags.DONT_FOLLOW
        try:
            wd = int(self._inotify.add_watch(folder, mask))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _WatchLimit from exc
            return None  # ENOENT, ENOTDIR (replaced meanwhile), EACCES: the listing will tell
        self._dirs[wd] = folder
        return wd

    def _watch_roots(self) -> None:
        for root in self.roots:
            self._watch_root(root)

    def _watch_root(self, root: bytes) -> bool:
        """A folder: its tree; anything else (a file, nothing yet): its parent folder, for
        that name only, so that it appearing, changing or becoming a folder is seen."""
        if os.path.isdir(root):
            return self._watch_tree(root, follow=True)
        parent = os.path.dirname(root)
        wd = self._add_watch(parent, follow=True)
        if wd is not None:
            self._names.setdefault(wd, set()).add(os.path.basename(root))
        if os.path.isdir(root):  # became a folder between the check and the watch
            return self._watch_tree(root, follow=True)
        return False

    def _watch_tree(self, top: bytes, *, follow: bool = False) -> bool:
        """Watches every folder of the tree, each before listing it; True when the tree holds
        anything (for a new folder: files created before its watch are a change)."""
        found = False
        folders = [(top, follow)]
        while folders:
            folder, follow_it = folders.pop()
            wd = self._add_watch(folder, follow=follow_it)
            if wd is None:
                continue
            self._trees.add(wd)
            prefix = folder.rstrip(b"/") + b"/"
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        path = prefix + entry.name
                        if self._excluder.excluded(path):
                            continue
                        found = True
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                folders.append((path, False))
                        except OSError:
                            continue
            except OSError:
                continue
        return found

    def _forget_tree(self, top: bytes) -> None:
        """Removes the watches of `top` and the folders under it (moved out or deleted)."""
        assert self._inotify is not None
        prefix = top + b"/"
        for wd, folder in list(self._dirs.items()):
            if folder == top or folder.startswith(prefix):
                self._forget(wd)
                try:
                    self._inotify.rm_watch(wd)
                except OSError:
                    pass  # already dropped by the kernel (its IN_IGNORED is on the way)

    def _forget(self, wd: int) -> None:
        self._dirs.pop(wd, None)
        self._trees.discard(wd)
        self._names.pop(wd, None)

    def _drain(self) -> bool:
        assert self._inotify is not None
        merged: dict[tuple[int, bytes], int] = {}  # events merged per (folder, name)
        overflow = False
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            key = (event.wd, os.fsencode(event.name))
            merged[key] = merged.get(key, 0) | event.mask
        if overflow:
            self._resync()
            return True
        changed = False
        lost_roots: list[bytes] = []
        for (wd, name), mask in merged.items():
            folder = self._dirs.get(wd)
            if folder is None:
                continue  # a watch already forgotten (moved out, resynced)
            if not name:  # about the watched folder itself
                if mask & _GONE_SELF:
                    self._forget(wd)
                    if folder in self.roots:
                        lost_roots.append(folder)
                if mask & _CHANGES and wd in self._trees:
                    self.changes.add(folder)
                    changed = True
                continue
            path = folder.rstrip(b"/") + b"/" + name
            if wd not in self._trees and name not in self._names.get(wd, ()):
                continue  # the parent of a path: another name
            if self._excluder.excluded(path):
                continue
            if mask & _CHANGES:
                self.changes.add(path)
                changed = True
            if mask & flags.ISDIR:
                if mask & _GOES:
                    self._forget_tree(path)
                if mask & _APPEARS and os.path.isdir(path):
                    # the watch goes first, then the listing (in _watch_tree)
                    self._watch_tree(path, follow=path in self.roots)
            elif path in self.roots and mask & _APPEARS and os.path.isdir(path):
                self._watch_tree(path, follow=True)
        for root in lost_roots:
            self._watch_root(root)  # deleted or moved: wait for it in its parent
        return changed

    def _resync(self) -> None:
        """After a lost event queue: forget every watch and set them up again (folders may
        have appeared, moved or gone unseen)."""
        assert self._inotify is not None
        for wd in list(self._dirs):
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass
        self._dirs.clear()
        self._trees.clear()
        self._names.clear()
        self._watch_roots()

    def _drop_watch_limit(self) -> None:
        limit = self._max_watches if self._max_watches is not None else _max_user_watches()
        self._drop_inotify(_("The limit of folders watched in real time is reached ({limit}, "
                             "fs.inotify.max_user_watches).").format(limit=limit)
                           + " " + self._scanned())

    def _scanned(self) -> str:
        n = max(1, round(self.scan_interval))
        return ngettext("The folders are scanned every {n} second instead.",
                        "The folders are scanned every {n} seconds instead.", n).format(n=n)

    def _drop_inotify(self, reason: str, level: int = logging.WARNING) -> None:
        """For good: the scan takes over (the first scan is the reference)."""
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._dirs.clear()
        self._trees.clear()
        self._names.clear()
        self.reason = reason
        log.log(level, "%s", reason)
        self._digest = self._scan()

    # -- scan --------------------------------------------------------------------------------

    def _scan(self) -> bytes:
        """A digest of every path's metadata under the roots (sorted: the order of a folder's
        listing is not guaranteed)."""
        h = hashlib.blake2b(digest_size=20)
        for root in self.roots:
            folders = [root]
            h.update(b"\0R" + root)
            try:
                st = os.stat(root)
            except OSError:
                h.update(b"\0missing")
                continue
            h.update(_meta(st))
            if not stat.S_ISDIR(st.st_mode):
                continue
            while folders:
                folder = folders.pop()
                prefix = folder.rstrip(b"/") + b"/"
                try:
                    with os.scandir(folder) as it:
                        entries = sorted(it, key=lambda e: e.name)
                except OSError:
                    h.update(b"\0unreadable" + folder)
                    continue
                for entry in entries:
                    path = prefix + entry.name
                    if self._excluder.excluded(path):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # gone since the listing
                    h.update(b"\0" + path + _meta(st))
                    if stat.S_ISDIR(st.st_mode):
                        folders.append(path)
        return h.digest()


def _meta(st: os.stat_result) -> bytes:
    if stat.S_ISDIR(st.st_mode):  # not a folder's times: they move when an excluded file does
        return b"\0%d %d" % (st.st_mode, st.st_ino)
    return b"\0%d %d %d %d %d" % (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                  st.st_ino)


def _max_user_watches() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@dataclass
class Debouncer:
    """When a real-time job runs, from the times changes were seen.

    The rule: changes are pending when one was seen after the last run started (a change seen
    up to the instant a run starts is in that run: it reads the files after). A run is due
    when changes are pending, at least `min_interval` seconds after the last run started, and
    either no change came for `debounce` seconds (they settled) or `max_delay` seconds passed
    since the first pending change (a steady write load never settles: it must not starve the
    backups). `max_delay` defaults to `min_interval + debounce`: a change is then backed up
    within `min_interval + debounce` seconds (plus the run's own time), quiet or busy.

    Call `changed(now)` for each poll that saw changes, then `due(now, last_run_started)` at
    each wake-up; `next_check` tells when to wake up if nothing else happens. A clock that goes
    backwards is taken as now (no run is pushed back by the jump)."""

    debounce: float = 60.0
    min_interval: float = 600.0
    max_delay: float | None = None
    _first: float | None = None  # the first change not known to be in a run
    _last: float | None = None
    _future: tuple[float, float] | None = None  # a run start ahead of the clock -> when seen

    def __post_init__(self) -> None:
        if self.max_delay is None:
            self.max_delay = self.min_interval + self.debounce

    def changed(self, now: float) -> None:
        if self._first is None or now < self._first:
            self._first = now
        self._last = now

    def pending(self, now: float, last_run_started: float | None) -> bool:
        self._settle(now, last_run_started)
        return self._first is not None

    def due(self, now: float, last_run_started: float | None) -> bool:
        at = self.next_check(now, last_run_started)
        return at is not None and at <= now

    def next_check(self, now: float, last_run_started: float | None) -> float | None:
        """The instant the run becomes due if no other change comes (<= now: due now); None
        when nothing is pending."""
        self._settle(now, last_run_started)
        if self._first is None or self._last is None:
            return None
        assert self.max_delay is not None
        settled = min(self._last + self.debounce, self._first + self.max_delay)
        if last_run_started is not None:
            settled = max(settled, self._started(now, last_run_started) + self.min_interval)
        return settled

    def _started(self, now: float, last_run_started: float) -> float:
        """The last run's start; one ahead of the clock (the clock went back since) is taken
        as the moment that was first noticed, so the next run is not put off by the jump."""
        if last_run_started <= now:
            return last_run_started
        if self._future is None or self._future[0] != last_run_started:
            self._future = (last_run_started, now)
        return self._future[1]

    def _settle(self, now: float, last_run_started: float | None) -> None:
        """Forgets the changes the last run covers. Of the changes after it only the last one
        seen is known: it stands for the first one, which is exact when `due` is called after
        each `changed`, as the agent's loop does. After a run start in the future (the clock
        went back since) every change counts: one run too many rather than one too few."""
        if last_run_started is None or self._first is None or self._last is None:
            return
        if last_run_started > now:
            return  # the clock went back: which changes came after that run is unknown
        started = last_run_started
        if self._last <= started:
            self._first = self._last = None
        elif self._first <= started:
            self._first = self._last
