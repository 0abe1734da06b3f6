"""PostgreSQL hot backups against a real server under pgbench load: the restored database is
one consistent instant, the drill passes, and every failing dump leaves no snapshot."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from coffre.sources.databases.command import find_program
from coffre.sources.databases.postgres import bin_dirs
from dbservers import DB_PASSWORD
from servers import free_port

from conftest import Coffre, json_documents, snapshot_ids

INVARIANT = ("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
             "(SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), "
             "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)")


@pytest.fixture
def officine(postgres: Any) -> str:
    """A fresh pgbench database (scale 5: 500,000 accounts)."""
    name = f"officine_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.pgbench("-i", "-s", "5", "-q", dbname=name)
    return name


def consistent(postgres: Any, dbname: str) -> int:
    """The pgbench balances agree (every transaction is all in or all out); the history rows."""
    sums = postgres.psql(INVARIANT, dbname).split("|")
    assert len(set(sums)) == 1, sums
    return int(postgres.psql("SELECT count(*) FROM pgbench_history", dbname))


def assert_source_at_one_instant(postgres: Any, source: str, restored: str) -> None:
    """The restored database is the source as it was at one instant: its history is part of
    the source's, and each account differs from the source by exactly the transactions the
    source committed after that instant."""
    from collections import Counter

    def lines(db: str, query: str) -> list[str]:
        return postgres.psql(query, db).splitlines()

    history = "SELECT tid, bid, aid, delta, mtime FROM pgbench_history"
    later = Counter(lines(source, history))
    later.subtract(Counter(lines(restored, history)))
    assert all(n >= 0 for n in later.values()), "restored rows the source never had"
    moved: Counter[str] = Counter()
    for row, n in later.items():
        _, _, aid, delta, _ = row.split("|")
        moved[aid] += int(delta) * n
    balances = "SELECT aid, abalance FROM pgbench_accounts"
    now = dict(r.split("|") for r in lines(source, balances))
    then = dict(r.split("|") for r in lines(restored, balances))
    assert now.keys() == then.keys()
    assert all(int(now[a]) - int(then[a]) == moved[a] for a in now)


def wrapper(tmp_path: Path, name: str, real: str, body: str) -> dict[str, str]:
    """A PATH where `name` runs `real` through `body` (a failing dump, as a test double of
    the real program's own failure)."""
    import os

    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    script = d / name
    script.write_text(f"#!/bin/sh\n{body.replace('REAL', real)}\n")
    script.chmod(0o755)
    return {"PATH": f"{d}:{os.environ['PATH']}"}


def test_backup_under_load_restores_one_instant(repo: Coffre, postgres: Any, officine: str) -> None:
    env = postgres.env()
    load = postgres.pgbench_popen("-c", "2", "-T", "300", dbname=officine)
    try:
        while int(postgres.psql("SELECT count(*) FROM pgbench_history", officine)) < 50:
            assert load.poll() is None, load.stderr.read() if load.stderr else ""
        before = int(postgres.psql("SELECT count(*) FROM pgbench_history", officine))
        proc = repo.popen("backup", "--postgres", postgres.dsn(officine), "--json", env=env)
        seen: list[str] = []
        while proc.poll() is None:  # what any user of the machine sees of the backup
            seen.append(subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout)
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        after = int(postgres.psql("SELECT count(*) FROM pgbench_history", officine))
    finally:
        load.kill()
        load.wait()
    assert after > before  # the load went on during the backup
    assert any("pg_dump" in s for s in seen)
    assert not any(DB_PASSWORD in s for s in seen)
    assert DB_PASSWORD.encode() not in out + err
    snap = json_documents(out.decode())[-1]["snapshot"]
    record = json.loads(repo.ok("snapshots", "--json").out)[0]
    assert record["paths"] == [f"@databases/postgres-{officine}.dump"]

    copy = f"copie_{uuid.uuid4().hex[:8]}"
    repo.ok("restore-db", snap, "--postgres", postgres.dsn(copy), env=env)
    history = consistent(postgres, copy)
    assert before <= history <= after
    assert_source_at_one_instant(postgres, officine, copy)

    drill = repo.ok("drill", snap, "--json").json()
    assert drill["ok"] is True
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["pg_amcheck (tables and indexes)"]["ok"]
    assert checks["row counts"]["ok"]
    # The counts recorded at backup time are those of the dump's own instant.
    recorded = json.loads(repo.ok("stats", "--databases", "--json").out)["databases"][0]["sizes"][0]
    assert recorded["rows"] == 500_000 + 5 + 50 + history

    # Not over a database in use, unless asked.
    res = repo("restore-db", snap, "--postgres", postgres.dsn(copy), env=env)
    assert res.code == 1 and "is not empty" in res.err, res
    postgres.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1", copy)
    repo.ok("restore-db", snap, "--postgres", postgres.dsn(copy), "--force", env=env)
    assert consistent(postgres, copy) == history


def test_a_day_of_load_adds_little(repo: Coffre, postgres: Any, officine: str) -> None:
    env = postgres.env()
    first = repo.ok("backup", "--postgres", postgres.dsn(officine), "--json", env=env).json()
    postgres.pgbench("-t", "500", "-c", "1", dbname=officine)
    second = repo.ok("backup", "--postgres", postgres.dsn(officine), "--json", env=env).json()
    # Updated rows move in the heap, so most pieces of the dump change a little: they are
    # stored as deltas against yesterday's.
    assert second["summary"]["deltas_added"] > 0
    assert second["summary"]["data_added_stored"] < first["summary"]["data_added_stored"] / 3


def test_wrong_password_server_down_no_snapshot(repo: Coffre, postgres: Any, officine: str) -> None:
    res = repo("backup", "--postgres", postgres.dsn(officine), env={"PGPASSWORD": "wrong-pw-1234"})
    assert res.code == 1 and "password authentication failed" in res.err, res
    assert "wrong-pw-1234" not in res.out + res.err
    down = f"host=127.0.0.1 port={free_port()} user=coffre dbname=officine"
    res = repo("backup", "--postgres", down, env=postgres.env())
    assert res.code == 1 and "Connection refused" in res.err, res
    res = repo("backup", "--postgres", "host=127.0.0.1 port=nope", env=postgres.env())
    assert res.code == 1, res
    # A password in the connection string would be on coffre's own command line: refused.
    for dsn in (f"postgresql://coffre:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{officine}",
                f"{postgres.dsn(officine)} password={DB_PASSWORD}"):
        res = repo("backup", "--postgres", dsn)
        assert res.code == 2 and "PGPASSWORD" in res.err, res
        assert DB_PASSWORD not in res.out + res.err
    assert snapshot_ids(repo) == []


def test_killed_dump_leaves_no_snapshot(repo: Coffre, postgres: Any, officine: str, tmp_path: Path) -> None:
    real = find_program("pg_dump", extra_dirs=bin_dirs())
    killed = wrapper(tmp_path, "pg_dump", real, 'REAL "$@" | head -c 300000\nkill -KILL $$')
    env = {**postgres.env(), **killed}
    res = repo("backup", "--postgres", postgres.dsn(officine), env=env)
    assert res.code == 1, res
    assert "pg_dump" in res.err and "killed by signal 9" in res.err and "no snapshot was written" in res.err
    # The dump's own error reaches the user.
    failing = wrapper(tmp_path, "pg_dump", real, 'echo "pg_dump: error: disk quota" >&2\nexit 1')
    env = {**postgres.env(), **failing}
    res = repo("backup", "--postgres", postgres.dsn(officine), env=env)
    assert res.code == 1 and "pg_dump: error: disk quota" in res.err, res
    assert snapshot_ids(repo) == []
    repo.ok("check", "--read-data")
    repo.ok("backup", "--postgres", postgres.dsn(officine), env=postgres.env())
    assert len(snapshot_ids(repo)) == 1


def test_physical_cluster_backup_under_load(repo: Coffre, postgres: Any, officine: str) -> None:
    """--postgres-cluster: pg_basebackup's stream while pgbench writes; the drill verifies it
    against its manifest and checks it in a throwaway server; restored into a data folder, a
    server starts on it and the balances agree."""
    from coffre.sources.databases.command import service_account
    from coffre.sources.databases.pgdrill import start_server, stop_server
    from coffre.sources.databases.throwaway import DrillFolder

    cluster = f"host=127.0.0.1 port={postgres.port} user=coffre"
    # As on Debian, where the configuration lives in /etc: the copy has no postgresql.conf.
    conf = postgres.dir / "data" / "postgresql.conf"
    conf.rename(conf.with_suffix(".aside"))
    load = postgres.pgbench_popen("-c", "2", "-T", "300", dbname=officine)
    try:
        while int(postgres.psql("SELECT count(*) FROM pgbench_history", officine)) < 50:
            assert load.poll() is None
        res = repo.ok("backup", "--postgres-cluster", cluster, "--json", env=postgres.env())
    finally:
        load.kill()
        load.wait()
        conf.with_suffix(".aside").rename(conf)
    [record] = res.json()["databases"]
    assert record["engine"] == "postgres-cluster" and record["format"].startswith("pg_basebackup")
    drill = repo.ok("drill", "--json").json()
    assert drill["ok"] is True, drill
    names = [c["name"] for c in drill["databases"][0]["checks"]]
    assert any(n.startswith("pg_verifybackup") for n in names)
    assert any(n.startswith("pg_amcheck") for n in names)
    assert officine in drill["databases"][0]["checks"][-1]["detail"]

    account = service_account("postgres")
    assert account is not None
    folder = DrillFolder("coffre-test-pgdata-", "/tmp", account)  # reachable by postgres
    data = Path(folder.path("data"))
    try:
        data.mkdir()
        (data / "keep").write_text("an existing data folder")
        res = repo("restore-db", "latest", "--pgdata", str(data))
        assert res.code == 1 and "never overwritten" in res.err, res
        (data / "keep").unlink()
        repo.ok("restore-db", "latest", "--pgdata", str(data))
        (data / "postgresql.conf").write_text("")
        sockets = folder.owned("run")
        server = start_server(str(data), sockets, folder)
        try:
            sums = subprocess.run(["psql", "-X", "-A", "-t", "-h", sockets, "-p", "5432", "-U", "coffre",
                                   "-d", officine, "-c", INVARIANT], capture_output=True, text=True,
                                  check=True)
            assert len(set(sums.stdout.strip().split("|"))) == 1, sums.stdout
        finally:
            stop_server(server)
    finally:
        folder.remove()
