"""The shipper: sends spooled pieces to the repository, oldest first, and removes each from
the spool once it is stored. Knows no engine.

A repository on a local path (a disk, a mounted NAS share) must be there at each pass: a
share that is not mounted leaves an empty folder, and storing there would take the pieces out
of the spool onto the machine's own disk. Its absence is a storage error: the spool keeps
everything until the next pass.

A crash between the store and the removal ships the piece again (another object with the
same piece: readers take any copy whose hash matches). A piece whose bytes no longer match
what capture recorded is never shipped as if it were whole: it is set aside and a gap is
shipped in its place.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from coffre.continuity.spool import Spool
from coffre.core.errors import CoffreError, TransientStorageError
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader
from coffre.ops.common import Reporter, quiet
from coffre.repository import segments
from coffre.repository.repo import Repository

DAMAGED = ".damaged-"


@dataclass
class Shipped:
    pieces: int = 0
    bytes: int = 0
    last_time_ns: int = 0  # capture time of the newest piece shipped
    gap_headers: list[SegmentHeader] = field(default_factory=list)  # the gaps' own headers
    base_headers: list[SegmentHeader] = field(default_factory=list)  # whole copies (a generation starts)

    @property
    def gaps(self) -> list[str]:
        """The names of the gaps shipped."""
        return [h.name for h in self.gap_headers]


def require_present(repo: Repository) -> None:
    """A repository on a local path must still be there (its config file), not an empty
    folder left by a share that is not mounted."""
    backend = repo.backend
    if not backend.remote and not backend.exists():
        raise TransientStorageError(
            _("the repository {location} is not there (a disk or a network share not mounted?)").format(
                location=backend.location),
            _("the spool keeps the pieces until it is back"))


def ship(repo: Repository, spool: Spool, report: Reporter = quiet, most: int | None = None) -> Shipped:
    """Send what waits in the spool (at most `most` pieces). Storage errors propagate: what
    was not sent stays in the spool for the next pass."""
    done = Shipped()
    spool.clean_temporaries()
    for pending in spool.pending()[:most]:
        try:
            header, payload = spool.read(pending)
        except CoffreError as exc:
            report(exc.message)
            _set_aside(spool, pending.path.name)
            continue
        if header.kind != "gap" and (len(payload) != header.size
                                     or hashlib.sha256(payload).hexdigest() != header.sha256):
            report(_("the spooled piece {name} was damaged after capture; a gap is recorded in its "
                     "place").format(name=header.name))
            _set_aside(spool, pending.path.name)
            header = header.as_gap("damaged in the spool")
            payload = b""
        require_present(repo)  # a stat per piece: a share unmounted mid-pass is noticed too
        segments.save(repo, header, payload)
        if header.kind == "gap":
            done.gap_headers.append(header)
        elif header.kind == "base":
            done.base_headers.append(header)
        if pending.path.exists():
            spool.remove(pending)
        done.pieces += 1
        done.bytes += len(payload)
        done.last_time_ns = max(done.last_time_ns, header.time_ns)
    return done


def _set_aside(spool: Spool, name: str) -> None:
    """Keep a damaged piece for whoever investigates, out of the shipper's way."""
    try:
        os.rename(spool.path / name, spool.path / f"{DAMAGED}{name}")
    except FileNotFoundError:
        pass
