"""A repository on a Coffre server (`coffre server`, docs/server.md):

    https://HOST[:PORT][/PREFIX]/REPO     REPO: the repository's name on the server; PREFIX:
                                          where a reverse proxy serves the server
    http://HOST[:PORT][/PREFIX]/REPO      plain HTTP: only with allow_insecure_http

The token comes from COFFRE_SERVER_TOKEN, else from the file named by
COFFRE_SERVER_TOKEN_FILE (refused when group or others may read it), never from the URL; it
is sent in the Authorization header and appears in no message, log or exception. TLS is
always verified: the system's certificate authorities, or the file named by SSL_CERT_FILE
(a server's self-signed certificate).

urllib3 pools connections (as many as the backup's parallel uploads) and is thread-safe; its
retries are off: `storage/retry.py` is the one retry policy. Answers map onto Coffre's storage
errors: 401/403 permission denied, 404 not found, 409 exists, 507 quota exceeded or storage
full, 5xx, 408 and a corrupted upload (400 hash_mismatch) transient, cut connections too.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3

from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    QuotaExceeded,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
    TransientStorageError,
    UsageError,
)
from coffre.core.human import human_size
from coffre.core.i18n import _
from coffre.core.private import open_to_others
from coffre.storage.base import (
    CUT_SHORT,
    LOOKING_UP,
    NOT_FOUND,
    OTHER_OBJECT,
    READING,
    REMOVING,
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

TOKEN_ENV = "COFFRE_SERVER_TOKEN"  # noqa: S105 (a variable's name)
TOKEN_FILE_ENV = "COFFRE_SERVER_TOKEN_FILE"  # noqa: S105
REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # as the server's tenants.py
# Connections kept: the backup's workers (one per CPU by default), restore's 8 readers and the
# lock refresher, with room (a full pool would drop connections and warn on stderr).
POOL_CONNECTIONS = max(16, 2 * (os.cpu_count() or 2) + 2)
CONNECT_TIMEOUT_S = 15.0
MAX_ERROR_BODY = 64 * 1024
WARNING_HEADER = "x-coffre-quota-warning"
RECEIVED_HEADER = "x-coffre-received-ns"
_TOKEN = re.compile(r"^[\x21-\x7e]{1,512}$")  # printable ASCII, no space: nothing to inject
_NAME = re.compile(r"^[0-9a-f]{64}$")

_warned_lock = threading.Lock()
_warned = False  # the soft-quota warning, once per process


def _stderr_warning(message: str) -> None:
    print(_("warning: {message}").format(message=message), file=sys.stderr)


@dataclass(frozen=True)
class ServerLocation:
    scheme: str   # https | http
    host: str
    port: int
    prefix: str   # "" or "/some/prefix" (percent-encoded)
    repo: str

    @property
    def display(self) -> str:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{netloc}{port}{self.prefix}/{self.repo}"

    @property
    def base(self) -> str:
        return f"{self.prefix}/v1/repos/{self.repo}"


def server_token(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The bearer token: COFFRE_SERVER_TOKEN, else the content of COFFRE_SERVER_TOKEN_FILE. No
    message quotes it."""
    where = _("check {variable}").format(variable=TOKEN_ENV)
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        path = environ.get(TOKEN_FILE_ENV, "")
        if not path:
            raise UsageError(
                _("no token for the Coffre server"),
                _("put the token the provider gave you in a file only you can read (chmod 600) and "
                  "name it in {file_variable}, or set {variable}").format(
                    file_variable=TOKEN_FILE_ENV, variable=TOKEN_ENV))
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read(4096)
        except OSError as exc:
            raise UsageError(_("cannot read the token file {path}: {reason}").format(
                path=path, reason=exc.strerror)) from None
        if stat.S_ISREG(st.st_mode) and open_to_others(st):
            raise UsageError(
                _("the token file {path} can be read by other users of this machine (mode {mode})").format(
                    path=path, mode=f"{stat.S_IMODE(st.st_mode):04o}"),
                _("make it private: chmod 600 {path}").format(path=path))
        token = raw.decode("ascii", "replace").strip()
        where = _("check the token file {path}").format(path=path)
    if not _TOKEN.match(token):
        raise UsageError(_("the token for the Coffre server is malformed (expected cft_...)"), where)
    return token


def _clean(text: object, limit: int = 500) -> str:
    """A server's message, as untrusted text: control characters out, length bounded."""
    s = str(text) if isinstance(text, str) else ""
    return re.sub(r"[\x00-\x1f\x7f]", " ", s)[:limit]


