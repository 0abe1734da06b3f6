"""Small files restored by copies of the restore process (`coffre restore`).

Why processes: a restore of many small files spends its time in system calls (six a file)
and short decompressions, and threads hand Python's interpreter lock to each other at every
one of them. Restoring a copy of /usr/share (46,000 files) with two threads took 6.4
CPU-seconds and 31,000-42,000 context switches; the same batches restored by two copies of
the process took 4.8 CPU-seconds, 3,000 context switches and 27 % less time
(bench/README.md, "Measurement log", December 6 2026).

How: as the restore starts, before it has threads of its own, it forks `workers` copies of
itself (core/forks.py). Each holds the repository opened, its keys and index, and the
target: nothing is loaded again and nothing secret leaves the process. The walk sends each
batch of small files to the copy with the least work in hand (the paths and their entries,
msgpack over a pipe); the copy restores it with the restore's own code (Restorer.
_restore_batch), on its one thread, and answers what it counted: files, bytes, errors, the
hard links it could not make, a target that filled up, and its progress along the way. Large
files, links, folders and the rest stay with the parent and its threads.

From remote storage a copy must not use the connections it inherited: the parent goes on using
the same sockets (an SSH connection's transport runs in a thread the copy does not even
have). Its repository reads through the parent instead (Repository.read_through): each read
goes over the answers' pipe, the copy's listener in the parent makes it (from the whole packs
the restore holds, or with a request of its own, Repository.answer_read) and writes the bytes
back on a third pipe, which only it writes to. The copy authenticates them as it would the
storage's. The restore then makes the same requests as with threads only.

A copy never goes back into the command's code: whatever happens it ends with os._exit, so no
`finally` of the command (the repository lock's removal) runs in it. A copy that dies (killed,
out of memory) leaves the files of the batches it had not answered counted as not restored,
with an error saying they may be missing or incomplete; the other copies go on. Only the
command line uses copies: the web pages and the agent restore inside a process that runs
other work on other threads, which a copy could catch holding a lock.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import IO, TYPE_CHECKING

import msgspec

from coffre.core import forks, frames
from coffre.core.errors import CoffreError, FormatError, IntegrityError, ObjectNotFound, StorageError
from coffre.core.i18n import _
from coffre.core.progress import Progress
from coffre.format.codec import encode
from coffre.format.tree import Node, decode_tree
from coffre.storage.asked import Ask, Read

if TYPE_CHECKING:
    from coffre.ops.restore import Restorer

IN_FLIGHT = 2  # batches a copy holds at once: the one it restores and the next
PROGRESS_EVERY = 128  # files a copy restores between two progress messages
MAX_FRAME = 1 << 30  # a batch: at most SEALED_BATCH_FILES paths and entries


class Counts(msgspec.Struct):
    """What a copy counted while restoring one batch (Restorer.take_counts)."""

    stats: dict[str, int]
    errors: list[str]
    warnings: list[str]
    stop: int | None
    lost_links: list[bytes]
    left_links: list[bytes]
    not_kept: int
    privileges_dropped: int


class _Message(msgspec.Struct, omit_defaults=True):
    files: int = 0  # progress: files and bytes done since the last message
    nbytes: int = 0
    current: bytes | None = None
    done: Counts | None = None  # the batch is restored
    # Remote storage: bytes the copy asks for (Ask's arguments), answered with a _Reply.
    load: Read | None = None


class _Reply(msgspec.Struct, omit_defaults=True):
    data: bytes = b""
    error: str = ""  # a key of _ERRORS when the parent could not read them
    message: str = ""


# How a parent's failure to read is raised again in the copy, so the restore's code handles it
# as it would the storage's own (another copy of a blob is tried, or the file reported).
_ERRORS: dict[str, type[CoffreError]] = {
    "missing": ObjectNotFound, "integrity": IntegrityError, "format": FormatError, "storage": StorageError,
}


# A batch: its paths, and its entries encoded as a folder listing is (times of any range).
_BATCH = msgspec.msgpack.Decoder(tuple[list[bytes], bytes])
_MESSAGE = msgspec.msgpack.Decoder(_Message)
_REPLY = msgspec.msgpack.Decoder(_Reply)
_ENCODER = msgspec.msgpack.Encoder()


def _read(inp: IO[bytes]) -> bytes | None:
    """The next message, or None at the end of the stream (or one cut short or too long)."""
    try:
        return frames.read(inp, MAX_FRAME)
    except ValueError:
        return None


def _listing(files: list[tuple[bytes, Node]]) -> bytes:
    """The batch's entries as a folder listing (format/tree.py decodes either form): encoded
    in C, or field by field where a time lies beyond what an integer of msgpack holds."""
    nodes = [n for _p, n in files]
    try:
        return _ENCODER.encode({"v": 1, "nodes": nodes})
    except OverflowError:
        return encode({"v": 1, "nodes": [n.to_wire() for n in nodes]})


class _Child:
    def __init__(self, pid: int, send: IO[bytes], receive: IO[bytes], replies: IO[bytes]) -> None:
        self.pid = pid
        self.send = send  # batches
        self.receive = receive  # progress, answers and the copy's reads
        self.replies = replies  # the bytes read for it: written by its listener only
        self.batches: list[list[tuple[bytes, Node]]] = []  # sent, not answered yet
        self.files = 0  # in those batches
        self.alive = True
        self.status: int | None = None  # as waitpid gave it, once reaped
        self.reaping = threading.Lock()  # a pid is never signalled once reaped (it may be reused)
        self.reader: threading.Thread | None = None


class BatchProcesses:
    """`count` copies of the restore process, forked now, restoring the batches sent to them."""

    def __init__(self, restorer: Restorer, count: int) -> None:
        self._restorer = restorer
        self._children: list[_Child] = []
        self._ready = threading.Condition()
        kept: list[int] = []  # the parent's ends of the pipes: no copy keeps another's open
        try:
            for _ in range(count):
                to_child, from_parent = os.pipe()
                from_child, to_parent = os.pipe()
                replies_in, replies_out = os.pipe()
                try:
                    pid = forks.fork()
                except OSError:
                    for fd in (to_child, from_parent, from_child, to_parent, replies_in, replies_out):
                        os.close(fd)
                    raise
                if pid == 0:
                    _serve(restorer, to_child, to_parent, replies_in,
                           [from_parent, from_child, replies_out, *kept])
                for fd in (to_child, to_parent, replies_in):
                    os.close(fd)
                kept += [from_parent, from_child, replies_out]
                # These ends live as long as the copy: close() and the listener close them.
                send, receive = open(from_parent, "wb"), open(from_child, "rb")  # noqa: SIM115
                replies = open(replies_out, "wb")  # noqa: SIM115
                self._children.append(_Child(pid, send, receive, replies))
        except BaseException:
            self.abort()
            raise
        # Threads only once every copy is made: a copy is made with no thread of this module.
        for child in self._children:
            child.reader = threading.Thread(target=self._listen, args=(child,), name="restore-copy",
                                            daemon=True)
            child.reader.start()

    def submit(self, files: list[tuple[bytes, Node]]) -> bool:
        """Send a batch to the copy with the least in hand, waiting while each holds
        IN_FLIGHT; False if no copy is left (the caller restores it itself)."""
        with self._ready:
            while True:
                alive = [c for c in self._children if c.alive]
                if not alive:
                    return False
                free = [c for c in alive if len(c.batches) < IN_FLIGHT]
                if free:
                    break
                self._ready.wait()
            child = min(free, key=lambda c: c.files)
            child.batches.append(files)
            child.files += len(files)
        try:
            frames.write(child.send, _ENCODER.encode(([p for p, _n in files], _listing(files))))
        except (OSError, ValueError):
            pass  # the copy is gone: its listener counts the batch as not restored
        return True

    def close(self) -> None:
        """No more batches: wait for the copies to answer the last ones and end."""
        for child in self._children:
            try:
                child.send.close()
            except OSError:
                pass  # a copy gone already: its listener has seen it
        for child in self._children:
            if child.reader is not None:
                child.reader.join()
            else:  # never listened to: the copies were still being made
                child.receive.close()
                child.replies.close()
            self._reap(child)

    def abort(self) -> None:
        """The command is interrupted or failed: end the copies now."""
        for child in self._children:
            with child.reaping:
                if child.status is None:
                    try:
                        os.kill(child.pid, signal.SIGKILL)
                    except OSError:
                        pass
        self.close()

    def _listen(self, child: _Child) -> None:
        restorer = self._restorer
        try:
            while True:
                frame = _read(child.receive)
                try:
                    message = _MESSAGE.decode(frame) if frame is not None else None
                except msgspec.DecodeError:
                    message = None
                if message is None:
                    break
                if message.load is not None:
                    self._answer(child, message.load)
                    continue
                if message.files or message.nbytes:
                    restorer.progress.advance(files=message.files, nbytes=message.nbytes,
                                              current=message.current)
                if message.done is not None:
                    restorer.add_counts(message.done)
                    with self._ready:
                        batch = child.batches.pop(0) if child.batches else []
                        child.files -= len(batch)
                        self._ready.notify_all()
        finally:  # whatever ends the listening, the copy is gone for the walk
            child.receive.close()
            try:
                child.replies.close()
            except OSError:
                pass  # a reply the copy, gone, did not read
            self._reap(child)
            with self._ready:
                child.alive = False
                lost, child.batches, child.files = child.batches, [], 0
                self._ready.notify_all()
        if lost:
            restorer.lost_to_copy(lost, _ended(child.status))

    def _answer(self, child: _Child, load: Read) -> None:
        """Read for a copy, with this process's connections (Repository.answer_read)."""
        try:
            reply = _Reply(data=self._restorer.repo.answer_read(*load))
        except CoffreError as exc:
            kind = next((k for k, cls in _ERRORS.items() if isinstance(exc, cls)), "storage")
            reply = _Reply(error=kind, message=exc.message)
        except (ValueError, OSError) as exc:  # a name no storage has, or a local read that failed
            reply = _Reply(error="storage", message=str(exc))
        try:
            frames.write(child.replies, _ENCODER.encode(reply))
        except (OSError, ValueError):
            pass  # the copy is gone: the end of its answers follows

    @staticmethod
    def _reap(child: _Child) -> None:
        with child.reaping:
            if child.status is None:
                try:
                    child.status = os.waitpid(child.pid, 0)[1]
                except ChildProcessError:
                    child.status = 0


