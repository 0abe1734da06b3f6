"""The helper process of ops/smallreads.py: reads, names and compresses batches of small new
files for a backup.

    python -P -m coffre.ops.smallhelper   # frames on stdin/stdout: a 4-byte length, then msgpack
    <- {"key": bytes, "level": int, "min": int, "window": int}, then [[path, size], ...] a batch
    -> per batch, a list with per file: None, or [id, codec, payload, size, changed]

A module of its own, which imports only what that takes (zstd, BLAKE3, msgpack): every
backup that starts helpers pays for their start, ~0.1 CPU-second each with the backup's
modules (the encryption library, msgspec, subprocess...), ~0.05 without.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from typing import IO, Any

import msgpack

from coffre.compress import CODEC_NONE, compress, decompress
from coffre.core import frames
from coffre.crypto.blobid import blob_id
from coffre.sources.changes import changed_while_read
from coffre.sources.prefetch import OpenAhead

MAX_FRAME = 256 * 1024 * 1024  # a batch's answer: at most BATCH_BYTES and their compressed form


def write_frame(out: IO[bytes], message: object) -> None:
    # format/codec.encode's very form, spelled here: that module loads msgspec, for its structs.
    frames.write(out, msgpack.packb(message, use_bin_type=True))


def read_frame(inp: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream (or a frame cut short)."""
    data = frames.read(inp, MAX_FRAME)
    return None if data is None else msgpack.unpackb(data, raw=False)


def read_batch(files: list[tuple[bytes, int]], key: bytes, level: int, min_size: int,
               window: int) -> list[list[object] | None]:
    """Each file opened (at most `window` ahead, each announced to the kernel), read once,
    named, compressed and checked; None for a file the backup must read itself."""
    opened = OpenAhead(files, window)
    try:
        answers: list[list[object] | None] = []
        for index in range(len(files)):
            fd = opened.take(index)
            answers.append(None if isinstance(fd, OSError) else _read_one(fd, key, level, min_size))
        return answers
    finally:
        opened.close()


def _read_one(fd: int, key: bytes, level: int, min_size: int) -> list[object] | None:
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or before.st_size >= min_size:
            return None
        try:
            head = os.read(fd, min_size)
        except BlockingIOError:  # O_NONBLOCK, which a regular file ignores but some shares may not
            return None
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(head) >= min_size or after.st_size != len(head):
        return None  # grew, or not at its end after one read
    changed = changed_while_read(before, after)
    if not head:
        return [b"", CODEC_NONE, b"", 0, changed]
    codec, payload = compress(head, level)
    # The check Packer.add makes of what it compresses, made here where the bytes are.
    if codec != CODEC_NONE and decompress(codec, payload, len(head)) != head:
        return None
    return [blob_id(key, head), codec, payload, len(head), changed]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup decides; its end closes our input
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    settings = read_frame(inp)
    if not isinstance(settings, dict):
        return
    key, level, min_size, window = (settings["key"], settings["level"], settings["min"],
                                    settings["window"])
    while (batch := read_frame(inp)) is not None:
        write_frame(out, read_batch([(bytes(p), int(s)) for p, s in batch], key, level, min_size,
                                    max(1, window)))


if __name__ == "__main__":
    main()
