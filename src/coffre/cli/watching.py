"""The command line's side of this machine's mark of each repository (repository/mark.py,
repository/watch.py): the key history an opening uses, the comparison of the storage with the
mark after each opening and each change, and the alarms said on stderr."""

from __future__ import annotations

from contextlib import nullcontext

from coffre.cli.output import warn
from coffre.core.errors import CoffreError
from coffre.core.i18n import N_, _
from coffre.repository import keyring
from coffre.repository.mark import Alarm, MarkUnavailable, Seen, read_mark, updating
from coffre.repository.repo import Repository
from coffre.repository.watch import MAX_HOST, acknowledge, describe, observe
from coffre.storage.cached import CachedBackend

HINT = N_("hint: find out what happened to the storage (docs/design.md, section 8); "
          "'coffre acknowledge' then accepts its present state")


def _unavailable(exc: MarkUnavailable, consequence: str) -> None:
    warn(_("warning: this machine's record of the repository cannot be used ({reason}): "
           "{consequence}").format(reason=exc.message, consequence=consequence))


def _warning(message: str) -> None:
    warn(_("warning: {message}").format(message=message))


def watch_storage(repo: Repository, changed: bool = False, forgotten: list[str] | None = None,
                  keys_changed: bool = False, then_load: bool = False) -> None:
    """Compare the storage with this machine's mark and record what it shows now. After an
    opening every standing alarm is said; after a change made by this command (`changed`:
    snapshots, index files or key slots written or removed), only new ones. `forgotten`:
    snapshots this command has just removed; `keys_changed`: this command wrote key slots
    (init, key passwd), which are then listed again. `then_load`: the command, holding its
    lock, loads the index and the snapshots next: a remote repository's listings of them are
    kept for it (one request each fewer)."""
    lending = (repo.backend.lending_listings(("index", "snapshots"))
               if then_load and isinstance(repo.backend, CachedBackend) else nullcontext())
    slots = keyring.scan(repo.backend)[0] if keys_changed else repo.key_slots
    try:
        with updating(repo.config.id, repo.clock.now_ns()) as mark:
            if mark.problem:
                _warning(mark.problem)
            for sid in forgotten or []:
                mark.forget(sid)
            with lending:
                new = observe(repo, mark, _warning, slots)
            opening = next((s for s in slots if s.id == repo.key_slot_id), None)
            if opening is not None:
                mark.note_opened(keyring.fingerprint(opening.wrapped))
            standing = list(mark.alarms)
    except MarkUnavailable as exc:
        _unavailable(exc, _("deletions and put-backs by the storage are not watched"))
        return
    say_alarms(new if changed else standing)


def note_saved(repo: Repository, snapshot_id: str, host: str, time_ns: int) -> None:
    """The snapshot this command just stored joins the mark, so that its deletion would be
    noticed, without listing the storage again: the opening's comparison, made under the
    same lock, saw everything else. The index files it wrote need no entry (the mark only
    remembers removed ones, so that their return is noticed)."""
    try:
        with updating(repo.config.id, repo.clock.now_ns()) as mark:
            if not mark.is_forgotten(snapshot_id):
                mark.snapshots[snapshot_id] = Seen(host[:MAX_HOST], time_ns)
    except MarkUnavailable as exc:
        _unavailable(exc, _("deletions and put-backs by the storage are not watched"))


def say_alarms(alarms: list[Alarm]) -> None:
    for a in alarms:
        _warning(describe(a))
    if alarms:
        warn(_(HINT))


def tombstones_read_here(repo: Repository) -> frozenset[str]:
    """The forget records this machine has read intact (its mark; none without one)."""
    mark = read_mark(repo.config.id)
    return frozenset(mark.tombstones) if mark is not None else frozenset()


def unread_damaged(repo: Repository, names: list[str]) -> None:
    """Forget records a check found damaged: no longer held as read here, so every opening
    warns of them and every check reads them again, until they are mended."""
    if not names:
        return
    try:
        with updating(repo.config.id, repo.clock.now_ns()) as mark:
            for name in names:
                mark.tombstones.pop(name, None)
    except MarkUnavailable as exc:
        _unavailable(exc, _("the damaged forget records will be read again only by some checks"))


def standing_alarms(repo: Repository) -> list[Alarm]:
    """The alarms this machine's mark holds now (none without a mark)."""
    mark = read_mark(repo.config.id)
    return list(mark.alarms) if mark is not None else []


def remember_removed(repo: Repository, slot: keyring.KeySlot) -> None:
    """A key slot this command removed: never used to open the repository here again."""
    try:
        with updating(repo.config.id, repo.clock.now_ns()) as mark:
            mark.note_removed(keyring.fingerprint(slot.wrapped), slot.id, repo.clock.now_ns())
    except MarkUnavailable as exc:
        _unavailable(exc, _("if the storage puts key slot {slot} back, this machine will not know it "
                            "was removed").format(slot=slot.id[:8]))


def accept_standing(repo: Repository) -> tuple[list[Alarm], list[Alarm]]:
    """Accept the storage's present state for the alarms that stood before this command (the
    person has seen them); the storage is compared with the mark first, and what that finds
    new is not accepted. Returns (accepted, new)."""
    try:
        with updating(repo.config.id, repo.clock.now_ns()) as mark:
            if mark.problem:
                _warning(mark.problem)
            before = {a.key for a in mark.alarms}
            new = observe(repo, mark, _warning, repo.key_slots)
            accepted = [a for a in mark.alarms if a.key in before]
            acknowledge(mark, accepted)
            return accepted, new
    except MarkUnavailable as exc:
        raise CoffreError(_("this machine's record of the repository cannot be used: {reason}").format(
            reason=exc.message)) from None
