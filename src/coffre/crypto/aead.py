"""Sub-keys, keyed blob ids and the encrypted envelopes.

Object envelope (index, snapshots, locks, trash; every blob in format 1):
version(1) | session_id(16) | nonce(12) | AES-256-GCM ciphertext and tag(16).
The session key is HKDF(enc_root, salt=session_id, info="coffre data v1"): every process
that writes draws a fresh random session id, so nonces (random, 96 bits) never repeat under
one key across clients, copies or rollbacks; a process draws a new one after
MAX_PER_SESSION encryptions. Associated data binds the format version, the
repository id, the object kind and, for blobs, the blob id.

Format 2 seals the blobs and header of a pack under a pack key, HKDF(enc_root,
salt=pack_salt, info="coffre pack v2") with a random 16-byte salt written once at the pack's
end: a blob is nonce(12) | ciphertext and tag(16), with nothing in clear that marks where it
starts. Format 2 also splits the secrets (docs/design.md §2): the master wrapped by the key
slots gives the encryption and MAC keys; a separate content secret, stored in the config
encrypted under the master, gives the blob-id key and the chunker's gear key, and is all that
repositories sharing their chunking (init --copy-chunking-from) have in common.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coffre.core.errors import FormatError, IntegrityError
from coffre.core.i18n import _
from coffre.crypto.blobid import blob_id

ENVELOPE_VERSION = 1
SESSION_ID_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + SESSION_ID_LEN + NONCE_LEN + TAG_LEN
PACK_SALT_LEN = 16
SEALED_OVERHEAD = NONCE_LEN + TAG_LEN  # a format-2 blob or pack header
CONTENT_LEN = 32
WRAPPED_CONTENT_LEN = NONCE_LEN + CONTENT_LEN + TAG_LEN
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
KIND_SEGMENT_HEADER = 10
KIND_SEGMENT = 11
BLOB_KINDS = (KIND_DATA, KIND_TREE)


def hkdf(secret: bytes, info: bytes, salt: bytes | None = None, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True)
class SubKeys:
    enc_root: bytes
    id_key: bytes
    chunker_seed: int
    mac_key: bytes
    gear_key: bytes | None = None  # format 2: the chunker's gear table comes from it
    version: int = 1

    @classmethod
    def derive(cls, master: bytes) -> SubKeys:
        """Format 1: every key from the one master secret."""
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

    @classmethod
    def derive_v2(cls, master: bytes, content: bytes) -> SubKeys:
        """Format 2: encryption and MAC keys from the repository's own master, blob ids and
        chunking from the content secret (shared by copies that deduplicate alike)."""
        if len(master) != 32 or len(content) != CONTENT_LEN:
            raise ValueError("master and content secrets must be 32 bytes")
        return cls(
            enc_root=hkdf(master, b"coffre encryption v2"),
            id_key=hkdf(content, b"coffre blob id v2"),
            chunker_seed=1,  # pyfastcdc allocates its own table only for a non-zero seed
            mac_key=hkdf(master, b"coffre config mac v2"),
            gear_key=hkdf(content, b"coffre chunker gear v2"),
            version=2,
        )

    def same_content_keys(self, other: SubKeys) -> bool:
        """Whether two repositories name and cut data alike (their blobs can be copied as
        they are stored, deltas and all)."""
        return (hmac.compare_digest(self.id_key, other.id_key) and self.chunker_seed == other.chunker_seed
                and hmac.compare_digest(self.gear_key or b"", other.gear_key or b"")
                and self.version == other.version)


def _content_wrap_key(master: bytes) -> AESGCM:
    return AESGCM(hkdf(master, b"coffre content wrap v2"))


def wrap_content(master: bytes, repo_id: bytes, content: bytes) -> bytes:
    """The content secret as the config keeps it: sealed under the repository's master."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + _content_wrap_key(master).encrypt(nonce, content, b"coffre content v2" + repo_id)


def unwrap_content(master: bytes, repo_id: bytes, wrapped: bytes) -> bytes:
    """The content secret from the config; IntegrityError if this master did not seal it."""
    if len(wrapped) != WRAPPED_CONTENT_LEN:
        raise IntegrityError(_("the config's content key has the wrong size"))
    try:
        return _content_wrap_key(master).decrypt(wrapped[:NONCE_LEN], wrapped[NONCE_LEN:],
                                                 b"coffre content v2" + repo_id)
    except InvalidTag:
        raise IntegrityError(_("the config's content key does not open with this key slot")) from None


