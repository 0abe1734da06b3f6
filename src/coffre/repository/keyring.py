"""Key slots: files under keys/ that each wrap the master secret (password or recovery key).

Each slot also keeps a copy of the config document (`config`), so a lost or altered config
file can be rebuilt (`coffre repair config`). The copy is plaintext like the config itself and
is trusted only after unlock, by the config MAC (checked in repository/repo.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from coffre.core.clock import Clock, iso_ns
from coffre.core.errors import CoffreError, FormatError, IntegrityError, ObjectNotFound, WrongPasswordError
from coffre.core.i18n import _
from coffre.crypto import kdf
from coffre.storage.base import Backend, Handle

MAX_KEY_FILE = 64 * 1024
MAX_SLOTS_TRIED = 32  # an Argon2 each: ~10 s at most
# Written by Coffre 0.1.0 and dropped when a slot is re-saved: the storage can read key files.
_DROPPED_FIELDS = ("host", "user")


@dataclass(frozen=True)
class KeySlot:
    id: str
    kind: str
    label: str
    created: str
    wrapped: kdf.WrappedKey
    config: dict[str, Any] | None = None  # the copy of the config document, not yet trusted


@dataclass(frozen=True)
class UnusableSlot:
    """A key file that cannot be used: damaged (its bytes do not match its name: bit rot, a
    truncation), or intact but not a slot this Coffre can use (a newer format, a stray file)."""

    id: str
    reason: str
    damaged: bool

    def describe(self) -> str:
        return _("key file {id} {reason}").format(id=self.id[:8], reason=self.reason)


@dataclass(frozen=True)
class KeyHistory:
    """What this machine's mark knows of a repository's key slots, by fingerprint: the slots
    that opened it here before (tried first, so slots planted in the storage cannot push them
    out of the MAX_SLOTS_TRIED tried) and the slots removed here (never used again)."""

    opened: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()


def fingerprint(wrapped: kdf.WrappedKey) -> str:
    """The identity of a wrapped master key, whatever file holds it: a slot saved again with a
    new copy of the config keeps it, and so does a removed slot put back re-encoded."""
    h = hashlib.sha256(b"coffre key slot v1")
    params = json.dumps(wrapped.params, sort_keys=True).encode()
    for part in (wrapped.kind.encode(), wrapped.salt, params, wrapped.nonce, wrapped.ciphertext):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: Any, what: str) -> bytes:
    if not isinstance(s, str):
        raise FormatError(_("{field} missing").format(field=what))
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise FormatError(_("{field} malformed").format(field=what)) from None


def _encode(doc: dict[str, Any]) -> tuple[str, bytes]:
    raw = json.dumps(doc, sort_keys=True, indent=1).encode()
    return hashlib.sha256(raw).hexdigest(), raw


def add_slot(
    backend: Backend, master: bytes, repo_id: bytes, kind: str, secret: bytes, label: str, clock: Clock,
    config: dict[str, Any] | None = None,
) -> KeySlot:
    """A new slot wrapping `master` with `secret`, written; `config`: the config document to
    keep a copy of (always given by Coffre; None only writes a slot as Coffre 0.1 did)."""
    w = kdf.wrap(master, repo_id, kind, secret)
    doc: dict[str, Any] = {
        "v": 1,
        "kind": kind,
        "label": label,
        "created": iso_ns(clock.now_ns()),
        "salt": _b64(w.salt),
        "params": w.params,
        "nonce": _b64(w.nonce),
        "data": _b64(w.ciphertext),
    }
    if config is not None:
        doc["config"] = config
    name, raw = _encode(doc)
    backend.save(Handle("keys", name), raw)
    return KeySlot(name, kind, label, doc["created"], w, config)


def _parse(name: str, raw: bytes) -> KeySlot:
    """A key slot from its stored bytes. Raises IntegrityError if the bytes do not match the
    name, FormatError if they do but are not a usable slot."""
    if len(raw) > MAX_KEY_FILE:
        raise FormatError(_("is too large to be a key file"))
    if hashlib.sha256(raw).hexdigest() != name:
        raise IntegrityError(_("is damaged (its content does not match its name)"))

    def unusable(why: str) -> FormatError:
        return FormatError(_("is not a key slot this Coffre can use ({reason})").format(reason=why))

    try:
        doc = json.loads(raw)
    except ValueError:
        raise unusable(_("not JSON")) from None
    if not isinstance(doc, dict):
        raise unusable(_("not a JSON object"))
    if doc.get("v") != 1 or doc.get("kind") not in ("password", "recovery"):
        raise unusable(_("unknown version or kind: written by a newer Coffre?"))
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise unusable(_("bad parameters"))
    try:
        nonce, data, salt = (_unb64(doc.get(k), k) for k in ("nonce", "data", "salt"))
    except FormatError as exc:
        raise unusable(exc.message) from None
    if len(nonce) != 12 or len(data) != 48:
        raise unusable(_("the wrapped key has the wrong size"))
    if doc["kind"] == "password":
        try:
            kdf.check_argon2(params, salt)
        except kdf.KeyFileError as exc:
            raise unusable(exc.problem) from None
    copy = doc.get("config")
    return KeySlot(
        id=name,
        kind=doc["kind"],
        label=str(doc.get("label", "")),
        created=str(doc.get("created", "")),
        wrapped=kdf.WrappedKey(doc["kind"], salt, params, nonce, data),
        config=copy if isinstance(copy, dict) else None,
    )


def scan(backend: Backend) -> tuple[list[KeySlot], list[UnusableSlot]]:
    """Every key file: the usable slots (oldest first) and those that cannot be used."""
    slots, bad = [], []
    for info in backend.list("keys"):
        try:
            if info.size > MAX_KEY_FILE:
                raise FormatError(_("is too large to be a key file"))
            slots.append(_parse(info.name, backend.load(Handle("keys", info.name), 0, MAX_KEY_FILE + 1)))
        except ObjectNotFound:
            continue  # removed since the listing (key remove, a re-saved slot)
        except FormatError as exc:
            bad.append(UnusableSlot(info.name, exc.message, damaged=isinstance(exc, IntegrityError)))
    return sorted(slots, key=lambda s: (s.created, s.id)), sorted(bad, key=lambda d: d.id)


def openings(
    slots: list[KeySlot], repo_id: bytes, secret: str, first: frozenset[str] = frozenset(),
) -> Iterator[tuple[bytes, KeySlot]]:
    """Each slot the secret opens (as a recovery key if it looks like one, else as a
    password) with the master it holds, lazily: the caller stops at the first master that
    authenticates the config, and goes on past one that does not (a slot planted in the
    storage, wrapping another master under a guessed password). Slots whose fingerprint is
    in `first` (those that opened the repository on this machine before) are tried first. At
    most MAX_SLOTS_TRIED slots are tried, so planted slots cannot make an opening last forever."""
    raw_recovery = kdf.parse_recovery_key(secret)
    candidates: list[tuple[KeySlot, bytes]] = []
    if raw_recovery is not None:
        candidates += [(s, raw_recovery) for s in slots if s.kind == "recovery"]
    candidates += [(s, secret.encode()) for s in slots if s.kind == "password"]
    if first:
        candidates.sort(key=lambda c: fingerprint(c[0].wrapped) not in first)  # stable
    for slot, material in candidates[:MAX_SLOTS_TRIED]:
        try:
            master = kdf.unwrap(slot.wrapped, repo_id, material)
        except FormatError:
            continue  # a slot with impossible parameters opens nothing
        if master is not None:
            yield master, slot


def cannot_open(slots: list[KeySlot], bad: list[UnusableSlot]) -> CoffreError:
    """Why no slot opened: no key file, only unusable ones, a wrong secret, or a wrong secret
    while some key files are damaged (the password may have been in one of them)."""
    damaged = [d for d in bad if d.damaged]
    if not slots and not bad:
        return FormatError(
            _("the repository has no key file (keys/ is empty): no password or recovery key can open it"),
            _("restore the keys/ folder from a copy of the repository's storage"),
        )
    if not slots:
        return FormatError(_("the repository has no readable key file: {problems}").format(
                               problems="; ".join(d.describe() for d in bad)),
                           _("restore the keys/ folder from a copy of the repository's storage"))
    if damaged:
        return IntegrityError(
            _("no key slot opens with this password or recovery key, and {problems}: if it held this "
              "password, that password cannot open the repository any more").format(
                  problems="; ".join(d.describe() for d in damaged)),
            _("open it with the recovery key (type it where the password is asked) or another "
              "password, then remove the damaged key file with 'coffre key remove {id}' "
              "and add the password again with 'coffre key add'").format(id=damaged[0].id[:8]),
        )
    return WrongPasswordError(
        _("wrong password or recovery key: no key slot of this repository opens with it"),
        _("check the password file or type the recovery key printed at 'coffre init'"),
    )


def resave_with_config(backend: Backend, slot: KeySlot, config: dict[str, Any]) -> str:
    """Save `slot` again with `config` as its copy of the config document; no secret needed,
    the wrapped key is kept as it is. The new file is read back and checked before the old one
    is removed, so a crash leaves two equivalent slots, never none. Returns the new name."""
    raw = backend.load(Handle("keys", slot.id), 0, MAX_KEY_FILE + 1)
    if _parse(slot.id, raw).wrapped != slot.wrapped:
        raise IntegrityError(_("key file {id} changed while it was being updated").format(id=slot.id[:8]))
    doc = {k: v for k, v in json.loads(raw).items() if k not in _DROPPED_FIELDS}
    doc["config"] = config
    name, new = _encode(doc)
    if name == slot.id:
        return name
    if len(new) > MAX_KEY_FILE:
        raise FormatError(_("key file {id}: the copy of the config makes it too large").format(
            id=slot.id[:8]))
    backend.save(Handle("keys", name), new)
    again = _parse(name, backend.load(Handle("keys", name), 0, MAX_KEY_FILE + 1))
    if again.wrapped != slot.wrapped or again.config != config:
        raise IntegrityError(_("key file {id} does not read back as written; the old one is kept").format(
            id=name[:8]))
    try:
        backend.remove(Handle("keys", slot.id))
    except ObjectNotFound:
        pass  # another process did the same update
    return name
