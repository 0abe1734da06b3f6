"""A repository in S3-compatible object storage: AWS, OVHcloud, Scaleway, SeaweedFS, MinIO, a
NAS's S3 service.

botocore, the library under boto3 and the AWS CLI, is the reference S3 client: it finds
credentials the way every AWS tool does (environment, AWS_PROFILE, ~/.aws/credentials and
config, instance roles), signs requests, pools connections and is thread-safe. Its own retries
are turned off: `storage/retry.py` is the one retry policy for every backend, so attempts do
not multiply. Its client is made without boto3 (`s3_client`), which adds only a transfer
manager Coffre does not use: a remote command starts ~0.4 s sooner on a cold page cache.

Objects keep the local layout under the prefix (`config`, `keys/NAME`, `data/ab/NAME`, ...).
Every upload carries its SHA-256 (`x-amz-checksum-sha256`) and MD5 (`Content-MD5`), which
the service checks before storing; an upload whose returned ETag is not its MD5 is refused
too. A PUT is atomic: a stopped upload leaves no object. Objects are never overwritten:
uploads are conditional (`If-None-Match: *`) where the service supports it, and an existing
object with the same bytes counts as written.
"""
# ruff: noqa: E402  (botocore is imported after the sys.modules entry below)

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

# botocore imports urllib3's pyOpenSSL adapter whenever pyOpenSSL is installed (another package
# may bring it): ~0.2 s at a cold start, for an adapter Coffre never uses (connections use the
# standard ssl module). A None entry makes that import fail as if pyOpenSSL were absent.
sys.modules.setdefault("urllib3.contrib.pyopenssl", None)  # type: ignore[arg-type]
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

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

_NAME = re.compile(r"^[0-9a-f]{64}$")
CONNECT_TIMEOUT_S = 15.0
POOL_CONNECTIONS = 16

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
           "InvalidToken", "ExpiredToken"}
