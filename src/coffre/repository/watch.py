"""What the storage did since this machine last looked: the repository's listings compared
with this machine's mark (repository/mark.py).

- A snapshot seen here that is gone, and that no forget record (tombstone, `forgotten/`)
  names, vanished: the storage lost or deleted it, or was rolled back.
- A snapshot stored while it is known forgotten (forgotten here, named by a tombstone, or
  accepted as gone) was put back, or its forget died half-way.
- An index file seen removed here that is stored again was put back: Coffre never writes
  the same index file twice (each is encrypted afresh, and named by its bytes).
- A key slot removed here that is stored again was put back.
- A tombstone that is gone was deleted: Coffre never removes one.

An alarm stays in the mark, and every command says it, until `coffre acknowledge` accepts
the storage's present state or the storage is back to what the mark expects (a vanished
snapshot is stored again; a put-back object is gone again, e.g. removed by `coffre forget`
or `coffre key remove`). A new mark raises no alarm about what vanished: it knew nothing
before (trust on first use); tombstones naming stored snapshots are evidence it sees too.
"""

from __future__ import annotations

from collections.abc import Callable

from coffre.core.errors import FormatError, ObjectNotFound, StorageError
from coffre.core.human import human_time
from coffre.core.i18n import _
from coffre.format.snapshot import Snapshot
from coffre.repository import keyring
from coffre.repository.locks import live_locks
from coffre.repository.mark import Alarm, Mark, Seen
from coffre.repository.repo import Repository
from coffre.repository.tombstones import load_tombstone, tombstone_names

Reporter = Callable[[str], None]
MAX_HOST = 255  # a host name longer than this is kept cut (it is only shown)


def observe(
    repo: Repository, mark: Mark, report: Reporter, slots: list[keyring.KeySlot] | None = None,
) -> list[Alarm]:
    """Compare the storage with the mark and bring the mark up to date. Returns the alarms
    raised now; the mark keeps them with those standing before. `slots`: the key slots as
    just scanned (by Repository.open), else they are scanned again."""
    now = repo.clock.now_ns()
    standing = {a.key for a in mark.alarms}
    # A forget writes its tombstone before it removes snapshots: tombstones are listed first,
    # and again if a snapshot is missing, so a forget that ran between the two listings of
    # this machine never looks like a deletion.
    stones = set(tombstone_names(repo))
    fresh = _read_new(repo, mark, stones, report)
    stored = set(repo.list_names("snapshots"))
    if any(sid not in stored and not _named(sid, fresh) for sid in mark.snapshots):
        again = set(tombstone_names(repo))
        fresh.update(_read_new(repo, mark, again - stones, report))
        stones |= again
    # A tombstone naming a stored snapshot: a forget running now (it holds an exclusive lock
    # until its removals are done), a forget that died half-way, or a snapshot put back.
    naming = {t for t, ids in fresh.items() if any(sid in stored for sid in ids)}
    deferred: set[str] = set()
    if naming:
        if any(lk.exclusive for lk in live_locks(repo)):
            deferred = naming
        else:
            stored = set(repo.list_names("snapshots"))  # a forget that ended meanwhile is done
    pending = {sid for t in deferred for sid in fresh[t]}  # read again by the next opening
    via: dict[str, str] = {}
    for name, ids in fresh.items():
        if name not in deferred:
            for sid in ids:
                mark.forget(sid)
                via[sid] = name
            mark.note_tombstone(name)
    for name in [t for t in mark.tombstones if t not in stones]:
        mark.raise_alarm(Alarm("tombstone-vanished", name, now))
        del mark.tombstones[name]
    _snapshots(repo, mark, stored, pending, via, now)
    index = set(repo.list_names("index"))
    mark.note_index(index)
    for name in sorted(index):
        if mark.index_removed(name):
            mark.raise_alarm(Alarm("index-back", name, now))
    if slots is None:
        slots = keyring.scan(repo.backend)[0]
    present = {keyring.fingerprint(s.wrapped): s.id for s in slots}
    for fp, removed in mark.removed.items():
        if fp not in present:
            removed.accepted = False  # put back again later: an alarm again
        elif not removed.accepted:
            mark.raise_alarm(Alarm("key-back", present[fp], now, time_ns=removed.removed_ns, via=fp))
    _resolve(mark, stored, stones, index, set(present))
    return [a for a in mark.alarms if a.key not in standing]


def _named(sid: str, fresh: dict[str, list[str]]) -> bool:
    return any(sid in ids for ids in fresh.values())


