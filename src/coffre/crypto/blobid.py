"""A blob's id: the keyed hash that names it.

Apart from the rest of crypto/aead.py so that the backup's helper processes (ops/smallhelper.py),
which name small files and know no other key, start without loading the encryption library.
"""

from __future__ import annotations

import blake3


def blob_id(id_key: bytes, data: bytes | memoryview) -> bytes:
    """A blob's id: its content's BLAKE3 hash keyed by the repository's id key."""
    return blake3.blake3(data, key=id_key).digest()