def _ended(status: int | None) -> str:
    """How a copy ended, for the error about the files it did not answer for."""
    if status is not None and os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return _("status {code}").format(
        code=os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else "?")


class _Sender(Progress):
    """A copy's progress, sent to the parent every PROGRESS_EVERY files and with each answer."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out
        self._files = self._bytes = 0
        self._last: bytes | None = None

    def advance(self, files: int = 0, nbytes: int = 0, current: str | bytes | None = None) -> None:
        self._files += files
        self._bytes += nbytes
        if isinstance(current, bytes):
            self._last = current
        if self._files >= PROGRESS_EVERY:
            self.send()

    def send(self, done: Counts | None = None) -> None:
        message = _Message(files=self._files, nbytes=self._bytes, current=self._last, done=done)
        self._files = self._bytes = 0
        frames.write(self._out, _ENCODER.encode(message))

    def asker(self, replies: IO[bytes]) -> Ask:
        """Reads of the storage asked of the parent, each answered on `replies`."""
        def ask(kind: str, name: str, offset: int, length: int | None, blobs: int) -> bytes:
            frames.write(self._out, _ENCODER.encode(_Message(load=(kind, name, offset, length, blobs))))
            frame = _read(replies)
            if frame is None:
                raise StorageError(_("the restore's main process stopped answering"))
            reply = _REPLY.decode(frame)
            if reply.error:
                raise _ERRORS.get(reply.error, StorageError)(reply.message)
            return reply.data
        return ask


def _serve(restorer: Restorer, batches_fd: int, answers_fd: int, replies_fd: int, others: list[int]) -> None:
    """A copy's whole life: restore each batch received, answer, end when the parent closes
    the pipe. Never returns."""
    code = 1
    try:
        for fd in others:
            os.close(fd)
        with open(batches_fd, "rb") as inp, open(answers_fd, "wb") as out, open(replies_fd, "rb") as replies:
            sender = _Sender(out)
            restorer.forked(sender)
            if restorer.repo.backend.remote:  # its connections are the parent's: read through it
                restorer.repo.read_through(sender.asker(replies))
            while (frame := _read(inp)) is not None:
                paths, listing = _BATCH.decode(frame)
                restorer._restore_batch(list(zip(paths, decode_tree(listing), strict=True)))
                sender.send(restorer.take_counts())
        code = 0
    except BaseException:  # noqa: S110 (the parent reports the batches left unanswered)
        pass
    finally:
        os._exit(code)