def _read_new(repo: Repository, mark: Mark, names: set[str], report: Reporter) -> dict[str, list[str]]:
    """The tombstones not read before: name -> the snapshot ids it names. A damaged one is
    said and skipped (read again next time; `check` reports it)."""
    out = {}
    for name in sorted(names):
        if name in mark.tombstones:
            continue
        try:
            out[name] = load_tombstone(repo, name)
        except ObjectNotFound:
            continue
        except FormatError as exc:
            report(_("forget record forgotten/{name} cannot be read ({reason}); skipped: "
                     "the snapshots it names may be reported as vanished").format(
                         name=name[:12], reason=exc.message))
    return out


def _snapshots(repo: Repository, mark: Mark, stored: set[str], pending: set[str],
               via: dict[str, str], now: int) -> None:
    for sid, seen in list(mark.snapshots.items()):
        if sid not in stored and sid not in pending:
            mark.raise_alarm(Alarm("snapshot-vanished", sid, now, seen.host, seen.time_ns))
            del mark.snapshots[sid]
    for sid in sorted(stored):
        if mark.is_forgotten(sid):
            if not any(a.key == ("snapshot-back", sid) for a in mark.alarms):
                seen = _describe(repo, sid)
                mark.raise_alarm(Alarm("snapshot-back", sid, now, seen.host, seen.time_ns, via.get(sid, "")))
        elif sid not in mark.snapshots:
            mark.snapshots[sid] = _describe(repo, sid)


def _describe(repo: Repository, sid: str) -> Seen:
    """Host and time of a stored snapshot; unknown if it cannot be read (the commands that
    read snapshots report that themselves)."""
    try:
        snap = Snapshot.from_bytes(repo.load_object("snapshots", sid), sid)
    except (FormatError, StorageError):
        return Seen("", 0)
    return Seen(snap.hostname[:MAX_HOST], snap.time_ns)


def _resolve(mark: Mark, stored: set[str], stones: set[str], index: set[str], keys: set[str]) -> None:
    """Drop the alarms whose object is back to what the mark expects."""
    settled = {
        "snapshot-vanished": lambda a: a.id in stored,
        "snapshot-back": lambda a: a.id not in stored,
        "index-back": lambda a: a.id not in index,
        "key-back": lambda a: a.via not in keys,
        "tombstone-vanished": lambda a: a.id in stones,
    }
    mark.alarms = [a for a in mark.alarms if not settled[a.kind](a)]


def acknowledge(mark: Mark, alarms: list[Alarm]) -> None:
    """Accept the storage's present state for these alarms: a vanished snapshot is taken as
    forgotten (so it must not come back), a snapshot put back as stored, an index file put back
    as present; a key slot put back stays refused, without an alarm while it stays."""
    keys = {a.key for a in alarms}
    for a in alarms:
        if a.kind == "snapshot-vanished":
            mark.forget(a.id)
        elif a.kind == "snapshot-back":
            mark.unforget(a.id)
            mark.snapshots[a.id] = Seen(a.host, a.time_ns)
        elif a.kind == "index-back":
            mark.index_back(a.id)
        elif a.kind == "key-back" and a.via in mark.removed:
            mark.removed[a.via].accepted = True
    mark.alarms = [a for a in mark.alarms if a.key not in keys]


def describe(alarm: Alarm) -> str:
    """The alarm for the person reading it: what vanished or came back."""
    short = alarm.id[:8]
    snapshot = (_("snapshot {id} ({host}, {time})").format(
        id=short, host=alarm.host, time=human_time(alarm.time_ns))
                if alarm.host else _("snapshot {id}").format(id=short))
    if alarm.kind == "snapshot-vanished":
        return _("{snapshot} vanished from the storage, and no forget removed it: "
                 "the storage lost or deleted it, or was rolled back").format(snapshot=snapshot)
    if alarm.kind == "snapshot-back":
        if alarm.via:
            return _("{snapshot} is stored again although it was forgotten (forget record {record}) or "
                     "accepted "
                     "as gone: the storage put it back, or a forget died before removing it ('coffre forget "
                     "{id}' finishes it)").format(snapshot=snapshot, record=alarm.via[:8], id=short)
        return _("{snapshot} is stored again although it was forgotten or accepted as gone: the storage "
                 "put it back, or a forget died before removing it ('coffre forget {id}' finishes "
                 "it)").format(snapshot=snapshot, id=short)
    if alarm.kind == "index-back":
        return _("index file {id} is stored again after a prune or repair removed it: the storage "
                 "put it back, or was rolled back").format(id=short)
    if alarm.kind == "key-back":
        return _("key slot {id}, removed on this machine on {time}, is stored again: the storage put it "
                 "back; it stays refused here ('coffre key remove {id}' removes it again)").format(
                     id=short, time=human_time(alarm.time_ns))
    return _("forget record {id} vanished from the storage (Coffre never removes one): the storage "
             "deleted it, or was rolled back").format(id=short)
