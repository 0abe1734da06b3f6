"""Argon2id for password slots: the parameters Coffre writes, the bounds on those it reads,
and one derivation started ahead in a thread (repository/unlockahead.py), handed over to the
unwrap (crypto/kdf.py) that asks for the very same inputs.

Kept light on purpose (no `cryptography`, no futures): a command starts the derivation before
it loads its modules (cli/keyahead.py), so Argon2's ~0.1 s runs beside those imports instead of
after them.
"""

from __future__ import annotations

import hmac
import threading

from argon2.low_level import Type, hash_secret_raw

# RFC 9106 "second recommended option": t=3, p=4, m=64 MiB.
DEFAULT_ARGON2 = {"t": 3, "m": 65536, "p": 4}
# Bounds on parameters read from storage: what `init` and `key add` write, and no more, so a
# key file planted in the storage cannot make each opening cost gigabytes or minutes.
MAX_ARGON2_M = DEFAULT_ARGON2["m"]
MAX_ARGON2_T = DEFAULT_ARGON2["t"]
MAX_ARGON2_P = DEFAULT_ARGON2["p"]
SALT_LENGTHS = range(16, 65)
KEY_LEN = 32

Cost = tuple[int, int, int]  # t, m (KiB), p

# A recovery key: 55 base-32 letters, grouped by dashes or spaces as the user likes.
RECOVERY_LETTERS = 55
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def within_bounds(t: int, m: int, p: int) -> bool:
    return 1 <= t <= MAX_ARGON2_T and 8 * p <= m <= MAX_ARGON2_M and 1 <= p <= MAX_ARGON2_P


def whole_numbers(params: object) -> Cost | None:
    """(t, m, p) of a key slot's parameters if each is a whole number (not a bool), else None."""
    if not isinstance(params, dict):
        return None
    t, m, p = params.get("t"), params.get("m"), params.get("p")
    if type(t) is not int or type(m) is not int or type(p) is not int:
        return None
    return t, m, p


def recovery_key_letters(text: str) -> str | None:
    """The letters of what has the shape of a recovery key (its checksum unchecked:
    kdf.parse_recovery_key does that), else None."""
    letters = "".join(text.split()).replace("-", "").upper()
    if len(letters) != RECOVERY_LETTERS or any(c not in B32 for c in letters):
        return None
    return letters


class _Derivation:
    def __init__(self, secret: bytes, salt: bytes, cost: Cost) -> None:
        self.secret, self.salt, self.cost = secret, salt, cost
        self._done = threading.Event()
        self._key: bytes | None = None

    def matches(self, secret: bytes, salt: bytes, cost: Cost) -> bool:
        return self.salt == salt and self.cost == cost and hmac.compare_digest(self.secret, secret)

    def run(self) -> None:
        try:
            t, m, p = self.cost
            self._key = hash_secret_raw(self.secret, self.salt, t, m, p, KEY_LEN, Type.ID)
        except Exception:  # noqa: S110 (the unwrap derives again, and reports what fails)
            pass
        finally:
            self._done.set()

    def key(self) -> bytes | None:
        self._done.wait()
        return self._key


_lock = threading.Lock()
_ahead: _Derivation | None = None


def derive_ahead(secret: bytes, salt: bytes, cost: Cost) -> None:
    """Start deriving a password's key in a thread (Argon2 releases the GIL). The unwrap of a
    slot with these very inputs then takes the result; any other unwrap derives as usual.
    Parameters beyond the bounds start nothing."""
    global _ahead
    if not within_bounds(*cost) or len(salt) not in SALT_LENGTHS:
        return
    with _lock:
        if _ahead is not None and _ahead.matches(secret, salt, cost):
            return  # already under way
        _ahead = derivation = _Derivation(secret, salt, cost)
    threading.Thread(target=derivation.run, name="derive-ahead", daemon=True).start()


def take_ahead(secret: bytes, salt: bytes, cost: Cost) -> bytes | None:
    """The key derived ahead from these inputs (waiting for it), handed over once; None if
    none was started with them, or it failed."""
    global _ahead
    with _lock:
        if _ahead is None or not _ahead.matches(secret, salt, cost):
            return None
        derivation, _ahead = _ahead, None
    return derivation.key()


def drop_ahead() -> None:
    """Forget a derivation started ahead and not used (a slot that changed since)."""
    global _ahead
    with _lock:
        _ahead = None
