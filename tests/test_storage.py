"""The backend contract, run over every backend: memory, local disk, and S3 against a real
SeaweedFS server; then what only some backends can show (S3 checksums, credentials)."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.core.directwrite import ALIGN, MIN_DIRECT, PIECE
from coffre.core.errors import CoffreError, ObjectExists, ObjectNotFound, StorageError
from coffre.storage.base import Backend, Handle
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend
from coffre.storage.url import open_backend
from server_process import coffre_server  # noqa: F401 (the "server" backend's fixture)

_fresh = itertools.count()


def fresh_s3_url(seaweedfs: object) -> str:
    """A new, empty repository location on the test server (its own bucket, made and ready
    for writes: servers.SeaweedFS.new_bucket)."""
    bucket = f"coffre-{next(_fresh)}"
    seaweedfs.new_bucket(bucket)  # type: ignore[attr-defined]
    return seaweedfs.url(bucket, "repo/sub")  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "local", "s3", "sftp", "ftps", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    b: Backend
    if request.param == "memory":
        b = MemoryBackend()
    elif request.param == "local":
        b = LocalBackend(tmp_path / "r")
    elif request.param == "s3":
        request.getfixturevalue("s3_env")
        b = open_backend(fresh_s3_url(request.getfixturevalue("seaweedfs")))
    elif request.param == "server":  # a real `coffre server` process, over TLS; a prune token
        server = request.getfixturevalue("coffre_server")
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("COFFRE_SERVER_TOKEN", server.tenant()["prune"])
        b = open_backend(server.url("repo"))
    elif request.param == "sftp":
        request.getfixturevalue("ssh_env")
        b = open_backend(request.getfixturevalue("sshd").url(str(tmp_path / "nas" / "coffre")))
    else:
        request.getfixturevalue("ftp_env")
        b = open_backend(request.getfixturevalue("ftps_server").url(f"/repo-{next(_fresh)}/coffre"))
    assert not b.exists()
    b.create()
    b.save(Handle("config", "config"), b"{}")
    yield b
    b.close()


def sha(data: bytes) -> str:
    """An object's name: the SHA-256 of its bytes, as Coffre names every object but config
    (the Coffre server checks it)."""
    return hashlib.sha256(data).hexdigest()


def test_save_load_ranges_and_stat(backend: Backend) -> None:
    h = Handle("data", sha(b"0123456789"))
    backend.save(h, b"0123456789")
    assert backend.load(h) == b"0123456789"
    assert backend.load(h, 2, 3) == b"234"
    assert backend.load(h, 8) == b"89"
    assert backend.load(h, 10, 5) == b""
    assert backend.stat(h).size == 10
    assert backend.exists()


def test_objects_are_never_overwritten(backend: Backend) -> None:
    from coffre.core.errors import TransientStorageError
    from coffre.storage.server import ServerBackend

    h = Handle("snapshots", sha(b"first"))
    backend.save(h, b"first")
    backend.save(h, b"first")  # same bytes: idempotent success
    # A Coffre server checks the name against the bytes first: other bytes under a hashed name
    # are bytes altered on the way (retried), never an overwrite.
    with pytest.raises(TransientStorageError if isinstance(backend, ServerBackend) else ObjectExists):
        backend.save(h, b"other")
    assert backend.load(h) == b"first"
    config = Handle("config", "config")
    with pytest.raises(ObjectExists):
        backend.save(config, b"{other}")
    assert backend.load(config) == b"{}"


def test_missing_objects(backend: Backend) -> None:
    h = Handle("index", "f" * 64)
    with pytest.raises(ObjectNotFound):
        backend.load(h)
    with pytest.raises(ObjectNotFound):
        backend.stat(h)
    with pytest.raises(ObjectNotFound):
        backend.remove(h)
    backend.will_read(h, 0, 100)  # a hint: never an error, the load that follows reports it


def test_listing_thousands_and_removal(backend: Backend) -> None:
    objects = {sha(data): data for data in (f"object {i}".encode() for i in range(2500))}
    for n, data in objects.items():
        backend.save(Handle("data", n), data)
    assert {i.name: i.size for i in backend.list("data")} == {n: len(d) for n, d in objects.items()}
    backend.remove(Handle("data", sha(b"object 7")))
    assert len(list(backend.list("data"))) == 2499
    assert list(backend.list("locks")) == []


def test_create_refuses_a_location_in_use(backend: Backend) -> None:
    with pytest.raises(CoffreError) as info:
        backend.create()
    assert "not empty" in str(info.value)


def test_handle_names_are_validated() -> None:
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            Handle("data", bad)
    with pytest.raises(ValueError):
        Handle("nope", "abc")


def test_local_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r")
    b.create()
    b.save(Handle("index", "1" * 64), b"x" * 1000)
    assert [p.name for p in (tmp_path / "r" / "index").iterdir()] == ["1" * 64]


def resident_bytes(path: Path) -> int:
    """How much of a file the system keeps in memory (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def test_local_packs_written_leave_no_copy_in_memory(tmp_path: Path) -> None:
    # A backup never reads its packs back: once synced, their cached copy is given back to
    # the system (posix.drop_cached), so an initial backup does not fill the memory with them.
    # An index is read again by the same command and stays.
    b = LocalBackend(tmp_path / "r")
    b.create()
    body = os.urandom(4 * 1024 * 1024)
    pack, index = Handle("data", sha(body)), Handle("index", sha(body + b"i"))
    b.save(pack, body)
    b.save(index, body)
    assert resident_bytes(tmp_path / "r" / "data" / pack.name[:2] / pack.name) == 0
    assert resident_bytes(tmp_path / "r" / "index" / index.name) == len(body)
    assert b.load(pack) == body


@pytest.mark.parametrize("size", [1000, MIN_DIRECT + 1, 2 * PIECE + ALIGN - 1])
def test_local_packs_go_around_the_page_cache_and_land_whole(tmp_path: Path, size: int) -> None:
    # A pack's aligned bulk is written with O_DIRECT (no copy into the page cache, which costs
    # far more than the write on a virtual machine whose host took the memory back); its
    # unaligned end, and a pack too small to be worth it, go the usual way.
    b = LocalBackend(tmp_path / "r")
    b.create()
    body = os.urandom(size)
    pack = Handle("data", sha(body))
    b.save(pack, body)
    aligned = size // ALIGN * ALIGN
    assert b._direct.written == (aligned if aligned >= MIN_DIRECT else 0)
    assert b.load(pack) == body
    assert (tmp_path / "r" / "data" / pack.name[:2] / pack.name).read_bytes() == body


def test_local_os_errors_are_translated(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r")
    b.create()
    (tmp_path / "r" / "index").rmdir()
    (tmp_path / "r" / "index").write_text("a file where a folder should be")
    with pytest.raises(StorageError) as info:
        b.save(Handle("index", "2" * 64), b"x")
    assert isinstance(info.value.__cause__, OSError)
    assert "writing index/" in info.value.message


def test_local_same_bytes_found_there_are_made_durable_before_success(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A save cut (kill -9) after its link() and before the folder's fsync leaves a name the
    # disk may not keep; the retry that finds the same bytes there must sync the folder
    # before it reports success (a Coffre server acknowledges the object on that success).
    from coffre.storage import local

    b = LocalBackend(tmp_path / "r")
    b.create()
    h = Handle("data", sha(b"pack"))
    folder = tmp_path / "r" / "data" / h.name[:2]
    folder.mkdir()
    (folder / h.name).write_bytes(b"pack")  # linked, folder not synced yet
    synced: list[Path] = []
    monkeypatch.setattr(local.posix, "fsync_dir", lambda p: synced.append(Path(p)))
    b.save(h, b"pack")
    assert folder in synced


# -- S3 only ---------------------------------------------------------------------------------
def test_s3_upload_corrupted_in_transit_is_refused_by_the_server(
    seaweedfs: object, s3_env: dict[str, str]
) -> None:
    """Each upload carries its checksums: bytes altered after they were computed (as a faulty
    link or proxy would) are refused by the storage, and nothing is stored."""
    from coffre.core.errors import TransientStorageError
    from coffre.storage.s3 import S3Backend

    b = open_backend(fresh_s3_url(seaweedfs))
    assert isinstance(b, S3Backend)
    b.create()

    sent = b.client._http.urlopen

    def corrupt(method: str, url: str, body: object = None, **kw: object) -> object:
        if method == "PUT" and isinstance(body, bytes):  # after the checksums and the signature
            body = bytes([body[0] ^ 1]) + body[1:]
        return sent(method, url, body=body, **kw)

    h = Handle("data", "cd" + "1" * 62)
    b.client._http.urlopen = corrupt  # type: ignore[method-assign]
    with pytest.raises(TransientStorageError):
        b.save(h, b"pharmacy data" * 100)
    b.client._http.urlopen = sent  # type: ignore[method-assign]
    with pytest.raises(ObjectNotFound):
        b.load(h)
    b.save(h, b"pharmacy data" * 100)  # the retry a RetryBackend makes then succeeds
    assert b.load(h) == b"pharmacy data" * 100


def test_s3_wrong_credentials_are_a_clear_error_without_the_secret(
    seaweedfs: object, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coffre.core.errors import StoragePermissionDenied

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-1234")
    b = open_backend(fresh_s3_url(seaweedfs))
    with pytest.raises(StoragePermissionDenied) as info:
        b.create()
    text = f"{info.value.message} {info.value.hint} {info.value!r}"
    assert "access denied" in text and "AWS_SECRET_ACCESS_KEY" in (info.value.hint or "")
    assert "wrong-secret-value-1234" not in text
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in text


def test_s3_listing_skips_foreign_objects(seaweedfs: object, s3_env: dict[str, str]) -> None:
    from coffre.storage.s3 import S3Backend

    b = open_backend(fresh_s3_url(seaweedfs))
    assert isinstance(b, S3Backend)
    b.create()
    good = "ab" + "2" * 62
    b.save(Handle("data", good), b"x")
    for key in ("data/ab/notes.txt", "data/cd/" + good, "data/" + good, "index/ab/" + good):
        seaweedfs.client.put_object(Bucket=b.where.bucket, Key=b.where.prefix + key, Body=b"foreign")  # type: ignore[attr-defined]
    assert [i.name for i in b.list("data")] == [good]
    assert list(b.list("index")) == []


@pytest.mark.parametrize(("url", "endpoint", "bucket", "prefix"), [
    ("s3://s3.fr-par.scw.cloud/pharmacie", "https://s3.fr-par.scw.cloud", "pharmacie", ""),
    ("s3://s3.gra.io.cloud.ovh.net/b-1/officine/coffre/", "https://s3.gra.io.cloud.ovh.net", "b-1",
     "officine/coffre/"),
    ("s3+http://127.0.0.1:8333/bucket/p", "http://127.0.0.1:8333", "bucket", "p/"),
])
def test_s3_urls(url: str, endpoint: str, bucket: str, prefix: str) -> None:
    from coffre.storage.url import parse_s3

    where = parse_s3(url)
    assert (where.endpoint, where.bucket, where.prefix) == (endpoint, bucket, prefix)


@pytest.mark.parametrize(("url", "words"), [
    ("s3://key:secret@host/bucket", "credentials"),
    ("s3://host", "no bucket"),
    ("s3://host/Bad_Bucket!", "not a valid bucket"),
    ("s3://host/bucket/../x", "'..'"),
    ("s3://host:99999/bucket", "invalid port"),
    ("ftpx://host/path", "not supported"),
])
def test_bad_repository_urls_are_refused_clearly(url: str, words: str) -> None:
    from coffre.core.errors import UsageError

    with pytest.raises(UsageError) as info:
        open_backend(url)
    assert words in info.value.message
    assert "secret" not in info.value.message


def test_a_read_only_account_cannot_write_and_is_told_so(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 and FTP accounts that may only read: a write is refused as a permission problem
    (not retried, not mistaken for a missing object), and nothing is stored."""
    from coffre.core.errors import StoragePermissionDenied
    from servers import READER_KEY

    request.getfixturevalue("s3_env")
    seaweed = request.getfixturevalue("seaweedfs")
    url = fresh_s3_url(seaweed)
    open_backend(url).create()
    request.getfixturevalue("ftp_env")
    ftps = request.getfixturevalue("ftps_server")
    ftp_url = ftps.url(f"/ro-{tmp_path.name}")
    open_backend(ftp_url).create()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    for location in (url, ftp_url.replace("pharmacie@", "lecteur@")):
        b = open_backend(location)
        h = Handle("index", "7" * 64)
        with pytest.raises(StoragePermissionDenied):
            b.save(h, b"refused")
        with pytest.raises(ObjectNotFound):
            b.load(h)
        b.close()