_FULL = {"QuotaExceeded", "EntityTooLarge", "XMinioStorageFull", "StorageFull"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
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


def _code(exc: botocore.exceptions.ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


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


def _translate(exc: Exception, what: str, endpoint: str = "") -> StorageError:
    """A botocore failure as one of Coffre's storage errors; never quotes credentials (botocore
    messages name the access key id at most, never the secret). A connection that could not
    be made at all (refused, unknown host, TLS) is told apart, naming the endpoint's host and
    port (storage/base.py's connect_failure)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _code(exc)
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
        if code in _TRANSIENT_CODES or code.startswith("5"):
            return TransientStorageError(_("{what}: the storage answered {code}").format(
                what=what, code=code))
        return S3Answered(_("{what}: the storage answered {code}").format(what=what, code=code), code=code)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return StoragePermissionDenied(
            _("{what}: no S3 credentials found").format(what=what),
            _("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"),
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError
                  | botocore.exceptions.HTTPClientError | botocore.exceptions.ReadTimeoutError
                  | botocore.exceptions.ConnectTimeoutError | botocore.exceptions.IncompleteReadError
                  | botocore.exceptions.ResponseStreamingError | OSError):
        if endpoint and not isinstance(exc, botocore.exceptions.ReadTimeoutError):
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


class _FastJSONFileLoader(botocore.loaders.JSONFileLoader):  # type: ignore[misc]
    """botocore's model files decoded by msgspec into plain dicts. botocore decodes them with
    the standard json module into OrderedDicts, a Python call per object: ~50 ms of every S3
    command's start for the ~3.5 MB of S3's model, the endpoints and their rules, against
    ~15 ms here. Plain dicts keep the file's order, which is all botocore relies on. The
    files are botocore's own (or AWS_DATA_PATH's); one msgspec cannot decode is left to
    botocore's loader, which says what is wrong with it."""

    OPENERS = ((".json", open), (".json.gz", gzip.open))  # botocore's extensions, in its order

    def load_file(self, file_path: str) -> Any:
        for ext, opener in self.OPENERS:
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as f:
                    raw = f.read()
                try:
                    return msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    return super().load_file(file_path)
        return None


class _S3OnlyLoader(botocore.loaders.Loader):  # type: ignore[misc]
    """botocore's model loader, told that S3 is the one service there is. The default lists
    the ~450 service folders of botocore's data, and looks for files in each, to check that
    the service asked for is one of them: ~0.1 s at each start on a cold page cache."""

    FILE_LOADER_CLASS = _FastJSONFileLoader

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


def client_config(pool_connections: int = POOL_CONNECTIONS) -> botocore.config.Config:
    """The settings of every S3 client Coffre makes."""
    return botocore.config.Config(
        connect_timeout=min(CONNECT_TIMEOUT_S, stall_timeout()),
        read_timeout=stall_timeout(),
        retries={"total_max_attempts": 1},
        max_pool_connections=pool_connections,
        # The body is protected by Content-MD5 and x-amz-checksum-sha256, which the
        # storage checks: signing it too would read every upload once more.
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def s3_client(endpoint: str | None, profile: str | None = None,
              config: botocore.config.Config | None = None) -> Any:
    """A botocore S3 client with Coffre's settings; `profile` names a profile of the AWS
    credentials files (botocore.exceptions.ProfileNotFound if there is none)."""
    session = botocore.session.Session(profile=profile)
    session.register_component("data_loader", _S3OnlyLoader())
    return session.create_client("s3", endpoint_url=endpoint, config=config or client_config())


class S3Backend:
    remote = True

    def __init__(self, where: S3Location, client: Any | None = None,
                 pool_connections: int = POOL_CONNECTIONS, profile: str | None = None) -> None:
        """`profile`: a profile of the AWS credentials files, for this backend only (the
        agent reaches several repositories in one process; AWS_PROFILE would be global)."""
        self.where = where
        self.location = where.display
        if client is None:
            client = s3_client(where.endpoint, profile, client_config(pool_connections))
        self.client = client
        self.upload_pacer: Pacer | None = None  # bandwidth limits (storage/pacing.py)
        self.download_pacer: Pacer | None = None

    # -- layout ---------------------------------------------------------------------------
    def _key(self, handle: Handle) -> str:
        if handle.kind == "config":
            return self.where.prefix + "config"
        if handle.kind == "data":
            return f"{self.where.prefix}data/{handle.name[:2]}/{handle.name}"
        return f"{self.where.prefix}{handle.kind}/{handle.name}"

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.where.bucket, **kwargs)
        except Exception as exc:  # botocore raises many unrelated types; all are translated
            if method.startswith("head_") and isinstance(exc, botocore.exceptions.ClientError) \
                    and _code(exc) == "403":
                exc = self._reason(exc)
            raise _translate(exc, what, self.where.endpoint) from exc

    def _reason(self, denied: Exception) -> Exception:
        """Why a HEAD request was denied: its answer has no body, so no error code tells a wrong
        secret from an unknown key. A one-key listing (no side effect) is asked instead, and its
        error, if more precise, is the one reported."""
        try:
            self.client.list_objects_v2(Bucket=self.where.bucket, Prefix=self.where.prefix, MaxKeys=1)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _DENIED and _code(exc) != "403":
                precise: Exception = exc
                return precise
        except Exception:  # noqa: S110 (the first answer stays the one reported)
            pass
        return denied

    # -- contract -------------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            config = Handle("config", "config")
            self._call(doing(READING, config), "head_object", Key=self._key(config))
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
        listed = self._call(_("listing the repository location"), "list_objects_v2",
                            Prefix=self.where.prefix, MaxKeys=1)
        if listed.get("KeyCount", 0):
            raise CoffreError(_("{location} is not empty").format(location=self.location),
                              _("choose an empty bucket or a new prefix for the repository"))

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        what = doing(WRITING, handle)
        body = bytes(data)
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        try:
            answer = self.client.put_object(
                Bucket=self.where.bucket, Key=self._key(handle), ContentLength=len(body),
                Body=body if self.upload_pacer is None else _PacedBody(body, self.upload_pacer),
                ContentMD5=base64.b64encode(md5).decode(),
                ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                IfNoneMatch="*",
            )
        except Exception as exc:
            err = _translate(exc, what, self.where.endpoint)
            if not isinstance(err, ObjectExists):
                raise err from exc
            if self.load(handle) != body:
                raise ObjectExists(outcome(OTHER_OBJECT, what)) from None
            return
        etag = str(answer.get("ETag", "")).strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5.hex():
            raise TransientStorageError(
                _("{what}: the storage stored other bytes than were sent").format(what=what))

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        what = doing(READING, handle)
        kwargs: dict[str, Any] = {"Key": self._key(handle)}
        if length is not None:
            if length <= 0:
                return b""
            kwargs["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            answer = self._call(what, "get_object", **kwargs)
        except S3Answered as exc:
            if exc.code == "InvalidRange":  # reading past the end: nothing there
                return b""
            raise
        try:
            if self.download_pacer is None:
                body: bytes = answer["Body"].read()
            else:
                parts = []
                for part in answer["Body"].iter_chunks(PACED_BLOCK):
                    self.download_pacer.take(len(part))
                    parts.append(part)
                body = b"".join(parts)
        except Exception as exc:
            raise _translate(exc, what, self.where.endpoint) from exc
        declared = answer.get("ContentLength")
        if declared is not None and declared != len(body):
            raise TransientStorageError(outcome(CUT_SHORT, what))
        return body

    def stat(self, handle: Handle) -> ObjectInfo:
        answer = self._call(doing(LOOKING_UP, handle), "head_object", Key=self._key(handle))
        return ObjectInfo(handle.name, int(answer["ContentLength"]), _ns(answer["LastModified"]))

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
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.where.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    rest = item["Key"][len(prefix):]
                    sub, _sep, name = rest.rpartition("/")
                    if not _NAME.match(name) or sub != (name[:2] if kind == "data" else ""):
                        continue
                    found.append(ObjectInfo(name, int(item["Size"]), _ns(item["LastModified"])))
        except Exception as exc:
            raise _translate(exc, _("listing {kind}").format(kind=kind), self.where.endpoint) from exc
        yield from found

    def remove(self, handle: Handle) -> None:
        what = doing(REMOVING, handle)
        self._call(what, "head_object", Key=self._key(handle))  # ObjectNotFound if absent
        self._call(what, "delete_object", Key=self._key(handle))

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


def _ns(when: Any) -> int:
    return int(when.timestamp() * 1_000_000_000)
