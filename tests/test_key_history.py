"""What a machine's mark knows of the key slots (keyring.KeyHistory): the slots that opened the
repository there are tried first, so planted slots cannot lock it out; slots removed there never
open it again, and a password that only opens such a slot is refused by name. In process."""

from __future__ import annotations

import os

import pytest

from coffre.core.clock import FixedClock
from coffre.core.errors import WrongPasswordError
from coffre.repository import keyring
from coffre.repository.repo import Repository
from coffre.storage.memory import MemoryBackend


@pytest.fixture
def repo() -> Repository:
    return Repository.init(MemoryBackend(), "pw")[0]


def password_slot(repo: Repository) -> keyring.KeySlot:
    return next(s for s in keyring.scan(repo.backend)[0] if s.kind == "password")


def test_a_slot_keeps_its_fingerprint_when_saved_again(repo: Repository) -> None:
    slots, _ = keyring.scan(repo.backend)
    before = {keyring.fingerprint(s.wrapped) for s in slots}
    for s in slots:
        keyring.resave_with_config(repo.backend, s, {**repo.config_document(), "note": "x"})
    again, _ = keyring.scan(repo.backend)
    assert {s.id for s in again}.isdisjoint({s.id for s in slots})
    assert {keyring.fingerprint(s.wrapped) for s in again} == before
    assert len(before) == 2


def test_slots_that_opened_before_are_tried_first(repo: Repository) -> None:
    real = keyring.fingerprint(password_slot(repo).wrapped)
    for _ in range(keyring.MAX_SLOTS_TRIED + 1):
        keyring.add_slot(repo.backend, os.urandom(32), repo.config.id, "password", os.urandom(8),
                         "password", FixedClock(0))
    with pytest.raises(WrongPasswordError):
        Repository.open(repo.backend, "pw")  # the planted slots, older, fill the 32 tries
    history = keyring.KeyHistory(opened=frozenset({real}))
    opened = Repository.open(repo.backend, "pw", history=lambda rid: history)
    used = next(s for s in opened.key_slots if s.id == opened.key_slot_id)
    assert keyring.fingerprint(used.wrapped) == real


def test_a_removed_slot_never_opens_and_its_password_is_refused_by_name(repo: Repository) -> None:
    slot = password_slot(repo)
    history = keyring.KeyHistory(removed=frozenset({keyring.fingerprint(slot.wrapped)}))
    asked: list[bytes] = []

    def lookup(rid: bytes) -> keyring.KeyHistory:
        asked.append(rid)
        return history

    with pytest.raises(WrongPasswordError, match=f"key slot {slot.id[:8]}, which was removed"):
        Repository.open(repo.backend, "pw", history=lookup)
    assert asked == [repo.config.id]
    with pytest.raises(WrongPasswordError, match="wrong password"):
        Repository.open(repo.backend, "autre", history=lookup)
    # Another slot with the same password still opens it.
    keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", b"pw", "again",
                     FixedClock(0), repo.config_document())
    assert Repository.open(repo.backend, "pw", history=lookup).config.id == repo.config.id
