"""A repository in S3-compatible object storage: AWS, OVHcloud, Scaleway, SeaweedFS, MinIO, a
NAS's S3 service.

Requests are signed and sent by storage/s3wire.py, with the keys, region and certificate
authorities every AWS tool finds (storage/s3credentials.py: the environment, AWS_PROFILE,
~/.aws/credentials and config, and botocore's chain for roles). No retry happens there:
`storage/retry.py` is the one retry policy for every backend, so attempts do not multiply.

Objects keep the local layout under the prefix (`config`, `keys/NAME`, `data/ab/NAME`, ...).
Every upload carries its SHA-256 (`x-amz-checksum-sha256`, and signed) and MD5 (`Content-MD5`),
which the service checks before storing; an upload whose returned ETag is not its MD5 is refused
too. A PUT is atomic: a stopped upload leaves no object. Objects are never overwritten:
uploads are conditional (`If-None-Match: *`) where the service supports it, and an existing
object with the same bytes counts as written.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

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
from coffre.storage.s3credentials import NoCredentials, ProfileNotFound, resolve
from coffre.storage.s3wire import S3Client, S3Error

_NAME = re.compile(r"^[0-9a-f]{64}$")
CONNECT_TIMEOUT_S = 15.0
POOL_CONNECTIONS = 16

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
           "InvalidToken", "ExpiredToken"}
_FULL = {"QuotaExceeded", "EntityTooLarge", "XMinioStorageFull", "StorageFull"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_REGION = {"PermanentRedirect", "AuthorizationHeaderMalformed", "301", "IllegalLocationConstraintException"}
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "BadDigest",
                    "XAmzContentSHA256Mismatch", "IncompleteBody", "500", "502", "503", "504"}


@dataclass(frozen=True)
class S3Location:
    endpoint: str  # https://host[:port] or http://host[:port]
    bucket: str
    prefix: str  # "" or "some/prefix/" (always ending with "/")

    @property
    def display(self) -> str:
        scheme = "s3+http" if self.endpoint.startswith("http://") else "s3"
        host = self.endpoint.split("://", 1)[1]
        return f"{scheme}://{host}/{self.bucket}/{self.prefix}".rstrip("/")


class S3Answered(StorageError):
    """An error answer of the storage that none of Coffre's other errors describes; `code` is
    S3's error code (NoSuchBucket, InvalidRange...), for callers that expect some of them."""

    def __init__(self, message: str, hint: str | None = None, code: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


def _denied(code: str, what: str) -> StoragePermissionDenied:
    check = _("check the access key (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
              "~/.aws/credentials) and its rights on the bucket")
    if code == "InvalidAccessKeyId":
        return StoragePermissionDenied(
            _("{what}: access denied: the storage does not know this access key "
              "(InvalidAccessKeyId)").format(what=what),
            _("check AWS_ACCESS_KEY_ID (or AWS_PROFILE and ~/.aws/credentials): the key must be one "
              "this storage issued"))
    if code == "SignatureDoesNotMatch":
        return StoragePermissionDenied(
            _("{what}: access denied: the secret key does not match the access key "
              "(SignatureDoesNotMatch)").format(
                what=what),
            _("check AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials)"))
    if code in ("InvalidToken", "ExpiredToken"):
        return StoragePermissionDenied(
            _("{what}: the storage refused the session token ({code})").format(what=what, code=code),
            _("renew the temporary credentials (AWS_SESSION_TOKEN), or use a permanent access key"))
    return StoragePermissionDenied(
        _("{what}: access denied by the storage ({code})").format(what=what, code=code), check)


def _wrong_region(code: str, region: str, what: str) -> StorageError:
    where = region or _("another region")
    return S3Answered(
        _("{what}: the bucket is in {region}, not in the region requests are signed for "
          "({code})").format(what=what, region=where, code=code),
        _("set AWS_DEFAULT_REGION={region} (or the profile's region), or use the endpoint of the "
          "bucket's region").format(region=region) if region else
        _("set AWS_DEFAULT_REGION (or the profile's region) to the bucket's region"), code)


def _translate(exc: Exception, what: str, endpoint: str = "") -> StorageError:
    """A failed request as one of Coffre's storage errors; never quotes credentials. A
    connection that could not be made at all (refused, unknown host, TLS) is told apart,
    naming the endpoint's host and port (storage/base.py's connect_failure)."""
    if isinstance(exc, S3Error):
        code = exc.code
        if code in _NOT_FOUND:
            return ObjectNotFound(outcome(NOT_FOUND, what))
        if code == "NoSuchBucket":
            return S3Answered(_("{what}: the bucket does not exist").format(what=what),
                              _("create it with 'coffre init', or check the repository URL"), code)
        if code in _DENIED:
            return _denied(code, what)
        if code in _FULL:
            return StorageFull(_("{what}: the storage refused the object ({code})").format(
                what=what, code=code),
                               _("raise the bucket's quota or free space with 'coffre forget ... --prune'"))
        if code in _EXISTS:
            return ObjectExists(_("{what}: an object with this name exists").format(what=what))
        if code in _REGION or (exc.region and 300 <= exc.status < 400):
            return _wrong_region(code, exc.region, what)
        if code in _TRANSIENT_CODES or code.startswith("5") or exc.status >= 500:
            return TransientStorageError(_("{what}: the storage answered {code}").format(
                what=what, code=code))
        return S3Answered(_("{what}: the storage answered {code}").format(what=what, code=code), code=code)
    if isinstance(exc, NoCredentials):
        return StoragePermissionDenied(
            _("{what}: no S3 credentials found").format(what=what),
            _("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"),
        )
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        if endpoint and not isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            parts = urlsplit(endpoint)
            https = parts.scheme == "https"
            failure = connect_failure(
                exc, _("the S3 storage"), parts.hostname or "", parts.port or (443 if https else 80),
                tls_hint=_("if the storage speaks plain HTTP (a server on the local network), use an "
                           "s3+http:// URL; if it uses its own certificate authority, name that "
                           "authority's certificate with AWS_CA_BUNDLE") if https else "")
            if failure is not None:
                return failure
        return TransientStorageError(_("{what}: connection to the storage failed ({error})").format(
            what=what, error=type(exc).__name__))
    return StorageError(f"{what}: {type(exc).__name__}")


def s3_client(endpoint: str, profile: str | None = None,
              pool_connections: int = POOL_CONNECTIONS) -> S3Client:
    """A client of `endpoint` with Coffre's settings; `profile` names a profile of the AWS
    files (s3credentials.ProfileNotFound if there is none). botocore's other errors, for keys
    it was handed, are StoragePermissionDenied."""
    try:
        settings = resolve(profile)
    except ProfileNotFound:
        raise
    except Exception as exc:  # botocore's PartialCredentialsError, ConfigParseError and kin
        raise StoragePermissionDenied(
            _("the S3 credentials cannot be read ({error})").format(error=type(exc).__name__),
            _("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile in ~/.aws/credentials "
              "and ~/.aws/config")) from None
    return S3Client(endpoint, settings.keys, settings.region, settings.ca_bundle, pool_connections,
                    connect_timeout=min(CONNECT_TIMEOUT_S, stall_timeout()), read_timeout=stall_timeout())


class S3Backend:
    remote = True

    def __init__(self, where: S3Location, client: S3Client | None = None,
                 pool_connections: int = POOL_CONNECTIONS, profile: str | None = None) -> None:
        """`profile`: a profile of the AWS files, for this backend only (the agent reaches
        several repositories in one process; AWS_PROFILE would be global)."""
        self.where = where
        self.location = where.display
        self.client = client if client is not None else s3_client(where.endpoint, profile, pool_connections)
        self.upload_pacer: Pacer | None = None  # bandwidth limits (storage/pacing.py)
        self.download_pacer: Pacer | None = None

    # -- layout ---------------------------------------------------------------------------
    def _key(self, handle: Handle) -> str:
        if handle.kind == "config":
            return self.where.prefix + "config"
        if handle.kind == "data":
            return f"{self.where.prefix}data/{handle.name[:2]}/{handle.name}"
        return f"{self.where.prefix}{handle.kind}/{handle.name}"

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(self.where.bucket, *args, **kwargs)
        except Exception as exc:  # S3Error, urllib3's errors, OSError, NoCredentials: translated
            if method.startswith("head_") and isinstance(exc, S3Error) and exc.code == "403":
                exc = self._reason(exc)
            raise _translate(exc, what, self.where.endpoint) from exc

    def _reason(self, denied: S3Error) -> S3Error:
        """Why a HEAD request was denied: its answer has no body, so no error code tells a wrong
        secret from an unknown key. A one-key listing (no side effect) is asked instead, and its
        error, if more precise, is the one reported."""
        try:
            self.client.first_object(self.where.bucket, self.where.prefix)
        except S3Error as exc:
            if exc.code in _DENIED and exc.code != "403":
                return exc
        except Exception:  # noqa: S110 (the first answer stays the one reported)
            pass
        return denied

    # -- contract -------------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            config = Handle("config", "config")
            self._call(doing(READING, config), "head_object", self._key(config))
        except ObjectNotFound:
            return False
        except S3Answered as exc:
            if exc.code == "NoSuchBucket":
                return False
            raise
        return True

    def create(self) -> None:
        bucket = self.where.bucket
        try:
            self._call(_("opening bucket {bucket}").format(bucket=bucket), "head_bucket")
        except (ObjectNotFound, S3Answered) as exc:
            if isinstance(exc, S3Answered) and exc.code != "NoSuchBucket":
                raise
            self._call(_("creating bucket {bucket}").format(bucket=bucket), "create_bucket")
        if self._call(_("listing the repository location"), "first_object", self.where.prefix) is not None:
            raise CoffreError(_("{location} is not empty").format(location=self.location),
                              _("choose an empty bucket or a new prefix for the repository"))

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        what = doing(WRITING, handle)
        body = bytes(data)
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        try:
            etag = self.client.put_object(
                self.where.bucket, self._key(handle),
                body if self.upload_pacer is None else _PacedBody(body, self.upload_pacer),
                len(body), md5, hashlib.sha256(body).digest())
        except Exception as exc:
            err = _translate(exc, what, self.where.endpoint)
            if not isinstance(err, ObjectExists):
                raise err from exc
            if self.load(handle) != body:
                raise ObjectExists(outcome(OTHER_OBJECT, what)) from None
            return
        if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5.hex():
            raise TransientStorageError(
                _("{what}: the storage stored other bytes than were sent").format(what=what))

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        what = doing(READING, handle)
        last = None
        if length is not None:
            if length <= 0:
                return b""
            last = offset + length - 1
        paced = self.download_pacer
        try:
            answer = self._call(what, "get_object", self._key(handle), offset, last, preload=paced is None)
        except S3Answered as exc:
            if exc.code == "InvalidRange":  # reading past the end: nothing there
                return b""
            raise
        try:
            if paced is None:
                body: bytes = answer.data
            else:
                parts = []
                for part in answer.stream(PACED_BLOCK, decode_content=False):
                    paced.take(len(part))
                    parts.append(part)
                body = b"".join(parts)
        except Exception as exc:
            raise _translate(exc, what, self.where.endpoint) from exc
        finally:
            answer.release_conn()
        declared = answer.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != len(body):
            raise TransientStorageError(outcome(CUT_SHORT, what))
        return body

    def stat(self, handle: Handle) -> ObjectInfo:
        size, modified_ns = self._call(doing(LOOKING_UP, handle), "head_object", self._key(handle))
        return ObjectInfo(handle.name, size, modified_ns)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == "config":
            if self.exists():
                yield self.stat(Handle("config", "config"))
            return
        prefix = f"{self.where.prefix}{kind}/"
        found: list[ObjectInfo] = []
        # The whole listing is read before anything is yielded: an error on page 7 must not
        # look like a repository that ends on page 6.
        try:
            for item in self.client.list_objects(self.where.bucket, prefix):
                if not item.key.startswith(prefix):
                    continue
                rest = item.key[len(prefix):]
                sub, _sep, name = rest.rpartition("/")
                if not _NAME.match(name) or sub != (name[:2] if kind == "data" else ""):
                    continue
                found.append(ObjectInfo(name, item.size, item.modified_ns))
        except Exception as exc:
            raise _translate(exc, _("listing {kind}").format(kind=kind), self.where.endpoint) from exc
        yield from found

    def remove(self, handle: Handle) -> None:
        what = doing(REMOVING, handle)
        self._call(what, "head_object", self._key(handle))  # ObjectNotFound if absent
        self._call(what, "delete_object", self._key(handle))

    def clean_temporaries(self, older_than_ns: int) -> int:
        return 0  # a PUT is atomic: an interrupted upload leaves nothing

    def free_space(self) -> int | None:
        return None

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        pass  # a request costs a round trip: the callers read ahead whole packs themselves

    def close(self) -> None:
        self.client.close()


class _PacedBody(io.RawIOBase):
    """An upload body read through a Pacer: the HTTP client sends what it reads, so the
    limit holds on the wire (the body is read once: its checksums are given, not computed)."""

    def __init__(self, data: bytes, pacer: Pacer) -> None:
        self._data, self._pos, self._pacer = data, 0, pacer

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) - self._pos if size is None or size < 0 else size
        piece = self._data[self._pos : self._pos + min(size, PACED_BLOCK)]
        self._pos += len(piece)
        self._pacer.take(len(piece))
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

