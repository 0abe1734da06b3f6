"""Real-time mode: the watcher sees what happens to real files (inotify, and the scan that
stands in for it), and the debouncer turns change times into runs over simulated time.

inotify queues an event inside the system call that caused it, so a `poll` right after a
write sees it: no sleeping."""

from __future__ import annotations

import itertools
import os
import select
import shutil
from pathlib import Path

import pytest

from coffre.agent.watcher import Debouncer, Watcher

T0 = 1_700_000_000.0


def _tree(root: Path) -> Path:
    (root / "docs" / "2024").mkdir(parents=True)
    (root / "docs" / "2024" / "facture.pdf").write_bytes(b"pdf")
    (root / "scans").mkdir()
    (root / "notes.txt").write_text("a")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path / "src")


def _watch(tree: Path, **kwargs: object) -> Watcher:
    w = Watcher([tree], now=T0, **kwargs)  # type: ignore[arg-type]
    assert w.poll(T0) is False
    return w


def test_inotify_sees_create_modify_attrib_rename_delete(tree: Path) -> None:
    with _watch(tree) as w:
        assert w.mode == "inotify" and w.watches == 4 and w.fileno() is not None
        assert w.poll(T0) is False  # idle: nothing to report
        readable, _, _ = select.select([w.fileno()], [], [], 0)
        assert readable == []  # and nothing wakes the agent up

        f = tree / "docs" / "2024" / "ordonnance.pdf"
        f.write_bytes(b"1")
        readable, _, _ = select.select([w.fileno()], [], [], 0)
        assert readable  # the agent's select wakes up
        assert w.poll(T0) is True
        assert os.fsencode(f) in w.changes
        assert w.poll(T0) is False  # reported once

        with f.open("ab") as out:
            out.write(b"2")
        assert w.poll(T0) is True
        os.chmod(f, 0o600)
        assert w.poll(T0) is True
        f.rename(tree / "docs" / "2024" / "renamed.pdf")
        assert w.poll(T0) is True
        (tree / "docs" / "2024" / "renamed.pdf").unlink()
        assert w.poll(T0) is True
        assert w.poll(T0) is False


def test_a_new_folder_is_watched_and_what_was_made_in_it_counts(tree: Path) -> None:
    with _watch(tree) as w:
        deep = tree / "scans" / "a" / "b" / "c"
        deep.mkdir(parents=True)
        (deep / "scan1.png").write_bytes(b"x")
        assert w.poll(T0) is True
        assert w.watches == 4 + 3  # a, b and c, watched before listed
        assert w.poll(T0) is False
        (deep / "scan2.png").write_bytes(b"y")  # only c's own watch can see this
        assert w.poll(T0) is True
        assert os.fsencode(deep / "scan2.png") in w.changes
        (deep / "d").mkdir()
        assert w.poll(T0) is True
        (deep / "d" / "e.txt").write_text("e")
        assert w.poll(T0) is True


def test_a_folder_moved_in_renamed_or_out_keeps_the_watches_right(tree: Path,
                                                                 tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "x" / "y").mkdir(parents=True)
    with _watch(tree) as w:
        shutil.move(str(outside), str(tree / "moved"))
        assert w.poll(T0) is True
        assert w.watches == 4 + 3
        (tree / "moved" / "x" / "y" / "f").write_text("f")
        assert w.poll(T0) is True

        (tree / "moved").rename(tree / "renamed")
        assert w.poll(T0) is True
        (tree / "renamed" / "x" / "y" / "g").write_text("g")
        assert w.poll(T0) is True
        assert os.fsencode(tree / "renamed" / "x" / "y" / "g") in w.changes

        (tree / "renamed").rename(tmp_path / "gone")
        assert w.poll(T0) is True
        assert w.watches == 4  # its watches are dropped with it
        (tmp_path / "gone" / "x" / "h").write_text("h")
        assert w.poll(T0) is False  # no longer ours


