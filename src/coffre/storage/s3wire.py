"""S3 requests, signed (AWS Signature Version 4) and sent over urllib3's connection pools.

Why not botocore, the reference client: importing it and making its client took ~0.12 s of
every S3 command's start on a warm machine (~0.23 s cold), to describe 100 operations from
~3.5 MB of models, for the seven Coffre makes. Those seven are here, in the form S3 documents
(path-style addressing, which every S3-compatible service accepts); storage/s3credentials.py
still hands what it does not read itself to botocore's credential chain.

Every request signs its payload's SHA-256 (for an upload, the hash Coffre computes anyway for
x-amz-checksum-sha256), so the storage refuses a body changed on the way even over plain
HTTP. Answers are untrusted: an XML document is parsed only if it is small, by defusedxml,
refusing any document type (so no entity can be defined); bodies are taken as sent (no
decoding).
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import importlib.util
import os
import ssl
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import defusedxml.ElementTree
import urllib3

from coffre.storage.s3credentials import Keys, KeySource

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_XML = 8 << 20  # an answer's XML document: a listing page of 1,000 keys is ~300 KB
LIST_PAGE = 1000  # keys asked per listing page (S3's largest)
ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"  # with letters and digits: what SigV4 leaves unencoded


class S3Error(Exception):
    """An error answer: its HTTP status, S3's code (the status for a HEAD, which has no body)
    and, for a bucket in another region, that region."""

    def __init__(self, status: int, code: str, region: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.region = status, code, region


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified_ns: int


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), day)
    return _hmac(_hmac(_hmac(k, region), "s3"), "aws4_request")


def canonical_query(query: list[tuple[str, str]]) -> str:
    pairs = sorted((quote(k, safe=_UNRESERVED), quote(v, safe=_UNRESERVED)) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(method: str, path: str, query: str, headers: dict[str, str],
         payload_sha256: str, keys: Keys, region: str, when: datetime.datetime) -> dict[str, str]:
    """`headers` with the signature's: x-amz-date, x-amz-content-sha256, the session token if
    any and Authorization. `path` is already encoded as it is sent; `headers` holds Host and
    every other header to sign (all that are sent, but the User-Agent); `query` is already in
    its canonical form (canonical_query), as it is sent."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    signed = dict(headers)
    signed["x-amz-date"] = stamp
    signed["x-amz-content-sha256"] = payload_sha256
    if keys.token:
        signed["x-amz-security-token"] = keys.token
    lowered = sorted((name.lower(), " ".join(str(value).split())) for name, value in signed.items())
    names = ";".join(name for name, _value in lowered)
    request = "\n".join([method, path, query,
                         "".join(f"{name}:{value}\n" for name, value in lowered), names, payload_sha256])
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    text = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    signature = hmac.new(signing_key(keys.secret_key, stamp[:8], region), text.encode(),
                         hashlib.sha256).hexdigest()
    signed["Authorization"] = (f"{ALGORITHM} Credential={keys.access_key}/{scope}, "
                               f"SignedHeaders={names}, Signature={signature}")
    return signed


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse(data: bytes) -> ET.Element | None:
    """An answer's XML document, or None if it is not one Coffre reads: too large, declaring
    a document type (where entities would be defined), or malformed."""
    if not data or len(data) > MAX_XML:
        return None
    try:
        root: ET.Element = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except (ET.ParseError, defusedxml.DefusedXmlException):
        return None
    return root


def _text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local_name(child.tag) == name:
            return child.text or ""
    return ""


def _iso_ns(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000_000)


