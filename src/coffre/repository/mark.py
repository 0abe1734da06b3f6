"""The mark: what this machine has seen of a repository, kept on this machine where the storage
cannot rewrite it (borg's "security directory" plays this part for its manifest).

It holds the snapshots seen and not forgotten (with host and time), the snapshots known
forgotten, the forget records (tombstones) already read, the index files seen and those seen
removed, the key slots that opened the repository here and those removed here, and the alarms
standing. `repository/watch.py` compares the storage with it; the format is in
docs/design.md §8.1 (versioned JSON, small: ids only, lists capped).

Where: $COFFRE_STATE_DIR, else /var/lib/coffre for root, else $XDG_STATE_HOME/coffre, else
~/.local/state/coffre; a folder per repository id (0700) holding `mark.json` and `mark.lock`
(0600). It is state, not cache: without it the next opening trusts the storage as it then is
(trust on first use).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffre.core import posix
from coffre.core.errors import CoffreError, FormatError
from coffre.core.i18n import _
from coffre.core.private import narrow, private_dir
from coffre.format.codec import INT64_MIN, UINT64_MAX, want, want_int, want_map
from coffre.repository.keyring import KeyHistory

FORMAT = "coffre-mark"
VERSION = 1
MAX_MARK = 64 * 1024 * 1024  # a larger file is not one Coffre wrote
# Ids of objects known gone are kept as their first 32 hex digits (128 bits: no two stored
# objects share them by chance, and the storage cannot choose names, which are SHA-256 of
# encrypted bytes). Each list keeps its newest entries only.
PREFIX = 32
MAX_GONE = 100_000
MAX_TOMBSTONES = 100_000

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # Windows has none (its descriptors are not inherited)
ALARM_KINDS = ("snapshot-vanished", "snapshot-back", "index-back", "key-back", "tombstone-vanished")


class MarkUnavailable(CoffreError):
    """The mark cannot be read or written (written by a newer Coffre, a folder that cannot be
    written); the command goes on without it."""


@dataclass
class Seen:
    """A snapshot as this machine saw it (host "" and time 0: it could not be read)."""

    host: str
    time_ns: int


@dataclass
class Removed:
    """A key slot removed on this machine, by the fingerprint of its wrapped key."""

    slot: str  # the key file's name when it was removed (the SHA-256 of its bytes)
    removed_ns: int
    accepted: bool = False  # stored again, and that was acknowledged: still never used


@dataclass
class Alarm:
    """Something the storage did that a forget, a prune or `key remove` does not explain.
    `id`: the object's name; `host`/`time_ns`: the snapshot's (for a key slot, time_ns is when
    it was removed); `via`: the tombstone naming a snapshot back, the fingerprint of a key."""

    kind: str
    id: str
    since_ns: int
    host: str = ""
    time_ns: int = 0
    via: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.id


@dataclass
class Mark:
    """What this machine knows of one repository (ids are hex)."""

    repository: bytes
    snapshots: dict[str, Seen] = field(default_factory=dict)
    forgotten: dict[str, None] = field(default_factory=dict)  # id prefixes, oldest first
    tombstones: dict[str, None] = field(default_factory=dict)  # tombstones read, oldest first
    index: set[str] = field(default_factory=set)
    index_gone: dict[str, None] = field(default_factory=dict)  # id prefixes, oldest first
    opened: dict[str, None] = field(default_factory=dict)  # key fingerprints
    removed: dict[str, Removed] = field(default_factory=dict)  # key fingerprint -> removal
    alarms: list[Alarm] = field(default_factory=list)
    updated_ns: int = 0
    problem: str = ""  # why an unreadable mark was set aside (not stored)

    # -- snapshots -------------------------------------------------------------------------
    def is_forgotten(self, snapshot_id: str) -> bool:
        return snapshot_id[:PREFIX] in self.forgotten

    def forget(self, snapshot_id: str) -> None:
        self.snapshots.pop(snapshot_id, None)
        _add_capped(self.forgotten, snapshot_id[:PREFIX], MAX_GONE)

    def unforget(self, snapshot_id: str) -> None:
        self.forgotten.pop(snapshot_id[:PREFIX], None)

    # -- index files ---------------------------------------------------------------------------
    def index_removed(self, name: str) -> bool:
        return name[:PREFIX] in self.index_gone

    def note_index(self, names: set[str]) -> None:
        """The index files stored now: those seen before and missing are known removed."""
        for gone in sorted(self.index - names):
            _add_capped(self.index_gone, gone[:PREFIX], MAX_GONE)
        self.index = set(names)

    def index_back(self, name: str) -> None:
        """An index file stored again is accepted as present."""
        self.index_gone.pop(name[:PREFIX], None)

    # -- key slots --------------------------------------------------------------------------
    def key_history(self) -> KeyHistory:
        return KeyHistory(opened=frozenset(self.opened), removed=frozenset(self.removed))

    def note_opened(self, fingerprint: str) -> None:
        if fingerprint not in self.removed:
            self.opened[fingerprint] = None

    def note_removed(self, fingerprint: str, slot: str, now_ns: int) -> None:
        self.opened.pop(fingerprint, None)
        self.removed[fingerprint] = Removed(slot, now_ns)

    # -- tombstones, alarms --------------------------------------------------------------------
    def note_tombstone(self, name: str) -> None:
        _add_capped(self.tombstones, name, MAX_TOMBSTONES)

    def raise_alarm(self, alarm: Alarm) -> None:
        """Record an alarm, unless the same one already stands."""
        if all(a.key != alarm.key for a in self.alarms):
            self.alarms.append(alarm)

    # -- the second witness ------------------------------------------------------------------
    def latest_by_host(self) -> dict[str, tuple[str, int]]:
        """For each host, its newest snapshot this machine has seen and not seen forgotten:
        (snapshot id, time in ns). What another witness (the agent's status, the provider's
        view) compares with the storage's listing."""
        out: dict[str, tuple[str, int]] = {}
        for sid, seen in self.snapshots.items():
            if seen.host and (seen.host not in out or (seen.time_ns, sid) > out[seen.host][::-1]):
                out[seen.host] = (sid, seen.time_ns)
        return out

    # -- encoding ------------------------------------------------------------------------------
    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "repository": self.repository.hex(),
            "updated": self.updated_ns,
            "snapshots": {sid: {"host": seen.host, "time": seen.time_ns}
                          for sid, seen in sorted(self.snapshots.items())},
            "forgotten": list(self.forgotten),
            "tombstones": list(self.tombstones),
            "index": sorted(self.index),
            "index_gone": list(self.index_gone),
            "keys": {
                "opened": list(self.opened),
                "removed": {fp: {"slot": r.slot, "removed": r.removed_ns, "accepted": r.accepted}
                            for fp, r in self.removed.items()},
            },
            "alarms": [{"kind": a.kind, "id": a.id, "since": a.since_ns, "host": a.host, "time": a.time_ns,
                        "via": a.via} for a in self.alarms],
        }
        return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, repo_id: bytes) -> Mark:
        """A mark read from disk, validated field by field; FormatError if it is not one of
        this repository, MarkUnavailable if a newer Coffre wrote it."""
        if len(raw) > MAX_MARK:
            raise FormatError(_("too large to be a mark"))
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise FormatError(_("not JSON")) from None
        d = want_map(doc, "mark")
        if d.get("format") != FORMAT:
            raise FormatError(_("not a Coffre mark"))
        version = want_int(d.get("version"), "version", 0, UINT64_MAX)
        if version > VERSION:
            raise MarkUnavailable(_("it was written by a newer Coffre (mark version {version})").format(
                version=version))
        if version != VERSION or d.get("repository") != repo_id.hex():
            raise FormatError(_("not the mark of this repository"))
        keys = want_map(d.get("keys"), "keys")
        snapshots = want_map(d.get("snapshots"), "snapshots")
        removed = want_map(keys.get("removed"), "removed keys")
        return cls(
            repository=repo_id,
            snapshots={_hex(sid, 64, "snapshot id"): _seen(v) for sid, v in snapshots.items()},
            forgotten=dict.fromkeys(_hexes(d.get("forgotten"), PREFIX, "forgotten")),
            tombstones=dict.fromkeys(_hexes(d.get("tombstones"), 64, "tombstones")),
            index=set(_hexes(d.get("index"), 64, "index")),
            index_gone=dict.fromkeys(_hexes(d.get("index_gone"), PREFIX, "index_gone")),
            opened=dict.fromkeys(_hexes(keys.get("opened"), 64, "opened keys")),
            removed={_hex(fp, 64, "key fingerprint"): _removed(v) for fp, v in removed.items()},
            alarms=[_alarm(a) for a in want(d.get("alarms"), list, "alarms")],
            updated_ns=want_int(d.get("updated"), "updated", 0, UINT64_MAX),
        )


