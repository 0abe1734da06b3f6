"""Pipelined SFTP reads (storage/sftp_read.py) against a real OpenSSH sshd: exact bytes for
every range, requests sent and answers read by the calling thread only (paramiko's readv sent
them from a thread of its own and, on a busy machine, fell back to one request per round
trip), and SFTP's short answers (from a stand-in: OpenSSH answers in full)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_READ, CMD_STATUS, CMD_WRITE, SFTP_EOF

from coffre.storage.base import Handle
from coffre.storage.sftp import SFTPBackend
from coffre.storage.sftp_read import read_range
from coffre.storage.url import open_backend

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of a request (32 KiB)


@pytest.fixture
def stored(sshd: Any, ssh_env: dict[str, str], tmp_path: Path) -> tuple[SFTPBackend, bytes]:
    folder = tmp_path / "nas"
    data = os.urandom(SIZE)
    backend = open_backend(sshd.url(str(folder)))
    assert isinstance(backend, SFTPBackend)
    backend.create()
    backend.save(Handle("data", "ab" * 32), data)
    return backend, data


def test_every_range_reads_its_exact_bytes(stored: tuple[SFTPBackend, bytes]) -> None:
    backend, data = stored
    handle = Handle("data", "ab" * 32)
    assert backend.load(handle) == data
    step = 32 * 1024
    for offset, length in [(0, 1), (1, step), (step - 1, 2), (12345, 2 * step + 7), (SIZE - 5, 5),
                           (SIZE - 5, 100), (SIZE, 10), (0, SIZE + 1), (700_000, None)]:
        want = data[offset:] if length is None else data[offset : offset + length]
        assert backend.load(handle, offset, length) == want, (offset, length)


def test_the_requests_are_pipelined_and_sent_by_the_calling_thread(
        stored: tuple[SFTPBackend, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """One request per 255 KiB (what OpenSSH says it answers in full), contiguous, all in flight
    before the first answer is read (not one round trip each), and no other thread sends one:
    nothing can declare the reading done while requests are still being sent, whatever the load
    of the machine."""
    backend, data = stored
    sent: list[tuple[str, int, int]] = []  # thread, offset, length
    before_first_answer: list[int] = []
    send, answer = paramiko.SFTPClient._async_request, paramiko.SFTPClient._read_response

    def sending(self: Any, fileobj: Any, kind: int, *args: Any) -> int:
        if kind == CMD_READ:
            sent.append((threading.current_thread().name, int(args[1]), int(args[2])))
        number: int = send(self, fileobj, kind, *args)
        return number

    def answering(self: Any, *args: Any) -> Any:
        if sent and not before_first_answer:
            before_first_answer.append(len(sent))
        return answer(self, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", sending)
    monkeypatch.setattr(paramiko.SFTPClient, "_read_response", answering)
    loaded: list[bytes] = []
    reader = threading.Thread(name="the-reader", target=lambda: loaded.append(
        backend.load(Handle("data", "ab" * 32), 1000, 2 * 1024 * 1024)))
    reader.start()
    reader.join()
    assert loaded == [data[1000 : 1000 + 2 * 1024 * 1024]]
    assert {thread for thread, _, _ in sent} == {"the-reader"}
    step = 255 * 1024
    assert [offset for _, offset, _ in sent] == list(range(1000, 1000 + 2 * 1024 * 1024, step))
    assert [length for _, _, length in sent] == [step] * 8 + [2 * 1024 * 1024 - 8 * step]
    assert before_first_answer == [9]  # all in flight at once


class ShortAnswers:
    """A stand-in SFTP client whose server answers each read with at most `most` bytes."""

    def __init__(self, content: bytes, most: int) -> None:
        self.content, self.most = content, most
        self.pending: list[tuple[Any, int, int, int]] = []
        self.number = 0
        self.asked: list[int] = []  # the length of each read

    def _async_request(self, fileobj: Any, kind: int, handle: bytes, offset: int, length: int) -> int:
        assert kind == CMD_READ
        self.number += 1
        self.asked.append(int(length))
        self.pending.append((fileobj, self.number, int(offset), int(length)))
        return self.number

    def _read_response(self) -> None:
        fileobj, num, offset, length = self.pending.pop(0)
        piece = self.content[offset : offset + min(length, self.most)]
        msg = paramiko.Message()
        if piece:
            msg.add_string(piece)
            msg.rewind()
            fileobj._async_response(CMD_DATA, msg, num)
        else:
            msg.add_int(SFTP_EOF)
            msg.add_string("end of file")
            msg.add_string("")
            msg.rewind()
            fileobj._async_response(CMD_STATUS, msg, num)

    def _request(self, kind: int, *args: Any) -> tuple[int, paramiko.Message]:
        """The stand-in's server, like many, has no limits@openssh.com: it says so."""
        assert (kind, args) == (CMD_EXTENDED, ("limits@openssh.com",))
        raise OSError("Operation unsupported")

    def _convert_status(self, msg: paramiko.Message) -> None:
        if msg.get_int() == SFTP_EOF:
            raise EOFError(msg.get_text())


class File:
    handle = b"h"


@pytest.mark.parametrize("most", [1000, 32 * 1024 - 1, 5])
def test_a_short_answer_is_followed_by_a_request_for_the_rest(most: int) -> None:
    content = os.urandom(100_000)
    assert read_range(ShortAnswers(content, most), File(), 10, 90_000) == content[10:90_000]
    assert read_range(ShortAnswers(content, most), File(), 99_000, 120_000) == content[99_000:]


def test_a_server_that_does_not_tell_its_limits_is_asked_32_kib_a_read() -> None:
    content = os.urandom(300_000)
    server = ShortAnswers(content, len(content))
    assert read_range(server, File(), 0, 300_000) == content
    assert server.asked == [32 * 1024] * 9 + [300_000 - 9 * 32 * 1024]


def test_the_sftp_storage_does_not_load_invoke() -> None:
    """paramiko imports invoke only for OpenSSH config files' `Match exec`, which Coffre never
    reads: ~35 ms of every SFTP command's start."""
    code = "import sys, coffre.storage.sftp; print(sys.modules.get('invoke', 'absent'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize("told", [True, False])
def test_writes_are_as_large_as_the_server_says_it_takes(
        sshd: Any, ssh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        told: bool) -> None:
    """OpenSSH takes writes of 255 KiB (limits@openssh.com); a server that does not say is sent
    32 KiB a request, the size every SFTP server takes."""
    written: list[int] = []
    send, ask = paramiko.SFTPClient._async_request, paramiko.SFTPClient._request

    def sending(self: Any, fileobj: Any, kind: int, *args: Any) -> int:
        if kind == CMD_WRITE:
            written.append(len(args[2]))
        number: int = send(self, fileobj, kind, *args)
        return number

    def asking(self: Any, kind: int, *args: Any) -> Any:
        if kind == CMD_EXTENDED and args == ("limits@openssh.com",) and not told:
            raise OSError("Operation unsupported")
        return ask(self, kind, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", sending)
    monkeypatch.setattr(paramiko.SFTPClient, "_request", asking)
    backend = open_backend(sshd.url(str(tmp_path / "nas")))
    backend.create()
    data = os.urandom(1024 * 1024)
    backend.save(Handle("data", "cd" * 32), data)
    assert backend.load(Handle("data", "cd" * 32)) == data
    step = 255 * 1024 if told else 32 * 1024
    assert sum(written) == len(data) and max(written) == step
