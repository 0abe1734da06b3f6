"""A repository on an SSH server over SFTP: a NAS on another floor, a provider's server.

paramiko is the SSH library of the Python world: SSH2 and SFTP in Python on top of
`cryptography`, which Coffre already uses, with no external program to drive. It reads
OpenSSH's `known_hosts` files and talks to the SSH agent.

- **Host keys** are checked against `~/.ssh/known_hosts` (or COFFRE_SSH_KNOWN_HOSTS) and
  `/etc/ssh/ssh_known_hosts`. An unknown key is refused, and the message says how to accept
  it; a changed key is refused as a possible attack.
- **Authentication**: the SSH agent, then the user's default keys (`~/.ssh/id_ed25519`,
  `id_ecdsa`, `id_rsa`), or the key COFFRE_SSH_KEY names. Never a password on the command
  line.
- **Writes**: to a temporary name beside the object (`.tmp-*`), then `fsync@openssh.com`
  where the server offers it, a size check, and SFTP's plain RENAME. That RENAME refuses to
  replace an existing name (OpenSSH implements it with link and unlink), so objects are
  never overwritten. A cut connection leaves at most a temporary file, which prune removes.
- **Connections**: one SSH connection, and one SFTP channel per thread. After a failure the
  connection is dropped and the next attempt (storage/retry.py) opens a new one.
"""

# ruff: noqa: E402  (paramiko is imported after the sys.modules entry below)

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# paramiko imports invoke (one of its dependencies) only to run the `Match exec` lines of an
# OpenSSH config file, which Coffre never reads (the URL and COFFRE_SSH_* say everything):
# ~35 ms at each start, for asyncio, unittest.mock and a YAML parser. A None entry makes that
# import fail as if invoke were absent, which paramiko expects.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
import paramiko

from coffre.core import posix
from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
    TransientStorageError,
)
from coffre.core.i18n import _
from coffre.storage import folders
from coffre.storage.base import (
    CUT_SHORT,
    KINDS,
    LOOKING_UP,
    NOT_FOUND,
    OTHER_OBJECT,
    OTHER_SIZE,
    READING,
    WRITING,
    Handle,
    ObjectInfo,
    connect_failure,
    doing,
    outcome,
    stall_timeout,
)
from coffre.storage.pacing import BLOCK as PACED_BLOCK
from coffre.storage.pacing import Pacer
from coffre.storage.sftp_read import read_range, request_sizes

# paramiko logs connection failures with tracebacks on stderr when nothing else handles its
# logger; Coffre reports them itself, as one clear line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT_S = 20.0
WRITE_BLOCK = 256 * 1024


@dataclass(frozen=True)
class SFTPLocation:
    user: str
    host: str
    port: int
    path: str  # absolute, or relative to the login folder

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != 22 else ""
        path = self.path if self.path.startswith("/") else "/~/" + self.path
        return f"sftp://{self.user}@{host}{port}{path}"


class HostKeyError(StoragePermissionDenied):
    pass


class _RejectUnknown(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            _("the SSH server {host} is not known: its key ({key}) is in no known_hosts file").format(
                host=hostname, key=f"{key.get_name()} {key.fingerprint}"),
            _("check this fingerprint with the server's administrator, then accept it once with "
              "'ssh -p PORT USER@HOST' or 'ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts'"),
        )


def _io_error(exc: OSError, what: str) -> StorageError:
    code = exc.errno
    if code == errno.ENOENT:
        return ObjectNotFound(outcome(NOT_FOUND, what))
    if code in (errno.EACCES, errno.EPERM):
        return StoragePermissionDenied(_("{what}: permission denied on the SSH server").format(what=what),
                                       _("check that the SSH user may write the repository folder"))
    if code in posix.NO_SPACE:
        return StorageFull(_("{what}: no space left on the SSH server").format(what=what),
                           _("free space with 'coffre forget ... --prune' or grow the share"))
    return StorageError(f"{what}: {exc.strerror or exc}")


