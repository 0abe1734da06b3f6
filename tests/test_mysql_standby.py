"""The warm standby MariaDB database against a real server writing binary logs: `coffre wal
mysql` captures, `coffre wal ship` stores, `coffre standby mysql-*` restores and follows into a
second server (as on the pharmacy's spare machine); compared with the rows the test's writer
committed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.continuity import mysql_standby
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from dbservers import DB_PASSWORD, MariaDBServer
from test_mariadb_continuity import Logging, Writer, ids, logging_server, ship_all, stored

from conftest import Coffre

__all__ = ["logging_server"]  # the fixture, used by name


@pytest.fixture
def spare() -> Iterator[MariaDBServer]:
    """The standby's own server (no binary log)."""
    server = MariaDBServer()
    try:
        yield server
    finally:
        server.stop()


def prefix(rows: set[int]) -> int:
    """How many rows, when they are 1..n (the writer commits them in that order)."""
    assert rows == set(range(1, len(rows) + 1)), sorted(set(range(1, max(rows, default=0) + 1)) - rows)[:10]
    return len(rows)


def status(repo: Coffre, state: Path) -> tuple[int, dict[str, object]]:
    res = repo("standby", "mysql-status", "--state", str(state), "--json", repo=False)
    return res.code, json.loads(res.out)


def test_the_standby_follows_a_prefix_of_the_commits_and_promotes_with_every_row(
        repo: Coffre, logging_server: Logging, spare: MariaDBServer, tmp_path: Path) -> None:
    server, env = logging_server.server, logging_server.env()
    state = tmp_path / "standby.json"
    standby = spare.dsn("standby")
    logging_server.start_capture(repo)
    with Writer(server, pause=0.002) as writer:  # a busy counter, which a pass can catch up with
        writer.wait_for(100)
        repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
        writer.wait_for(len(writer.log) + 100)
        repo.ok("wal", "ship", "--spool", str(logging_server.spool))
        res = repo.ok("standby", "mysql-init", "--dsn", standby, "--state", str(state), env=env)
        assert DB_PASSWORD not in res.out + res.err
        assert state.stat().st_mode & 0o777 == 0o600
        seen = [prefix(ids(spare, "standby"))]
        assert seen[0] > 100
        for round_ in range(4):
            writer.wait_for(len(writer.log) + 100)
            if round_ == 1:
                server.sql("FLUSH BINARY LOGS")  # the log goes on in a new file
            repo.ok("wal", "ship", "--spool", str(logging_server.spool))
            res = repo.ok("standby", "mysql-follow", "--state", str(state), env=env)
            committed = len(writer.log)
            seen.append(prefix(ids(spare, "standby")))
            assert seen[-2] <= seen[-1] <= committed, seen
        assert seen[-1] > seen[0] + 300, seen
    log = writer.log
    logging_server.wait_caught_up()
    logging_server.stop_capture()
    ship_all(repo, logging_server.spool)
    res = repo.ok("standby", "mysql-follow", "--state", str(state), env=env)
    assert ids(spare, "standby") == {n for n, _, _ in log}
    code, said = status(repo, state)
    assert code == 0 and said["behind_pieces"] == 0 and not said["gap"] and said["newest_ns"], said
    res = repo.ok("standby", "mysql-promote", "--state", str(state), "--json", env=env)
    done = json.loads(res.out)
    assert done["ok"] and "OK" in done["check"] and done["rows"] == len(log), done
    assert "standby" in done["connect"]
    assert ids(spare, "standby") == {n for n, _, _ in log}
    assert spare.sql("SHOW TABLES", "standby").split() == ["ledger"]  # the position table is gone
    assert "OK" in spare.sql("CHECK TABLE standby.ledger")
    res = repo("standby", "mysql-follow", "--state", str(state), env=env)
    assert res.code == 1 and "promoted" in res.err


