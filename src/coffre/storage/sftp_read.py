"""Reading a range of a file over SFTP with many requests in flight, all sent and collected by
the calling thread.

SFTP reads at most 32 KiB a request (paramiko's size; 255 KiB where the server says it answers
that much, see request_sizes), so a 16 MiB pack is 64 to 512 requests: sent one after the other,
they cost as many round trips. paramiko's own pipelining (`readv`,
`prefetch`) sends them from a thread of its own and declares the prefetch finished whenever
the answers catch up with the requests sent so far. On a busy machine (a restore writing
files on every core) that happens, and the rest of the file is then read one request per
round trip: a 16 MiB pack took 3.5 s instead of 0.2 s on loopback, half the time, and would
take several seconds per pack over a WAN (paramiko PR #2519, issue #2418, not released).

Here the calling thread keeps up to IN_FLIGHT requests outstanding and reads their answers
itself, so nothing can race. This uses three internals of paramiko's
SFTPClient that have not changed since 1.x (`_async_request`, `_read_response`, and a file
object's `_async_response`); the SFTP tests run it against OpenSSH's sshd.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any
from weakref import WeakKeyDictionary

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, SFTPError, int64

# Requests outstanding: up to 16 MiB of 32 KiB reads (the SSH channel's window bounds what is
# actually in transit), sent again in bursts once half are answered: one request sent between
# two answers read halves the throughput (~55 MB/s against ~110 MB/s on loopback).
IN_FLIGHT = 512
# What each request asks for. SFTP servers must take 32 KiB (paramiko's size); OpenSSH's answers
# reads of up to 255 KiB in full and takes writes as large, and says so through its
# limits@openssh.com extension (max-read-length and max-write-length 261120). Larger requests
# mean fewer packets through paramiko's Python: reads ~160 MB/s instead of ~115 on loopback.
# A server without the extension is asked 32 KiB, as before.
DEFAULT_REQUEST = 32 * 1024
MAX_REQUEST = 255 * 1024
LIMITS = "limits@openssh.com"
_sizes: WeakKeyDictionary[Any, tuple[int, int]] = WeakKeyDictionary()  # one answer per session
_sizes_lock = threading.Lock()


def request_sizes(sftp: paramiko.SFTPClient) -> tuple[int, int]:
    """The length each read and each write on this session asks for: what the server says it
    answers or takes in full (limits@openssh.com), at most MAX_REQUEST; DEFAULT_REQUEST if it
    does not say."""
    with _sizes_lock:
        known = _sizes.get(sftp)
    if known is not None:
        return known
    sizes = _ask_sizes(sftp)
    with _sizes_lock:
        _sizes[sftp] = sizes
    return sizes


def _ask_sizes(sftp: paramiko.SFTPClient) -> tuple[int, int]:
    client: Any = sftp  # an internal of paramiko, as below
    try:
        kind, msg = client._request(CMD_EXTENDED, LIMITS)
        if kind != CMD_EXTENDED_REPLY:
            return DEFAULT_REQUEST, DEFAULT_REQUEST
        packet, read, write = msg.get_int64(), msg.get_int64(), msg.get_int64()
    except (OSError, SFTPError):  # "operation unsupported": the server has no such extension
        return DEFAULT_REQUEST, DEFAULT_REQUEST
    # Zero means no limit. A packet also carries ~30 bytes besides the data.
    within = packet - 1024 if packet else MAX_REQUEST

    def size(limit: int) -> int:
        chosen = min(MAX_REQUEST, limit or MAX_REQUEST, within)
        return chosen if chosen > 0 else DEFAULT_REQUEST

    return size(read), size(write)


class _Answers:
    """Takes the answers paramiko hands to the "file object" its requests were sent with."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (kind, msg)


def read_range(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, offset: int, end: int) -> bytes:
    """The bytes of the open file `f` from `offset` to `end`, or fewer if it ends before (the
    caller checks the length). An answer shorter than asked (allowed by SFTP) is followed by a
    request for the rest."""
    client: Any = sftp  # the internals below are not in paramiko's type hints
    step = request_sizes(sftp)[0]
    wanted = deque((at, min(step, end - at)) for at in range(offset, end, step))
    answers = _Answers()
    asked: dict[int, tuple[int, int]] = {}  # request number -> (offset, length)
    pieces: dict[int, bytes] = {}
    ended = False  # the server said the file ends before `end`
    while asked or (wanted and not ended):
        if len(asked) <= IN_FLIGHT // 2:
            while wanted and not ended and len(asked) < IN_FLIGHT:
                at, length = wanted.popleft()
                num = client._async_request(answers, CMD_READ, f.handle, int64(at), int(length))
                asked[num] = (at, length)
        while not answers.got:
            client._read_response()  # one answer, handed to the file object it was sent with
        got, answers.got = answers.got, {}
        for num, (kind, msg) in got.items():
            at, length = asked.pop(num)
            if kind == CMD_STATUS:
                try:
                    client._convert_status(msg)
                except EOFError:
                    ended = True  # past the end: what came before is the whole file
                    continue
                raise SFTPError("expected data")
            if kind != CMD_DATA:
                raise SFTPError("expected data")
            data = msg.get_string()
            pieces[at] = data
            if not data:
                ended = True
            elif len(data) < length:
                wanted.appendleft((at + len(data), length - len(data)))
    out, at = [], offset
    while pieces.get(at):  # contiguous from `offset`: a gap means the file ended
        out.append(pieces[at])
        at += len(pieces[at])
    return b"".join(out)
