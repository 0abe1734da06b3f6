"""Copy snapshots between repositories: the NAS copy sent on to one or two off-site copies
(3-2-1). Only what the destination lacks is stored there.

Two cases:
- **Shared content keys** (the destination was made with `init --copy-chunking-from`): blob
  ids are the same in both repositories. A blob the destination has is skipped without
  reading it from the source. A missing blob is decrypted with the source's key, checked
  against its id, and encrypted again for the destination as it is, so deltas stay deltas
  (their bases are copied with them). Trees are copied unchanged.
- **Independent keys**: ids differ, so every data blob of the copied snapshots is read from
  the source and hashed with the destination's key, and trees are rewritten with the new
  ids. Only blobs the destination lacks are stored, whole (not as deltas).

A copy names its source in `original`, so copying again skips snapshots already copied (also
copies of copies). Commit order as for a backup: packs, index, rescue (§6.5), snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, IntegrityError
from coffre.crypto import aead
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, encode_tree
from coffre.ops.common import Reporter, load_tree, quiet, rescue_if_pruned
from coffre.repository.locks import Lock
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository


@dataclass
class CopyResult:
    copied: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)  # (source, copy)
    skipped: list[Snapshot] = field(default_factory=list)  # already in the destination
    blobs_added: int = 0
    bytes_added: int = 0  # stored bytes: what was sent to the destination
    shared_keys: bool = False


def shares_content_keys(a: Repository, b: Repository) -> bool:
    return a.keys.same_content_keys(b.keys)


class Copier:
    def __init__(self, src: Repository, dst: Repository, dst_lock: Lock, report: Reporter = quiet) -> None:
        self.src, self.dst, self.dst_lock, self.report = src, dst, dst_lock, report
        self.shared = shares_content_keys(src, dst)
        self.packer = Packer(dst)
        self.used: set[bytes] = set()  # destination blobs the copies rely on
        self._trees: dict[bytes, bytes] = {}  # source tree id -> destination tree id (this run)
        self._blobs: dict[bytes, bytes] = {}  # source data id -> destination id (this run)

    def run(self, snaps: list[Snapshot]) -> CopyResult:
        result = CopyResult(shared_keys=self.shared)
        present = {s.original or s.id for s in self.dst.snapshots(errors=[])}
        todo: list[tuple[Snapshot, Snapshot]] = []
        for snap in snaps:
            origin = snap.original or snap.id
            if origin in present:
                result.skipped.append(snap)
                continue
            present.add(origin)
            copy = Snapshot(
                time_ns=snap.time_ns, hostname=snap.hostname, username=snap.username,
                paths=list(snap.paths), tree=self._tree(snap.tree), tags=list(snap.tags),
                excludes=list(snap.excludes), summary=dict(snap.summary), program=snap.program,
                original=origin, databases=list(snap.databases),
            )
            todo.append((snap, copy))
        self.packer.flush()
        written = self.packer.take_written()
        if written:
            self.dst.save_index(written)
            for pid, entries in written.items():
                self.dst.index.add_pack(pid, entries)
        rescue_if_pruned(self.dst, self.used, self.report)
        self.dst_lock.check_lease()
        for snap, copy in todo:
            self.dst.save_snapshot(copy)
            result.copied.append((snap, copy))
        rescue_if_pruned(self.dst, self.used, self.report)
        result.blobs_added = self.packer.blobs_written
        result.bytes_added = self.packer.bytes_written
        return result

    # -- trees ------------------------------------------------------------------------------
    def _tree(self, tree_id: bytes) -> bytes:
        done = self._trees.get(tree_id)
        if done is not None:
            return done
        nodes = load_tree(self.src, tree_id)
        for node in nodes:
            if node.type == "dir" and node.subtree is not None:
                node.subtree = self._tree(node.subtree)
            elif node.type == "file":
                node.content = [self._data(b) for b in node.content]
        if self.shared:
            self._copy_as_is(tree_id)  # children first: a tree never lands without them
            new_id = tree_id
        else:
            new_id = self._store_tree(nodes)
        self._trees[tree_id] = new_id
        return new_id

    def _store_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        new_id = self.dst.crypter.blob_id(data)
        if self.packer.claim(new_id):
            self.packer.add(aead.KIND_TREE, new_id, data)
        self.used.add(new_id)
        return new_id

    # -- data -------------------------------------------------------------------------------
    def _data(self, blob_id: bytes) -> bytes:
        if self.shared:
            self._copy_as_is(blob_id)
            return blob_id
        done = self._blobs.get(blob_id)
        if done is not None:
            return done
        data = self.src.load_blob(blob_id)
        new_id = self.dst.crypter.blob_id(data)
        if self.packer.claim(new_id):
            self.packer.add(aead.KIND_DATA, new_id, data)
        self.used.add(new_id)
        self._blobs[blob_id] = new_id
        return new_id

    def _copy_as_is(self, blob_id: bytes) -> None:
        """Same ids: store the blob's stored form (a delta stays a delta), and its base."""
        if blob_id in self.used:
            return
        self.used.add(blob_id)
        if not self.packer.claim(blob_id):
            base = self.dst.index.base_of(blob_id)
            if base is not None:
                self.used.add(base)
            return
        loc = self.src.index.lookup(blob_id)
        if loc is None:
            raise CoffreError(f"blob {blob_id.hex()[:12]} is missing from the source repository",
                              "run 'coffre check' on the source")
        entry = loc.entry
        if entry.base is not None:
            self._copy_as_is(entry.base)
        envelope = self.src.read_envelope(loc)
        if len(envelope) != entry.length:
            raise IntegrityError(f"blob {blob_id.hex()[:12]} is truncated in the source")
        body = self.src.open_blob(entry, envelope)
        self.src.decode_plain(entry, body)  # checks the content against its id first
        self.packer.add_body(entry.kind, blob_id, body, entry.raw_length, entry.base)
