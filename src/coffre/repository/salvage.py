"""Salvage: the blobs of a pack whose header cannot be read, found from the pack's body.

Format 1 (format 2: SealedSalvager below). A pack is its blob envelopes back to back, then
its encrypted header. Without the header, where each blob ends is not written anywhere; but
each envelope starts with its format byte and the 16-byte session id of the process that
wrote it, and its plaintext starts with a codec byte, then (for compressed blobs) a zstd
frame whose length its block headers give. So the pack is walked from its start: at each
position, the candidate lengths are the end of the zstd frame, or the next place where an
envelope of a known session starts; a candidate is kept only if it authenticates (AES-GCM,
with the id computed from its content bound in), so nothing wrong is ever taken. Damaged
bytes are skipped to the next envelope start.
"""

from __future__ import annotations

from collections.abc import Iterable

import zstandard

from coffre.compress import CODEC_NONE, CODEC_ZSTD, CODEC_ZSTD_DELTA, decompress, decompress_delta
from coffre.core.errors import CoffreError
from coffre.crypto import aead
from coffre.format import pack as packfmt
from coffre.format.codec import ID_LEN
from coffre.repository.repo import Repository

_PREFIX = 1 + aead.SESSION_ID_LEN + aead.NONCE_LEN
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_ENVELOPE = packfmt.MAX_TREE_RAW + 1024
MAX_CANDIDATES = 64  # ends tried for a stored (uncompressed) blob


MORE = -1  # zstd_frame_length: the buffer ends before the frame does


def zstd_frame_length(buf: bytes) -> int | None:
    """The length of the zstd frame at the start of buf, from its block headers: None if buf
    does not start with a frame, MORE if it starts with one that goes on past its end."""
    if len(buf) < 6:
        return MORE
    if buf[:4] != _ZSTD_MAGIC:
        return None
    try:
        pos = zstandard.frame_header_size(buf)
    except zstandard.ZstdError:
        return None
    checksum = (buf[4] >> 2) & 1
    while True:
        if pos + 3 > len(buf):
            return MORE
        header = int.from_bytes(buf[pos : pos + 3], "little")
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        pos += 3
        if kind == 3:
            return None
        pos += 1 if kind == 1 else size
        if last:
            break
    pos += 4 * checksum
    return pos if pos <= len(buf) else MORE


FIRST_WINDOW = 64 * 1024  # plaintext deciphered at first; doubled while a frame needs more


class Salvager:
    def __init__(self, repo: Repository, data: bytes, known_offsets: Iterable[int] = ()) -> None:
        self.repo = repo
        self.data = data
        self.end = self._body_end()
        # Sessions to look for: the first envelope's, the header's (written by the same
        # process), and those at offsets an old index gave: if the first bytes are damaged,
        # the others still show where envelopes start.
        self.sessions: set[bytes] = set()
        for at in {0, self.end, *known_offsets}:
            if at >= 0 and at + 1 + aead.SESSION_ID_LEN <= len(data) and data[at] == aead.ENVELOPE_VERSION:
                self.sessions.add(data[at + 1 : at + 1 + aead.SESSION_ID_LEN])

    def _body_end(self) -> int:
        """Where the blobs end: before the header, if the trailer still says where it is."""
        size = len(self.data)
        try:
            hlen = packfmt.split_trailer(self.data[-packfmt.TRAILER.size :], size)
        except CoffreError:
            return size
        return size - packfmt.TRAILER.size - hlen

    def run(self) -> list[packfmt.BlobEntry]:
        found: list[packfmt.BlobEntry] = []
        pos = 0
        while pos + aead.OVERHEAD <= self.end:
            entry = self._blob_at(pos)
            if entry is None:
                nxt = self._next_start(pos + 1)
                if nxt is None:
                    break
                pos = nxt
                continue
            found.append(entry)
            pos = entry.offset + entry.length
        return found

    def _next_start(self, start: int) -> int | None:
        """The next place an envelope of a session seen in this pack begins."""
        hits = [i for s in self.sessions if (i := self.data.find(b"\x01" + s, start, self.end)) >= 0]
        return min(hits) if hits else None

    def _blob_at(self, pos: int) -> packfmt.BlobEntry | None:
        data = self.data
        if data[pos] != aead.ENVELOPE_VERSION:
            return None
        session = data[pos + 1 : pos + 1 + aead.SESSION_ID_LEN]
        for length in self._lengths(pos, session):
            entry = self._authenticate(pos, length, self._plain(pos, length - aead.TAG_LEN))
            if entry is not None:
                self.sessions.add(session)
                return entry
        return None

    def _plain(self, pos: int, upto: int) -> bytes:
        """The unauthenticated plaintext of the envelope at pos, up to `upto` bytes of it (CTR:
        any prefix deciphers on its own)."""
        return self.repo.crypter.keystream_decrypt(self.data[pos : min(self.end, pos + upto)])

    def _lengths(self, pos: int, session: bytes) -> list[int]:
        """Candidate envelope lengths of the blob at pos."""
        limit = min(self.end - pos, MAX_ENVELOPE)
        window = min(limit, FIRST_WINDOW)
        plain = self._plain(pos, window)
        if not plain:
            return []
        codec = plain[0]
        start = 1 + ID_LEN if codec == CODEC_ZSTD_DELTA else 1
        if codec in (CODEC_ZSTD, CODEC_ZSTD_DELTA):
            while True:
                frame = zstd_frame_length(plain[start:])
                if frame != MORE or window >= limit:
                    break
                window = min(limit, window * 2)
                plain = self._plain(pos, window)
            return [] if frame is None or frame == MORE else [_PREFIX + start + frame + aead.TAG_LEN]
        if codec != CODEC_NONE:
            return []
        ends: list[int] = []
        at = pos + aead.OVERHEAD
        marker = b"\x01" + session
        while len(ends) < MAX_CANDIDATES:
            at = self.data.find(marker, at + 1, self.end)
            if at < 0:
                break
            ends.append(at - pos)
        return [*ends, self.end - pos]

    def _authenticate(self, pos: int, length: int, plain: bytes) -> packfmt.BlobEntry | None:
        if length < aead.OVERHEAD or pos + length > self.end:
            return None
        envelope = self.data[pos : pos + length]
        for kind, blob_id, size, base in _candidates(self.repo, plain[: length - _PREFIX - aead.TAG_LEN]):
            try:
                self.repo.crypter.decrypt(kind, envelope, blob_id)
            except CoffreError:
                continue
            return packfmt.BlobEntry(kind, blob_id, pos, length, size, base)
        return None


