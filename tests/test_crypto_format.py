"""Crypto and object formats: round trips, and every tampering detected."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.core.errors import FormatError, IntegrityError
from coffre.crypto import aead, kdf
from coffre.crypto.aead import Crypter, SubKeys
from coffre.format.tree import Node, decode_tree, encode_tree
from coffre.repository.repo import Repository
from coffre.storage.memory import MemoryBackend


@pytest.fixture
def crypter() -> Crypter:
    return Crypter(SubKeys.derive(os.urandom(32)), os.urandom(16))


@given(data=st.binary(max_size=5000), blob_id=st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_envelope_round_trip(data: bytes, blob_id: bytes) -> None:
    c = Crypter(SubKeys.derive(b"k" * 32), b"r" * 16)
    assert c.decrypt(aead.KIND_DATA, c.encrypt(aead.KIND_DATA, data, blob_id), blob_id) == data


def test_tampering_and_context_swaps_are_detected(crypter: Crypter) -> None:
    blob_id = crypter.blob_id(b"ordonnance")
    env = crypter.encrypt(aead.KIND_DATA, b"ordonnance", blob_id)
    for i in (0, 5, 30, len(env) - 1):
        bad = bytearray(env)
        bad[i] ^= 1
        with pytest.raises((IntegrityError, FormatError)):
            crypter.decrypt(aead.KIND_DATA, bytes(bad), blob_id)
    with pytest.raises(IntegrityError):  # claimed under another id
        crypter.decrypt(aead.KIND_DATA, env, crypter.blob_id(b"autre"))
    with pytest.raises(IntegrityError):  # type confusion: data read as a tree
        crypter.decrypt(aead.KIND_TREE, env, blob_id)
    other_repo = Crypter(crypter.keys, os.urandom(16))
    with pytest.raises(IntegrityError):  # replay into another repository
        other_repo.decrypt(aead.KIND_DATA, env, blob_id)


def test_blob_ids_are_keyed(crypter: Crypter) -> None:
    other = Crypter(SubKeys.derive(os.urandom(32)), crypter.repo_id)
    assert crypter.blob_id(b"x") != other.blob_id(b"x")
    import hashlib

    assert crypter.blob_id(b"x") != hashlib.sha256(b"x").digest()


def test_sessions_differ_per_writer(crypter: Crypter) -> None:
    second = Crypter(crypter.keys, crypter.repo_id)
    a = crypter.encrypt(aead.KIND_INDEX, b"same")
    b = second.encrypt(aead.KIND_INDEX, b"same")
    assert a[1:17] != b[1:17]  # different session ids, so different keys
    assert second.decrypt(aead.KIND_INDEX, a) == b"same"


def test_a_session_key_encrypts_at_most_its_bound_then_a_new_one_is_drawn(crypter: Crypter) -> None:
    """Random 96-bit nonces are safe for 2**32 encryptions under one key (NIST SP 800-38D):
    a long-running writer changes session before. Checked with a bound of 3, from 4 threads
    at once; a reader that never saw the writer (another process) opens every envelope."""
    from concurrent.futures import ThreadPoolExecutor

    assert aead.MAX_PER_SESSION == 2**32
    crypter.max_per_session = 3
    blobs = [os.urandom(100) for _ in range(40)]
    with ThreadPoolExecutor(4) as pool:
        envelopes = list(pool.map(lambda b: crypter.encrypt(aead.KIND_DATA, b, crypter.blob_id(b)), blobs))
    per_session: dict[bytes, int] = {}
    for env in envelopes:
        per_session[env[1:17]] = per_session.get(env[1:17], 0) + 1
    assert max(per_session.values()) == 3 and len(per_session) == 14
    reader = Crypter(crypter.keys, crypter.repo_id)
    opened = [reader.decrypt(aead.KIND_DATA, e, reader.blob_id(b))
              for e, b in zip(envelopes, blobs, strict=True)]
    assert opened == blobs


def test_password_wrap_and_bounds() -> None:
    master, rid = os.urandom(32), os.urandom(16)
    w = kdf.wrap(master, rid, "password", b"secret")
    assert kdf.unwrap(w, rid, b"secret") == master
    assert kdf.unwrap(w, rid, b"Secret") is None
    forged = kdf.WrappedKey("password", w.salt, {"t": 1, "m": 2**40, "p": 1}, w.nonce, w.ciphertext)
    with pytest.raises(FormatError):
        kdf.unwrap(forged, rid, b"secret")


def test_recovery_key_round_trip() -> None:
    raw, text = kdf.new_recovery_key()
    assert kdf.parse_recovery_key(text) == raw
    assert kdf.parse_recovery_key(text.replace("-", "").lower()) == raw
    assert kdf.parse_recovery_key("hello") is None


# The checksum has 16 bits: a random key's typo passes it once in 65,536 tries. The typos are
# therefore made on fixed keys, so that this test cannot fail by chance.
@pytest.mark.parametrize("raw", [bytes(range(32)), bytes(32), b"\xff" * 32])
def test_recovery_key_checksum_refuses_typos(raw: bytes) -> None:
    text = kdf.format_recovery_key(raw)
    assert kdf.parse_recovery_key(text) == raw
    # Two different neighbouring letters swapped.
    for i in range(len(text) - 1):
        a, b = text[i], text[i + 1]
        if "-" not in (a, b) and a != b:
            assert kdf.parse_recovery_key(text[:i] + b + a + text[i + 2 :]) is None
    # Every single-character change, the last (partly padding) one included.
    for i, letter in enumerate(text):
        if letter == "-":
            continue
        for c in "AB7":
            if c != letter:
                assert kdf.parse_recovery_key(text[:i] + c + text[i + 1 :]) is None


@given(names=st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b), unique=True))
@settings(max_examples=30)
def test_tree_round_trip_any_byte_names(names: list[bytes]) -> None:
    nodes = [Node(name=n, type="file", mode=0o640, size=3, mtime_ns=-5, content=[b"x" * 32]) for n in names]
    back = decode_tree(encode_tree(nodes))
    assert [n.name for n in back] == sorted(names)
    assert all(n.mtime_ns == -5 and n.content == [b"x" * 32] for n in back)


def test_malformed_tree_rejected() -> None:
    from coffre.format.codec import encode

    for bad in (b"\xc1", encode({"v": 2, "nodes": []}), encode({"v": 1, "nodes": [{"n": b"x", "t": "zzz"}]}),
                encode({"v": 1, "nodes": [{"n": b"x", "t": "file", "c": [b"short"]}]})):
        with pytest.raises(FormatError):
            decode_tree(bad)


def test_damaged_object_named_by_hash() -> None:
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw")
    name = repo.save_object("snapshots", b"payload")
    assert repo.load_object("snapshots", name) == b"payload"
    from coffre.storage.base import Handle

    raw = bytearray(backend.load(Handle("snapshots", name)))
    raw[-1] ^= 0xFF
    backend.remove(Handle("snapshots", name))
    backend.save(Handle("snapshots", name), bytes(raw))
    with pytest.raises(IntegrityError, match="does not match its name"):
        repo.load_object("snapshots", name)


def test_a_folder_of_150k_entries_fits_in_a_readable_tree() -> None:
    from coffre.repository.packer import Packer

    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw")
    nodes = [Node(name=f"ordonnance-{i:06d}.pdf".encode(), type="file", mode=0o644, size=i,
                  content=[bytes(32)]) for i in range(150_000)]
    data = encode_tree(nodes)
    assert len(data) > 16 * 1024 * 1024  # beyond the data-blob limit
    tree_id = repo.crypter.blob_id(data)
    packer = Packer(repo)
    packer.add(aead.KIND_TREE, tree_id, data)
    packer.flush()
    repo.save_index(packer.take_written())
    again = Repository.open(backend, "pw")
    again.load_index()
    assert len(decode_tree(again.load_blob(tree_id))) == 150_000
