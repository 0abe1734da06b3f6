"""The repository's segments (format/segment.py): store, list by their headers, read back
checked, remove. Knows no engine: continuity/ gives the headers their meaning."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from coffre.compress import compress, decompress
from coffre.core.errors import FormatError, IntegrityError, ObjectNotFound
from coffre.core.i18n import _
from coffre.crypto import aead
from coffre.format import segment as fmt
from coffre.format.segment import SegmentHeader
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

KIND = "segments"
REMOTE_READERS = 8


@dataclass(frozen=True)
class StoredSegment:
    object: str  # the object's name (SHA-256 of its bytes)
    header: SegmentHeader


def save(repo: Repository, header: SegmentHeader, payload: bytes, level: int | None = None) -> StoredSegment:
    """Store one log piece under `header` (whose size, hash and codec are set here). Durable
    when it returns; saving the same piece again stores another object (harmless: readers
    take any copy whose hash matches)."""
    if len(payload) > fmt.MAX_PAYLOAD:
        raise FormatError(_("a log piece of {size} bytes is larger than a segment may hold").format(
            size=len(payload)))
    header.size = len(payload)
    header.sha256 = hashlib.sha256(payload).hexdigest()
    header.codec, stored = compress(payload, repo.config.compression_level if level is None else level)
    plain = header.to_bytes()
    head = repo.crypter.encrypt(aead.KIND_SEGMENT_HEADER, plain)
    body = repo.crypter.encrypt(aead.KIND_SEGMENT, stored, fmt.header_digest(plain))
    data = fmt.join(head, body)
    # Verify after encrypt: what goes to storage must give back what we meant.
    if _open(repo, data, "self-check") != payload:
        raise IntegrityError(_("encryption self-check failed (memory fault?)"))
    name = hashlib.sha256(data).hexdigest()
    repo.backend.save(Handle(KIND, name), data)
    return StoredSegment(name, header)


def _header(repo: Repository, head: memoryview) -> tuple[SegmentHeader, bytes]:
    plain = repo.crypter.decrypt(aead.KIND_SEGMENT_HEADER, head)
    return SegmentHeader.from_bytes(plain), plain


def _open(repo: Repository, data: bytes | memoryview, what: str) -> bytes:
    head, body = fmt.split(data)
    header, plain = _header(repo, head)
    stored = repo.crypter.decrypt(aead.KIND_SEGMENT, body, fmt.header_digest(plain))
    payload = decompress(header.codec, stored, header.size)
    if len(payload) != header.size or hashlib.sha256(payload).hexdigest() != header.sha256:
        raise IntegrityError(_("segment {name}: its content does not match its header").format(name=what))
    return payload


def read_header(repo: Repository, name: str) -> SegmentHeader:
    """A segment's header, from the object's first bytes only (authenticated)."""
    first = repo.backend.load(Handle(KIND, name), 0, fmt.FIRST_READ)
    head, _body = fmt.split(first)
    return _header(repo, head)[0]


def listing(repo: Repository, errors: list[str] | None = None,
            known: dict[str, SegmentHeader] | None = None) -> list[StoredSegment]:
    """Every segment, ordered by stream and position. Headers already in `known` (object
    name -> header: objects never change) are not read again; `known` learns the others.
    Unreadable headers are reported in `errors` (or raised)."""
    known = {} if known is None else known
    names = sorted(i.name for i in repo.backend.list(KIND))
    todo = [n for n in names if n not in known]

    def one(name: str) -> tuple[str, SegmentHeader | None, str]:
        try:
            return name, read_header(repo, name), ""
        except ObjectNotFound:
            return name, None, ""  # removed after the listing
        except (FormatError, IntegrityError) as exc:
            return name, None, exc.message

    workers = REMOTE_READERS if repo.backend.remote else 1
    if workers > 1 and len(todo) > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="segments") as pool:
            results = list(pool.map(one, todo))
    else:
        results = [one(n) for n in todo]
    for name, header, problem in results:
        if header is not None:
            known[name] = header
        elif problem:
            message = _("segment {name}: {problem}").format(name=name[:12], problem=problem)
            if errors is None:
                raise IntegrityError(message)
            errors.append(message)
    found = [StoredSegment(n, known[n]) for n in names if n in known]
    return sorted(found, key=lambda s: (s.header.stream, s.header.start, s.header.end, s.header.time_ns,
                                        s.object))


def load(repo: Repository, seg: StoredSegment) -> bytes:
    """The log piece, checked: the object's hash, both envelopes, the piece's own hash."""
    data = repo.backend.load(Handle(KIND, seg.object), 0, fmt.FIRST_READ + fmt.MAX_PAYLOAD + 1)
    if hashlib.sha256(data).hexdigest() != seg.object:
        raise IntegrityError(_("{object} is damaged: its content does not match its name").format(
            object=f"{KIND}/{seg.object[:12]}"))
    payload = _open(repo, data, seg.header.name)
    head, _body = fmt.split(data)
    if _header(repo, head)[0] != seg.header:
        raise IntegrityError(_("segment {name}: its header changed since it was listed").format(
            name=seg.header.name))
    return payload


def remove(repo: Repository, seg: StoredSegment) -> None:
    try:
        repo.backend.remove(Handle(KIND, seg.object))
    except ObjectNotFound:
        pass
