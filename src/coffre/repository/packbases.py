"""The bases of one pack's deltas, for `check --read-data` and copy, which decode every delta
they read or copy through its base (a share of the data and prune check a delta without it:
Repository.check_delta_form).

On a local disk each base is loaded when asked, the disk told of them all first: they lie
scattered, and announced they are read while the pack itself is.

On remote storage a single blob read fetches an 8 MiB window of its pack
(`repository/window.py`). That serves a backup, whose bases follow each other in the packs of
the previous backup; it does not serve a pack of a year-old repository, whose deltas name
bases in a hundred other packs: nearly every base cost a window of its own. Simulated on the
year bench's repository on day 365 (`bench/year.py`), `check --read-data-subset 5%` would have
read 5 to 24 GB of windows for 50 to 194 MB of packs. So there the bases are read ahead in
groups of at most HELD bytes, each group with one request per run of neighbours in a pack
(Repository.load_many with the local disk's merge gap): about as many bytes again as the pack.

A copy that has just read and checked some of those bases itself, to copy them, hands their
content over (`kept`): they are not read again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from coffre.core.errors import CoffreError
from coffre.format.pack import BlobEntry
from coffre.repository.repo import MERGE_GAP, Repository

HELD = 32 * 1024 * 1024  # the bases' content held at once, per pack being read


class PackBases:
    def __init__(self, repo: Repository, entries: Sequence[BlobEntry],
                 kept: Callable[[bytes], bytes | None] | None = None) -> None:
        """`kept`: the content of a base the caller already holds (checked), else None."""
        self.repo = repo
        self._kept = kept
        ids = [b for b in dict.fromkeys(e.base for e in entries if e.base is not None)
               if kept is None or kept(b) is None]
        self._group_of: dict[bytes, int] = {}
        self._groups: list[list[bytes]] = []
        self._held: dict[bytes, bytes | CoffreError] = {}
        self._loaded = -1
        if not repo.backend.remote:
            repo.will_read_bases(ids)
            return
        size = 0
        for base_id in ids:
            loc = repo.index.lookup(base_id)
            if loc is None or not repo.index.plain_data(base_id):
                continue  # load_base says why
            if not self._groups or size + loc.entry.raw_length > HELD:
                self._groups.append([])
                size = 0
            self._group_of[base_id] = len(self._groups) - 1
            self._groups[-1].append(base_id)
            size += loc.entry.raw_length

    def get(self, base_id: bytes) -> bytes:
        """What repo.load_base(base_id, verify=False) gives, or raises: each group read once,
        the entries being taken in their order."""
        held = self._kept(base_id) if self._kept is not None else None
        if held is not None:
            return held
        group = self._group_of.get(base_id)
        if group is None:
            return self.repo.load_base(base_id, verify=False)
        if group < self._loaded:  # named again after its group was let go: read alone
            got = self.repo.load_many([base_id], gap=MERGE_GAP)[0]
        else:
            if group != self._loaded:
                self._held = {}  # the previous group's memory goes first
                ids = self._groups[group]
                self._held = dict(zip(ids, self.repo.load_many(ids, gap=MERGE_GAP), strict=True))
                self._loaded = group
            got = self._held[base_id]
        if isinstance(got, CoffreError):
            raise got
        return got
