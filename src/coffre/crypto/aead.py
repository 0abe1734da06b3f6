"""Sub-keys, keyed blob ids and the encrypted object envelope.

Envelope: version(1) | session_id(16) | nonce(12) | AES-256-GCM ciphertext and tag(16).
The session key is HKDF(enc_root, salt=session_id, info="coffre data v1"): every process
that writes draws a fresh random session id, so nonces (random, 96 bits) never repeat under
one key across clients, copies or rollbacks; a process draws a new one after
MAX_PER_SESSION encryptions. Associated data binds the format version, the
repository id, the object kind and, for blobs, the blob id.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffre.core.errors import FormatError, IntegrityError

ENVELOPE_VERSION = 1
SESSION_ID_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + SESSION_ID_LEN + NONCE_LEN + TAG_LEN
# NIST SP 800-38D §8.3: with random 96-bit nonces, at most 2**32 encryptions under one key.
MAX_PER_SESSION = 2**32
ID_LEN = 32

# Object kinds bound into the associated data.
KIND_DATA = 1
KIND_TREE = 2
KIND_PACK_HEADER = 3
KIND_INDEX = 4
KIND_SNAPSHOT = 5
KIND_LOCK = 6
KIND_TRASH = 7
KIND_CONFIG_MAC = 8
KIND_TOMBSTONE = 9
BLOB_KINDS = (KIND_DATA, KIND_TREE)


def hkdf(secret: bytes, info: bytes, salt: bytes | None = None, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True)
class SubKeys:
    enc_root: bytes
    id_key: bytes
    chunker_seed: int
    mac_key: bytes

    @classmethod
    def derive(cls, master: bytes) -> SubKeys:
        if len(master) != 32:
            raise ValueError("master secret must be 32 bytes")
        seed = int.from_bytes(hkdf(master, b"coffre chunker v1", length=8), "little")
        # pyfastcdc treats 0 as "no seed" and shifts the seed left by one internally.
        seed = (seed & 0x7FFF_FFFF_FFFF_FFFF) or 1
        return cls(
            enc_root=hkdf(master, b"coffre encryption v1"),
            id_key=hkdf(master, b"coffre blob id v1"),
            chunker_seed=seed,
            mac_key=hkdf(master, b"coffre config mac v1"),
        )


class Crypter:
    """Encrypts and decrypts stored objects of one repository. Thread-safe."""

    def __init__(self, keys: SubKeys, repo_id: bytes) -> None:
        self.keys = keys
        self.repo_id = repo_id
        self._sessions: dict[bytes, AESGCM] = {}
        self._lock = threading.Lock()
        self.max_per_session = MAX_PER_SESSION
        self._new_session()

    def _new_session(self) -> None:
        self._session_id = os.urandom(SESSION_ID_LEN)
        self._session = AESGCM(hkdf(self.keys.enc_root, b"coffre data v1", salt=self._session_id))
        self._sessions[self._session_id] = self._session
        self._used = 0

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self.keys.id_key).digest()

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.keys.mac_key, data, "sha256").digest()

    def _aad(self, kind: int, object_id: bytes) -> bytes:
        return b"coffre\x01" + self.repo_id + bytes([kind]) + object_id

    def encrypt(self, kind: int, plaintext: bytes | memoryview, object_id: bytes = b"") -> bytes:
        with self._lock:
            if self._used >= self.max_per_session:
                self._new_session()
            self._used += 1
            session_id, session = self._session_id, self._session
        nonce = os.urandom(NONCE_LEN)
        ct = session.encrypt(nonce, plaintext, self._aad(kind, object_id))
        return b"".join((bytes([ENVELOPE_VERSION]), session_id, nonce, ct))

    def _session_for(self, session_id: bytes) -> AESGCM:
        aead = self._sessions.get(session_id)
        if aead is None:
            aead = AESGCM(hkdf(self.keys.enc_root, b"coffre data v1", salt=session_id))
            with self._lock:
                if len(self._sessions) > 4096:
                    self._sessions.clear()
                    self._sessions[self._session_id] = self._session
                self._sessions[session_id] = aead
        return aead

    def keystream_decrypt(self, envelope: bytes | memoryview) -> bytes:
        """What follows an envelope's header, deciphered WITHOUT checking any tag: only for
        salvaging a pack whose header is lost, to learn a candidate blob's id and length,
        after which the candidate is authenticated with decrypt(). Never trust its output."""
        view = memoryview(envelope)
        if len(view) < OVERHEAD or view[0] != ENVELOPE_VERSION:
            return b""
        session_id = bytes(view[1 : 1 + SESSION_ID_LEN])
        nonce = bytes(view[1 + SESSION_ID_LEN : 1 + SESSION_ID_LEN + NONCE_LEN])
        key = hkdf(self.keys.enc_root, b"coffre data v1", salt=session_id)
        # GCM enciphers with CTR from the counter block nonce ‖ 2 (96-bit nonces).
        counter = nonce + (2).to_bytes(4, "big")
        decryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).decryptor()
        return decryptor.update(view[1 + SESSION_ID_LEN + NONCE_LEN :]) + decryptor.finalize()

    def decrypt(self, kind: int, envelope: bytes | memoryview, object_id: bytes = b"") -> bytes:
        view = memoryview(envelope)
        if len(view) < OVERHEAD:
            raise IntegrityError("encrypted object too short")
        if view[0] != ENVELOPE_VERSION:
            raise FormatError(f"unknown encryption envelope version {view[0]}")
        session_id = bytes(view[1 : 1 + SESSION_ID_LEN])
        nonce = bytes(view[1 + SESSION_ID_LEN : 1 + SESSION_ID_LEN + NONCE_LEN])
        try:
            return self._session_for(session_id).decrypt(
                nonce, view[1 + SESSION_ID_LEN + NONCE_LEN :], self._aad(kind, object_id)
            )
        except InvalidTag:
            raise IntegrityError("authentication failed: the object was altered or damaged") from None
