"""Comparing a file's bytes with the content list of a snapshot node, without decrypting:
the file is cut at the recorded blob lengths and each piece's keyed hash compared; and
reading that content back from the repository, to know that it can be restored."""

from __future__ import annotations

import hmac
import os

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.repository.repo import Repository

READ_LIMIT = 32 * 1024 * 1024


def content_matches(repo: Repository, fd: int, content: list[bytes], size: int) -> str | None:
    """None if the open file holds exactly this content, else a short reason."""
    total = 0
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
        f.seek(0)
        for i, blob_id in enumerate(content):
            loc = repo.index.lookup(blob_id)
            if loc is None:
                return _("blob {i} of the file is missing from the repository index").format(i=i)
            length = loc.entry.raw_length
            data = f.read(length)
            if len(data) != length:
                return _("file is shorter than in the snapshot ({read} < {size} bytes)").format(
                    read=total + len(data), size=size)
            if not hmac.compare_digest(repo.crypter.blob_id(data), blob_id):
                return _("content differs in bytes {start}-{end}").format(start=total, end=total + length)
            total += length
        if f.read(1):
            return _("file is longer than in the snapshot ({size} bytes)").format(size=size)
    if total != size:
        return _("size differs: {total} bytes in content, {size} recorded").format(total=total, size=size)
    return None


READ_BATCH = 16  # blobs read from the repository at once (at most 16 MiB)


def stored_readable(repo: Repository, content: list[bytes], seen: set[bytes]) -> str | None:
    """None if every blob of this content can be read back from the repository (decrypted,
    decompressed, its base found, checked against its id), else why not. `seen`: blobs
    already read by the caller, skipped; those read here are added."""
    todo = [b for b in dict.fromkeys(content) if b not in seen]
    for i in range(0, len(todo), READ_BATCH):
        batch = todo[i : i + READ_BATCH]
        for blob_id, got in zip(batch, repo.load_many(batch), strict=True):
            if isinstance(got, CoffreError):
                return _("its stored copy cannot be read ({reason})").format(reason=got.message)
            seen.add(blob_id)
    return None
