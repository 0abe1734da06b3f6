"""Coffre's own S3 requests (storage/s3wire.py) and where their keys come from
(storage/s3credentials.py): signatures equal to botocore's, the AWS files read as every AWS tool
reads them, roles handed to botocore, listings page after page, answers parsed safely, proxies
honoured, and a bucket in another region named in the error."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import socketserver
import ssl
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from coffre.core.errors import StorageError, StoragePermissionDenied, UsageError
from coffre.storage import s3credentials, s3wire
from coffre.storage.base import Handle
from coffre.storage.s3credentials import Keys

WHEN = datetime.datetime(2026, 12, 6, 23, 41, 7, tzinfo=datetime.UTC)
KEYS = Keys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE",
                 "AWS_CREDENTIAL_EXPIRATION", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


def botocore_authorization(method: str, url: str, headers: dict[str, str], body: bytes, keys: Keys,
                           region: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(keys.access_key, keys.secret_key, keys.token),
                              "s3", region).add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize(("method", "key", "query", "headers", "body", "token"), [
    ("GET", "repo/data/ab/" + "ab" * 32, [], {"Range": "bytes=100-4195"}, b"", None),
    ("PUT", "repo/keys/" + "0f" * 32, [],
     {"Content-MD5": "XrY7u+Ae7tCTyyK7j1rNww==", "If-None-Match": "*", "Content-Length": "11",
      "x-amz-checksum-sha256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="},
     b"hello world", None),
    ("GET", None, [("list-type", "2"), ("prefix", "officine/pharmacie du port+/"), ("encoding-type", "url"),
                   ("max-keys", "1000"), ("continuation-token", "1/a+b=c d")], {}, b"", "session/token+=="),
    ("DELETE", "préfixe avec espaces/snapshots/" + "7" * 64, [], {}, b"", None),
    ("HEAD", "a~b_c-d.e/config", [], {}, b"", None),
])
def test_signatures_are_the_ones_botocore_makes(
    method: str, key: str | None, query: list[tuple[str, str]], headers: dict[str, str], body: bytes,
    token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature is what the storage checks every request against: for the same request,
    time and keys, Coffre's must be byte for byte the one of botocore, the reference client
    (paths and queries with spaces, +, non-ASCII letters; a session token; a non-default port)."""
    keys = Keys(KEYS.access_key, KEYS.secret_key, token)
    path = "/bucket-1" + ("" if key is None else "/" + urllib.request.quote(key, safe="/-_.~"))
    payload = hashlib.sha256(body).hexdigest()
    host = "127.0.0.1:8333"
    ours = s3wire.sign(method, path, s3wire.canonical_query(query), {"Host": host} | headers, payload, keys,
                       "eu-west-3", WHEN)
    url = f"http://{host}{path}" + ("?" + s3wire.canonical_query(query) if query else "")
    theirs = botocore_authorization(method, url, headers, body, keys, "eu-west-3", monkeypatch)
    assert ours["Authorization"] == theirs
    assert ours["x-amz-content-sha256"] == payload
    assert ("x-amz-security-token" in ours) == (token is not None)
    assert KEYS.secret_key not in repr(keys)


