"""MariaDB point-in-time recovery against a real server writing binary logs: `coffre wal mysql`
captures the log, `coffre wal ship` stores it, and `coffre restore-db --mysql --until` restores
a dump and replays the log; compared with a log of the rows the test's own writer committed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coffre.continuity import mysql_chain, mysql_retention
from coffre.core.errors import FormatError
from coffre.format.segment import EMPTY_SHA256, SegmentHeader
from coffre.format.snapshot import DatabaseRecord
from coffre.repository.segments import StoredSegment
from coffre.sources.databases import binlog
from dbservers import DB_PASSWORD, MariaDBServer

from conftest import Coffre

DEADLINE = 120  # seconds any awaited condition gets


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE,
               detail: Callable[[], str] = str) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what} {detail()}"
        time.sleep(0.05)  # polling a condition, never waiting for time to pass


class Logging:
    """A MariaDB server writing binary logs, its database `officine`, and a spool."""

    def __init__(self) -> None:
        self.server = MariaDBServer(binlog=True)
        self.server.sql("CREATE DATABASE officine; CREATE TABLE officine.ledger "
                        "(id BIGINT PRIMARY KEY, note VARCHAR(40) NOT NULL) ENGINE=InnoDB")
        self.top = Path(tempfile.mkdtemp(prefix="coffre-test-binlog-", dir="/tmp"))
        self.spool = self.top / "spool"
        self.capture: subprocess.Popen[bytes] | None = None

    def dsn(self, db: str = "officine") -> str:
        return self.server.dsn(db)

    def server_dsn(self) -> str:
        return f"mysql://coffre@127.0.0.1:{self.server.port}"

    def env(self) -> dict[str, str]:
        return self.server.env()

    def capture_argv(self, repo: Coffre, *more: str) -> list[str]:
        return repo.argv("wal", "mysql", "--spool", str(self.spool), "--dsn", self.server_dsn(), *more,
                         repo=False)

    def start_capture(self, repo: Coffre) -> None:
        self.capture = subprocess.Popen(self.capture_argv(repo, "--interval", "0.2"),
                                        env={**repo.env, **self.env()}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)

    def capture_once(self, repo: Coffre) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.capture_argv(repo, "--once"), env={**repo.env, **self.env()},
                              capture_output=True, text=True, timeout=DEADLINE, check=False)
        assert done.returncode == 0, done
        return done

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.spool / ".mysql-capture" / "state.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def server_end(self) -> tuple[str, int]:
        name, pos = self.server.sql("SHOW MASTER STATUS").split("\t")[:2]
        return name, int(pos)

    def wait_caught_up(self) -> None:
        wait_until(self.caught_up, "the capture to reach the server's end", detail=self.describe)

    def describe(self) -> str:
        """Where the capture is, for a failure's message."""
        said = ""
        if self.capture is not None and self.capture.poll() is not None:
            out, err = self.capture.communicate()
            said = f"; the capture ended ({self.capture.returncode}): {out.decode()} {err.decode()}"
        return f"(capture at {self.state()}, server at {self.server_end()}{said})"

    def caught_up(self) -> bool:
        state, (name, pos) = self.state(), self.server_end()
        return state.get("file") == name and state.get("offset") == pos

    def stop_capture(self) -> str:
        assert self.capture is not None
        self.capture.send_signal(signal.SIGTERM)
        out, err = self.capture.communicate(timeout=DEADLINE)
        assert self.capture.returncode == 0, err
        self.capture = None
        return out.decode() + err.decode()

    def data_file(self, name: str) -> bytes:
        return (self.server.dir / "data" / name).read_bytes()

    def stop(self) -> None:
        if self.capture is not None:
            self.capture.kill()
            self.capture.wait()
        self.server.stop()
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def logging_server() -> Iterator[Logging]:
    server = Logging()
    try:
        yield server
    finally:
        server.stop()


