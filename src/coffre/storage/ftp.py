"""A repository on an FTP server, with explicit TLS (FTPS) for providers that offer only that;
plain FTP only when asked for explicitly (`--insecure-ftp`), since it sends the password in
clear.

Python's own ftplib speaks both; no library adds anything needed here.

- **Login**: the password comes from COFFRE_FTP_PASSWORD or `~/.netrc`, never from the URL.
  The TLS certificate is checked against the system's authorities (SSL_CERT_FILE names
  another bundle), and the data connections are encrypted too (PROT P).
- **Writes**: to a temporary name beside the object (`.tmp-*`), a size check, then RNFR/RNTO.
  FTP's rename may replace an existing name, so the final name is checked to be free first;
  two writers racing on one name write the same bytes, because names are content hashes.
- **Connections**: one control connection per thread. After a failure it is dropped and the
  next attempt (storage/retry.py) logs in again.
"""

from __future__ import annotations

import ftplib
import netrc
import os
import secrets
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
    StorageSetupError,
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

BLOCK = 256 * 1024


@dataclass(frozen=True)
class FTPLocation:
    user: str
    host: str
    port: int
    path: str  # absolute, or relative to the login folder
    tls: bool

    @property
    def display(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        port = f":{self.port}" if self.port != 21 else ""
        path = self.path if self.path.startswith("/") else "/~/" + self.path
        return f"{scheme}://{self.user}@{self.host}{port}{path}"


def _password(where: FTPLocation) -> str:
    explicit = os.environ.get("COFFRE_FTP_PASSWORD")
    if explicit:
        return explicit
    try:
        entry = netrc.netrc().authenticators(where.host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2] and (not entry[0] or entry[0] == where.user):
        return entry[2]
    raise StoragePermissionDenied(
        _("no password for {user} on the FTP server {host}").format(user=where.user, host=where.host),
        _("set COFFRE_FTP_PASSWORD, or add 'machine HOST login USER password ...' to ~/.netrc (mode 600)"),
    )


def _reply_error(exc: ftplib.Error, what: str) -> StorageError:
    text = str(exc)
    code = text[:3]
    lowered = text.lower()
    # 550 means "not available", for a missing file or a denied right: the text tells which.
    if code in ("550", "553") and ("permission" in lowered or "privilege" in lowered or "denied" in lowered):
        return StoragePermissionDenied(_("{what}: the FTP server refused ({answer})").format(
            what=what, answer=text[:80]), _("check that the FTP user may write the repository folder"))
    if code == "550" or "no such file" in lowered or "not found" in lowered:
        return ObjectNotFound(outcome(NOT_FOUND, what))
    if code in ("530", "532"):
        return StoragePermissionDenied(_("{what}: the FTP server refused the login ({answer})").format(
            what=what, answer=text[:60]), _("check the user and COFFRE_FTP_PASSWORD or ~/.netrc"))
    if code in ("552", "452"):
        return StorageFull(_("{what}: no space left on the FTP server").format(what=what),
                           _("free space with 'coffre forget ... --prune' or raise the quota"))
    if code == "553" or "ermission" in text:
        return StoragePermissionDenied(_("{what}: the FTP server refused ({answer})").format(
            what=what, answer=text[:80]), _("check that the FTP user may write the repository folder"))
    if isinstance(exc, ftplib.error_temp):
        return TransientStorageError(_("{what}: the FTP server answered {answer}").format(
            what=what, answer=text[:80]))
    return StorageError(_("{what}: the FTP server answered {answer}").format(what=what, answer=text[:80]))


class FTPBackend(folders.FolderBackend[ftplib.FTP]):
    remote = True
    _MISSING = (ftplib.error_perm,)

    def __init__(self, where: FTPLocation) -> None:
        self.where = where
        self.location = where.display
        self._local = threading.local()
        self._all: list[ftplib.FTP] = []
        self._lock = threading.Lock()
        self._root: str | None = None
        self.upload_pacer: Pacer | None = None  # bandwidth limits (storage/pacing.py)
        self.download_pacer: Pacer | None = None

    # -- connection -----------------------------------------------------------------------
    def _connect(self) -> ftplib.FTP:
        ftp: ftplib.FTP
        if self.where.tls:
            ftp = ftplib.FTP_TLS(context=ssl.create_default_context(), timeout=stall_timeout())  # noqa: S321
        else:  # only with --insecure-ftp, after a warning
            ftp = ftplib.FTP(timeout=stall_timeout())  # noqa: S321
        host, port = self.where.host, self.where.port
        step = "connect"
        try:
            ftp.connect(host, port)
            if isinstance(ftp, ftplib.FTP_TLS):
                step = "auth"
                ftp.auth()
                step = "login"
                ftp.login(self.where.user, _password(self.where))
                ftp.prot_p()
            else:
                step = "login"
                ftp.login(self.where.user, _password(self.where))
        except ftplib.Error as exc:
            ftp.close()
            if step == "auth":  # AUTH TLS refused: a server without TLS
                raise StorageSetupError(
                    _("the FTP server at {host}, port {port}, does not offer TLS (it answered "
                      "{answer})").format(host=host, port=port, answer=str(exc)[:80]),
                    _("ftps:// needs a server with explicit TLS (AUTH TLS); check the port, or ask the "
                      "provider for FTPS. Only if it really offers none: ftp:// with --insecure-ftp "
                      "(the FTP password then crosses the network in clear)")) from None
            raise _reply_error(exc, _("logging in to {host}").format(host=host)) from None
        except (OSError, EOFError) as exc:
            ftp.close()
            failure = connect_failure(exc, _("the FTP server"), host, port, tls_hint=_(
                "ask the provider for its certificate authority's certificate and name it with "
                "SSL_CERT_FILE"))
            if failure is not None:
                raise failure from None
            raise TransientStorageError(
                _("cannot connect to the FTP server at {host}, port {port} ({error})").format(
                    host=host, port=port, error=type(exc).__name__)
            ) from None
        with self._lock:
            self._all.append(ftp)
        return ftp

    def _ftp(self) -> ftplib.FTP:
        ftp: ftplib.FTP | None = getattr(self._local, "ftp", None)
        if ftp is None:
            ftp = self._local.ftp = self._connect()
        return ftp

    def _drop(self) -> None:
        ftp = getattr(self._local, "ftp", None)
        self._local.ftp = None
        if ftp is not None:
            ftp.close()

    def _run(self, what: str, fn: Any) -> Any:
        ftp = self._ftp()
        try:
            return fn(ftp)
        except StorageError:
            raise
        except (ftplib.error_perm, ftplib.error_temp) as exc:
            raise _reply_error(exc, what) from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            self._drop()
            raise TransientStorageError(_("{what}: connection to the FTP server failed ({error})").format(
                what=what, error=type(exc).__name__)) from exc

    # -- layout ---------------------------------------------------------------------------
    def _base(self) -> str:
        if self._root is None:
            path = self.where.path
            if not path.startswith("/"):
                home = self._run(_("finding the login folder"), lambda f: f.pwd())
                path = home.rstrip("/") + "/" + path
            self._root = path
        return self._root

    @staticmethod
    def _lister(ftp: ftplib.FTP) -> folders.Lister:
        def listdir(where: str) -> list[folders.Entry] | None:
            try:
                facts = list(ftp.mlsd(where, facts=["type", "size", "modify"]))
            except ftplib.error_perm as exc:
                if str(exc).startswith("550"):
                    return None
                raise
            return [folders.Entry(n, f.get("type") == "dir", f.get("type") == "file", int(f.get("size", 0)),
                                  _mtime(f.get("modify", ""))) for n, f in facts]

        return listdir

    @staticmethod
    def _size(ftp: ftplib.FTP, path: str) -> int | None:
        ftp.voidcmd("TYPE I")
        try:
            size = ftp.size(path)
        except ftplib.error_perm:
            return None
        return int(size) if size is not None else None

    # -- contract -------------------------------------------------------------------------
    def exists(self) -> bool:
        config = Handle("config", "config")
        return self._run(doing(READING, config), lambda f: self._size(f, self._path(config))) is not None

    def create(self) -> None:
        def make(ftp: ftplib.FTP) -> None:
            base = self._base()
            parts = base.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                try:
                    ftp.mkd("/" + "/".join(parts[:i]))
                except ftplib.error_perm:
                    pass  # exists already (checked below)
            names = [entry[0] for entry in ftp.mlsd(base) if entry[0] not in (".", "..")]
            if any(not n.startswith(".") for n in names):
                raise CoffreError(_("{location} is not empty").format(location=self.location),
                                  _("choose an empty folder or a new one for the repository"))
            for kind in KINDS:
                if kind != "config":
                    ftp.mkd(f"{base}/{kind}")

        self._run(_("creating {location}").format(location=self.location), make)

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        what = doing(WRITING, handle)
        body = bytes(data)
        directory, final = self._dir(handle.kind, handle.name), self._path(handle)

        def write(ftp: ftplib.FTP) -> None:
            if self._same_or_raise(ftp, final, body, what):
                return
            tmp = f"{directory}/{folders.TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                self._store(ftp, tmp, body)
            except ftplib.error_perm as exc:
                if not isinstance(_reply_error(exc, what), ObjectNotFound):
                    raise
                ftp.mkd(directory)  # a data/XX folder not made yet
                self._store(ftp, tmp, body)
            try:
                if self._size(ftp, tmp) != len(body):
                    raise TransientStorageError(outcome(OTHER_SIZE, what))
                if self._same_or_raise(ftp, final, body, what):
                    return
                ftp.rename(tmp, final)
                tmp = ""
            finally:
                if tmp:
                    try:
                        ftp.delete(tmp)
                    except (ftplib.Error, OSError):
                        pass  # prune removes what is left

        self._run(what, write)

    def _store(self, ftp: ftplib.FTP, path: str, body: bytes) -> None:
        import io

        pacer = self.upload_pacer
        if pacer is None:
            ftp.storbinary(f"STOR {path}", io.BytesIO(body), blocksize=BLOCK)
        else:
            ftp.storbinary(f"STOR {path}", io.BytesIO(body), blocksize=PACED_BLOCK,
                           callback=lambda block: pacer.take(len(block)))

    def _same_or_raise(self, ftp: ftplib.FTP, path: str, body: bytes, what: str) -> bool:
        size = self._size(ftp, path)
        if size is None:
            return False
        if size == len(body) and self._read(ftp, path, 0, size, None) == body:
            return True
        raise ObjectExists(outcome(OTHER_OBJECT, what))

    @staticmethod
    def _read(ftp: ftplib.FTP, path: str, offset: int, length: int, pacer: Pacer | None) -> bytes:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd(f"RETR {path}", rest=offset or None)
        parts, got = [], 0
        try:
            while got < length:
                part = conn.recv(min(BLOCK if pacer is None else PACED_BLOCK, length - got))
                if not part:
                    break
                if pacer is not None:
                    pacer.take(len(part))
                parts.append(part)
                got += len(part)
        finally:
            conn.close()
        try:
            ftp.voidresp()  # 226 when read to the end; 426/451 when stopped early
        except (ftplib.error_temp, ftplib.error_perm):
            pass
        return b"".join(parts)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        what = doing(READING, handle)

        def read(ftp: ftplib.FTP) -> bytes:
            path = self._path(handle)
            size = self._size(ftp, path)
            if size is None:
                raise ObjectNotFound(outcome(NOT_FOUND, what))
            end = size if length is None else min(size, offset + length)
            if end <= offset:
                return b""
            data = self._read(ftp, path, offset, end - offset, self.download_pacer)
            if len(data) != end - offset:
                raise TransientStorageError(outcome(CUT_SHORT, what))
            return data

        result: bytes = self._run(what, read)
        return result

    def stat(self, handle: Handle) -> ObjectInfo:
        def facts(ftp: ftplib.FTP) -> ObjectInfo:
            lines = ftp.sendcmd(f"MLST {self._path(handle)}").splitlines()
            for line in lines[1:-1]:
                info = _facts(line.strip().split(" ", 1)[0])
                return ObjectInfo(handle.name, int(info.get("size", 0)), _mtime(info.get("modify", "")))
            raise ObjectNotFound(outcome(NOT_FOUND, doing(LOOKING_UP, handle)))

        result: ObjectInfo = self._run(doing(LOOKING_UP, handle), facts)
        return result

    @staticmethod
    def _delete(ftp: ftplib.FTP, where: str) -> None:
        ftp.delete(where)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for ftp in conns:
            try:
                ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                ftp.close()


def _facts(text: str) -> dict[str, str]:
    out = {}
    for fact in text.split(";"):
        key, _, value = fact.partition("=")
        if key:
            out[key.lower()] = value
    return out


def _mtime(value: str) -> int:
    """An MLSD 'modify' fact (YYYYMMDDHHMMSS[.sss], UTC) in ns; 0 when missing."""
    try:
        when = datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return 0
    return int(when.timestamp()) * 1_000_000_000

