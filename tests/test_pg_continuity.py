"""PostgreSQL continuous archiving against a real server: `coffre wal push` as archive_command,
`coffre wal ship`, and `coffre restore-db --pgdata --until`, compared with a log of the
transactions the test's own writer committed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coffre.sources.databases.command import service_account
from dbservers import DB_PASSWORD, PostgresServer

from conftest import Coffre

ARCHIVE_TIMEOUT = 1  # seconds: PostgreSQL closes a segment at least this often under load


def coffre_as_postgres() -> str:
    """A shell command that runs this Coffre as the postgres account, which (like any database
    account) cannot enter root's home, where a development interpreter may live: then the
    system's interpreter of the same version, given this one's packages."""
    import sysconfig

    import coffre

    account = service_account("postgres")
    assert account is not None
    try:
        usable = subprocess.run([sys.executable, "-c", "import coffre"], user=account.pw_uid, cwd="/",
                                capture_output=True, check=False).returncode == 0
    except PermissionError:
        usable = False
    if usable:
        return f"{sys.executable} -m coffre"
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    paths = f"{Path(coffre.__file__).parents[1]}:{sysconfig.get_paths()['purelib']}"
    return f"PYTHONPATH={paths} {system} -m coffre"


class Archiving:
    """A PostgreSQL server archiving into a spool through `coffre wal push`."""

    def __init__(self, spool_limit: str = "2GiB", archive_timeout: int = ARCHIVE_TIMEOUT,
                 scale: int = 1) -> None:
        account = service_account("postgres")
        assert account is not None
        self.top = Path(__import__("tempfile").mkdtemp(prefix="coffre-test-spool-", dir="/tmp"))
        os.chmod(self.top, 0o755)
        self.spool = self.top / "spool"
        self.spool.mkdir(mode=0o700)
        os.chown(self.spool, account.pw_uid, account.pw_gid)
        command = (f"{coffre_as_postgres()} wal push --spool {self.spool} "
                   f"--spool-limit {spool_limit} %p %f")
        self.pg = PostgresServer({"archive_mode": "on", "archive_command": command,
                                  "archive_timeout": str(archive_timeout), "wal_level": "replica",
                                  # docs/continuity.md: a segment closed early ends in zeros, not
                                  # in a recycled file's old bytes, so it compresses to little.
                                  "wal_recycle": "off"})
        self.pg.psql("CREATE DATABASE officine")
        self.pg.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, note text NOT NULL)", "officine")
        self.pg.pgbench("-i", "-s", str(scale), "-q", dbname="officine")

    def conninfo(self) -> str:
        return f"{self.pg.dsn('officine')} password={DB_PASSWORD}"

    def cluster(self) -> str:
        return f"host=127.0.0.1 port={self.pg.port} user=coffre"

    def stop(self) -> None:
        self.pg.stop()
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def archiving() -> Iterator[Archiving]:
    a = Archiving()
    try:
        yield a
    finally:
        a.stop()


class Writer:
    """Commits numbered rows one by one, noting for each the wall time just before it was sent
    and just after its commit returned."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.log: list[tuple[int, float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            before = time.time()
            try:
                self.conn.execute("INSERT INTO ledger VALUES (%s, 'vente')", (n,))
            except psycopg.OperationalError:
                return  # the server died (a test kills it): nothing more is committed
            self.log.append((n, before, time.time()))

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()

    def wait_for(self, rows: int) -> None:
        while len(self.log) < rows:
            assert self.thread.is_alive()
            time.sleep(0.01)  # waiting on the writer's progress


def rows_at(log: list[tuple[int, float, float]], moment: float) -> tuple[set[int], set[int]]:
    """(ids that must be there, ids that must not) for a recovery to `moment`."""
    return ({n for n, _, after in log if after < moment}, {n for n, before, _ in log if before > moment})


def wait_shipped(repo: Coffre, spool: Path) -> None:
    """Until every archived file left the spool for the repository."""
    deadline = time.monotonic() + 120
    while any(p.suffix == ".piece" for p in spool.iterdir()):
        assert time.monotonic() < deadline, list(spool.iterdir())
        repo.ok("wal", "ship", "--spool", str(spool))