def http_date_ns(text: str) -> int:
    return int(email.utils.parsedate_to_datetime(text).timestamp() * 1_000_000_000)


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The system's certificate authorities (or the bundle named); where the system has none,
    the bundle botocore carries (which Coffre used before it signed its own requests)."""
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle is None and not context.cert_store_stats()["x509_ca"]:
        spec = importlib.util.find_spec("botocore")
        carried = os.path.join(os.path.dirname(spec.origin), "cacert.pem") if spec and spec.origin else ""
        if os.path.isfile(carried):
            context.load_verify_locations(carried)
    return context


def _proxy_for(endpoint: str) -> str | None:
    """The proxy the environment names for the endpoint (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as
    every AWS tool honours it."""
    parts = urlsplit(endpoint)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme)
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (not in typeshed)
    if not proxy or bypass(parts.netloc, proxies):
        return None
    return proxy if "://" in proxy else "http://" + proxy


class S3Client:
    """The requests of one endpoint (`http[s]://host[:port]`), thread-safe: urllib3 pools up
    to `pool_connections` connections. Its errors: S3Error for an answer, urllib3's
    exceptions and OSError for the connection, NoCredentials from `keys`."""

    def __init__(self, endpoint: str, keys: KeySource, region: str, ca_bundle: str | None = None,
                 pool_connections: int = 16, connect_timeout: float = 15.0,
                 read_timeout: float = 60.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.keys, self.region = keys, region
        parts = urlsplit(self.endpoint)
        self.host = parts.netloc  # as sent in Host: the port only if not the scheme's own
        if parts.port == (443 if parts.scheme == "https" else 80):
            self.host = self.host[: -len(f":{parts.port}")]
        common: dict[str, Any] = {
            "num_pools": 2, "maxsize": pool_connections, "block": False, "retries": False,
            "timeout": urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        }
        if parts.scheme == "https":
            common["ssl_context"] = _tls_context(ca_bundle)
        proxy = _proxy_for(self.endpoint)
        self._http: urllib3.PoolManager = (urllib3.ProxyManager(proxy, **common) if proxy
                                           else urllib3.PoolManager(**common))
        self.user_agent = "coffre"

    # -- the wire ---------------------------------------------------------------------------
    def request(self, method: str, bucket: str, key: str | None = None,
                query: list[tuple[str, str]] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, payload_sha256: str = EMPTY_SHA256,
                preload: bool = True) -> Any:
        """One signed request; its answer if its status is 2xx (urllib3's HTTPResponse)."""
        path = "/" + quote(bucket, safe="")
        if key is not None:
            path += "/" + quote(key, safe="/" + _UNRESERVED)
        encoded = canonical_query(query or [])
        signed = sign(method, path, encoded, {"Host": self.host} | (headers or {}), payload_sha256,
                      self.keys.current(), self.region, datetime.datetime.now(datetime.UTC))
        signed["User-Agent"] = self.user_agent
        url = self.endpoint + path + ("?" + encoded if encoded else "")
        answer = self._http.urlopen(method, url, body=body, headers=signed, redirect=False,
                                    preload_content=preload, decode_content=False)
        if answer.status >= 300:
            raise self._error(method, answer)
        return answer

    def _error(self, method: str, answer: Any) -> S3Error:
        status = int(answer.status)
        try:
            data = answer.data if method != "HEAD" else b""
        except (urllib3.exceptions.HTTPError, OSError):
            data = b""
        finally:
            answer.release_conn()
        doc = _parse(data or b"")
        code = _text(doc, "Code") if doc is not None and _local_name(doc.tag) == "Error" else ""
        region = answer.headers.get("x-amz-bucket-region", "")
        if doc is not None and not region:
            region = _text(doc, "Region")
        return S3Error(status, _printable(code) or str(status), _printable(region))

    # -- the operations -----------------------------------------------------------------------
    def head_bucket(self, bucket: str) -> None:
        self.request("HEAD", bucket)

    def create_bucket(self, bucket: str) -> None:
        self.request("PUT", bucket)

    def head_object(self, bucket: str, key: str) -> tuple[int, int]:
        """(size, modification time in ns)."""
        answer = self.request("HEAD", bucket, key)
        try:
            return int(answer.headers["Content-Length"]), http_date_ns(answer.headers["Last-Modified"])
        except (KeyError, ValueError, TypeError):
            raise S3Error(int(answer.status), "MalformedAnswer") from None

    def get_object(self, bucket: str, key: str, first: int = 0, last: int | None = None,
                   preload: bool = True) -> Any:
        """The object's bytes `first` to `last` (included; None: to the end) as an answer whose
        `data` holds them (or to stream, with `preload` False)."""
        headers = {}
        if first or last is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        return self.request("GET", bucket, key, headers=headers, preload=preload)

    def put_object(self, bucket: str, key: str, body: Any, length: int, md5: bytes, sha256: bytes,
                   if_none_match: bool = True) -> str:
        """Uploads `length` bytes whose MD5 and SHA-256 are given; the ETag answered."""
        headers = {"Content-Length": str(length), "Content-MD5": base64.b64encode(md5).decode(),
                   "x-amz-checksum-sha256": base64.b64encode(sha256).decode()}
        if if_none_match:
            headers["If-None-Match"] = "*"
        answer = self.request("PUT", bucket, key, body=body, headers=headers, payload_sha256=sha256.hex())
        return str(answer.headers.get("ETag", "")).strip('"')

    def delete_object(self, bucket: str, key: str) -> None:
        self.request("DELETE", bucket, key)

    def first_object(self, bucket: str, prefix: str) -> Listed | None:
        """The first key under `prefix`, if any (one request of one key)."""
        return next(iter(self.list_objects(bucket, prefix, max_keys=1)), None)

    def list_objects(self, bucket: str, prefix: str, max_keys: int = LIST_PAGE) -> Iterator[Listed]:
        """Every key under `prefix`, page after page (ListObjectsV2, keys URL-encoded by the
        storage so that any character survives XML)."""
        token = ""
        while True:
            query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url"),
                     ("max-keys", str(max_keys))]
            if token:
                query.append(("continuation-token", token))
            answer = self.request("GET", bucket, query=query)
            doc = _parse(answer.data)
            if doc is None or _local_name(doc.tag) != "ListBucketResult":
                raise S3Error(int(answer.status), "MalformedListing")
            encoded = _text(doc, "EncodingType") == "url"
            for item in doc:
                if _local_name(item.tag) != "Contents":
                    continue
                key = _text(item, "Key")
                try:
                    size, modified = int(_text(item, "Size")), _iso_ns(_text(item, "LastModified"))
                except ValueError:
                    raise S3Error(int(answer.status), "MalformedListing") from None
                yield Listed(unquote_plus(key) if encoded else key, size, modified)
            token = _text(doc, "NextContinuationToken")
            if _text(doc, "IsTruncated") != "true":
                return
            if not token:
                raise S3Error(int(answer.status), "MalformedListing")

    def close(self) -> None:
        self._http.clear()


def _printable(text: str, limit: int = 64) -> str:
    """A code or region from an answer: untrusted, so only letters, digits and - . _ kept."""
    return "".join(c for c in text if c.isascii() and (c.isalnum() or c in "-._"))[:limit]