class ServerBackend:
    remote = True

    def __init__(self, where: ServerLocation, token: str | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.where = where
        self.location = where.display
        self._auth = {"Authorization": "Bearer " + (token if token is not None else server_token()),
                      "User-Agent": "coffre"}
        self.warn = warn or _stderr_warning
        stall = stall_timeout()
        timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, stall), read=stall)
        common: dict[str, Any] = {"maxsize": POOL_CONNECTIONS, "block": False, "timeout": timeout,
                                  "retries": False}
        self.pool: urllib3.HTTPConnectionPool
        if where.scheme == "https":
            context = ssl.create_default_context()  # system CAs, or SSL_CERT_FILE / SSL_CERT_DIR
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.pool = urllib3.HTTPSConnectionPool(where.host, where.port, ssl_context=context,
                                                    cert_reqs="CERT_REQUIRED", **common)
        else:
            self.pool = urllib3.HTTPConnectionPool(where.host, where.port, **common)
        self.upload_pacer: Pacer | None = None  # bandwidth limits (storage/pacing.py)
        self.download_pacer: Pacer | None = None

    # -- the wire ---------------------------------------------------------------------------
    def _path(self, handle: Handle) -> str:
        return f"{self.where.base}/{handle.kind}/{quote(handle.name, safe='')}"

    def _request(self, method: str, path: str, what: str, body: Any = None,
                 headers: dict[str, str] | None = None, preload: bool = True) -> Any:
        try:
            answer = self.pool.urlopen(method, path, body=body, headers=self._auth | (headers or {}),
                                       retries=False, redirect=False, preload_content=preload,
                                       assert_same_host=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._connection_error(exc, what) from exc
        warning = answer.headers.get(WARNING_HEADER)
        if warning:
            self._soft_quota(warning)
        return answer

    def _connection_error(self, exc: BaseException, what: str) -> StorageError:
        https = self.where.scheme == "https"
        failure = connect_failure(
            exc, _("the Coffre server"), self.where.host, self.where.port,
            tls_hint=_("if the server uses its own certificate (coffre server init makes one), name it "
                       "with SSL_CERT_FILE; if it speaks plain HTTP, use an http:// URL with "
                       "--insecure-http (loopback or a trusted network only)") if https else "")
        if failure is not None:
            return failure
        return TransientStorageError(_("{what}: connection to the Coffre server failed ({error})").format(
            what=what, error=type(exc).__name__))

    def _soft_quota(self, header: str) -> None:
        global _warned
        with _warned_lock:
            if _warned:
                return
            _warned = True
        fields = dict(part.strip().partition("=")[::2] for part in header.split(";"))
        try:
            used, soft = int(fields["used"]), int(fields["soft"])
            hard = None if fields.get("hard", "none") == "none" else int(fields["hard"])
        except (KeyError, ValueError):
            return
        if hard is None:
            message = _("the soft quota on the Coffre server is reached: {used} used of {soft}").format(
                used=human_size(used), soft=human_size(soft))
        else:
            message = _("the soft quota on the Coffre server is reached: {used} used of {soft}; uploads "
                        "stop at the hard quota, {hard}").format(
                used=human_size(used), soft=human_size(soft), hard=human_size(hard))
        self.warn(message)

    def _fail(self, answer: Any, what: str) -> StorageError:
        """The error an unexpected answer means."""
        status = int(answer.status)
        try:
            data = answer.data[:MAX_ERROR_BODY] if answer.data else b""
            doc = json.loads(data) if data.startswith(b"{") else {}
        except (ValueError, urllib3.exceptions.HTTPError, OSError):
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        code = _clean(doc.get("error"), 40)
        said = _clean(doc.get("message")) or str(status)
        if status == 401:
            return StoragePermissionDenied(
                _("{what}: the Coffre server refused the token").format(what=what),
                _("check {variable} or {file_variable}: the token may be mistyped, revoked or expired; "
                  "the provider can issue a new one").format(variable=TOKEN_ENV,
                                                             file_variable=TOKEN_FILE_ENV))
        if status == 403:
            if code == "read_only":
                return StoragePermissionDenied(
                    _("{what}: refused by the Coffre server: the repository is read-only "
                      "({message})").format(what=what, message=said),
                    _("restores still work; ask the provider why the account is read-only"))
            return StoragePermissionDenied(
                _("{what}: refused by the Coffre server ({message})").format(what=what, message=said),
                _("this token's role does not allow it: deleting needs a prune token"))
        if status == 404:
            return ObjectNotFound(outcome(NOT_FOUND, what))
        if status == 409:
            return ObjectExists(outcome(OTHER_OBJECT, what))
        if status == 507 and code == "quota_exceeded":
            try:
                hard, used = int(doc["quota_hard"]), int(doc["used"])
            except (KeyError, TypeError, ValueError):
                return QuotaExceeded(
                    _("{what}: the hard quota on the Coffre server is reached ({message})").format(
                        what=what, message=said), _quota_hint())
            return QuotaExceeded(
                _("{what}: the Coffre server refused it: the hard quota of {quota} ({bytes} bytes) would "
                  "be exceeded, {used} being used (recycle bin included)").format(
                    what=what, quota=human_size(hard), bytes=hard, used=human_size(used)),
                _quota_hint())
        if status == 507:
            return StorageFull(_("{what}: the Coffre server's storage is full").format(what=what),
                               _("tell the provider: their server has no space left"))
        if status == 400 and code == "hash_mismatch":
            return TransientStorageError(
                _("{what}: the bytes reached the Coffre server altered (their SHA-256 does not match "
                  "the name)").format(what=what))
        if status == 408 or status == 429 or status >= 500:
            return TransientStorageError(_("{what}: the Coffre server answered {status} ({message})").format(
                what=what, status=status, message=said))
        if status == 413:
            return StorageError(
                _("{what}: the Coffre server refuses an object this large ({message})").format(
                    what=what, message=said))
        return StorageError(_("{what}: the Coffre server answered {status} ({message})").format(
            what=what, status=status, message=said))

    # -- contract ---------------------------------------------------------------------------
    def exists(self) -> bool:
        config = Handle("config", "config")
        answer = self._request("HEAD", self._path(config), doing(READING, config))
        if answer.status == 200:
            return True
        if answer.status == 404:
            return False
        raise self._fail(answer, doing(READING, config))

    def create(self) -> None:
        what = _("creating {location}").format(location=self.location)
        answer = self._request("POST", self.where.base, what)
        if answer.status in (200, 201):
            return
        if answer.status == 409:
            raise CoffreError(_("{location} is not empty").format(location=self.location),
                              _("choose another repository name at the end of the URL"))
        raise self._fail(answer, what)

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        what = doing(WRITING, handle)
        body = bytes(data) if not isinstance(data, bytes) else data
        headers = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}
        sent: Any = body if self.upload_pacer is None else _paced(body, self.upload_pacer)
        answer = self._request("PUT", self._path(handle), what, body=sent, headers=headers)
        if answer.status not in (200, 201):
            raise self._fail(answer, what)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        what = doing(READING, handle)
        headers = {}
        if length is not None:
            if length <= 0:
                return b""
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        paced = self.download_pacer
        answer = self._request("GET", self._path(handle), what, headers=headers, preload=paced is None)
        try:
            if answer.status == 416:  # the range starts at or past the end
                return b""
            if answer.status not in (200, 206):
                raise self._fail(answer, what)
            if paced is None:
                body: bytes = answer.data
            else:
                parts = []
                for part in answer.stream(PACED_BLOCK):
                    paced.take(len(part))
                    parts.append(part)
                body = b"".join(parts)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._connection_error(exc, what) from exc
        finally:
            if paced is not None:
                answer.release_conn()
        declared = answer.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != len(body):
            raise TransientStorageError(outcome(CUT_SHORT, what))
        if answer.status == 200 and headers:  # a server that ignored the range
            end = None if length is None else offset + length
            body = body[offset:end]
        return body

    def stat(self, handle: Handle) -> ObjectInfo:
        what = doing(LOOKING_UP, handle)
        answer = self._request("HEAD", self._path(handle), what)
        if answer.status != 200:
            raise self._fail(answer, what)
        size, received = answer.headers.get("content-length", ""), answer.headers.get(RECEIVED_HEADER, "")
        if not size.isdigit() or not received.isdigit():
            raise StorageError(
                _("{what}: the Coffre server's answer lacks the size or time").format(what=what))
        return ObjectInfo(handle.name, int(size), int(received))

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        what = _("listing {kind}").format(kind=kind)
        answer = self._request("GET", f"{self.where.base}/{kind}/", what)
        if answer.status != 200:
            raise self._fail(answer, what)
        try:
            items = json.loads(answer.data)["objects"]
            found = []
            for name, size, received in items:
                ok = name == "config" if kind == "config" else isinstance(name, str) and _NAME.match(name)
                if not ok or not isinstance(size, int) or not isinstance(received, int) or size < 0:
                    continue
                found.append(ObjectInfo(name, size, received))
        except (ValueError, KeyError, TypeError):
            raise TransientStorageError(
                _("{what}: the Coffre server's answer cannot be read").format(what=what)) from None
        yield from found

    def remove(self, handle: Handle) -> None:
        what = doing(REMOVING, handle)
        answer = self._request("DELETE", self._path(handle), what)
        if answer.status not in (200, 204):
            raise self._fail(answer, what)

    def clean_temporaries(self, older_than_ns: int) -> int:
        return 0  # the server stores an upload whole or not at all

    def free_space(self) -> int | None:
        return None

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        pass  # a request costs a round trip: the callers read ahead whole packs themselves

    def close(self) -> None:
        self.pool.close()


def _quota_hint() -> str:
    return _("ask the provider to raise the quota. What 'coffre forget --prune' deletes goes to the "
             "server's recycle bin and still counts until the provider purges it")


def _paced(body: bytes, pacer: Pacer) -> Iterator[bytes]:
    """The upload body in pieces let through by the Pacer (the limit holds on the wire)."""
    view = memoryview(body)
    for start in range(0, len(body), PACED_BLOCK):
        piece = view[start:start + PACED_BLOCK]
        pacer.take(len(piece))
        yield bytes(piece)