# -- validation of what is read from disk -------------------------------------------------------
def _str(value: Any, what: str, limit: int = 1024) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise FormatError(f"{what}: invalid text")
    return value


def _hex(value: Any, length: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != length or value.strip("0123456789abcdef"):
        raise FormatError(f"{what}: invalid id")
    return value


def _hexes(value: Any, length: int, what: str) -> list[str]:
    return [_hex(x, length, what) for x in want(value, list, what)]


def _seen(value: Any) -> Seen:
    d = want_map(value, "snapshot")
    return Seen(_str(d.get("host"), "host"), want_int(d.get("time"), "time", INT64_MIN, UINT64_MAX))


def _removed(value: Any) -> Removed:
    d = want_map(value, "removed key")
    accepted = d.get("accepted")
    if not isinstance(accepted, bool):
        raise FormatError("removed key: invalid flag")
    return Removed(_hex(d.get("slot"), 64, "key file"),
                   want_int(d.get("removed"), "removed", 0, UINT64_MAX), accepted)


def _alarm(value: Any) -> Alarm:
    d = want_map(value, "alarm")
    kind = d.get("kind")
    if kind not in ALARM_KINDS:
        raise FormatError("alarm: unknown kind")
    via = _str(d.get("via"), "alarm via")
    if via:
        _hex(via, 64, "alarm via")
    return Alarm(kind, _hex(d.get("id"), 64, "alarm id"),
                 want_int(d.get("since"), "alarm time", 0, UINT64_MAX), _str(d.get("host"), "alarm host"),
                 want_int(d.get("time"), "alarm time", INT64_MIN, UINT64_MAX), via)


def _add_capped(entries: dict[str, None], key: str, cap: int) -> None:
    entries.pop(key, None)
    entries[key] = None
    while len(entries) > cap:
        del entries[next(iter(entries))]


# -- on disk ------------------------------------------------------------------------------------
def state_root() -> Path:
    """Where this machine keeps its marks (see the module's docstring)."""
    explicit = os.environ.get("COFFRE_STATE_DIR")
    if explicit:
        return Path(explicit)
    if posix.is_root():
        return Path("/var/lib/coffre")
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "coffre"


def mark_dir(repo_id: bytes, root: Path | None = None) -> Path:
    """Where the mark of this repository is (nothing is created)."""
    return (root or state_root()) / repo_id.hex()


def read_mark(repo_id: bytes, root: Path | None = None) -> Mark | None:
    """The mark as it is on disk, without locking or writing anything; None if there is none
    or it cannot be read (a reader then knows nothing, as on a first opening)."""
    try:
        raw = _load(mark_dir(repo_id, root) / "mark.json")
        return Mark.from_json(raw, repo_id) if raw is not None else None
    except (OSError, CoffreError):
        return None


def key_history(repo_id: bytes, root: Path | None = None) -> KeyHistory:
    """What this machine's mark knows of the repository's key slots (a removed one never opens
    it again); nothing when there is no mark or it cannot be read."""
    mark = read_mark(repo_id, root)
    return mark.key_history() if mark is not None else KeyHistory()


def latest_by_host(repo_id: bytes, root: Path | None = None) -> dict[str, tuple[str, int]]:
    """For the second witness (the agent's status, the provider's view): each host's newest
    snapshot this machine has seen of the repository, as (id, time in ns), from the mark on
    disk; empty if there is none."""
    mark = read_mark(repo_id, root)
    return mark.latest_by_host() if mark is not None else {}


@contextmanager
def updating(repo_id: bytes, now_ns: int, root: Path | None = None) -> Iterator[Mark]:
    """The mark, held against the other Coffre processes of this machine for the block and
    written back atomically when the block ends without an exception. An unreadable mark is
    set aside (`mark.json.damaged`) and a new one started (`problem` says so)."""
    root = root or state_root()
    try:
        private_dir(root)
        folder = private_dir(mark_dir(repo_id, root))
        fd = os.open(folder / "mark.lock", os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o600)
    except OSError as exc:
        raise MarkUnavailable(_("cannot use {path}: {reason}").format(
            path=root, reason=exc.strerror)) from None
    try:
        try:
            posix.lock_exclusive(fd, str(folder / "mark.lock"))  # released when fd is closed
        except posix.LockingUnavailable as exc:  # never updated unlocked: another Coffre may be at it
            raise MarkUnavailable(exc.message) from None
        narrow(folder / "mark.lock")
        mark = _open(folder, repo_id)
        yield mark
        mark.updated_ns = now_ns
        _save(folder / "mark.json", mark.to_json())
    finally:
        os.close(fd)


def _load(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_MARK + 1)
    except FileNotFoundError:
        return None


def _open(folder: Path, repo_id: bytes) -> Mark:
    path = folder / "mark.json"
    narrow(path)
    try:
        raw = _load(path)
    except OSError as exc:
        raise MarkUnavailable(_("cannot read {path}: {reason}").format(
            path=path, reason=exc.strerror)) from None
    if raw is None:
        return Mark(repo_id)
    try:
        return Mark.from_json(raw, repo_id)
    except FormatError as exc:
        aside = folder / "mark.json.damaged"
        try:
            os.replace(path, aside)
        except OSError as err:
            raise MarkUnavailable(_("{path} is damaged ({damage}) and cannot be set aside: {reason}").format(
                path=path, damage=exc.message, reason=err.strerror)) from None
        return Mark(repo_id, problem=_("{path} was damaged ({damage}): set aside as {name}; this machine "
                                       "trusts the storage as it is now").format(
                                           path=path, damage=exc.message, name=aside.name))


def _save(path: Path, data: bytes) -> None:
    """Write, fsync, rename over the old mark, fsync the folder: a crash leaves the old mark
    or the new one, never a part of one."""
    tmp = path.with_name(f".mark-{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        posix.fsync_dir(path.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        full = exc.errno in posix.NO_SPACE
        what = _("no space left") if full else exc.strerror
        raise MarkUnavailable(_("cannot write {path}: {reason}").format(path=path, reason=what)) from None
