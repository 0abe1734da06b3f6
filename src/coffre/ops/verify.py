"""Verify: compare a snapshot with the live files (content and metadata), listing every
difference. Content is compared by re-hashing the live bytes at the recorded blob
boundaries. With `read_repository` (backup --verify, coffre verify), every blob the snapshot
references is also read back from the repository and checked against its id, so "no
difference" means the snapshot both matches the files and can be restored."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.snapshot import DATABASES_DIR, Snapshot
from coffre.format.tree import Node
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.ops.content import content_matches, stored_readable
from coffre.repository.repo import Repository
from coffre.sources.files import Excluder, node_from_stat


@dataclass
class VerifyResult:
    differences: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    unreadable: int = 0  # files whose stored copy cannot be read back (damage: run check)


def _meta_diffs(saved: Node, live: Node) -> list[str]:
    out = []
    if saved.type != live.type:
        return [_("type {saved} -> {live}").format(saved=saved.type, live=live.type)]
    if saved.mode != live.mode:
        out.append(_("permissions {saved} -> {live}").format(saved=f"{saved.mode:o}", live=f"{live.mode:o}"))
    if (saved.uid, saved.gid) != (live.uid, live.gid):
        out.append(_("owner {saved} -> {live}").format(
            saved=f"{saved.uid}:{saved.gid}", live=f"{live.uid}:{live.gid}"))
    if saved.type != "dir" and saved.mtime_ns != live.mtime_ns:
        out.append(_("modification time differs"))
    if saved.type == "file" and saved.size != live.size:
        out.append(_("size {saved} -> {live}").format(saved=saved.size, live=live.size))
    if saved.type == "symlink" and saved.target != live.target:
        out.append(_("symlink target differs"))
    if sorted(saved.xattrs) != sorted(live.xattrs):
        out.append(_("extended attributes differ"))
    return out


class Verifier:
    def __init__(self, repo: Repository, report: Reporter = quiet, read_repository: bool = False) -> None:
        self.repo = repo
        self.report = report
        self.result = VerifyResult()
        self.read_repository = read_repository
        self._read: set[bytes] = set()  # blobs already read back from the repository

    def run(self, snap: Snapshot, only: list[str] | None = None) -> VerifyResult:
        """Compare the snapshot with the live files; `only` limits it to these paths.
        Live files the snapshot lacks are looked for only inside the backed-up sources (not
        in their parent directories), minus what the backup excluded or skipped."""
        self.repo.load_index()
        self._only = [_abspath(p) for p in only or []]
        # Database dumps have no live file to compare with ('coffre drill' checks them).
        self._sources = [_abspath(p) for p in snap.paths if not p.startswith(DATABASES_DIR + "/")]
        # Patterns starting with '!' were names taken literally before backup refused them.
        self._excluder = Excluder(["\\" + p if p.startswith("!") else p for p in snap.excludes])
        location = self.repo.backend.location
        self._skip = {_abspath(location)} if os.path.isabs(location) else set()
        self._tree(snap.tree, b"")
        return self.result

    def _wanted(self, path: str, is_dir: bool) -> bool:
        """Inside a path to compare, or a directory on the way to one."""
        return not self._only or any(
            _below(path, p) or (is_dir and _below(p, path)) for p in self._only
        )

    def _in_sources(self, path: str) -> bool:
        """A backed-up path, not one of the parent directories mirrored above them."""
        return any(_below(path, s) for s in self._sources)

    def _tree(self, tree_id: bytes, prefix: bytes) -> None:
        diffs = self.result.differences
        try:
            saved_nodes = load_tree(self.repo, tree_id)
        except CoffreError as exc:
            diffs.append(_("{path}: the folder's listing cannot be read from the repository "
                           "({reason})").format(path=os.fsdecode(prefix) or "/", reason=exc.message))
            return
        for node in saved_nodes:
            if not prefix and node.name == DATABASES_DIR.encode():
                if self.read_repository and node.subtree is not None:
                    self._stored_only(node.subtree, b"/" + node.name)
                continue
            path = prefix + b"/" + node.name
            text = os.fsdecode(path)
            if not self._wanted(text, node.type == "dir"):
                continue
            try:
                st = os.lstat(path)
                live = node_from_stat(node.name, path, st)
            except FileNotFoundError:
                diffs.append(_("{path}: missing from the live files").format(path=text))
                continue
            except OSError as exc:
                diffs.append(_("{path}: cannot be read ({reason})").format(path=text, reason=exc.strerror))
                continue
            for d in _meta_diffs(node, live):
                diffs.append(f"{text}: {d}")
            if node.type == "dir" and live.type == "dir" and node.subtree is not None:
                self._tree(node.subtree, path)
            elif node.type == "file" and live.type == "file":
                self._content(path, node)
        directory = os.fsdecode(prefix)
        if prefix and self._in_sources(directory) and self._wanted(directory, True):
            self._extras(prefix, {n.name for n in saved_nodes})

    def _extras(self, directory: bytes, saved: set[bytes]) -> None:
        """Report the live entries of `directory` that a backup now would have stored."""
        try:
            live_names = set(os.listdir(directory))
        except OSError as exc:
            self.result.differences.append(
                _("{path}: cannot be listed ({reason})").format(
                    path=os.fsdecode(directory), reason=exc.strerror))
            return
        for extra in sorted(live_names - saved):
            path = directory + b"/" + extra
            if self._missed(path):
                self.result.differences.append(
                    _("{path}: not in the snapshot").format(path=os.fsdecode(path)))

    def _missed(self, path: bytes) -> bool:
        """A live entry the snapshot lacks is a difference if it is to be compared and the
        backup would have stored it (not excluded, not the repository itself)."""
        text = os.fsdecode(path)
        if text in self._skip or self._excluder.excluded(path):
            return False
        return self._wanted(text, False)

    def _stored_only(self, tree_id: bytes, prefix: bytes) -> None:
        """Files with no live counterpart (database dumps): their stored copy must read back."""
        try:
            nodes = load_tree(self.repo, tree_id)
        except CoffreError as exc:
            self.result.differences.append(
                _("{path}: the folder's listing cannot be read from the repository ({reason})").format(
                    path=os.fsdecode(prefix), reason=exc.message))
            return
        for node in nodes:
            path = prefix + b"/" + node.name
            if node.type == "dir" and node.subtree is not None:
                self._stored_only(node.subtree, path)
            elif node.type == "file":
                reason = stored_readable(self.repo, node.content, self._read)
                if reason:
                    self.result.unreadable += 1
                    self.result.differences.append(f"{os.fsdecode(path)}: {reason}")

    def _content(self, path: bytes, node: Node) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            self.result.differences.append(
                _("{path}: cannot be read ({reason})").format(path=os.fsdecode(path), reason=exc.strerror))
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            reason = content_matches(self.repo, fd, node.content, node.size)
        finally:
            os.close(fd)
        if reason is None and self.read_repository:
            reason = stored_readable(self.repo, node.content, self._read)
            self.result.unreadable += reason is not None
        self.result.files += 1
        self.result.bytes += node.size
        if reason:
            self.result.differences.append(f"{os.fsdecode(path)}: {reason}")


def _abspath(path: str) -> str:
    return os.path.abspath(path).rstrip("/") or "/"


def _below(path: str, top: str) -> bool:
    """path is top or inside it (both absolute, normalised)."""
    return path == top or path.startswith(top.rstrip("/") + "/")