@contextlib.contextmanager
def started(data: Path) -> Iterator[str]:
    """A PostgreSQL server on a restored data folder; its socket folder."""
    from coffre.sources.databases.pgdrill import start_server, stop_server
    from coffre.sources.databases.throwaway import DrillFolder

    account = service_account("postgres")
    folder = DrillFolder("coffre-test-run-", "/tmp", account)
    try:
        (data / "postgresql.conf").touch()
        sockets = folder.owned("run")
        server = start_server(str(data), sockets, folder)
        try:
            yield sockets
        finally:
            stop_server(server)
    finally:
        folder.remove()


def query(sockets: str, statement: str, db: str = "officine") -> str:
    done = subprocess.run(["psql", "-X", "-A", "-t", "-h", sockets, "-p", "5432", "-U", "coffre", "-d", db,
                           "-c", statement], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def restore_dir() -> Path:
    """A folder the postgres account can reach, for a restored data folder."""
    account = service_account("postgres")
    assert account is not None
    top = Path(__import__("tempfile").mkdtemp(prefix="coffre-test-pitr-", dir="/tmp"))
    os.chmod(top, 0o755)
    return top


def test_point_in_time_restores_match_the_committed_log(repo: Coffre, archiving: Archiving) -> None:
    env = archiving.pg.env()
    repo.ok("backup", "--postgres-cluster", archiving.cluster(), env=env)
    load = archiving.pg.pgbench_popen("-c", "4", "-T", "600", dbname="officine")
    moments: list[float] = []
    try:
        with Writer(archiving.conninfo()) as writer:
            for target in (300, 900, 1500):
                writer.wait_for(target)
                moments.append(time.time())
                repo.ok("wal", "ship", "--spool", str(archiving.spool))
            writer.wait_for(2000)
        log = writer.log
    finally:
        load.kill()
        load.wait()
    archiving.pg.psql("SELECT pg_switch_wal()")
    wait_archived(archiving)
    wait_shipped(repo, archiving.spool)
    listed = repo.ok("wal", "list", "--json").json()
    [stream] = listed["streams"]
    assert stream["engine"] == "postgres" and not stream["gaps"] and stream["pieces"] >= 2

    top = restore_dir()
    try:
        for i, moment in enumerate([moments[0], moments[2]]):
            data = top / f"at{i}"
            until = datetime.fromtimestamp(moment).isoformat(sep=" ")  # local time, microseconds
            res = repo.ok("restore-db", "latest", "--pgdata", str(data), "--until", until)
            assert "last transaction" in res.out
            must, must_not = rows_at(log, moment)
            with started(data) as sockets:
                present = {int(x) for x in query(sockets, "SELECT id FROM ledger").split()}
                sums = query(sockets, "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                                      "(SELECT sum(bbalance) FROM pgbench_branches), "
                                      "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)").split("|")
                assert query(sockets, "SELECT pg_is_in_recovery()") == "f"  # opened read-write
            assert must <= present, sorted(must - present)[:10]
            assert not present & must_not, sorted(present & must_not)[:10]
            assert len(set(sums)) == 1, sums  # every pgbench transaction all in or all out
        latest = top / "latest"
        repo.ok("restore-db", "latest", "--pgdata", str(latest), "--until", "latest")
        with started(latest) as sockets:
            present = {int(x) for x in query(sockets, "SELECT id FROM ledger").split()}
        assert present == {n for n, _, _ in log}  # everything committed before the switch
    finally:
        shutil.rmtree(top, ignore_errors=True)


def wait_archived(archiving: Archiving) -> None:
    """Until PostgreSQL has archived every finished segment (pg_stat_archiver)."""
    deadline = time.monotonic() + 120
    while True:
        ready = archiving.pg.psql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
        if ready == "0":
            return
        assert time.monotonic() < deadline
        time.sleep(0.1)  # waiting on PostgreSQL's archiver


def stored_segments(repo: Coffre) -> list[Any]:
    from coffre.repository.repo import Repository
    from coffre.repository.segments import listing
    from coffre.storage.local import LocalBackend

    return listing(Repository.open(LocalBackend(str(repo.repo)), repo.pwfile.read_text().strip()))


def test_a_missing_segment_is_a_gap_never_skipped(repo: Coffre, archiving: Archiving,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    repo.ok("backup", "--postgres-cluster", archiving.cluster(), env=archiving.pg.env())
    for _ in range(3):
        archiving.pg.pgbench("-c", "2", "-t", "200", dbname="officine")
        archiving.pg.psql("SELECT pg_switch_wal()")
    wait_archived(archiving)
    wait_shipped(repo, archiving.spool)
    logs = sorted((s for s in stored_segments(repo) if s.header.kind == "log"), key=lambda s: s.header.start)
    assert len(logs) >= 3
    victim = logs[len(logs) // 2]
    (Path(repo.repo) / "segments" / victim.object).unlink()
    res = repo("wal", "list")
    assert res.code == 1 and f"gap: {victim.header.name}" in res.out, res
    top = restore_dir()
    try:
        res = repo("restore-db", "latest", "--pgdata", str(top / "data"), "--until", "latest")
        assert res.code != 0 and victim.header.name in res.err and "missing" in res.err, res
        assert not (top / "data").exists()  # nothing left behind
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_full_spool_records_a_gap_and_never_blocks_the_database(repo: Coffre, tmp_path: Path) -> None:
    archiving = Archiving(spool_limit="20MiB")  # room for one segment
    try:
        for _ in range(3):
            archiving.pg.pgbench("-c", "2", "-t", "100", dbname="officine")
            archiving.pg.psql("SELECT pg_switch_wal()")
        wait_archived(archiving)  # PostgreSQL was never refused: nothing piles up in pg_wal
        failed = archiving.pg.psql("SELECT failed_count FROM pg_stat_archiver")
        assert failed == "0"
        pieces = [p for p in archiving.spool.iterdir() if p.suffix == ".piece"]
        assert sum(p.stat().st_size for p in pieces) <= 20 * 1024 * 1024 + 4096 * len(pieces)
        res = repo("wal", "ship", "--spool", str(archiving.spool))
        assert "gap recorded" in res.err, res
        res = repo("wal", "list")
        assert res.code == 1 and "gap" in res.out
    finally:
        archiving.stop()


def test_push_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    """The archiving contract: the same bytes again are a success, other bytes a failure (exit
    1, never above 125)."""
    spool = tmp_path / "spool"
    seg = tmp_path / "000000010000000000000003"
    seg.write_bytes(fake_segment(3, sysid=42))
    push = [sys.executable, "-m", "coffre", "wal", "push", "--spool", str(spool), str(seg), seg.name]
    assert subprocess.run(push, capture_output=True, check=False).returncode == 0
    assert subprocess.run(push, capture_output=True, check=False).returncode == 0  # again: same bytes
    seg.write_bytes(fake_segment(3, sysid=43))
    other = subprocess.run(push, capture_output=True, text=True, check=False)
    assert other.returncode == 1 and "never replaced" in other.stderr
    # A promotion archives the old timeline's last segment as .partial: kept, not refused.
    partial = tmp_path / "000000010000000000000005.partial"
    partial.write_bytes(fake_segment(5, sysid=42))
    done = subprocess.run([*push[:-2], str(partial), partial.name], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    (tmp_path / "junk").write_bytes(b"x" * 100)
    bad = subprocess.run([*push[:-2], str(tmp_path / "junk"), "000000010000000000000004"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "WAL segment" in bad.stderr


def fake_segment(number: int, sysid: int, size: int = 16 * 1024 * 1024) -> bytes:
    """A segment's first page header as PostgreSQL writes it (the rest zeros)."""
    import struct

    head = struct.pack("<HHIQI4xQII", 0xD10D, 0x0002, 1, number * size, 0, sysid, size, 8192)
    return head + bytes(size - len(head))


def test_fetch_exit_codes(tmp_path: Path) -> None:
    """restore_command: 0 found, 1 not found (recovery may end), 126 for anything else (recovery
    stops rather than open a database that misses transactions)."""
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "000000010000000000000003").write_bytes(b"wal")
    fetch = [sys.executable, "-m", "coffre", "wal", "fetch", "--staging", str(staging)]
    dest = tmp_path / "RECOVERYXLOG"
    assert subprocess.run([*fetch, "000000010000000000000003", str(dest)], check=False).returncode == 0
    assert dest.read_bytes() == b"wal"
    assert subprocess.run([*fetch, "000000010000000000000004", str(dest)], check=False).returncode == 1
    gone = [sys.executable, "-m", "coffre", "wal", "fetch", "--staging", str(tmp_path / "nowhere")]
    assert subprocess.run([*gone, "000000010000000000000004", str(dest)], check=False).returncode == 126
    assert subprocess.run([*fetch, "../../etc/passwd", str(dest)], check=False).returncode == 126


def test_prune_keeps_exactly_the_wal_kept_base_backups_need(repo: Coffre, archiving: Archiving,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Continuous capture and snapshots coexist with forget and prune: the WAL from the oldest
    kept base backup on stays (the latest moment stays restorable), older WAL goes."""
    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    env = archiving.pg.env()

    def some_load() -> None:
        for _ in range(2):
            archiving.pg.pgbench("-c", "2", "-t", "100", dbname="officine")
            archiving.pg.psql("SELECT pg_switch_wal()")
        wait_archived(archiving)
        wait_shipped(repo, archiving.spool)

    first = repo.ok("backup", "--postgres-cluster", archiving.cluster(), "--json", env=env).json()
    some_load()
    second = repo.ok("backup", "--postgres-cluster", archiving.cluster(), "--json", env=env).json()
    some_load()
    before = stored_segments(repo)
    floor1 = int(first["databases"][0]["extra"]["stream_from"])
    floor = int(second["databases"][0]["extra"]["stream_from"])
    repo.ok("prune")  # both bases kept: only what the first one's start leaves behind goes
    kept = {s.object for s in stored_segments(repo)}
    assert kept == {s.object for s in before if s.header.end > floor1 or s.header.kind == "history"}
    assert any(s.header.end <= floor and s.object in kept for s in before)
    before = stored_segments(repo)
    repo.ok("forget", first["snapshot"])
    res = repo.ok("prune")
    assert "log piece" in res.out, res
    after = stored_segments(repo)
    gone = {s.object for s in before} - {s.object for s in after}
    assert gone and all(s.header.end <= floor for s in before if s.object in gone)
    assert all(s.header.end > floor or s.header.kind == "history" for s in after)
    top = restore_dir()
    try:
        repo.ok("restore-db", "latest", "--pgdata", str(top / "data"), "--until", "latest")
        with started(top / "data") as sockets:
            rows = query(sockets, "SELECT count(*) FROM pgbench_history")
        assert int(rows) == int(archiving.pg.psql("SELECT count(*) FROM pgbench_history", "officine"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_an_unreachable_repository_queues_then_catches_up(repo: Coffre, archiving: Archiving) -> None:
    """While the repository is out of reach the database archives on (into the spool, never
    refused), and once it is back the shipper catches up: the latest moment is restorable."""
    repo.ok("backup", "--postgres-cluster", archiving.cluster(), env=archiving.pg.env())
    away = Path(str(repo.repo) + ".away")
    Path(repo.repo).rename(away)  # the NAS is unplugged
    try:
        for _ in range(3):
            archiving.pg.pgbench("-c", "2", "-t", "200", dbname="officine")
            archiving.pg.psql("SELECT pg_switch_wal()")
        wait_archived(archiving)
        assert archiving.pg.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
        res = repo("wal", "ship", "--spool", str(archiving.spool))
        assert res.code != 0
        waiting = [p for p in archiving.spool.iterdir() if p.suffix == ".piece"]
        assert len(waiting) >= 3
    finally:
        away.rename(repo.repo)
    wait_shipped(repo, archiving.spool)
    top = restore_dir()
    try:
        repo.ok("restore-db", "latest", "--pgdata", str(top / "data"), "--until", "latest")
        with started(top / "data") as sockets:
            restored = query(sockets, "SELECT count(*) FROM pgbench_history")
        assert restored == archiving.pg.psql("SELECT count(*) FROM pgbench_history", "officine")
    finally:
        shutil.rmtree(top, ignore_errors=True)
