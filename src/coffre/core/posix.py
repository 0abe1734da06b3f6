"""What only POSIX systems offer, behind one module: the account databases (`pwd`, `grp`), file
locks (`fcntl`), process probes, root. Every other module asks here, so Coffre starts and its
pure parts (formats, crypto, patterns, the command line) work where these are missing
(Windows); tests/test_portability.py imports every module with them hidden.

Where something is missing, each function degrades in the way that is honest for its use:

- names of owners: `user_name`/`group_name` give "" (the snapshot then records numeric ids
  only, as for an id no account has); `uid_of`/`gid_of` give None (restore keeps the ids);
  `account` raises KeyError, as for an account that does not exist; `current_user` falls back
  on the login name the environment gives.
- `is_root` is False: nothing switches accounts or changes owners.
- `pid_alive` answers True when it cannot tell: a lock left by a dead process on this machine
  then expires after its normal delay instead of at once (os.kill(pid, 0) would end the
  process on Windows, not probe it).
- `lock_exclusive` REFUSES (LockingUnavailable) rather than going on unlocked: its callers
  guard files that two Coffre processes must not rewrite together (docs/windows.md).
- `open_files_limit` assumes the C runtime's usual 512 open files, which it cannot raise.
"""

from __future__ import annotations

import errno
import getpass
import os
from functools import lru_cache
from typing import Any, NamedTuple

from coffre.core.errors import CoffreError
from coffre.core.i18n import _

try:
    import pwd
except ImportError:  # Windows
    pwd = None  # type: ignore[assignment]
try:
    import grp
except ImportError:
    grp = None  # type: ignore[assignment]
try:
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]
try:
    import resource
except ImportError:
    resource = None  # type: ignore[assignment]

POSIX = os.name == "posix"
ACCOUNTS = pwd is not None and grp is not None  # owner names can be read and set
LOCKING = fcntl is not None
# Open files a process may have where the system gives no limit to read (Windows' C runtime).
DEFAULT_OPEN_FILES = 512
# The errnos of a full medium or a spent quota (Windows has no EDQUOT).
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class Account(NamedTuple):
    """A system account (the fields are named as pwd's, which callers used before)."""

    pw_name: str
    pw_uid: int
    pw_gid: int
    pw_dir: str


class LockingUnavailable(CoffreError):
    """This system offers no file lock Coffre can use."""


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The name of the account with this id; "" when there is none (or no account database)."""
    if pwd is None:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    """The name of the group with this id; "" when there is none (or no group database)."""
    if grp is None:
        return ""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def uid_of(name: str) -> int | None:
    """The id of the account named `name` on this machine, None if there is none."""
    if pwd is None or not name:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def gid_of(name: str) -> int | None:
    """The id of the group named `name` on this machine, None if there is none."""
    if grp is None or not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def account(name: str) -> Account:
    """The account named `name`; KeyError if there is none (always, without pwd)."""
    if pwd is None:
        raise KeyError(name)
    p = pwd.getpwnam(name)
    return Account(p.pw_name, p.pw_uid, p.pw_gid, p.pw_dir)


def home_folders() -> list[str]:
    """The home folders of the accounts of this machine (none without an account database)."""
    if pwd is None:
        return []
    return sorted({p.pw_dir for p in pwd.getpwall() if p.pw_dir})


def current_user() -> str:
    """The name of the account Coffre runs as (what libpq and ssh use as the default login)."""
    if pwd is not None and hasattr(os, "geteuid"):
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            pass
    return getpass.getuser()


def is_root() -> bool:
    """Whether Coffre runs as root (never where there is no such thing)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this id exists; True when that cannot be told."""
    if not POSIX or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_exclusive(fd: int, what: str) -> None:
    """Hold an exclusive lock on the open file `fd` until it is closed (waiting for it); refuse
    with LockingUnavailable where the system offers no such lock. `what` names the file for
    the message."""
    if fcntl is None:
        raise LockingUnavailable(
            _("cannot lock {what}: this system offers no file locks Coffre can use").format(what=what),
            _("see docs/windows.md"))
    fcntl.flock(fd, fcntl.LOCK_EX)


def try_lock_exclusive(fd: int, what: str) -> bool:
    """Take an exclusive lock on the open file `fd` if nobody holds it (held until it is
    closed): False when someone does; LockingUnavailable where the system has no such lock."""
    if fcntl is None:
        raise LockingUnavailable(
            _("cannot lock {what}: this system offers no file locks Coffre can use").format(what=what),
            _("see docs/windows.md"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries durable (a file created, renamed or removed in it). Where a
    folder cannot be opened as a file (Windows), the file system's own journal is relied on."""
    flag = getattr(os, "O_DIRECTORY", None)
    if flag is None:
        return
    fd = os.open(path, os.O_RDONLY | flag)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cached(fd: int) -> None:
    """Let the system take back the memory that caches a file written and synced, which this
    process will not read again. Where memory is fresh to the machine (a virtual machine whose
    host reclaims what the guest left unused), filling a page costs several times what refilling
    one just freed costs: the next file written reuses these. A hint: where it is not offered
    (Windows) or refused, nothing changes."""
    _advise(fd, 0, 0, "POSIX_FADV_DONTNEED")


def will_need(fd: int, offset: int, length: int) -> None:
    """Ask the system to start reading these bytes of a file (length 0: to its end) into
    memory, without waiting for them. A hint: where it is not offered (Windows) or refused,
    nothing changes."""
    _advise(fd, offset, length, "POSIX_FADV_WILLNEED")


def _advise(fd: int, offset: int, length: int, advice: str) -> None:
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, offset, length, getattr(os, advice))
        except OSError:
            pass


def open_files_limit(wanted: int) -> int:
    """How many files this process may have open at once, first raised towards `wanted` if it
    is lower. Linux gives a process 1,024 by default (the soft limit) and lets it raise that up
    to a hard limit set by the administrator, often much higher: a restore that opens many
    files at once asks for what it needs and works within what it gets."""
    if resource is None:
        return DEFAULT_OPEN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < raised:  # the soft limit is never above the hard one: raised is then higher
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):  # macOS refuses more than its own ceiling: keep the limit
            pass
    return soft


# renameat2's flag: fail with EEXIST rather than replace the destination (Linux 3.15, glibc 2.28).
RENAME_NOREPLACE = 1
_AT_FDCWD = -100
# What renameat2 answers where the system or the file system does not offer the flag.
_NO_NOREPLACE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def rename_noreplace(src: str, dst: str) -> bool:
    """Rename src to dst in one step that never replaces an existing dst (FileExistsError
    then). False, with nothing renamed, where the system cannot do that in one step: Linux
    file systems without RENAME_NOREPLACE (FUSE ones, mostly), other Unixes. Windows' own
    rename never replaces."""
    if os.name == "nt":
        os.rename(src, dst)
        return True
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in _NO_NOREPLACE:
        return False
    raise OSError(code, os.strerror(code), dst)


@lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's renameat2, or None where the C library has none (not glibc 2.28+ or musl)."""
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, TypeError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
