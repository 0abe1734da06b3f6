"""The password's key derived while the storage is being reached.

Opening a repository derives a key from the password with Argon2 (~0.1 s), which needs the
salt and parameters of a key slot, read from the storage. Loading the command's modules costs
about as much (~0.15 s on a cold page cache), and reaching a remote storage as much again (the
S3 library's import, a connection, the config). This module keeps, in the cache, the salt and
parameters of the password slot that opened each location last, so the next command can start
Argon2 in a thread as soon as it knows its repository and password file: the entry point does
before it imports the command line (cli/keyahead.py), and this module loads nothing heavy for
that (crypto/argon2id.py derives). Then the modules load and the storage answers beside it.

The record holds nothing secret (the storage keeps the same salt and parameters in plaintext)
and is only a guess: the key it gives is used only for a slot read from the storage with the
very same salt, parameters and password, and the slot is still authenticated as usual. A
missing, stale or damaged record costs the time saved, never an opening. Its file is named by
a hash of the location, which may name a user or a host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from coffre.core.cachedir import cache_home
from coffre.crypto import argon2id

if TYPE_CHECKING:  # keyring (and the storage layer it loads) stays out of the early start
    from coffre.crypto.kdf import WrappedKey
    from coffre.repository.keyring import KeySlot

MAX_RECORD = 4096
# What is read of a password file here: core/secrets.py's MAX_SECRET, not imported (this module
# loads before the command's, and that one's translations with it).
MAX_SECRET = 64 * 1024


def _record(location: str) -> Path:
    digest = hashlib.sha256(b"coffre unlock ahead v1|" + location.encode("utf-8", "surrogateescape"))
    return Path(cache_home()) / "unlock" / (digest.hexdigest()[:32] + ".json")


def _encode(wrapped: WrappedKey) -> bytes:
    return json.dumps({"salt": base64.b64encode(wrapped.salt).decode(), "params": wrapped.params},
                      sort_keys=True).encode()


def start(location: str, secret: str) -> None:
    """Start deriving the key of the password slot that opened `location` last, if this
    machine recorded one. A recovery key is not derived with Argon2: nothing to start."""
    if argon2id.recovery_key_letters(secret) is not None:
        return
    try:
        with open(_record(location), "rb") as f:
            doc = json.loads(f.read(MAX_RECORD))
        salt = base64.b64decode(doc["salt"], validate=True)
        cost = argon2id.whole_numbers(doc["params"])  # derive_ahead checks the bounds
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        return  # no record, or one that cannot be used: the opening derives as usual
    if cost is not None:
        argon2id.derive_ahead(secret.encode(), salt, cost)


def start_from_file(location: str, password_file: str) -> None:
    """`start`, with the password read from a file, before the command has checked anything:
    silently, as a guess (the command reads the file again, and says what is wrong with it).
    Only a regular file: what a pipe (`--password-file <(pass show coffre)`, /dev/stdin) holds
    can be read once, and is the command's."""
    try:
        fd = os.open(password_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        secret = os.read(fd, MAX_SECRET).decode("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return
    finally:
        os.close(fd)
    if secret:
        start(location, secret)


def remember(location: str, slot: KeySlot | None) -> None:
    """Record the password slot that just opened `location` (or was made for it by init or
    key passwd), if it is not the one recorded already; nothing for a recovery key's slot or
    none. A derivation started for another slot is dropped."""
    from coffre.core.files import write_atomic  # here: the early start stays light
    from coffre.core.private import private_dir

    argon2id.drop_ahead()
    if slot is None or slot.kind != "password":
        return
    path = _record(location)
    data = _encode(slot.wrapped)
    try:
        with open(path, "rb") as f:
            if f.read(MAX_RECORD + 1) == data:
                return
    except OSError:
        pass
    try:
        write_atomic(private_dir(path.parent) / path.name, data, 0o600)
    except OSError:
        return  # a read-only or full cache: the next opening derives as usual
