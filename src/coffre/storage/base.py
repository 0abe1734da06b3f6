"""The backend contract every storage implementation satisfies."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from coffre.core.errors import ConnectFailed, StorageError, StoragePermissionDenied
from coffre.core.i18n import N_, _

# A remote request that receives nothing for this long is stuck: it fails, and is retried.
STALL_TIMEOUT_S = 120.0


def seconds_from_env(name: str, default: float, maximum: float) -> float:
    """A number of seconds in (0, maximum] from an environment variable, or the default;
    anything else (text, zero, nan, inf) is a usage error naming the variable."""
    from coffre.core.errors import UsageError

    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= maximum:  # also refuses nan and inf
        raise UsageError(_("{name} must be a number of seconds (0-{maximum}], not {value}").format(
            name=name, maximum=f"{maximum:.0f}", value=repr(text)))
    return value


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc and what lies under it: causes, contexts, and the errors libraries keep aside
    (botocore's kwargs["error"], urllib3's reason and args, paramiko's errors by address)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        kwargs = getattr(e, "kwargs", None)
        if isinstance(kwargs, dict):
            stack.append(kwargs.get("error"))
        errors = getattr(e, "errors", None)
        if isinstance(errors, dict):
            stack += list(errors.values())


def connect_failure(exc: BaseException, server: str, host: str, port: int,
                    tls_hint: str = "") -> StorageError | None:
    """The error for a connection that could not be made at all, in plain words naming the
    server, host and port and what to check; None when exc is something else (a timeout, a
    connection cut after it was made). `server` is a translated phrase ("the SSH server").

    Refused, unknown host, no route and a failed TLS handshake are ConnectFailed (storage/
    retry.py fails at once when the storage never answered); a certificate that cannot be
    trusted is refused (StoragePermissionDenied), whenever it happens."""
    import ssl  # here, not at the top: only the network backends (which load it anyway) call this

    where = {"server": server, "host": host, "port": port}
    for e in _causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return StoragePermissionDenied(
                _("{server} at {host}, port {port}, presented a certificate that cannot be trusted "
                  "({reason})").format(**where, reason=e.verify_message or e.reason),
                tls_hint or _("if the server uses its own certificate authority, name that "
                              "authority's certificate with SSL_CERT_FILE"))
        if isinstance(e, socket.gaierror):
            if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                message = _("the host name {host} is unknown (no such name in DNS)")
            else:
                message = _("the host name {host} cannot be resolved ({reason})")
            return ConnectFailed(
                message.format(host=host, reason=e.strerror or e),
                _("check the spelling of the host in the repository URL, and this machine's "
                  "network and DNS settings"))
        if isinstance(e, ConnectionRefusedError):
            return ConnectFailed(
                _("{server} at {host}, port {port}, refused the connection").format(**where),
                _("check the host and port in the repository URL, and that the server is running "
                  "and accepts connections on that port"))
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return ConnectFailed(
                _("no network route to {server} at {host}, port {port}").format(**where),
                _("check this machine's network connection and the address in the repository URL"))
        if isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return ConnectFailed(
                _("the TLS handshake with {server} at {host}, port {port}, failed ({reason})").format(
                    **where, reason=e.reason or e),
                tls_hint or _("check the port: it may be one that does not speak TLS"))
    return None


def stall_timeout() -> float:
    """COFFRE_STORAGE_TIMEOUT (seconds), or STALL_TIMEOUT_S."""
    return seconds_from_env("COFFRE_STORAGE_TIMEOUT", STALL_TIMEOUT_S, 3600)


# The kinds of object a repository stores. "config" has a single object named "config".
KINDS = ("config", "keys", "data", "index", "snapshots", "locks", "trash", "forgotten", "segments")


@dataclass(frozen=True)
class Handle:
    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown object kind {self.kind!r}")
        if not self.name or "/" in self.name or self.name.startswith(".") or "\0" in self.name:
            raise ValueError(f"invalid object name {self.name!r}")


# What a backend was doing, in its error messages ("reading data/ab12...: not found").
WRITING = N_("writing {object}")
READING = N_("reading {object}")
LOOKING_UP = N_("looking up {object}")
REMOVING = N_("removing {object}")
NOT_FOUND = N_("{what}: not found")
OTHER_OBJECT = N_("{what}: a different object with this name exists")
CUT_SHORT = N_("{what}: the transfer was cut short")
OTHER_SIZE = N_("{what}: the server kept a different size")


def doing(action: str, handle: Handle) -> str:
    """`action` (one of WRITING, READING...) on the object `handle`, in the reader's language."""
    name = "config" if handle.kind == "config" else f"{handle.kind}/{handle.name}"
    return _(action).format(object=name)


def outcome(message: str, what: str) -> str:
    """`message` (NOT_FOUND, OTHER_OBJECT...) about `what`, in the reader's language."""
    return _(message).format(what=what)


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    mtime_ns: int


class Backend(Protocol):
    """Named immutable objects.

    - save: atomic and durable when it returns; an existing object with the same bytes is
      success (idempotent), with different bytes raises ObjectExists. Never overwrites.
    - load: bytes [offset, offset+length) (length None = to the end); ObjectNotFound if absent.
      A short object raises IntegrityError-free: callers validate lengths themselves.
    - stat / list: size and modification time as the storage sees it (storage time).
    - remove: ObjectNotFound if absent (callers deleting garbage may ignore it).
    - location: a human description, never containing credentials.
    - remote: each request is a network round trip (callers then read in larger pieces).
    """

    location: str
    remote: bool

    def save(self, handle: Handle, data: bytes | memoryview) -> None: ...

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, handle: Handle) -> ObjectInfo: ...

    def list(self, kind: str) -> Iterator[ObjectInfo]: ...

    def remove(self, handle: Handle) -> None: ...

    def exists(self) -> bool:
        """Whether a repository (its config object) is present."""
        ...

    def create(self) -> None:
        """Prepare an empty location for a new repository (refuses a non-empty one)."""
        ...

    def clean_temporaries(self, older_than_ns: int) -> int:
        """Remove partial uploads left by crashed writers, last written before the given
        time (storage clock). Returns how many were removed."""
        ...

    def free_space(self) -> int | None:
        """Bytes that can still be written, or None when the storage cannot say (remote
        storage). Prune uses it to repack only what fits on a nearly full medium."""
        ...

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        """A hint that these bytes are about to be loaded: a local disk starts reading them
        into memory while the caller works on others; other storage ignores it. Never fails."""
        ...

    def close(self) -> None: ...


class Wrapper:
    """A backend around another one: every operation passes through unless a subclass
    changes it (fault injection, the metadata cache)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location
        self.remote = inner.remote

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self.inner.save(handle, data)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.load(handle, offset, length)

    def stat(self, handle: Handle) -> ObjectInfo:
        return self.inner.stat(handle)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        return self.inner.list(kind)

    def remove(self, handle: Handle) -> None:
        self.inner.remove(handle)

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self) -> None:
        self.inner.create()

    def clean_temporaries(self, older_than_ns: int) -> int:
        return self.inner.clean_temporaries(older_than_ns)

    def free_space(self) -> int | None:
        return self.inner.free_space()

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        self.inner.will_read(handle, offset, length)

    def close(self) -> None:
        self.inner.close()
