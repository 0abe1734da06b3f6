"""The mark's format and file (repository/mark.py), the tombstone format, and the comparison of
the storage with the mark (repository/watch.py) in the races a forget on another machine
creates, in process."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.core.errors import FormatError
from coffre.format.snapshot import Snapshot
from coffre.repository import mark as markmod
from coffre.repository.locks import Lock
from coffre.repository.mark import (
    Alarm,
    Mark,
    MarkUnavailable,
    Removed,
    Seen,
    read_mark,
    state_root,
    updating,
)
from coffre.repository.repo import Repository
from coffre.repository.tombstones import save_tombstones, tombstone_names
from coffre.repository.watch import acknowledge, describe, observe
from coffre.storage.base import Handle, ObjectInfo, Wrapper
from coffre.storage.memory import MemoryBackend

RID = bytes(range(16))


def full_mark() -> Mark:
    return Mark(
        RID,
        snapshots={"a" * 64: Seen("officine", 5), "b" * 64: Seen("", -(2**40))},
        forgotten=dict.fromkeys(["c" * 32, "d" * 32]),
        tombstones=dict.fromkeys(["e" * 64]),
        index={"f" * 64},
        index_gone=dict.fromkeys(["0" * 32]),
        opened=dict.fromkeys(["1" * 64]),
        removed={"2" * 64: Removed("3" * 64, 7, accepted=True)},
        alarms=[Alarm("snapshot-back", "4" * 64, 9, "officine", 3, "5" * 64)],
        updated_ns=11,
    )


def test_a_mark_reads_back_as_written() -> None:
    m = full_mark()
    assert Mark.from_json(m.to_json(), RID) == m


@pytest.mark.parametrize("change", [
    lambda d: d.update(format="other"),
    lambda d: d.update(repository="00" * 16),
    lambda d: d.update(version=True),
    lambda d: d["snapshots"].update({"zz": {"host": "h", "time": 1}}),
    lambda d: d["snapshots"].update({"a" * 64: {"host": 3, "time": 1}}),
    lambda d: d.update(forgotten=["c" * 64]),  # full ids are not what is kept
    lambda d: d.update(index="f" * 64),
    lambda d: d["keys"]["removed"]["2" * 64].update(accepted=1),
    lambda d: d["alarms"][0].update(kind="unknown"),
    lambda d: d["alarms"][0].update(via="../x"),
    lambda d: d.pop("alarms"),
])
def test_a_damaged_mark_is_refused(change: object) -> None:
    doc = json.loads(full_mark().to_json())
    change(doc)  # type: ignore[operator]
    with pytest.raises(FormatError):
        Mark.from_json(json.dumps(doc).encode(), RID)


def test_a_mark_from_a_newer_coffre_is_left_alone(tmp_path: Path) -> None:
    doc = json.loads(full_mark().to_json())
    doc["version"] = 2
    folder = tmp_path / RID.hex()
    folder.mkdir(parents=True)
    (folder / "mark.json").write_text(json.dumps(doc))
    with pytest.raises(MarkUnavailable, match="newer Coffre"), updating(RID, 1, tmp_path):
        pass
    assert json.loads((folder / "mark.json").read_text())["version"] == 2


def test_a_damaged_mark_file_is_set_aside_and_a_new_one_started(tmp_path: Path) -> None:
    with updating(RID, 1, tmp_path) as m:
        m.snapshots["a" * 64] = Seen("h", 1)
    path = tmp_path / RID.hex() / "mark.json"
    path.write_bytes(path.read_bytes()[:40])
    with updating(RID, 2, tmp_path) as m:
        assert not m.snapshots and "damaged" in m.problem
    assert (path.parent / "mark.json.damaged").exists()
    assert read_mark(RID, tmp_path) is not None


def test_the_mark_folder_and_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    root.chmod(0o755)  # left open by someone: narrowed
    with updating(RID, 1, root):
        pass
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    folder = root / RID.hex()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["mark.json", "mark.lock"]
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_concurrent_updates_are_not_lost(tmp_path: Path) -> None:
    def add(i: int) -> None:
        for j in range(5):
            with updating(RID, 1, tmp_path) as m:
                m.snapshots[f"{i:02x}{j:02x}" * 16] = Seen("h", j)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = read_mark(RID, tmp_path)
    assert m is not None and len(m.snapshots) == 30


def test_lists_of_what_is_gone_keep_their_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(markmod, "MAX_GONE", 3)
    m = Mark(RID)
    for i in range(5):
        m.forget(f"{i:x}" * 64)
    assert list(m.forgotten) == [f"{i:x}" * 32 for i in (2, 3, 4)]
    assert not m.is_forgotten("0" * 64) and m.is_forgotten("4" * 64)


def test_latest_snapshot_per_host(tmp_path: Path) -> None:
    m = Mark(RID, snapshots={"a" * 64: Seen("officine", 5), "b" * 64: Seen("officine", 9),
                             "c" * 64: Seen("prestataire", 1), "d" * 64: Seen("", 99)})
    assert m.latest_by_host() == {"officine": ("b" * 64, 9), "prestataire": ("c" * 64, 1)}
    assert markmod.latest_by_host(RID, tmp_path) == {}
    with updating(RID, 1, tmp_path) as on_disk:
        on_disk.snapshots = m.snapshots
    assert markmod.latest_by_host(RID, tmp_path) == m.latest_by_host()


def test_where_the_state_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COFFRE_STATE_DIR", str(tmp_path / "x"))
    assert state_root() == tmp_path / "x"
    monkeypatch.delenv("COFFRE_STATE_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert state_root() == Path("/var/lib/coffre")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_root() == tmp_path / "xdg" / "coffre"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_root() == tmp_path / "home" / ".local" / "state" / "coffre"


# -- the comparison ---------------------------------------------------------------------------
@pytest.fixture
def repo_mem() -> Iterator[Repository]:
    repo, _ = Repository.init(MemoryBackend(), "pw")
    yield repo


def snap(repo: Repository, host: str = "officine", t: int = 1) -> str:
    return repo.save_snapshot(Snapshot(time_ns=t, hostname=host, username="", paths=["/"], tree=b"\1" * 32))


def kinds(alarms: list[Alarm]) -> list[tuple[str, str]]:
    return [(a.kind, a.id) for a in alarms]


def test_a_forget_running_elsewhere_is_waited_for_not_reported(repo_mem: Repository) -> None:
    repo = repo_mem
    sid = snap(repo)
    m = Mark(repo.config.id)
    assert observe(repo, m, print) == []
    (stone,) = save_tombstones(repo, [sid])  # the other machine's forget, half-way
    lock = Lock(repo, True, "forget").acquire()
    try:
        assert observe(repo, m, print) == []
        assert stone not in m.tombstones and sid in m.snapshots  # read again next time
    finally:
        lock.release()
    # It died there: the snapshot is still stored, and the tombstone says it is forgotten.
    assert kinds(observe(repo, m, print)) == [("snapshot-back", sid)]
    assert m.alarms[0].via == stone and m.alarms[0].host == "officine"
    repo.backend.remove(Handle("snapshots", sid))  # 'coffre forget ID' finishes it
    assert observe(repo, m, print) == [] and m.alarms == []


class ForgetDuring(Wrapper):
    """Runs a forget of another machine (tombstone, then removal) when `kind` is first listed."""

    def __init__(self, repo: Repository, kind: str, sid: str, write: bool = True) -> None:
        super().__init__(repo.backend)
        self.repo, self.kind, self.sid, self.write = repo, kind, sid, write

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == self.kind and self.sid:
            if self.write:
                save_tombstones(self.repo, [self.sid])
            self.inner.remove(Handle("snapshots", self.sid))
            self.sid = ""
        return self.inner.list(kind)


def test_a_forget_between_the_listings_is_no_alarm(repo_mem: Repository) -> None:
    repo = repo_mem
    sid = snap(repo)
    m = Mark(repo.config.id)
    observe(repo, m, print)
    inner = repo.backend
    repo.backend = ForgetDuring(repo, "snapshots", sid)  # after the tombstones were listed
    assert observe(repo, m, print) == []
    assert m.is_forgotten(sid)
    repo.backend = inner


def test_a_forget_ending_before_the_lock_check_is_no_alarm(repo_mem: Repository) -> None:
    repo = repo_mem
    sid = snap(repo)
    m = Mark(repo.config.id)
    observe(repo, m, print)
    save_tombstones(repo, [sid])
    inner = repo.backend
    repo.backend = ForgetDuring(repo, "locks", sid, write=False)  # its removal, then its lock gone
    assert observe(repo, m, print) == []
    repo.backend = inner


def test_vanished_snapshots_and_tombstones_stand_until_acknowledged(repo_mem: Repository) -> None:
    repo = repo_mem
    kept, lost = snap(repo, t=1), snap(repo, t=2)
    forgotten = snap(repo, t=3)
    m = Mark(repo.config.id)
    observe(repo, m, print)
    (stone,) = save_tombstones(repo, [forgotten])
    repo.backend.remove(Handle("snapshots", forgotten))
    observe(repo, m, print)
    raw = repo.backend.load(Handle("snapshots", lost))
    for name, kind in ((lost, "snapshots"), (stone, "forgotten")):
        repo.backend.remove(Handle(kind, name))
    found = observe(repo, m, print)
    assert sorted(kinds(found)) == sorted([("snapshot-vanished", lost), ("tombstone-vanished", stone)])
    assert "vanished" in describe(found[0])
    assert observe(repo, m, print) == [] and len(m.alarms) == 2  # said once, standing
    acknowledge(m, list(m.alarms))
    assert m.alarms == [] and m.is_forgotten(lost)
    repo.backend.save(Handle("snapshots", lost), raw)  # accepted as gone, then put back
    assert kinds(observe(repo, m, print)) == [("snapshot-back", lost)]
    assert kept in m.snapshots


def test_a_snapshot_back_where_it_was_is_no_longer_an_alarm(repo_mem: Repository) -> None:
    repo = repo_mem
    sid = snap(repo)
    m = Mark(repo.config.id)
    observe(repo, m, print)
    raw = repo.backend.load(Handle("snapshots", sid))
    repo.backend.remove(Handle("snapshots", sid))
    assert kinds(observe(repo, m, print)) == [("snapshot-vanished", sid)]
    repo.backend.save(Handle("snapshots", sid), raw)  # a storage that had lost it for a while
    assert observe(repo, m, print) == [] and m.alarms == [] and sid in m.snapshots


def test_a_damaged_tombstone_is_said_and_read_again(repo_mem: Repository) -> None:
    repo = repo_mem
    junk = os.urandom(100)
    import hashlib

    repo.backend.save(Handle("forgotten", hashlib.sha256(junk).hexdigest()), junk)
    said: list[str] = []
    m = Mark(repo.config.id)
    observe(repo, m, said.append)
    observe(repo, m, said.append)
    assert len(said) == 2 and "forget record" in said[0] and not m.tombstones
    assert tombstone_names(repo)