# -- where the keys come from -----------------------------------------------------------------
@pytest.fixture
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No AWS variable set, and the AWS files in a folder of the test's own."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_environment_keys_come_first_unless_a_profile_is_named(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aws_home / "credentials").write_text("[default]\naws_access_key_id = FILEKEY\n"
                                          "aws_secret_access_key = filesecret\n"
                                          "[coffre]\naws_access_key_id = PROFILEKEY\n"
                                          "aws_secret_access_key = profilesecret\naws_session_token = tok\n")
    (aws_home / "config").write_text("[profile coffre]\nregion = fr-par\nca_bundle = /etc/provider-ca.pem\n")
    assert s3credentials.resolve().keys.current() == Keys("FILEKEY", "filesecret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    settings = s3credentials.resolve()
    assert settings.keys.current() == Keys("ENVKEY", "envsecret")
    assert (settings.region, settings.ca_bundle) == ("us-east-1", None)
    monkeypatch.setenv("AWS_PROFILE", "coffre")
    assert s3credentials.resolve().keys.current().access_key == "ENVKEY"  # as botocore: the keys win
    named = s3credentials.resolve("coffre")  # the agent's aws_profile: the environment's keys ignored
    assert named.keys.current() == Keys("PROFILEKEY", "profilesecret", "tok")
    assert (named.region, named.ca_bundle) == ("fr-par", "/etc/provider-ca.pem")
    assert not named.keys.from_botocore
    monkeypatch.setenv("AWS_DEFAULT_REGION", "gra")
    assert s3credentials.resolve("coffre").region == "gra"


def test_keys_in_the_config_file_and_a_profile_that_does_not_exist(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aws_home / "config").write_text("[profile officine]\naws_access_key_id = CFGKEY\n"
                                     "aws_secret_access_key = cfgsecret\nregion = sbg\n")
    monkeypatch.setenv("AWS_PROFILE", "officine")
    settings = s3credentials.resolve()
    assert settings.keys.current() == Keys("CFGKEY", "cfgsecret") and settings.region == "sbg"
    with pytest.raises(s3credentials.ProfileNotFound) as info:
        s3credentials.resolve("nowhere")
    assert isinstance(info.value, UsageError) and "nowhere" in info.value.message


def test_half_given_keys_are_a_clear_error_naming_no_secret(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An access key without its secret is refused as the client is made (botocore's
    PartialCredentialsError); a secret alone is no keys at all, refused at the first request."""
    from coffre.storage.s3 import S3Backend, s3_client
    from coffre.storage.url import parse_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIALONELY")
    with pytest.raises(StoragePermissionDenied) as info:
        s3_client("http://127.0.0.1:9")
    assert "AWS_SECRET_ACCESS_KEY" in (info.value.hint or "")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lonely-secret-4321")
    with pytest.raises(StoragePermissionDenied) as info:
        S3Backend(parse_s3("s3+http://127.0.0.1:9/bucket")).exists()
    assert "lonely-secret-4321" not in f"{info.value.message} {info.value.hint} {info.value!r}"


def test_no_keys_anywhere_fails_at_the_first_request(aws_home: Path) -> None:
    from coffre.storage.s3 import S3Backend
    from coffre.storage.url import parse_s3

    backend = S3Backend(parse_s3("s3+http://127.0.0.1:9/bucket"))
    with pytest.raises(StoragePermissionDenied, match="no S3 credentials"):
        backend.exists()


def write_credential_process(folder: Path, access: str, secret: str) -> Path:
    script = folder / "keys.py"
    keys = {"Version": 1, "AccessKeyId": access, "SecretAccessKey": secret}
    script.write_text(f"print({json.dumps(json.dumps(keys))})\n")
    return script


def test_a_profile_with_a_credential_process_is_handed_to_botocore_and_works(
    aws_home: Path, seaweedfs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys that are not written in a file (a role, SSO, a credential process) come from
    botocore's chain: here a real process botocore runs, whose keys the real server accepts."""
    from coffre.storage.s3 import S3Backend
    from coffre.storage.url import parse_s3
    from servers import ACCESS_KEY, SECRET_KEY

    script = write_credential_process(aws_home, ACCESS_KEY, SECRET_KEY)
    (aws_home / "config").write_text(f"[profile vault]\ncredential_process = {sys.executable} {script}\n")
    settings = s3credentials.resolve("vault")
    assert settings.keys.from_botocore
    seaweedfs.new_bucket("process-keys")
    backend = S3Backend(parse_s3(seaweedfs.url("process-keys", "repo")), profile="vault")
    backend.create()
    handle = Handle("keys", "ab" * 32)
    backend.save(handle, b"sealed key")
    assert backend.load(handle) == b"sealed key"


# -- requests against a real server -------------------------------------------------------------
def test_listings_go_page_after_page_and_keep_every_character(seaweedfs: Any, s3_env: dict[str, str]) -> None:
    from coffre.storage.s3 import s3_client

    seaweedfs.new_bucket("pages")
    names = ["p/a b+c", "p/d%e", "p/été", "p/x", "p/y/z"]
    for name in names:
        seaweedfs.client.put_object(Bucket="pages", Key=name, Body=name.encode())
    seaweedfs.client.put_object(Bucket="pages", Key="q/outside", Body=b"no")
    client = s3_client(seaweedfs.endpoint)
    listed = list(client.list_objects("pages", "p/", max_keys=2))
    assert [item.key for item in listed] == sorted(names)
    assert [item.size for item in listed] == [len(n.encode()) for n in sorted(names)]
    now = datetime.datetime.now(datetime.UTC).timestamp() * 1e9
    assert all(abs(item.modified_ns - now) < 600e9 for item in listed)
    assert client.head_object("pages", "p/été")[0] == len("p/été".encode())
    assert client.get_object("pages", "p/a b+c", 2, 4).data == b"a b"


def test_an_answer_declaring_a_document_type_is_not_parsed() -> None:
    """A listing or an error comes from a storage Coffre does not trust: a document that
    defines entities (an expansion bomb, a file to include) is refused whole."""
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<Error><Code>&b;</Code></Error>")
    external = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<ListBucketResult><Contents><Key>&x;</Key></Contents></ListBucketResult>")
    assert s3wire._parse(bomb) is None and s3wire._parse(external) is None
    assert s3wire._parse(b"<Error><Code>NoSuchKey</Code></Error>") is not None
    assert s3wire._parse(b"<Error>" + b"x" * s3wire.MAX_XML + b"</Error>") is None


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain HTTP forward proxy that counts what it forwards (or, with `target` set, a
    reverse proxy to that port)."""

    seen: ClassVar[list[str]] = []
    target: ClassVar[int | None] = None

    def _forward(self) -> None:
        import http.client

        parts = urllib.request.urlparse(self.path)
        if self.target is not None:
            parts = urllib.request.urlparse(f"http://127.0.0.1:{self.target}{self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
        hop = ("proxy-connection", "connection")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(self.command, target, body, headers)
        answer = connection.getresponse()
        data = answer.read()
        self.seen.append(self.command)
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forward_proxy() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ForwardProxy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ForwardProxy.seen, _ForwardProxy.target = [], None
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _TLSServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardProxy)
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True), address


def test_tls_is_verified_against_the_certificate_authority_named(
    seaweedfs: Any, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NAS's S3 service behind HTTPS with its own certificate: refused as untrusted, with
    AWS_CA_BUNDLE named in the hint; trusted once AWS_CA_BUNDLE names its authority."""
    from coffre.storage.s3 import S3Backend
    from coffre.storage.url import parse_s3
    from servers import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _TLSServer(context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ForwardProxy.seen, _ForwardProxy.target = [], seaweedfs.port
    seaweedfs.new_bucket("over-tls")
    url = f"s3://127.0.0.1:{server.server_address[1]}/over-tls/repo"
    try:
        with pytest.raises(StorageError) as info:
            S3Backend(parse_s3(url)).exists()
        assert "AWS_CA_BUNDLE" in (info.value.hint or "")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        backend = S3Backend(parse_s3(url))
        backend.create()
        backend.save(Handle("keys", "ef" * 32), b"over TLS")
        assert backend.load(Handle("keys", "ef" * 32)) == b"over TLS"
        assert {"PUT", "GET"} <= set(_ForwardProxy.seen)
    finally:
        server.shutdown()
        server.server_close()


def test_the_proxy_the_environment_names_is_used(
    seaweedfs: Any, s3_env: dict[str, str], forward_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pharmacy's network may reach the Internet only through a proxy (HTTP_PROXY,
    HTTPS_PROXY), as every AWS tool honours it; NO_PROXY names where it is not used."""
    from coffre.storage.s3 import S3Backend
    from coffre.storage.url import parse_s3

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    seaweedfs.new_bucket("proxied")
    backend = S3Backend(parse_s3(seaweedfs.url("proxied", "repo")))
    backend.create()
    backend.save(Handle("keys", "cd" * 32), b"through the proxy")
    assert backend.load(Handle("keys", "cd" * 32)) == b"through the proxy"
    assert {"HEAD", "PUT", "GET"} <= set(_ForwardProxy.seen)
    before = len(_ForwardProxy.seen)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = S3Backend(parse_s3(seaweedfs.url("proxied", "repo")))
    assert direct.load(Handle("keys", "cd" * 32)) == b"through the proxy"
    assert len(_ForwardProxy.seen) == before


def test_a_bucket_in_another_region_is_named_with_the_setting_to_change() -> None:
    from coffre.storage.s3 import _translate

    err = _translate(s3wire.S3Error(301, "PermanentRedirect", "eu-west-3"), "reading config")
    assert "eu-west-3" in err.message and "AWS_DEFAULT_REGION=eu-west-3" in (err.hint or "")
    err = _translate(s3wire.S3Error(400, "AuthorizationHeaderMalformed", ""), "reading config")
    assert "AWS_DEFAULT_REGION" in (err.hint or "")
