"""Password and recovery-key wrapping of the repository master secret.

A password slot stores Argon2id parameters, a salt and the master secret encrypted with
AES-256-GCM under the Argon2id output. A recovery slot does the same with a key derived
by HKDF from a random 256-bit recovery key printed once at `init`.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.crypto.aead import hkdf
from coffre.crypto.argon2id import (
    B32,
    DEFAULT_ARGON2,
    KEY_LEN,
    MAX_ARGON2_M,
    MAX_ARGON2_P,
    MAX_ARGON2_T,
    RECOVERY_LETTERS,
    SALT_LENGTHS,
    recovery_key_letters,
    take_ahead,
    whole_numbers,
    within_bounds,
)

# Only for the test suite, switched on explicitly with COFFRE_TEST_WEAK_KDF=1.
WEAK_ARGON2 = {"t": 1, "m": 64, "p": 1}


class KeyFileError(FormatError):
    """A key file's parameters cannot be used; `problem` is the reason without "key file: "."""

    def __init__(self, problem: str) -> None:
        super().__init__(_("key file: {problem}").format(problem=problem))
        self.problem = problem


def argon2_params() -> dict[str, int]:
    weak = os.environ.get("COFFRE_TEST_WEAK_KDF") == "1"
    return dict(WEAK_ARGON2 if weak else DEFAULT_ARGON2)


def check_argon2(params: dict[str, Any], salt: bytes) -> tuple[int, int, int]:
    """t, m, p if they are within what Coffre writes, else FormatError."""
    cost = whole_numbers(params)
    if cost is None:
        raise KeyFileError(_("invalid Argon2 parameters"))
    t, m, p = cost
    if not within_bounds(t, m, p):
        raise KeyFileError(_("Argon2 parameters beyond what Coffre writes (t={t}, m={m} KiB, p={p}; at most "
                             "t={max_t}, m={max_m} KiB, p={max_p})").format(
                                 t=t, m=m, p=p, max_t=MAX_ARGON2_T, max_m=MAX_ARGON2_M, max_p=MAX_ARGON2_P))
    if len(salt) not in SALT_LENGTHS:
        raise KeyFileError(_("invalid salt"))
    return t, m, p


def _argon2(secret: bytes, salt: bytes, params: dict[str, Any]) -> bytes:
    t, m, p = check_argon2(params, salt)
    ahead = take_ahead(secret, salt, (t, m, p))  # started before the command's modules loaded
    if ahead is not None:
        return ahead
    return hash_secret_raw(secret, salt, t, m, p, KEY_LEN, Type.ID)


@dataclass(frozen=True)
class WrappedKey:
    kind: str  # "password" or "recovery"
    salt: bytes
    params: dict[str, int]
    nonce: bytes
    ciphertext: bytes


def _aad(repo_id: bytes, kind: str) -> bytes:
    return b"coffre key v1|" + repo_id + b"|" + kind.encode()


def _kek(kind: str, secret: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    if kind == "password":
        return _argon2(secret, salt, params)
    if kind == "recovery":
        return hkdf(secret, b"coffre recovery v1", salt=salt)
    raise KeyFileError(_("unknown key kind {kind}").format(kind=repr(kind)))


def wrap(master: bytes, repo_id: bytes, kind: str, secret: bytes) -> WrappedKey:
    salt = os.urandom(32)
    params = argon2_params() if kind == "password" else {}
    nonce = os.urandom(12)
    ct = AESGCM(_kek(kind, secret, salt, params)).encrypt(nonce, master, _aad(repo_id, kind))
    return WrappedKey(kind, salt, params, nonce, ct)


def unwrap(wrapped: WrappedKey, repo_id: bytes, secret: bytes) -> bytes | None:
    """The master secret, or None if the secret does not open this slot."""
    kek = _kek(wrapped.kind, secret, wrapped.salt, wrapped.params)
    try:
        master = AESGCM(kek).decrypt(wrapped.nonce, wrapped.ciphertext, _aad(repo_id, wrapped.kind))
    except InvalidTag:
        return None
    if len(master) != 32:
        raise KeyFileError(_("master secret has the wrong length"))
    return master


# -- recovery keys ------------------------------------------------------------------------

def new_recovery_key() -> tuple[bytes, str]:
    """Random 256-bit key and its printable form: 11 groups of 5 characters."""
    raw = os.urandom(32)
    return raw, format_recovery_key(raw)


def format_recovery_key(raw: bytes) -> str:
    check = hkdf(raw, b"coffre recovery checksum", length=2)
    text = base64.b32encode(raw + check + b"\0").decode()[:RECOVERY_LETTERS]
    return "-".join(text[i : i + 5] for i in range(0, RECOVERY_LETTERS, 5))


def parse_recovery_key(text: str) -> bytes | None:
    """The raw key if `text` looks like a recovery key with a valid checksum, else None."""
    cleaned = recovery_key_letters(text)
    if cleaned is None:
        return None
    if B32.index(cleaned[-1]) & 0b111:
        return None  # the last character's three low bits are padding and must be zero
    decoded = base64.b32decode(cleaned + "A")[:34]  # the 56th character only holds padding bits
    raw, check = decoded[:32], decoded[32:34]
    if hkdf(raw, b"coffre recovery checksum", length=2) != check:
        return None
    return raw