class SFTPBackend(folders.FolderBackend[paramiko.SFTPClient]):
    remote = True
    _MISSING = (FileNotFoundError,)

    def __init__(self, where: SFTPLocation) -> None:
        self.where = where
        self.location = where.display
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
        self._root: str | None = None
        self.upload_pacer: Pacer | None = None  # bandwidth limits (storage/pacing.py)
        self.download_pacer: Pacer | None = None

    # -- connection -----------------------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        known = os.environ.get("COFFRE_SSH_KNOWN_HOSTS") or str(Path.home() / ".ssh" / "known_hosts")
        for path in ("/etc/ssh/ssh_known_hosts", known):
            if os.path.isfile(path):
                client.load_system_host_keys(path)  # read only: Coffre never adds a key
        client.set_missing_host_key_policy(_RejectUnknown())
        key = os.environ.get("COFFRE_SSH_KEY")
        connect_timeout = min(CONNECT_TIMEOUT_S, stall_timeout())
        try:
            client.connect(
                self.where.host, port=self.where.port, username=self.where.user,
                key_filename=key or None, timeout=connect_timeout, banner_timeout=connect_timeout,
                auth_timeout=connect_timeout, allow_agent=True, look_for_keys=not key,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                _("the SSH server {host} presented a different key than the one known ({key}): "
                  "refused").format(host=self.where.host, key=f"{exc.key.get_name()} {exc.key.fingerprint}"),
                _("if the server was really reinstalled, remove its old line from known_hosts "
                  "('ssh-keygen -R HOST') and accept the new key; otherwise this may be an attack"),
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise StoragePermissionDenied(
                _("the SSH key {key} is protected by a passphrase, which Coffre does not ask for").format(
                    key=key or "~/.ssh/id_*"),
                _("load the key into ssh-agent (ssh-add), or give the backup its own key without a "
                  "passphrase, readable only by the backup user"),
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise StoragePermissionDenied(
                _("the SSH server {host} refused the login of {user}").format(
                    host=self.where.host, user=self.where.user),
                _("install the backup user's public key in the server's authorized_keys, load it "
                  "into ssh-agent, or name it with COFFRE_SSH_KEY"),
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            failure = connect_failure(exc, _("the SSH server"), self.where.host, self.where.port)
            if failure is not None:
                raise failure from None
            raise TransientStorageError(
                _("cannot connect to the SSH server at {host}, port {port} ({error})").format(
                    host=self.where.host, port=self.where.port, error=f"{type(exc).__name__}: {exc}")
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    def _sftp(self) -> paramiko.SFTPClient:
        """This thread's SFTP channel on the shared connection (opened on first use)."""
        with self._lock:
            if self._client is None or not self._transport_alive():
                if self._client is not None:
                    self._client.close()
                self._client = self._connect()
                self._generation += 1
            client, generation = self._client, self._generation
        sftp: paramiko.SFTPClient | None = getattr(self._local, "sftp", None)
        if sftp is None or getattr(self._local, "generation", -1) != generation:
            try:
                sftp = client.open_sftp()
            except (OSError, paramiko.SSHException, EOFError) as exc:
                self._drop()
                raise TransientStorageError(_("cannot open SFTP on {host} ({error})").format(
                    host=self.where.host, error=exc)) from None
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(stall_timeout())  # stuck: dropped, then retried
            self._local.sftp, self._local.generation = sftp, generation
        return sftp

    def _transport_alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def _drop(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _run(self, what: str, fn: Any) -> Any:
        """fn(sftp) with failures as storage errors; a broken connection is dropped."""
        sftp = self._sftp()
        try:
            return fn(sftp)
        except StorageError:
            raise
        except OSError as exc:
            if exc.errno is not None and not isinstance(exc, socket.timeout):
                raise _io_error(exc, what) from exc
            self._drop()
            raise TransientStorageError(_("{what}: connection to the SSH server failed ({error})").format(
                what=what, error=exc)) from exc
        except (paramiko.SSHException, EOFError) as exc:
            self._drop()
            raise TransientStorageError(_("{what}: connection to the SSH server failed ({error})").format(
                what=what, error=exc)) from exc

    # -- layout ---------------------------------------------------------------------------
    def _base(self) -> str:
        if self._root is None:
            path = self.where.path
            self._root = path if path.startswith("/") else self._run(
                _("finding the login folder"), lambda s: s.normalize(".")) + "/" + path
        return self._root

    @staticmethod
    def _lister(sftp: paramiko.SFTPClient) -> folders.Lister:
        def listdir(where: str) -> list[folders.Entry] | None:
            try:
                attrs = sftp.listdir_attr(where)
            except FileNotFoundError:
                return None
            return [folders.Entry(a.filename, stat.S_ISDIR(a.st_mode or 0), stat.S_ISREG(a.st_mode or 0),
                                  int(a.st_size or 0), int(a.st_mtime or 0) * 1_000_000_000) for a in attrs]

        return listdir

    # -- contract -------------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            self.stat(Handle("config", "config"))
        except ObjectNotFound:
            return False
        return True

    def create(self) -> None:
        def make(sftp: paramiko.SFTPClient) -> None:
            base = self._base()
            parts = base.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                d = "/" + "/".join(parts[:i])
                try:
                    sftp.stat(d)
                except FileNotFoundError:
                    sftp.mkdir(d, 0o700)
            if any(not n.startswith(".") for n in sftp.listdir(base)):
                raise CoffreError(_("{location} is not empty").format(location=self.location),
                                  _("choose an empty folder or a new one for the repository"))
            for kind in KINDS:
                if kind != "config":
                    sftp.mkdir(f"{base}/{kind}", 0o700)

        self._run(_("creating {location}").format(location=self.location), make)

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        what = doing(WRITING, handle)
        body = bytes(data)
        directory, final = self._dir(handle.kind, handle.name), self._path(handle)

        def write(sftp: paramiko.SFTPClient) -> None:
            if self._same_or_raise(sftp, final, body, what):
                return
            tmp = f"{directory}/{folders.TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                f = sftp.open(tmp, "wb")
            except FileNotFoundError:  # a data/XX folder not made yet
                try:
                    sftp.mkdir(directory, 0o700)
                except OSError:
                    pass  # made meanwhile by another writer; the open below tells
                f = sftp.open(tmp, "wb")
            try:
                with f:
                    f.set_pipelined(True)
                    f.MAX_REQUEST_SIZE = request_sizes(sftp)[1]  # paramiko's 32 KiB, or what the server takes
                    block = WRITE_BLOCK if self.upload_pacer is None else PACED_BLOCK
                    for start in range(0, len(body), block):
                        if self.upload_pacer is not None:
                            self.upload_pacer.take(min(block, len(body) - start))
                        f.write(body[start : start + block])
                    f.flush()
                    self._fsync(sftp, f)
                if sftp.stat(tmp).st_size != len(body):
                    raise TransientStorageError(outcome(OTHER_SIZE, what))
                try:
                    sftp.rename(tmp, final)  # refuses an existing name: never overwrites
                except OSError:
                    if not self._same_or_raise(sftp, final, body, what):
                        raise
            finally:
                try:
                    sftp.remove(tmp)
                except OSError:
                    pass  # renamed (the usual case), or the connection is gone: prune cleans up

        self._run(what, write)

    @staticmethod
    def _same_or_raise(sftp: paramiko.SFTPClient, path: str, body: bytes, what: str) -> bool:
        """True if path holds exactly body; ObjectExists if it holds something else."""
        try:
            st = sftp.stat(path)
        except FileNotFoundError:
            return False
        if st.st_size == len(body):
            with sftp.open(path, "rb") as f:
                if f.read(len(body) + 1) == body:
                    return True
        raise ObjectExists(outcome(OTHER_OBJECT, what))

    @staticmethod
    def _fsync(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> None:
        """Ask the server to make the bytes durable before the rename publishes them.
        paramiko has no call for OpenSSH's fsync extension; it is sent the way paramiko sends
        posix-rename. A server without it answers with an error status (no errno): the write
        then relies on the server's own flushing."""
        try:
            sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as exc:
            if exc.errno is not None:
                raise

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        what = doing(READING, handle)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(self._path(handle), "rb") as f:
                size = f.stat().st_size
                end = size if length is None else min(size, offset + length)
                if end <= offset:
                    return b""
                pacer = self.download_pacer
                if pacer is None:  # pipelined: not one round trip per 32 KiB (sftp_read.py)
                    data = read_range(sftp, f, offset, end)
                else:  # paced: one piece asked for at a time, so the limit holds on the wire
                    parts = []
                    f.seek(offset)
                    for start in range(offset, end, PACED_BLOCK):
                        pacer.take(min(PACED_BLOCK, end - start))
                        parts.append(f.read(min(PACED_BLOCK, end - start)))
                    data = b"".join(parts)
            if len(data) != end - offset:
                raise TransientStorageError(outcome(CUT_SHORT, what))
            return data

        result: bytes = self._run(what, read)
        return result

    def stat(self, handle: Handle) -> ObjectInfo:
        st = self._run(doing(LOOKING_UP, handle), lambda s: s.stat(self._path(handle)))
        return ObjectInfo(handle.name, int(st.st_size or 0), int(st.st_mtime or 0) * 1_000_000_000)

    @staticmethod
    def _delete(sftp: paramiko.SFTPClient, where: str) -> None:
        sftp.remove(where)

    def close(self) -> None:
        self._drop()
