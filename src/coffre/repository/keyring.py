"""Key slots: files under keys/ that each wrap the master secret (password or recovery key)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from coffre.core.clock import Clock, iso_ns
from coffre.core.errors import FormatError, WrongPasswordError
from coffre.crypto import kdf
from coffre.storage.base import Backend, Handle

MAX_KEY_FILE = 64 * 1024


@dataclass(frozen=True)
class KeySlot:
    id: str
    kind: str
    label: str
    created: str
    wrapped: kdf.WrappedKey


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: Any, what: str) -> bytes:
    if not isinstance(s, str):
        raise FormatError(f"key file: {what} missing")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise FormatError(f"key file: {what} malformed") from None


def add_slot(
    backend: Backend, master: bytes, repo_id: bytes, kind: str, secret: bytes, label: str, clock: Clock
) -> str:
    w = kdf.wrap(master, repo_id, kind, secret)
    doc = {
        "v": 1,
        "kind": kind,
        "label": label,
        "created": iso_ns(clock.now_ns()),
        "salt": _b64(w.salt),
        "params": w.params,
        "nonce": _b64(w.nonce),
        "data": _b64(w.ciphertext),
    }
    raw = json.dumps(doc, sort_keys=True, indent=1).encode()
    name = hashlib.sha256(raw).hexdigest()
    backend.save(Handle("keys", name), raw)
    return name


def _parse(name: str, raw: bytes) -> KeySlot:
    if len(raw) > MAX_KEY_FILE or hashlib.sha256(raw).hexdigest() != name:
        raise FormatError(f"key file {name[:8]} is damaged (hash mismatch)")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise FormatError(f"key file {name[:8]}: not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("kind") not in ("password", "recovery"):
        raise FormatError(f"key file {name[:8]}: unknown version or kind")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise FormatError(f"key file {name[:8]}: bad parameters")
    nonce, data = _unb64(doc.get("nonce"), "nonce"), _unb64(doc.get("data"), "data")
    if len(nonce) != 12 or len(data) != 48:
        raise FormatError(f"key file {name[:8]}: wrapped key has the wrong size")
    return KeySlot(
        id=name,
        kind=doc["kind"],
        label=str(doc.get("label", "")),
        created=str(doc.get("created", "")),
        wrapped=kdf.WrappedKey(
            doc["kind"],
            _unb64(doc.get("salt"), "salt"),
            params,
            nonce,
            data,
        ),
    )


def list_slots(backend: Backend, errors: list[str] | None = None) -> list[KeySlot]:
    """Every readable key slot; damaged ones are reported in `errors` (or raised)."""
    slots = []
    for info in backend.list("keys"):
        try:
            if info.size > MAX_KEY_FILE:
                raise FormatError(f"key file {info.name[:8]} is too large")
            slots.append(_parse(info.name, backend.load(Handle("keys", info.name))))
        except FormatError as exc:
            if errors is None:
                raise
            errors.append(exc.message)
    return sorted(slots, key=lambda s: (s.created, s.id))


def unlock(backend: Backend, repo_id: bytes, secret: str) -> tuple[bytes, KeySlot]:
    """Try the secret on every slot: as a recovery key if it looks like one, else as a password."""
    damaged: list[str] = []
    slots = list_slots(backend, damaged)  # one damaged slot must not lock out the others
    if not slots:
        raise FormatError("the repository has no readable key file: " + "; ".join(damaged),
                          "restore keys/ from a copy of the repository")
    raw_recovery = kdf.parse_recovery_key(secret)
    candidates: list[tuple[KeySlot, bytes]] = []
    if raw_recovery is not None:
        candidates += [(s, raw_recovery) for s in slots if s.kind == "recovery"]
    candidates += [(s, secret.encode()) for s in slots if s.kind == "password"]
    for slot, material in candidates:
        try:
            master = kdf.unwrap(slot.wrapped, repo_id, material)
        except FormatError:
            continue  # a slot with impossible parameters opens nothing
        if master is not None:
            return master, slot
    raise WrongPasswordError(
        "wrong password or recovery key: no key slot of this repository opens with it",
        "check the password file or type the recovery key printed at 'coffre init'",
    )
