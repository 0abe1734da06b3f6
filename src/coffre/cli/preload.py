"""The command's own program files read ahead while it starts.

A command imports ~250 modules (a local restore) to ~420 (an S3 one), one file each, one after
the other. On a cold page cache (a machine just started, the one a pharmacy restores onto after
a disaster) every import waits for its own disk read: ~0.07 s of an S3 restore that takes ~1 s.

So each command, once it has succeeded, keeps in the cache the list of the files its modules
came from (CACHE/startup/COMMAND-STORAGE.txt: `restore-s3`, `backup-local`), in the order they
were imported. The next run of the same command, before it imports anything else, hands that
list to a thread that asks the system to read the files (posix_fadvise WILLNEED: the reads are
queued, nothing waits for them), so the imports find them in memory. If the last files of the
list are in memory already (a warm machine), it asks nothing: the requests would only take the
interpreter lock from the imports.

The list is a hint about the page cache, nothing more: nothing is read from its files, and a
missing, stale or damaged list costs the time saved. Only absolute names of regular files that
end as a module's (.py, .pyc, .so) are opened, never through a symlink, never a fifo or a device.
The cache is private to its user, like the rest of it (core/private.py).

Standard library only (and few modules of it): it runs before the command line is loaded.
"""

from __future__ import annotations

import _thread
import os
import stat
import sys

from coffre.core.cachedir import cache_home

TYPE_CHECKING = False  # typing is not imported before the command line (cli/entry.py)
if TYPE_CHECKING:
    from typing import Any

MAX_LIST = 256 * 1024  # bytes: ~420 names of ~100 bytes for the largest command
MAX_FILES = 2000
MAX_LISTS = 64  # a command's list missing, those of the others are read: at most this many
SUFFIXES = (".pyc", ".py", ".so")
CHECKED = 3  # files at the end of the list looked at to tell a warm machine
TOP_OPTIONS_WITH_VALUE = ("--lang", "--log-file")  # options given before the command
# Windows has none of these (nor posix_fadvise: `start` asks nothing there).
_FLAGS = sum(getattr(os, flag, 0) for flag in ("O_NOFOLLOW", "O_CLOEXEC"))
_OPEN = os.O_RDONLY | _FLAGS | sum(getattr(os, flag, 0) for flag in ("O_NONBLOCK", "O_NOCTTY"))


def early_option(argv: list[str], name: str) -> str | None:
    """The value of an option (as `--name VALUE` or `--name=VALUE`), looked for before
    parsing: the language is needed to build the parser, the log to record its errors."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.removeprefix(name + "=")
    return None


def command_word(argv: list[str]) -> str | None:
    """The first word of a command line that is neither an option nor the value of one of the
    options given before the command; None if there is none before `--`."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in TOP_OPTIONS_WITH_VALUE:
            skip = True
        elif arg == "--":
            return None
        elif not arg.startswith("-"):
            return arg
    return None


def list_name(argv: list[str]) -> str | None:
    """The name of the list a command line reads and keeps: its first word and the kind of
    storage its repository is on (`restore-s3`), or None if it has no plain first word."""
    command = command_word(argv)
    if command is None or not command.isascii() or not command.isalpha() or len(command) > 32:
        return None
    location = (early_option(argv, "--repo") or early_option(argv, "-r")
                or os.environ.get("COFFRE_REPOSITORY", ""))
    kind = location.split("://", 1)[0] if "://" in location else "local"
    if not kind.replace("+", "").isalnum() or not kind.isascii() or len(kind) > 16:
        kind = "other"
    return f"{command.lower()}-{kind.lower()}"


def list_path(name: str) -> str:
    return os.path.join(cache_home(), "startup", name + ".txt")