def test_excluded_paths_are_ignored_and_not_watched(tree: Path) -> None:
    with _watch(tree, exclude=("*.tmp", "cache", "/never/matches")) as w:
        (tree / "scans" / "upload.tmp").write_bytes(b"x")
        assert w.poll(T0) is False
        (tree / "cache" / "deep").mkdir(parents=True)
        (tree / "cache" / "deep" / "blob").write_bytes(b"x")
        assert w.poll(T0) is False
        assert w.watches == 4
        (tree / "scans" / "kept.png").write_bytes(b"x")
        assert w.poll(T0) is True


def test_a_file_path_and_a_path_that_appears_later(tmp_path: Path) -> None:
    db = tmp_path / "officine.db"
    db.write_bytes(b"v1")
    later = tmp_path / "later"
    with Watcher([db, later], now=T0) as w:
        assert w.mode == "inotify"
        (tmp_path / "other.txt").write_text("not ours")
        assert w.poll(T0) is False
        db.write_bytes(b"v2")
        assert w.poll(T0) is True
        later.mkdir()
        assert w.poll(T0) is True
        (later / "sub").mkdir()
        assert w.poll(T0) is True
        (later / "sub" / "f").write_text("f")
        assert w.poll(T0) is True
        shutil.rmtree(later)
        assert w.poll(T0) is True
        later.mkdir()  # deleted then made again: watched again
        assert w.poll(T0) is True
        (later / "g").write_text("g")
        assert w.poll(T0) is True


