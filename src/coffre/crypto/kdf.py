"""Password and recovery-key wrapping of the repository master secret.

A password slot stores Argon2id parameters, a salt and the master secret encrypted with
AES-256-GCM under the Argon2id output. A recovery slot does the same with a key derived
by HKDF from a random 256-bit recovery key printed once at `init`.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.crypto.aead import hkdf

# RFC 9106 "second recommended option": t=3, p=4, m=64 MiB.
DEFAULT_ARGON2 = {"t": 3, "m": 65536, "p": 4}
# Only for the test suite, switched on explicitly with COFFRE_TEST_WEAK_KDF=1.
WEAK_ARGON2 = {"t": 1, "m": 64, "p": 1}
# Bounds on parameters read from storage: what `init` and `key add` write, and no more, so a
# key file planted in the storage cannot make each opening cost gigabytes or minutes.
MAX_ARGON2_M = DEFAULT_ARGON2["m"]
MAX_ARGON2_T = DEFAULT_ARGON2["t"]
MAX_ARGON2_P = DEFAULT_ARGON2["p"]


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
    t, m, p = params.get("t"), params.get("m"), params.get("p")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (t, m, p)):
        raise KeyFileError(_("invalid Argon2 parameters"))
    assert isinstance(t, int) and isinstance(m, int) and isinstance(p, int)
    if not (1 <= t <= MAX_ARGON2_T and 8 * p <= m <= MAX_ARGON2_M and 1 <= p <= MAX_ARGON2_P):
        raise KeyFileError(_("Argon2 parameters beyond what Coffre writes (t={t}, m={m} KiB, p={p}; at most "
                             "t={max_t}, m={max_m} KiB, p={max_p})").format(
                                 t=t, m=m, p=p, max_t=MAX_ARGON2_T, max_m=MAX_ARGON2_M, max_p=MAX_ARGON2_P))
    if not 16 <= len(salt) <= 64:
        raise KeyFileError(_("invalid salt"))
    return t, m, p


def _argon2(secret: bytes, salt: bytes, params: dict[str, Any]) -> bytes:
    t, m, p = check_argon2(params, salt)
    ahead = _take_ahead(secret, salt, (t, m, p))
    if ahead is not None:
        try:
            return ahead.result()
        except Exception:  # noqa: S110 (derived again below, where an error is reported)
            pass
    return hash_secret_raw(secret, salt, t, m, p, 32, Type.ID)


# One derivation started ahead (derive_ahead) and the inputs it was started with.
_ahead: tuple[bytes, bytes, tuple[int, int, int], Future[bytes]] | None = None
_ahead_lock = threading.Lock()


def derive_ahead(secret: bytes, salt: bytes, params: dict[str, Any]) -> None:
    """Start deriving a password's key in a thread: Argon2 releases the GIL, so the ~0.1 s it
    takes runs while the command goes on reaching the storage. The unwrap of a slot with these
    very inputs then takes the result; any other unwrap derives as usual. Parameters beyond
    what Coffre writes raise KeyFileError and start nothing."""
    global _ahead
    t, m, p = check_argon2(params, salt)
    done: Future[bytes] = Future()

    def derive() -> None:
        try:
            done.set_result(hash_secret_raw(secret, salt, t, m, p, 32, Type.ID))
        except BaseException as exc:  # reported by the unwrap that derives again
            done.set_exception(exc)

    with _ahead_lock:
        if _started_with(secret, salt, (t, m, p)):
            return  # already under way
        _ahead = (secret, salt, (t, m, p), done)
    threading.Thread(target=derive, name="derive-ahead", daemon=True).start()


def drop_ahead() -> None:
    """Forget a derivation started ahead and not used (a slot that changed since)."""
    global _ahead
    with _ahead_lock:
        _ahead = None


def _started_with(secret: bytes, salt: bytes, cost: tuple[int, int, int]) -> bool:
    """Whether the derivation started ahead has these inputs (called under _ahead_lock)."""
    return (_ahead is not None and _ahead[1] == salt and _ahead[2] == cost
            and hmac.compare_digest(_ahead[0], secret))


def _take_ahead(secret: bytes, salt: bytes, cost: tuple[int, int, int]) -> Future[bytes] | None:
    """The derivation started ahead with these inputs, handed over once; None if there is none."""
    global _ahead
    with _ahead_lock:
        if _ahead is None or not _started_with(secret, salt, cost):
            return None
        done, _ahead = _ahead[3], None
    return done


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
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_recovery_key() -> tuple[bytes, str]:
    """Random 256-bit key and its printable form: 11 groups of 5 characters."""
    raw = os.urandom(32)
    return raw, format_recovery_key(raw)


def format_recovery_key(raw: bytes) -> str:
    check = hkdf(raw, b"coffre recovery checksum", length=2)
    text = base64.b32encode(raw + check + b"\0").decode()[:55]
    return "-".join(text[i : i + 5] for i in range(0, 55, 5))


def parse_recovery_key(text: str) -> bytes | None:
    """The raw key if `text` looks like a recovery key with a valid checksum, else None."""
    cleaned = re.sub(r"[\s-]", "", text.strip().upper())
    if len(cleaned) != 55 or any(c not in _B32 for c in cleaned):
        return None
    if _B32.index(cleaned[-1]) & 0b111:
        return None  # the last character's three low bits are padding and must be zero
    decoded = base64.b32decode(cleaned + "A")[:34]  # the 56th character only holds padding bits
    raw, check = decoded[:32], decoded[32:34]
    if hkdf(raw, b"coffre recovery checksum", length=2) != check:
        return None
    return raw

