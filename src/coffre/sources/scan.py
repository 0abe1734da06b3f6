"""Counting what a backup will go through, while it runs: the totals of its progress.

The backup walks and reads depth-first, so it learns the size of the tree only at its end. As
restic does, a scanner walks the same tree beside it, in a thread that only counts (one
`lstat` per file, the folders listed a second time from the cache the first listing warmed),
and adds each folder's files and bytes to the progress totals as it goes; the totals are
known when it ends. It sees what the backup sees: the same exclusions, the same skipped
paths, the same mount-point rule. It never fails the backup: what it cannot read it leaves
out (the backup reports it).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable

from coffre.core.progress import Progress


class Scanner:
    """Counts the files and bytes under `sources` into `progress`, in a thread."""

    def __init__(self, sources: list[bytes], progress: Progress, excluded: Callable[[bytes], bool],
                 one_file_system: bool = False) -> None:
        self.sources = sources
        self.progress = progress
        self.excluded = excluded
        self.one_file_system = one_file_system
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scan", daemon=True)

    def start(self) -> Scanner:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop counting (the backup ended first, or failed) and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        for source in self.sources:
            if self._stop.is_set():
                return
            try:
                st = os.lstat(source)
            except OSError:
                continue
            if self.excluded(source):
                continue
            if stat.S_ISDIR(st.st_mode):
                self._tree(source, st.st_dev)
            elif stat.S_ISREG(st.st_mode):
                self.progress.add_total(1, st.st_size)
        if not self._stop.is_set():
            self.progress.total_known()

    def _tree(self, top: bytes, device: int) -> None:
        folders = [top]
        while folders and not self._stop.is_set():
            folder = folders.pop()
            files = nbytes = 0
            prefix = folder.rstrip(b"/") + b"/"
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        path = prefix + entry.name
                        if self.excluded(path):
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if not self.one_file_system or self._same_device(entry, device):
                                    folders.append(path)
                            elif entry.is_file(follow_symlinks=False):
                                files += 1
                                nbytes += entry.stat(follow_symlinks=False).st_size
                        except OSError:
                            continue
            except OSError:
                continue
            if files:
                self.progress.add_total(files, nbytes)

    @staticmethod
    def _same_device(entry: os.DirEntry[bytes], device: int) -> bool:
        return entry.stat(follow_symlinks=False).st_dev == device
