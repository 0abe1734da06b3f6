"""Progress of long operations: a line redrawn in place on a terminal (the real `coffre` under a
pseudo-terminal), restic's JSON status events then one summary with --json, nothing on pipes,
plain lines for logs under --verbose; and the arithmetic of the fraction, rate and ETA."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coffre.cli import progress as shown
from coffre.cli.output import warn
from coffre.cli.progress import LogLines, TerminalLine, choose_view, progress_for, status_event
from coffre.core.progress import NULL_PROGRESS, Progress, Status

from conftest import Coffre

# Status events and redraws every 3 ms: a check of a few dozen packs shows many of them.
FAST = {"COFFRE_PROGRESS_INTERVAL": "0.003"}
RESTIC_STATUS = {"message_type", "seconds_elapsed", "percent_done", "total_files", "files_done",
                 "total_bytes", "bytes_done", "current_files"}


def random_tree(root: Path, files: int = 32, size: int = 1_000_000) -> Path:
    """Incompressible files: one pack of 1 MiB each, so a check reads many packs."""
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"scan-{i:02d}.jpg").write_bytes(os.urandom(size))
    return root


@pytest.fixture
def packed(coffre: Coffre, tmp_path: Path) -> Coffre:
    coffre.ok("init", "--pack-size", "1")
    coffre.ok("backup", str(random_tree(tmp_path / "src")))
    return coffre


def in_terminal(c: Coffre, *args: str, env: dict[str, str] | None = None, columns: int = 160,
                timeout: float = 600) -> tuple[int, str]:
    """Run the real command with a pseudo-terminal as its stdin, stdout and stderr, as in a
    terminal window `columns` wide; its exit status and everything it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    full_env = {**c.env, "TERM": "xterm", **FAST, **(env or {})}
    for var in ("COLUMNS", "LINES", "NO_COLOR"):
        full_env.pop(var, None)
    proc = subprocess.Popen(c.argv(*args), stdin=slave, stdout=slave, stderr=slave, env=full_env,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command and its children have closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")


def frames(text: str) -> list[str]:
    """The successive contents of the redrawn line (and the lines printed around it)."""
    return [f for f in re.split(r"\r\n|\r|\n|\x1b\[2K|\x1b\[1A|\x1b\[\?25[lh]", text) if f.strip()]


SIZE = r"\d[\d.,]*\s?\w+"


def full_frame(frame: str, unit: str) -> bool:
    """A status line with the count and the bytes done of their totals, and the time left."""
    return bool(re.search(rf"\d+/\d+ {unit}", frame) and re.search(rf"{SIZE} of {SIZE}", frame)
                and re.search(r"\d+:\d\d left", frame))


# -- on a terminal -------------------------------------------------------------------------------
def test_check_on_a_terminal_redraws_one_line_with_counts_bytes_and_time_left(packed: Coffre) -> None:
    """On a terminal, a line redrawn in place; on pipes (a log, cron), nothing of it."""
    code, text = in_terminal(packed, "check", "--read-data")
    assert code == 0, text
    shown_lines = [f for f in frames(text) if "check: reading data" in f]
    assert any(full_frame(f, "packs") for f in shown_lines), text
    assert "\r\x1b[2K" in text  # redrawn in place, not scrolled
    # Erased at the end: after the last erasure comes the result, not the line.
    tail = text.rsplit("\x1b[2K", 1)[1]
    assert "reading data" not in tail and "no errors were found" in tail, text
    assert "\x1b[?25h" in text  # the cursor is shown again

    res = packed.ok("check", "--read-data", env=FAST)
    for output in (res.out, res.err):
        assert "\r" not in output and "\x1b" not in output and "reading data" not in output, res
    assert "no errors were found" in res.out


def test_the_current_item_is_shortened_to_fit_the_width() -> None:
    status = Status("reading data", 3, 10, 3 << 20, 10 << 20, True,
                    "/srv/officine/scans/2025/03/" + "x" * 200 + "/ordonnance-03-0002.jpg",
                    12.0, 0, phase_elapsed=10.0)
    line = TerminalLine("backup", 1).line(status, 140)
    assert len(line) == 139 and "…/ordonnance" in line and line.endswith("ordonnance-03-0002.jpg")
    figures = rf"\[0:12\] backup: reading data  30%  3/10 files  {SIZE} of {SIZE}  {SIZE}/s  0:24 left  "
    assert re.match(figures, line), line
    # Too narrow for the item: the figures only.
    assert "/srv" not in TerminalLine("backup", 1).line(status, 60)


def test_warnings_print_above_the_line_never_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning printed while the line is shown erases it, prints on a line of its own, and
    the line is drawn again below it."""
    monkeypatch.setenv("COFFRE_PROGRESS_INTERVAL", "0.005")
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    terminal = open(slave, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed below)
    previous, sys.stderr = sys.stderr, terminal
    seen = bytearray()

    def read_until(marker: bytes, since: int = 0) -> None:
        deadline = time.monotonic() + 60
        while marker not in seen[since:] and time.monotonic() < deadline:
            if select.select([master], [], [], deadline - time.monotonic())[0]:
                seen.extend(os.read(master, 65536))

    try:
        with progress_for(argparse.Namespace(), "backup") as progress:
            progress.phase("reading data", files_total=10, bytes_total=10_000_000, known=True)
            progress.advance(3, 3_000_000)
            read_until(b"reading data")
            warn("warning: /srv/officine/tmp/lock.db changed while it was read")
            mark = len(seen)
            read_until(b"reading data", mark)
    finally:
        sys.stderr = previous
        terminal.close()
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen.extend(chunk)
        os.close(master)
    text = seen.decode()
    assert re.search(r"reading data[^\r\n]*\r\x1b\[2Kwarning: /srv/officine/tmp/lock\.db changed while "
                     r"it was read\r\n\[0:\d\d\] backup: reading data", text), repr(text)


# -- not on a terminal ---------------------------------------------------------------------------
def documents(text: str) -> list[dict[str, Any]]:
    """JSON lines: one document per line."""
    return [json.loads(line) for line in text.splitlines()]


def statuses_then_summary(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = documents(text)
    *statuses, summary = docs
    assert summary["message_type"] == "summary", docs[-3:]
    assert statuses and all(d["message_type"] == "status" for d in statuses), docs[-3:]
    for d in statuses:
        assert set(d) >= RESTIC_STATUS and 0 <= d["percent_done"] <= 1, d
    return statuses, summary


def test_json_gives_status_events_then_one_summary_last(packed: Coffre) -> None:
    res = packed.ok("check", "--read-data", "--json", env=FAST)
    statuses, summary = statuses_then_summary(res.out)
    assert summary["ok"] is True and summary["packs_read"] == summary["packs_total"] >= 20
    # Events while the data was read, with what is known of the whole.
    reading = [d for d in statuses if d["phase"] == "reading data"]
    assert any(0 < d["percent_done"] < 1 and "seconds_remaining" in d for d in reading), reading
    assert all(d["unit"] == "packs" and d["total_files"] == summary["packs_total"] for d in reading)
    last = statuses[-1]
    assert last["percent_done"] == 1 and last["bytes_done"] == last["total_bytes"] > 30_000_000
    assert last["files_done"] == last["total_files"] == summary["packs_read"]
    assert res.json() == summary  # what the tests of every command read


def test_copy_prune_and_drill_stream_their_progress(repo: Coffre, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", files=4, size=300_000)
    db = src / "officine.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT)")
    conn.executemany("INSERT INTO ventes (produit) VALUES (?)", [(f"produit {i}",) for i in range(500)])
    conn.commit()
    conn.close()
    repo.ok("backup", str(src), "--sqlite", str(db))
    first = repo.ok("snapshots", "--json").json()[0]["id"]
    (src / "scan-00.jpg").write_bytes(os.urandom(300_000))
    repo.ok("backup", str(src))

    other = Coffre(tmp_path / "offsite", repo.pwfile, tmp_path / "cache")
    other.ok("init")
    res = other.ok("copy", "--from", str(repo.repo), "--to", str(other.repo), "--json",
                   env={"COFFRE_FROM_PASSWORD_FILE": str(repo.pwfile), **FAST})
    statuses, summary = statuses_then_summary(res.out)
    assert len(summary["copied"]) == 2
    last = statuses[-1]
    assert (last["phase"], last["unit"]) == ("copying", "pieces")
    assert last["files_done"] == last["total_files"] > 0
    assert last["bytes_done"] == last["total_bytes"] > 1_000_000

    res = repo.ok("drill", first, "--json", env=FAST)
    statuses, summary = statuses_then_summary(res.out)
    assert summary["ok"] is True
    assert {d["phase"] for d in statuses} <= {"", "starting a throwaway server", "restoring the dump",
                                              "checking the restored database"}
    last = statuses[-1]
    assert last["unit"] == "databases" and last["files_done"] == last["total_files"] == 1

    repo.ok("forget", first)
    res = repo.ok("prune", "--json", env=FAST)
    statuses, summary = statuses_then_summary(res.out)
    assert summary["bytes_freed"] > 0
    assert statuses[-1]["phase"] in ("deleting unused packs", "writing the index")


def test_verbose_without_a_terminal_writes_plain_lines_for_logs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Under --verbose, with stderr a file or a pipe: a plain line now and then, and one at
    the end; no carriage return, no escape sequence."""
    monkeypatch.setenv("COFFRE_PROGRESS_INTERVAL", "0.001")
    written = threading.Event()
    count = [0]
    original = LogLines.write

    def write(self: LogLines, status: Status) -> None:
        original(self, status)
        count[0] += 1
        if count[0] >= 2:
            written.set()

    monkeypatch.setattr(LogLines, "write", write)
    with progress_for(argparse.Namespace(verbose=True), "backup") as progress:
        progress.phase("reading data", files_total=4, bytes_total=4 << 20, known=True)
        progress.advance(1, 1 << 20, current="/srv/officine/scans/ordonnance.jpg")
        assert written.wait(60)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3  # periodic lines, and one at the end
    assert all(re.fullmatch(rf"\[0:\d\d\] backup: reading data, 25%, 1/4 files, {SIZE} of {SIZE}, "
                            rf"({SIZE}/s, )?(\d+:\d\d left, )?/srv/officine/scans/ordonnance\.jpg", line)
               for line in lines), lines


def test_which_display(monkeypatch: pytest.MonkeyPatch) -> None:
    every = (0.25, 1.0, 10.0)

    def view(terminal: bool, **options: object) -> type | None:
        monkeypatch.setattr(shown, "is_terminal", lambda stream: terminal)
        chosen = choose_view(argparse.Namespace(**options), "backup", every)
        return type(chosen) if chosen is not None else None

    assert view(True) is TerminalLine
    assert view(False) is None
    assert view(False, verbose=True) is LogLines
    assert view(True, json=True) is view(False, json=True) is shown.JsonStatus
    assert view(True, quiet=True) is view(False, json=True, quiet=True) is None
    monkeypatch.setenv("COFFRE_PROGRESS_INTERVAL", "")
    assert shown.intervals() == (0.25, 1.0, 10.0)


def test_a_wrong_interval_is_a_usage_error(packed: Coffre) -> None:
    res = packed("check", env={"COFFRE_PROGRESS_INTERVAL": "soon"})
    assert res.code == 2 and "COFFRE_PROGRESS_INTERVAL must be a number of seconds" in res.err, res


# -- the arithmetic ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fraction_rate_and_eta_with_an_injected_clock() -> None:
    clock = Clock()
    p = Progress(clock=clock)
    p.phase("scanning")
    p.add_total(10, 1000)
    clock.now += 2
    p.advance(2, 200, current="/srv/a")
    s = p.status()
    # While the total is still counted: no fraction, no ETA; restic's share of what is known.
    assert s.fraction is None and s.eta is None and s.share == 0.2
    assert s.rate == 100 and s.elapsed == 2 and s.current == "/srv/a"
    p.total_known()
    s = p.status()
    assert s.fraction == 0.2 and s.eta == pytest.approx(8.0)
    # A new phase counts from zero: its rate and ETA too (not diluted by the scan's time).
    clock.now += 8
    p.phase("reading data", bytes_total=100, known=True, unit="packs")
    clock.now += 1
    p.advance(1, 25)
    s = p.status()
    assert (s.elapsed, s.phase_elapsed, s.unit, s.current) == (11, 1, "packs", None)
    assert s.fraction == 0.25 and s.rate == 25 and s.eta == pytest.approx(3.0)
    # Without bytes, by files; nothing to do at all is done.
    p.phase("checks", files_total=4, known=True)
    p.advance(1)
    assert p.status().fraction == 0.25
    p.phase("nothing", known=True)
    assert p.status().fraction == 1.0 and p.status().eta is None
    # More done than counted (a file grew) stays at 100 %.
    p.phase("grew", bytes_total=10, known=True)
    p.advance(1, 15)
    assert p.status().fraction == 1.0
    p.error()
    assert p.status().errors == 1
    # Nobody watching: nothing is counted.
    NULL_PROGRESS.phase("reading data", files_total=3, known=True, unit="packs")
    NULL_PROGRESS.advance(1, 10)
    assert NULL_PROGRESS.status().files_total == 0 and NULL_PROGRESS.status().bytes_done == 0


def test_status_events_follow_restic() -> None:
    s = Status("reading data", 3, 10, 250, 1000, True, "/srv/a", 12.7, 1, phase_elapsed=5.0, unit="packs")
    event = status_event(s)
    assert event == {"message_type": "status", "seconds_elapsed": 12, "seconds_remaining": 15,
                     "percent_done": 0.25, "total_files": 10, "files_done": 3, "total_bytes": 1000,
                     "bytes_done": 250, "error_count": 1, "current_files": ["/srv/a"],
                     "phase": "reading data", "unit": "packs", "total_known": True}
    scanning = status_event(Status("scanning", 3, 10, 250, 1000, False, None, 1.0, 0))
    assert "seconds_remaining" not in scanning and scanning["current_files"] == []


def test_clock_and_shorten() -> None:
    assert [shown.clock(s) for s in (0, 7.9, 754, 3723)] == ["0:00", "0:07", "12:34", "1:02:03"]
    assert shown.shorten("/srv/officine/scans/ordonnance.jpg", 100) == "/srv/officine/scans/ordonnance.jpg"
    short = shown.shorten("/srv/officine/scans/2025/ordonnance.jpg", 20)
    assert short == "/srv…/ordonnance.jpg"
    long_name = "/srv/officine/scans/2025/ordonnance-de-madame-dupont.jpg"
    assert shown.shorten(long_name, 20) == "/srv/of…e-dupont.jpg"
    assert shown.shorten("abcdefgh", 3) == ""


def test_a_path_given_as_bytes_is_decoded_only_when_shown() -> None:
    p = Progress()
    p.advance(1, 10, current=b"/srv/officine/caf\xc3\xa9 \xff.txt")
    assert p.status().current == "/srv/officine/café \udcff.txt"


def test_on_a_narrow_terminal_the_rate_then_the_count_give_way_to_the_time_left() -> None:
    status = Status("reading data", 3, 10, 3 << 20, 10 << 20, True, "/srv/a", 12.0, 0, phase_elapsed=10.0)
    view = TerminalLine("vérification", 1)
    wide, narrow, narrower = (view.line(status, w) for w in (160, 80, 70))
    assert "/s" in wide and "3/10 files" in wide and "/srv/a" in wide
    assert "/s" not in narrow and "3/10 files" in narrow and narrow.endswith("0:24 left")
    assert "3/10" not in narrower and narrower.endswith("0:24 left") and len(narrower) < 70
