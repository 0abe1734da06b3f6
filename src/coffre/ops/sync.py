"""`restore --sync [--delete]`: make the target match the snapshot (docs/restore.md).

--sync is a restore with `--overwrite if-changed` (ops/overwrite.py decides, unchanged files are
not read) whose unchanged entries get the snapshot's mode, times and owner again. --delete also
removes what the target holds and the snapshot does not, and a folder standing where the
snapshot has a file; this module does that, folder by folder, as the restore walks (before it
writes into the folder: space is freed first, and no temporary file of the restore is there yet).

What --delete may remove: only what the selection covers (SNAPSHOT:PATH, --include): a path
excluded, or not selected, is never touched (a folder is walked for the selected paths below
it, and removed only once empty). A folder whose snapshot listing cannot be read is left as it
is: what it should hold is not known.

Never outside the target: everything is done relative to open folders (`dir_fd`), opened
without following symlinks; a symlink is removed itself, never followed; a folder swapped for
a symlink meanwhile makes that one operation fail. A removal never crosses into another file
system (a mount point in the target is an error, left), leaves the lost+found folder at the
root of a file system (fsck's) and never enters a folder that holds a backup repository.
check_target refuses a target that is the file system's root, a system folder, a home folder
(or holds one), a repository, inside one, or holds the repository being read: the rsync
--delete disasters.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from coffre.core import posix
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _
from coffre.format.tree import Node
from coffre.ops.selection import Selection
from coffre.ops.target import DIR_FLAGS, TargetDirs

# Folders a --delete never makes match a snapshot (beside '/' and the home folders).
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
                  "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",  # noqa: S108
                  "/usr", "/var")
# A backup repository (Coffre's, restic's, borg's): a `config` file beside its data folder and
# one of these.
REPOSITORY_MARKS = ("keys", "snapshots", "index", "README")


def check_options(overwrite: str, sync: bool, delete: bool) -> None:
    """UsageError for --delete without --sync, or --sync with another --overwrite than if-changed."""
    if delete and not sync:
        raise UsageError(_("--delete goes only with --sync"),
                         _("give --sync --delete to also remove what the snapshot does not hold"))
    if sync and overwrite != "if-changed":
        raise UsageError(
            _("--sync cannot go with --overwrite {value}: it replaces exactly what changed").format(
                value=overwrite),
            _("leave --overwrite out: --sync implies --overwrite if-changed"))


def check_target(target: str, repository: str | None) -> None:
    """UsageError if --sync --delete must not empty `target`: see the module's docstring.
    `repository`: the folder of the repository being read, if it is local."""
    reason = target_refusal(target, repository)
    if reason is not None:
        raise UsageError(
            _("--sync --delete into {target} refused: {reason}").format(target=target, reason=reason),
            _("--delete removes what the snapshot does not hold: restore into a folder of its own, "
              "e.g. /srv/standby/officine"))


def target_refusal(target: str, repository: str | None) -> str | None:
    """Why a sync with delete must not empty `target` (None: it may): the file system's root, a
    system folder, a home folder or one that holds one, a folder that holds a backup
    repository or is inside one, or holds `repository` (the local folder being read). Shared
    by `restore --sync --delete` and the agent's check of `[continuity.NAME] files_target`."""
    where = os.path.realpath(target)
    here = _stat(where)

    def same(path: str) -> bool:
        there = _stat(path)
        return path == where or (here is not None and there is not None
                                 and (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino))

    if same("/"):
        return _("it is the root of the file system")
    homes = [os.environ.get("HOME", ""), os.path.expanduser("~"), *posix.home_folders()]
    homes = sorted({os.path.realpath(h) for h in homes if h.startswith("/")} - {"/"})
    for home in homes:
        if same(home):
            return _("it is the home folder {home}").format(home=home)
    for folder in SYSTEM_FOLDERS:
        if same(folder):
            return _("it is the system folder {folder}").format(folder=os.path.realpath(folder))
    for home in homes:
        if home.startswith(where.rstrip("/") + "/"):
            return _("it holds the home folder {home}").format(home=home)
    if repository is not None:
        stored = os.path.realpath(repository)
        if stored == where or stored.startswith(where.rstrip("/") + "/") or same(stored):
            return _("the repository being restored from, {repository}, is inside it").format(
                repository=repository)
    folder = where
    while True:
        if _holds_repository_at(folder):
            return (_("it holds a backup repository") if folder == where
                    else _("it is inside the backup repository {folder}").format(folder=folder))
        if folder == "/":
            return None
        folder = os.path.dirname(folder)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _holds_repository_at(path: str) -> bool:
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return False
    try:
        return holds_repository(fd)
    finally:
        os.close(fd)


