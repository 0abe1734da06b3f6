"""Comparing a file's bytes with the content list of a snapshot node, without decrypting:
the file is cut at the recorded blob lengths and each piece's keyed hash compared."""

from __future__ import annotations

import hmac
import os

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
                return f"blob {i} of the file is missing from the repository index"
            length = loc.entry.raw_length
            data = f.read(length)
            if len(data) != length:
                return f"file is shorter than in the snapshot ({total + len(data)} < {size} bytes)"
            if not hmac.compare_digest(repo.crypter.blob_id(data), blob_id):
                return f"content differs in bytes {total}-{total + length}"
            total += length
        if f.read(1):
            return f"file is longer than in the snapshot ({size} bytes)"
    if total != size:
        return f"size differs: {total} bytes in content, {size} recorded"
    return None