def _candidates(repo: Repository, body: bytes) -> list[tuple[int, bytes, int, bytes | None]]:
    """What an unauthenticated blob body would be: (kind, id, raw length, base) for each kind
    it could have; the caller authenticates them."""
    base = None
    try:
        if body[0] == CODEC_ZSTD_DELTA:
            base = body[1 : 1 + ID_LEN]
            frame = body[1 + ID_LEN :]
            content = decompress_delta(frame, repo.load_base(base, verify=False),
                                       _declared(frame, packfmt.MAX_BLOB_RAW))
            kinds = [aead.KIND_DATA]
        else:
            limit = packfmt.MAX_TREE_RAW if body[0] == CODEC_ZSTD else len(body) - 1
            content = decompress(body[0], body[1:], _declared(body[1:], limit, body[0]))
            kinds = [aead.KIND_DATA, aead.KIND_TREE]
    except (CoffreError, IndexError):
        return []
    blob_id = repo.crypter.blob_id(content)
    return [(k, blob_id, len(content), base) for k in kinds if len(content) <= packfmt.max_raw(k)]


class SealedSalvager:
    """Format 2: a pack's blobs carry nothing in clear, so they are found one after the other
    from the pack's start (and from the offsets an old index gave, past damaged bytes): the
    first four deciphered bytes of a blob give its body's length, hence (Padmé) its stored
    length. The pack key's salt is in the trailer: a pack whose trailer is lost gives nothing."""

    def __init__(self, repo: Repository, data: bytes, known_offsets: Iterable[int] = ()) -> None:
        self.repo, self.data = repo, data
        try:
            hlen = packfmt.split_trailer(data, len(data), 2)
        except CoffreError:
            self.salt, self.end = b"", 0
        else:
            self.salt, self.end = packfmt.trailer_salt(data), len(data) - packfmt.trailer_size(2) - hlen
        self.starts = sorted({0, *known_offsets})

    def run(self) -> list[packfmt.BlobEntry]:
        found: list[packfmt.BlobEntry] = []
        pos = 0
        while self.salt and pos + aead.SEALED_OVERHEAD < self.end:
            stored = self._stored_length(pos)
            entry = self._blob_at(pos, stored) if stored else None
            if entry is not None:
                found.append(entry)
            # A blob damaged after its length still says where the next one starts, unless an
            # old index knows a start before that.
            later = [s for s in self.starts if s > pos]
            if stored and (entry is not None or not later or later[0] >= pos + stored):
                pos += stored
            elif later:
                pos = later[0]
            else:
                break
        return found

    def _stored_length(self, pos: int) -> int:
        """The stored length the blob at pos declares, 0 if implausible."""
        head = self.repo.crypter.keystream_unseal(self.salt, self.data[pos : pos + aead.NONCE_LEN + 4])
        if len(head) < 4:
            return 0
        stored = aead.SEALED_OVERHEAD + packfmt.padded_size(int.from_bytes(head, "little"))
        return stored if pos + stored <= self.end and stored <= packfmt.max_stored(aead.KIND_TREE) else 0

    def _blob_at(self, pos: int, stored: int) -> packfmt.BlobEntry | None:
        crypter = self.repo.crypter
        envelope = self.data[pos : pos + stored]
        try:
            body = packfmt.unpad(crypter.keystream_unseal(self.salt, envelope[: stored - aead.TAG_LEN]))
        except CoffreError:
            return None
        for kind, blob_id, size, base in _candidates(self.repo, body):
            try:
                crypter.unseal(self.salt, kind, envelope, blob_id)
            except CoffreError:
                continue
            return packfmt.BlobEntry(kind, blob_id, pos, stored, size, base, self.salt)
        return None


def _declared(payload: bytes, limit: int, codec: int = CODEC_ZSTD) -> int:
    """The raw length a payload declares (its zstd frame's content size), at most limit."""
    if codec == CODEC_NONE:
        return len(payload)
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError:
        raise CoffreError("not a zstd frame") from None
    if size < 0 or size > limit:
        raise CoffreError("implausible size")
    return int(size)


def salvage_pack(repo: Repository, data: bytes, known_offsets: Iterable[int] = ()) -> list[packfmt.BlobEntry]:
    """The blobs that can be found and authenticated in a pack's bytes, without its header
    (`known_offsets`: where an old index said blobs start)."""
    if repo.version >= 2:
        return SealedSalvager(repo, data, known_offsets).run()
    return Salvager(repo, data, known_offsets).run()