def holds_repository(fd: int) -> bool:
    """Whether the open folder `fd` looks like a backup repository: a `config` file, a `data`
    folder, and keys, snapshots, index or a README."""
    def kind(name: str) -> int:
        try:
            return stat.S_IFMT(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return 0

    return (kind("config") == stat.S_IFREG and kind("data") == stat.S_IFDIR
            and any(kind(name) in (stat.S_IFDIR, stat.S_IFREG) for name in REPOSITORY_MARKS))


class Extraneous:
    """Removes, folder by folder, what the target holds and the snapshot does not."""

    def __init__(self, dirs: TargetDirs, selection: Selection, devices: bool,
                 problem: Callable[[bytes, BaseException], None], deleted: Callable[[], None]) -> None:
        self.dirs = dirs
        self.selection = selection
        self.devices = devices  # device nodes are restored (else their place is left as it is)
        self._problem = problem
        self._deleted = deleted

    def folder(self, dest: bytes, prefix: str, covered: bool, nodes: list[Node], whole: bool = True) -> None:
        """Before the restore writes `nodes` into the target's folder `dest` (`prefix` in the
        snapshot; `covered`: everything in it is selected): remove a selected folder standing
        where the snapshot has something else and, with `whole` (`nodes` is the folder's whole
        listing), every selected entry the snapshot does not hold."""
        try:
            fd = self.dirs.open_dir(dest)
        except OSError as exc:
            self._problem(dest, exc)
            return
        try:
            device = os.fstat(fd).st_dev
            # A file system's own root: its lost+found is fsck's, never the snapshot's to remove.
            top = os.stat("..", dir_fd=fd).st_dev != device
            wanted = {node.name: node for node in nodes}
            names = sorted(os.fsencode(n) for n in os.listdir(fd)) if whole else sorted(wanted)
            for name in names:
                path = prefix + "/" + os.fsdecode(name)
                bpath = os.fsencode(path)
                if self.selection.excluded(bpath):
                    continue
                selected = self.selection.selected(bpath, covered)
                node = wanted.get(name)
                if node is None and top and name == b"lost+found":
                    continue
                if node is None:
                    self._remove(fd, device, name, dest + b"/" + name, path, selected)
                elif selected and self._made(node) and self._is_folder(fd, name):
                    self._remove(fd, device, name, dest + b"/" + name, path, True)
        except OSError as exc:
            self._problem(dest, exc)
        finally:
            os.close(fd)

    def _made(self, node: Node) -> bool:
        """Whether the restore makes this node (not a folder) in the target."""
        return node.type in ("file", "symlink", "fifo") or (
            self.devices and node.type in ("chardev", "blockdev"))

    @staticmethod
    def _is_folder(fd: int, name: bytes) -> bool:
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def _remove(self, parent: int, device: int, name: bytes, out: bytes, path: str, selected: bool) -> bool:
        """Remove `name` in the open folder `parent` if selected; a folder's selected contents
        (the whole folder if nothing else is left). True if `name` is gone."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                if not selected:
                    return False
                os.unlink(name, dir_fd=parent)  # a symlink itself, never where it points
                self._deleted()
                return True
            if st.st_dev != device:
                if selected:
                    self._problem(out, CoffreError(_("another file system is mounted here; not deleted")))
                return False
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)  # swapped for a symlink: ELOOP/ENOTDIR
        except FileNotFoundError:
            return True
        except OSError as exc:
            self._problem(out, exc)
            return False
        try:
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
                self._problem(out, CoffreError(_("replaced while being deleted; left")))
                return False
            if holds_repository(fd):
                if selected:
                    self._problem(out, CoffreError(_("holds a backup repository; not deleted")))
                return False
            empty = True
            for child in sorted(os.fsencode(n) for n in os.listdir(fd)):
                inner = path + "/" + os.fsdecode(child)
                binner = os.fsencode(inner)
                if self.selection.excluded(binner):
                    empty = False
                    continue
                inside = selected or self.selection.selected(binner, False)
                empty = self._remove(fd, device, child, out + b"/" + child, inner, inside) and empty
        except OSError as exc:
            self._problem(out, exc)
            return False
        finally:
            os.close(fd)
        if not (selected and empty):
            return False
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            self._problem(out, exc)
            return False
        self._deleted()
        return True