class Crypter:
    """Encrypts and decrypts stored objects of one repository. Thread-safe."""

    def __init__(self, keys: SubKeys, repo_id: bytes) -> None:
        self.keys = keys
        self.repo_id = repo_id
        self._sessions: dict[bytes, AESGCM] = {}
        self._packs: dict[bytes, AESGCM] = {}
        self._lock = threading.Lock()
        self.max_per_session = MAX_PER_SESSION
        self._new_session()

    def _new_session(self) -> None:
        self._session_id = os.urandom(SESSION_ID_LEN)
        self._session = AESGCM(hkdf(self.keys.enc_root, b"coffre data v1", salt=self._session_id))
        self._sessions[self._session_id] = self._session
        self._used = 0

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return blob_id(self.keys.id_key, data)

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
        return _gcm_keystream(key, nonce, view[1 + SESSION_ID_LEN + NONCE_LEN :])

    def decrypt(self, kind: int, envelope: bytes | memoryview, object_id: bytes = b"") -> bytes:
        view = memoryview(envelope)
        if len(view) < OVERHEAD:
            raise IntegrityError(_("encrypted object too short"))
        if view[0] != ENVELOPE_VERSION:
            raise FormatError(_("unknown encryption envelope version {version}").format(version=view[0]))
        session_id = bytes(view[1 : 1 + SESSION_ID_LEN])
        nonce = bytes(view[1 + SESSION_ID_LEN : 1 + SESSION_ID_LEN + NONCE_LEN])
        try:
            return self._session_for(session_id).decrypt(
                nonce, view[1 + SESSION_ID_LEN + NONCE_LEN :], self._aad(kind, object_id)
            )
        except InvalidTag:
            raise IntegrityError(_("authentication failed: the object was altered or damaged")) from None

    # -- format 2: blobs and headers sealed under a per-pack key --------------------------------
    def pack_cipher(self, salt: bytes) -> AESGCM:
        aead = self._packs.get(salt)
        if aead is None:
            if len(salt) != PACK_SALT_LEN:
                raise FormatError(_("pack salt has the wrong size"))
            aead = AESGCM(self._pack_key(salt))
            with self._lock:
                if len(self._packs) > 4096:
                    self._packs.clear()
                self._packs[salt] = aead
        return aead

    def _pack_key(self, salt: bytes) -> bytes:
        return hkdf(self.keys.enc_root, b"coffre pack v2", salt=salt)

    def _aad_v2(self, kind: int, object_id: bytes) -> bytes:
        return b"coffre\x02" + self.repo_id + bytes([kind]) + object_id

    def seal(self, salt: bytes, kind: int, plaintext: bytes | memoryview, object_id: bytes = b"") -> bytes:
        """nonce | ciphertext and tag, under the key of the pack whose salt is `salt`. Random
        nonces: a pack key seals a few thousand objects, never near the 2**32 bound."""
        nonce = os.urandom(NONCE_LEN)
        return nonce + self.pack_cipher(salt).encrypt(nonce, plaintext, self._aad_v2(kind, object_id))

    def unseal(self, salt: bytes, kind: int, sealed: bytes | memoryview, object_id: bytes = b"") -> bytes:
        view = memoryview(sealed)
        if len(view) < SEALED_OVERHEAD:
            raise IntegrityError(_("encrypted object too short"))
        try:
            return self.pack_cipher(salt).decrypt(view[:NONCE_LEN], view[NONCE_LEN:],
                                                  self._aad_v2(kind, object_id))
        except InvalidTag:
            raise IntegrityError(_("authentication failed: the object was altered or damaged")) from None

    def keystream_unseal(self, salt: bytes, sealed: bytes | memoryview) -> bytes:
        """keystream_decrypt for a format-2 sealed blob: deciphered WITHOUT checking its tag
        (salvage only, to learn a candidate's length and id; then unseal() authenticates)."""
        view = memoryview(sealed)
        if len(view) < NONCE_LEN:
            return b""
        return _gcm_keystream(self._pack_key(salt), bytes(view[:NONCE_LEN]), view[NONCE_LEN:])

    def encrypt_blob(self, salt: bytes | None, kind: int, plain: bytes | memoryview, blob_id: bytes) -> bytes:
        """A blob as stored: format 1 (salt None) in a session envelope, format 2 sealed."""
        if salt is None:
            return self.encrypt(kind, plain, blob_id)
        return self.seal(salt, kind, plain, blob_id)

    def decrypt_blob(self, salt: bytes | None, kind: int, data: bytes | memoryview, blob_id: bytes) -> bytes:
        if salt is None:
            return self.decrypt(kind, data, blob_id)
        return self.unseal(salt, kind, data, blob_id)


def _gcm_keystream(key: bytes, nonce: bytes, ciphertext: bytes | memoryview) -> bytes:
    """AES-GCM's ciphertext deciphered without its tag: GCM enciphers with CTR from the
    counter block nonce ‖ 2 (96-bit nonces)."""
    decryptor = Cipher(algorithms.AES(key), modes.CTR(nonce + (2).to_bytes(4, "big"))).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()