def test_a_missing_piece_stops_the_standby_there_and_is_reported(repo: Coffre, logging_server: Logging,
                                                                spare: MariaDBServer, tmp_path: Path) -> None:
    server, env = logging_server.server, logging_server.env()
    state = tmp_path / "standby.json"
    logging_server.capture_once(repo)
    repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
    for n in range(1, 4):
        server.sql(f"INSERT INTO officine.ledger VALUES ({n}, 'vente')")
        logging_server.capture_once(repo)
    ship_all(repo, logging_server.spool)
    repo.ok("standby", "mysql-init", "--dsn", spare.dsn("standby"), "--state", str(state), env=env)
    assert ids(spare, "standby") == {1, 2, 3}
    before = {s.object for s in stored(repo)}
    for n in range(4, 8):
        server.sql(f"INSERT INTO officine.ledger VALUES ({n}, 'vente')")
        logging_server.capture_once(repo)
    ship_all(repo, logging_server.spool)
    fresh = sorted((s for s in stored(repo) if s.object not in before and s.header.kind == "log"
                    and s.header.size), key=lambda s: s.header.start)
    assert len(fresh) == 4
    victim = fresh[1]  # the piece that holds row 5
    (Path(repo.repo) / "segments" / victim.object).unlink()
    for _pass in range(2):  # never skipped, however many passes
        res = repo.ok("standby", "mysql-follow", "--state", str(state), env=env)
        assert victim.header.name in res.out + res.err, res
        assert ids(spare, "standby") == {1, 2, 3, 4}
    code, said = status(repo, state)
    assert code == 1 and said["gap"] == victim.header.name and said["late"], said
    assert said["behind_pieces"] == 2, said
    done = json.loads(repo.ok("standby", "mysql-promote", "--state", str(state), "--json", env=env).out)
    assert done["ok"] and done["gap"] == victim.header.name and done["rows"] == 4, done


def test_a_pass_cut_after_its_commits_neither_replays_nor_skips_them(
        repo: Coffre, logging_server: Logging, spare: MariaDBServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after transactions committed but before the state file was written: the next
    pass starts from the place the standby database itself recorded with them."""
    server, env = logging_server.server, logging_server.env()
    state = tmp_path / "standby.json"
    logging_server.capture_once(repo)
    repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
    server.sql("INSERT INTO officine.ledger VALUES (1, 'vente')")
    logging_server.capture_once(repo)
    ship_all(repo, logging_server.spool)
    repo.ok("standby", "mysql-init", "--dsn", spare.dsn("standby"), "--state", str(state), env=env)
    for n in range(2, 6):
        server.sql(f"INSERT INTO officine.ledger VALUES ({n}, 'vente'); UPDATE officine.ledger "
                   f"SET note = CONCAT(note, '+') WHERE id = 1")
        logging_server.capture_once(repo)
    ship_all(repo, logging_server.spool)
    r = Repository.open(LocalBackend(str(repo.repo)), repo.pwfile.read_text().strip())
    saved = state.read_bytes()

    def crash(self: mysql_standby.MysqlStandbyState, path: Path) -> None:
        raise KeyboardInterrupt  # as a kill between the replay and the state file

    with monkeypatch.context() as m:
        m.setenv("MYSQL_PWD", DB_PASSWORD)  # for the standby's account (the tests' root has none)
        m.setattr(mysql_standby.MysqlStandbyState, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            mysql_standby.follow(r, state)
    assert state.read_bytes() == saved  # the state file still says where init left it
    assert ids(spare, "standby") == {1, 2, 3, 4, 5}
    with monkeypatch.context() as m:
        m.setenv("MYSQL_PWD", DB_PASSWORD)
        after = mysql_standby.follow(r, state)  # would fail on row 2's duplicate key if replayed again
    assert not after.error and not after.gap and after.behind_pieces == 0
    assert ids(spare, "standby") == {1, 2, 3, 4, 5}
    assert spare.sql("SELECT note FROM ledger WHERE id = 1", "standby") == "vente++++"