def test_a_lost_event_queue_is_a_change_and_new_folders_are_still_watched(tree: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with _watch(tree) as w:
        files = [tree / "notes.txt", tree / "docs" / "2024" / "facture.pdf"]
        for i in range(limit + 10):  # alternating: the kernel merges an event like the last
            os.utime(files[i % 2], ns=(i, i))
        (tree / "appeared").mkdir()  # its creation event is lost in the overflow
        assert w.poll(T0) is True
        assert w.watches == 5
        assert w.poll(T0) is False
        (tree / "appeared" / "f").write_text("f")
        assert w.poll(T0) is True


def test_the_scan_sees_the_same_changes_when_due(tree: Path) -> None:
    w = _watch(tree, use_inotify=False, scan_interval=300.0)
    assert w.mode == "scan" and w.fileno() is None and w.watches == 0
    assert w.next_scan() == T0 + 300.0
    t = T0
    f = tree / "docs" / "2024" / "ordonnance.pdf"
    f.write_bytes(b"1")
    assert w.poll(t + 10) is False  # not due yet: the scan is periodic
    t += 300
    assert w.poll(t) is True
    t += 300
    assert w.poll(t) is False

    def step() -> bool:
        nonlocal t
        t += 300
        return w.poll(t)

    os.utime(f, ns=(1, 1))  # same size, other time
    assert step() is True
    f.rename(tree / "renamed.pdf")
    assert step() is True
    (tree / "scans" / "a" / "b").mkdir(parents=True)
    assert step() is True
    (tree / "scans" / "a" / "b" / "deep.png").write_bytes(b"x")
    assert step() is True
    (tree / "renamed.pdf").unlink()
    assert step() is True
    assert step() is False
    w.close()


def test_the_scan_ignores_excluded_paths(tree: Path) -> None:
    w = _watch(tree, use_inotify=False, scan_interval=1.0, exclude=("*.tmp", "cache"))
    (tree / "x.tmp").write_bytes(b"x")
    (tree / "cache").mkdir()
    (tree / "cache" / "blob").write_bytes(b"x")
    assert w.poll(T0 + 1) is False
    (tree / "y.txt").write_bytes(b"x")
    assert w.poll(T0 + 2) is True


def test_the_watch_limit_falls_back_to_the_scan(tree: Path) -> None:
    w = Watcher([tree], max_watches=2, scan_interval=60.0, now=T0)
    assert w.mode == "scan" and w.fileno() is None
    assert w.reason is not None and "limit" in w.reason
    (tree / "scans" / "new.png").write_bytes(b"x")
    assert w.poll(T0 + 60) is True
    w.close()


def test_the_watch_limit_reached_later_switches_to_the_scan(tree: Path) -> None:
    with _watch(tree, max_watches=4, scan_interval=60.0) as w:
        assert w.mode == "inotify"
        (tree / "scans" / "new").mkdir()
        assert w.poll(T0 + 1) is True  # the folder that could not be watched is a change
        assert w.mode == "scan" and w.fileno() is None and w.reason
        (tree / "scans" / "new" / "f.png").write_bytes(b"x")
        assert w.poll(T0 + 2) is False
        assert w.poll(T0 + 61) is True


# -- the debouncer over simulated time ----------------------------------------------------------

def _simulate(d: Debouncer, writes: list[float], end: float,
              run_seconds: float = 0.0) -> list[float]:
    """The agent's loop: a change at each write (changed, then due), wake-ups at next_check;
    returns the runs' start times."""
    runs: list[float] = []
    last: float | None = None
    pending_writes = sorted(writes)
    t = min(pending_writes) if pending_writes else end
    while t <= end:
        while pending_writes and pending_writes[0] <= t:
            d.changed(pending_writes.pop(0))
        if d.due(t, last) and (last is None or t >= last + run_seconds):
            runs.append(t)
            last = t
        candidates = [w for w in pending_writes[:1]]
        wake = d.next_check(t, last)
        if wake is not None:
            candidates.append(max(wake, t + 1e-6))
        if not candidates:
            break
        t = min(candidates)
    return runs


def test_a_burst_of_writes_gives_one_run_after_the_quiet_period() -> None:
    d = Debouncer(debounce=60.0, min_interval=600.0)
    burst = [T0 + i for i in range(30)]  # a scan batch: one file a second for 30 s
    runs = _simulate(d, burst, T0 + 7200)
    assert runs == [T0 + 29 + 60]
    assert d.next_check(T0 + 7200, runs[-1]) is None


def test_runs_are_at_least_min_interval_apart() -> None:
    d = Debouncer(debounce=60.0, min_interval=600.0)
    writes = [T0, T0 + 100, T0 + 300]  # each settles long before the next
    runs = _simulate(d, writes, T0 + 7200)
    assert runs == [T0 + 60, T0 + 660]  # the later two wait for min_interval, in one run


def test_a_steady_write_load_still_gets_backed_up() -> None:
    d = Debouncer(debounce=60.0, min_interval=600.0)
    assert d.max_delay == 660.0
    writes = [T0 + 5 * i for i in range(2 * 3600 // 5)]  # every 5 s for two hours: never quiet
    runs = _simulate(d, writes, T0 + 3 * 3600, run_seconds=30.0)
    assert len(runs) >= 10
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(600.0 <= g <= 600.0 + 60.0 + 5.0 for g in gaps), gaps
    for w in writes:  # every write is in a run that started at most max_delay after it
        assert any(w <= r <= w + 660.0 + 5.0 for r in runs), w


def test_a_change_during_a_run_is_pending_after_it() -> None:
    d = Debouncer(debounce=10.0, min_interval=100.0)
    d.changed(T0)
    assert d.due(T0 + 10, None)
    started = T0 + 10
    assert d.next_check(started, started) is None  # the run covers the change
    d.changed(T0 + 20)  # during the run
    assert not d.due(T0 + 40, started)
    assert d.next_check(T0 + 40, started) == started + 100
    assert d.due(started + 100, started)


def test_a_clock_that_goes_back_does_not_push_the_run_away() -> None:
    d = Debouncer(debounce=10.0, min_interval=100.0)
    last = T0 + 3600  # the run started by the wrong clock, an hour ahead
    now = T0
    d.changed(now)
    assert d.next_check(now, last) == now + 100  # not last + 100
    assert d.due(now + 100, last)


def test_the_event_bits_are_the_kernels() -> None:
    """The watcher names the inotify bits itself (it must import where inotify_simple cannot):
    they must be the kernel's, which inotify_simple reads from <sys/inotify.h>."""
    import inotify_simple

    from coffre.agent.watcher import flags

    assert {n: int(f) for n, f in flags.__members__.items()} == {
        n: int(getattr(inotify_simple.flags, n)) for n in flags.__members__}