class Preload:
    """The reads asked for one command: started by `start`, `wait` for their end (tests)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loaded = set(sys.modules)  # in memory already: not worth keeping in the list
        self.known: bytes | None = None  # the list as read, to rewrite it only if it changed
        self.advised: list[str] = []
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def start(self) -> Preload:
        _thread.start_new_thread(self._run, ())
        return self

    def wait(self) -> None:
        with self._done:
            pass

    def _run(self) -> None:
        try:
            names = self._names()
            if names and not all(_in_memory(name) for name in names[-CHECKED:]):
                for name in names:
                    if _advise(name):
                        self.advised.append(name)
        finally:
            self._done.release()

    def _names(self) -> list[str]:
        """The command's own list; if it has none yet, those of the other commands on the same
        kind of storage, merged: most modules are the same (a first restore on the machine
        whose backups ran there)."""
        data = _read_list(self.path)
        if data is not None:
            self.known = data
            return _parse(data)
        folder, own = os.path.split(self.path)
        kind = "-" + own.rpartition("-")[2]
        try:
            others = sorted(name for name in os.listdir(folder) if name.endswith(kind))[:MAX_LISTS]
        except OSError:
            return []
        merged: dict[str, None] = {}
        for name in others:
            merged.update(dict.fromkeys(_parse(_read_list(os.path.join(folder, name)) or b"")))
        return list(merged)[:MAX_FILES]


def _open_regular(name: str) -> int | None:
    """A descriptor of the regular file `name`, or None: a fifo or a device is never opened (the
    open of a tape device rewinds it), nor a symlink followed."""
    try:
        if not stat.S_ISREG(os.lstat(name).st_mode):
            return None
        fd = os.open(name, _OPEN)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _read_list(path: str) -> bytes | None:
    """A list's bytes; None if there is none, or if it is not one Coffre could have written."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        data = os.read(fd, MAX_LIST + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= MAX_LIST else None


def _parse(data: bytes) -> list[str]:
    names = data.decode("utf-8", "surrogateescape").split("\n")[:MAX_FILES]
    return [n for n in names if os.path.isabs(n) and n.endswith(SUFFIXES) and "\0" not in n]


def _in_memory(name: str) -> bool:
    """True if the first page of the file is in the page cache (or it has none); False if not,
    or if the system cannot tell. Asked with mincore over a mapping of that page: mapping a
    file reads nothing of it. A probing read does (even one with RWF_NOWAIT: it starts reading
    the missing page, and on a fast disk the page can be read before the probe looks at it, so
    that a cold file looked warm and nothing was read ahead)."""
    fd = _open_regular(name)
    if fd is None:
        return False
    try:
        return os.fstat(fd).st_size == 0 or _first_page_resident(fd)
    except (OSError, AttributeError, TypeError):  # no C library to ask, or not these calls
        return False
    finally:
        os.close(fd)


def _first_page_resident(fd: int) -> bool:
    # Imported here, in the reading thread; every command imports ctypes anyway (core/memory.py).
    import ctypes
    import mmap

    libc = _libc()
    page = mmap.PAGESIZE
    address = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        return False
    try:
        resident = ctypes.c_ubyte(0)
        return libc.mincore(address, page, ctypes.byref(resident)) == 0 and bool(resident.value & 1)
    finally:
        libc.munmap(address, page)


_LIBC: Any = None


def _libc() -> Any:
    """The C library with mmap, mincore and munmap typed, looked up once (each probe used to)."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _LIBC = libc
    return _LIBC


def _advise(name: str) -> bool:
    """Ask the system to read a regular file into memory; False if it is not one."""
    fd = _open_regular(name)
    if fd is None:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def start(argv: list[str]) -> Preload | None:
    """Start reading ahead the files this command line's modules came from last time."""
    if not hasattr(os, "posix_fadvise"):
        return None
    name = list_name(argv)
    return None if name is None else Preload(list_path(name)).start()


def module_files(loaded: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The files the modules loaded so far (but those named in `loaded`) came from, in the
    order they were imported: the compiled file where one was used, else the source;
    extension modules' libraries."""
    files = []
    for key, module in list(sys.modules.items()):
        if key in loaded:
            continue
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not isinstance(origin, str) or not os.path.isabs(origin) or not origin.endswith(SUFFIXES):
            continue  # built in, frozen, or a namespace package
        cached = getattr(spec, "cached", None)
        files.append(cached if isinstance(cached, str) and os.path.exists(cached) else origin)
    return files


def remember(preload: Preload | None, argv: list[str]) -> None:
    """Keep the list of this command's files for its next run (only if it changed). A failure
    to write it only costs that run's time saved: it is not reported."""
    name = list_name(argv)
    if name is None or not hasattr(os, "posix_fadvise"):  # no reads asked: no list needed
        return
    if preload is not None:
        preload.wait()  # it may still be reading the old list
    files = module_files(preload.loaded if preload is not None else frozenset())
    data = "\n".join(files).encode("utf-8", "surrogateescape")
    if preload is not None and preload.known == data:
        return
    path = list_path(name)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, path)  # no fsync: a list lost or cut by a crash only costs time
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