class Writer:
    """Commits numbered rows one by one through the mariadb client, noting for each the wall
    time just before it was sent and just after the client said it was committed. `pause`:
    seconds between rows (0: as fast as the server goes)."""

    def __init__(self, server: MariaDBServer, pause: float = 0.0) -> None:
        self.pause = pause
        self.proc = subprocess.Popen(["mariadb", "--no-defaults", f"--socket={server.socket}", "-uroot",
                                      "--batch", "--skip-column-names", "--unbuffered", "officine"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log: list[tuple[int, float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.next = 0

    def _run(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        while not self.stop.is_set():
            self.next += 1
            n = self.next
            before = time.time()
            self.proc.stdin.write(f"INSERT INTO ledger VALUES ({n}, 'vente'); SELECT {n};\n".encode())
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
            if not answer:  # the client ended: what it said
                assert self.proc.stderr is not None
                raise AssertionError(f"the mariadb client ended at row {n}: {self.proc.stderr.read()!r}")
            assert answer.strip() == str(n).encode(), answer
            self.log.append((n, before, time.time()))
            if self.pause:
                self.stop.wait(self.pause)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait() == 0

    def wait_for(self, rows: int) -> None:
        wait_until(lambda: len(self.log) >= rows or not self.thread.is_alive(), f"{rows} rows")
        assert self.thread.is_alive()

    def wait_past(self, moment: float) -> None:
        """Until a row begun after `moment` is committed."""
        wait_until(lambda: bool(self.log) and self.log[-1][1] > moment, "a row after the moment")


def rows_at(log: list[tuple[int, float, float]], second: int) -> tuple[set[int], set[int]]:
    """(ids that must be there, ids that must not) for a recovery to the start of `second`:
    the log stamps events with the second their statement began."""
    return {n for n, _, after in log if after < second}, {n for n, before, _ in log if before > second}


def ids(server: MariaDBServer, db: str) -> set[int]:
    return {int(x) for x in server.sql("SELECT id FROM ledger", db).split()}


def ship_all(repo: Coffre, spool: Path) -> None:
    wait_until(lambda: bool(repo.ok("wal", "ship", "--spool", str(spool))) and not any(
        p.suffix == ".piece" for p in spool.iterdir()), "the spool to empty")


def stored(repo: Coffre) -> list[StoredSegment]:
    from coffre.repository.repo import Repository
    from coffre.repository.segments import listing
    from coffre.storage.local import LocalBackend

    return listing(Repository.open(LocalBackend(str(repo.repo)), repo.pwfile.read_text().strip()))


def joined_files(repo: Coffre) -> dict[str, bytes]:
    """The binary log files as the repository's pieces give them back, end to end."""
    from coffre.repository.repo import Repository
    from coffre.repository.segments import load
    from coffre.storage.local import LocalBackend

    r = Repository.open(LocalBackend(str(repo.repo)), repo.pwfile.read_text().strip())
    pieces = stored(repo)
    by_id = {id(s.header): s for s in pieces}
    chain = mysql_chain.follow([s.header for s in pieces], min(s.header.start for s in pieces))
    assert not chain.missing, chain.missing
    out: dict[str, bytes] = {}
    for link in chain.links:
        h = link.header
        data = load(r, by_id[id(h)]) if h.size else b""
        out[h.extra["file"]] = out.get(h.extra["file"], b"") + data[link.skip:]
    return out


def same_log(copy: bytes, original: bytes) -> bool:
    """A copy equals the server's file but for the flag 'in use' of its first event (a copy is
    written closed)."""
    flags = len(binlog.MAGIC) + 17
    return len(copy) == len(original) and copy[:flags] == original[:flags] and copy[flags + 2:] == original[
        flags + 2:]


def local(moment: float) -> str:
    return datetime.fromtimestamp(moment).isoformat(sep=" ")


def test_point_in_time_restores_match_the_committed_rows(repo: Coffre, logging_server: Logging) -> None:
    server, env = logging_server.server, logging_server.env()
    logging_server.start_capture(repo)
    with Writer(server) as writer:
        writer.wait_for(200)
        backup = repo.ok("backup", "--mysql", logging_server.dsn(), "--json", env=env).json()
        [record] = backup["databases"]
        assert record["extra"]["stream"] == "mysql:1@" + server.sql("SELECT @@hostname")
        assert int(record["extra"]["stream_from"]) == binlog.position(
            record["extra"]["binlog_file"], int(record["extra"]["binlog_position"]))
        writer.wait_for(len(writer.log) + 100)
        repo.ok("wal", "ship", "--spool", str(logging_server.spool))
        whole = math.ceil(time.time())  # an instant on a second's boundary
        writer.wait_past(whole + 0.5)
        server.sql("FLUSH BINARY LOGS")  # the log goes on in a new file
        writer.wait_for(len(writer.log) + 100)
        between = time.time()  # an instant inside a second
        writer.wait_past(math.floor(between) + 1.5)
        repo.ok("wal", "ship", "--spool", str(logging_server.spool))
    log = writer.log
    logging_server.wait_caught_up()
    said = logging_server.stop_capture()
    assert DB_PASSWORD not in said
    ship_all(repo, logging_server.spool)
    listed = repo.ok("wal", "list", "--json").json()
    [stream] = listed["streams"]
    assert stream["engine"] == "mysql" and not stream["gaps"]
    assert stream["stream"] == record["extra"]["stream"]

    for i, moment in enumerate([whole, between]):
        db = f"pitr{i}"
        res = repo.ok("restore-db", "latest", "--mysql", logging_server.dsn(db), "--until", local(moment),
                      env=env)
        assert "transactions replayed" in res.out, res
        must, must_not = rows_at(log, math.floor(moment))
        present = ids(server, db)
        assert must <= present, sorted(must - present)[:10]
        assert not present & must_not, sorted(present & must_not)[:10]
        assert len(must) > 300 and must_not  # the instant is well inside the run
    res = repo.ok("restore-db", "latest", "--mysql", logging_server.dsn("latest"), "--until", "latest",
                  env=env)
    assert ids(server, "latest") == {n for n, _, _ in log}
    assert DB_PASSWORD not in res.out + res.err
    res = repo("restore-db", "latest", "--mysql", logging_server.dsn("latest"), "--until", "latest", env=env)
    assert res.code == 1 and "is not empty" in res.err, res


def test_a_missing_piece_or_a_purged_log_is_a_gap_never_skipped(repo: Coffre,
                                                                logging_server: Logging) -> None:
    server, env = logging_server.server, logging_server.env()
    logging_server.capture_once(repo)
    repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
    for n in range(1, 4):
        server.sql(f"INSERT INTO officine.ledger VALUES ({n}, 'vente')")
        logging_server.capture_once(repo)
    ship_all(repo, logging_server.spool)
    logs = sorted((s for s in stored(repo) if s.header.kind == "log" and s.header.size),
                  key=lambda s: s.header.start)
    assert len(logs) >= 4
    victim = logs[2]
    (Path(repo.repo) / "segments" / victim.object).unlink()
    res = repo("wal", "list")
    assert res.code == 1 and f"gap: {victim.header.name}" in res.out, res
    res = repo("restore-db", "latest", "--mysql", logging_server.dsn("copie"), "--until", "latest", env=env)
    assert res.code != 0 and victim.header.name in res.err and "missing" in res.err, res
    assert "copie" not in server.sql("SHOW DATABASES").split()  # refused before anything was touched

    # The log the capture needs next is purged while it is stopped: a gap, and it goes on.
    place = "{file}:{offset}".format(**logging_server.state())
    server.sql("INSERT INTO officine.ledger VALUES (10, 'vente'); FLUSH BINARY LOGS; "
               "INSERT INTO officine.ledger VALUES (11, 'vente'); FLUSH BINARY LOGS")
    newest = server.sql("SHOW MASTER STATUS").split("\t")[0]

    def purged() -> bool:
        """(A file goes only once InnoDB has made its transactions durable: its checkpoint.)"""
        server.sql(f"PURGE BINARY LOGS TO '{newest}'")
        return server.sql("SHOW BINARY LOGS").split()[0] == newest

    wait_until(purged, "the server to purge its old binary logs")
    server.sql("INSERT INTO officine.ledger VALUES (12, 'vente')")
    done = logging_server.capture_once(repo)
    assert "purged" in done.stderr and place in done.stderr, done
    assert logging_server.caught_up()
    ship_all(repo, logging_server.spool)
    res = repo("wal", "list")
    assert res.code == 1 and f"gap: {place}" in res.out, res


def moved_on(capture: Logging) -> Callable[[], bool]:
    """Whether the capture has put a piece since now."""
    before = capture.state().get("offset")
    return lambda: capture.state().get("offset") != before


def test_a_capture_killed_and_restarted_loses_and_repeats_nothing(repo: Coffre,
                                                                  logging_server: Logging) -> None:
    server, env = logging_server.server, logging_server.env()
    repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
    with Writer(server) as writer:
        logging_server.start_capture(repo)
        for round_ in range(4):
            writer.wait_for(len(writer.log) + 150)
            wait_until(moved_on(logging_server), "the capture to move on")
            assert logging_server.capture is not None
            logging_server.capture.kill()  # SIGKILL: no chance to finish its piece or its state
            logging_server.capture.wait()
            if round_ == 1:
                server.sql("FLUSH BINARY LOGS")
            repo.ok("wal", "ship", "--spool", str(logging_server.spool))
            logging_server.start_capture(repo)
        writer.wait_for(len(writer.log) + 150)
    logging_server.wait_caught_up()
    logging_server.stop_capture()
    ship_all(repo, logging_server.spool)
    # Joined end to end, the stored pieces are the server's files byte for byte.
    files = joined_files(repo)
    names = [n for n in server.sql("SHOW BINARY LOGS").split()[::2]]
    assert set(files) <= set(names) and names[-1] in files and len(files) >= 2
    for name, data in files.items():
        assert same_log(data, logging_server.data_file(name)), name
    res = repo.ok("restore-db", "latest", "--mysql", logging_server.dsn("copie"), "--until", "latest",
                  env=env)
    assert ids(server, "copie") == {n for n, _, _ in writer.log}, res


def test_full_spool_records_a_gap_and_the_capture_goes_on(repo: Coffre, logging_server: Logging) -> None:
    server, env = logging_server.server, logging_server.env()
    logging_server.capture_once(repo)
    server.sql("INSERT INTO ledger SELECT seq, REPEAT('x', 40) FROM seq_1_to_5000", "officine")
    done = subprocess.run(logging_server.capture_argv(repo, "--once", "--spool-limit", "10KiB"),
                          env={**repo.env, **env}, capture_output=True, text=True, timeout=DEADLINE,
                          check=False)
    assert done.returncode == 0 and "spool" in done.stderr and "gap" in done.stderr, done
    assert logging_server.caught_up()
    pieces = [p for p in logging_server.spool.iterdir() if p.suffix == ".piece"]
    assert sum(p.stat().st_size for p in pieces) < 10 * 1024 + 4096 * len(pieces)
    ship_all(repo, logging_server.spool)
    res = repo("wal", "list")
    assert res.code == 1 and "gap" in res.out


# Pure parts.

def header(kind: str, file: str, start: int, end: int | str, size: int | None = None,
           **extra: str) -> SegmentHeader:
    """A piece of the stream `s`; `end` an offset in `file`, or the name of the next file."""
    stop = binlog.position(end, 0) if isinstance(end, str) else binlog.position(file, end)
    length = (stop - binlog.position(file, start)) if size is None else size
    return SegmentHeader(stream="s", engine="mysql", kind=kind, name=f"{file}:{start}",
                         start=binlog.position(file, start), end=stop, time_ns=0, size=length,
                         sha256=EMPTY_SHA256, extra={"file": file, **extra})


def test_chain_joins_overlaps_and_files_and_names_the_first_missing_piece() -> None:
    a, b = "binlog.000001", "binlog.000002"
    pieces = [header("log", a, 0, 100), header("log", a, 100, 180), header("log", a, 100, 250),
              header("log", a, 250, b, size=0, next=b), header("log", b, 0, 50), header("log", b, 90, 120)]
    chain = mysql_chain.follow(pieces, binlog.position(a, 0))
    assert [(link.header.name, link.skip) for link in chain.links] == [
        (f"{a}:0", 0), (f"{a}:100", 0), (f"{a}:250", 0), (f"{b}:0", 0)]
    assert chain.end == binlog.position(b, 50) and chain.missing == f"{b}:50"
    assert mysql_chain.gaps(pieces) == [f"{b}:50"]
    # A recorded gap is named as recorded, with its reason.
    gap = header("gap", b, 50, 90, size=0, reason="spool full")
    chain = mysql_chain.follow([*pieces, gap], binlog.position(a, 0))
    assert chain.missing == f"{b}:50" and chain.reason == "spool full"
    # A piece put again after a crash, longer than the first: only its new bytes are taken.
    again = header("log", b, 0, 95)
    chain = mysql_chain.follow([*pieces, again], binlog.position(b, 0))
    assert [(link.header.name, link.skip) for link in chain.links] == [(f"{b}:0", 0), (f"{b}:90", 5)]
    assert not chain.missing


def test_retention_keeps_the_files_the_oldest_kept_dump_needs() -> None:
    a, b, c = "binlog.000001", "binlog.000002", "binlog.000003"
    pieces = [StoredSegment(str(i), h) for i, h in enumerate([
        header("log", a, 0, 300), header("log", a, 300, b, size=0, next=b), header("log", b, 0, 400),
        header("log", b, 400, c, size=0, next=c), header("log", c, 0, 70)])]

    def dump(file: str, offset: int, stream: str = "s") -> DatabaseRecord:
        return DatabaseRecord(engine="mysql", name="officine", file="officine.sql", format="", size=0,
                              extra={"stream": stream, "stream_from": str(binlog.position(file, offset))})

    gone = mysql_retention.removable(pieces, [dump(c, 20), dump(b, 200)])
    assert [s.header.name for s in gone] == [f"{a}:0", f"{a}:300"]  # b is read from its start
    assert mysql_retention.removable(pieces, [dump(c, 20)]) == pieces[:4]
    assert mysql_retention.removable(pieces, [dump(c, 20, stream="other")]) == []


def test_events_are_whole_or_not_given() -> None:
    def event(offset: int, body: bytes, kind: int = 2) -> bytes:
        length = binlog.HEADER.size + len(body)
        return binlog.HEADER.pack(1_800_000_000, kind, 1, length, offset + length, 0) + body

    first = event(4, b"x" * 30)
    second = event(4 + len(first), b"y" * 10)
    data = binlog.MAGIC + first + second
    assert [e.offset for e in binlog.events(data, 0)] == [4, 4 + len(first)]
    assert binlog.complete_end(data[:-1], 0) == 4 + len(first)  # a torn last event waits
    assert binlog.complete_end(data[:10], 0) == 0
    assert binlog.complete_end(data[4 + len(first):], 4 + len(first)) == len(data)
    with pytest.raises(FormatError, match="impossible"):
        list(binlog.events(data[4 + len(first):], 99))  # not where it is: its end does not match


def test_the_shipper_leaves_alone_a_piece_being_written(tmp_path: Path) -> None:
    """A capture runs beside the shipper: only a crash's old temporaries are removed."""
    from coffre.continuity.spool import Spool

    spool = Spool(tmp_path / "spool")
    spool.create()
    fresh, old = spool.path / ".tmp-being-written", spool.path / ".tmp-left-by-a-crash"
    fresh.write_bytes(b"x")
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    spool.clean_temporaries()
    assert fresh.exists() and not old.exists()
