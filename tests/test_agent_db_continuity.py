"""The agent runs the SQLite and MariaDB captures and feeds their standbys by itself
(`[continuity.NAME]` with `sqlite`, `mysql`, `standby_sqlite`, `standby_mysql`): a real `coffre
agent` process on a real SQLite database and a real MariaDB server writing binary logs, the
standby set up with `coffre standby sqlite-init|mysql-init` while the agent runs, compared with
the rows committed; `coffre status --json` shows both lines up to date; SIGTERM ends the agent
and its capture threads. A capture that cannot start is reported and alerts after
max_backlog. The tests wait for events, never for a length of time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from coffre.agent import captures
from coffre.agent import continuity as loop
from coffre.agent.config import load_config
from coffre.agent.health import continuity_problems
from coffre.agent.scheduler import open_store
from dbservers import MariaDBServer
from test_agent_e2e import wait_for
from test_mariadb_continuity import Logging, Writer, ids, logging_server
from test_mysql_standby import spare
from test_sqlite_continuity import Pharmacy, pharmacy
from test_sqlite_standby import nothing_beside, prefix

from conftest import Coffre, agent_toml

__all__ = ["logging_server", "pharmacy", "spare"]  # the fixtures, used by name

TIMEOUT = 180.0


def write_config(tmp_path: Path, coffre: Coffre, entries: str) -> Path:
    return agent_toml(tmp_path, coffre.repo, coffre.pwfile, entries)


@contextmanager
def agent(config: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`coffre agent` on `config`; SIGTERM at the end must stop it cleanly (exit 0)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coffre", "agent", "--config", str(config)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(log.read_text(errors="replace")[-4000:])


def status(config: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`coffre status --json`'s continuity lines, by "NAME/ROLE"."""
    done = subprocess.run([sys.executable, "-m", "coffre", "status", "--config", str(config), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode in (0, 1), done.stderr
    return {f"{c['name']}/{c['role']}": c for c in json.loads(done.stdout)["continuity"]}


def shipped(config: Path, env: dict[str, str]) -> bool:
    line = status(config, env).get("officine/capture")
    return line is not None and line["pieces"] > 0


def test_the_agent_captures_a_sqlite_database_and_feeds_its_standby(
        repo: Coffre, pharmacy: Pharmacy, tmp_path: Path) -> None:
    target = tmp_path / "secours" / "caisse.db"
    target.parent.mkdir()
    config = write_config(tmp_path, repo, f"""
[continuity.officine]
repository = "nas"
spool = "{tmp_path / 'spool'}"
sqlite = "{pharmacy.path}"

[continuity.secours]
repository = "nas"
standby_sqlite = "{target}"
""")
    pharmacy.commit(50)
    log = tmp_path / "agent.log"
    with agent(config, repo.env, log) as proc:
        wait_for("the first generation shipped", lambda: shipped(config, repo.env), agent=proc)
        # Set up while the agent runs: until now its standby passes said there was none.
        repo.ok("standby", "sqlite-init", "--database", str(pharmacy.path), "--target", str(target))
        for _ in range(10):
            pharmacy.commit(20)
        final = pharmacy.txid

        def caught_up() -> bool:
            line = status(config, repo.env).get("secours/standby", {})
            return line.get("behind_pieces") == 0 and line.get("error") is None and _has(target, final)

        wait_for(f"the standby to hold transaction {final}", caught_up, agent=proc)
        lines = status(config, repo.env)
        capture, standby = lines["officine/capture"], lines["secours/standby"]
        assert capture["light"] == "ok" and capture["capture_error"] is None and capture["waiting"] == 0
        assert standby["light"] == "ok" and standby["behind_bytes"] == 0 and standby["gap"] == ""
        assert standby["text"].startswith("Standby secours: up to date with the repository")
    said = log.read_text()
    assert f"continuous capture officine: started, follows {pharmacy.path} and ships " in said
    assert f"continuous capture secours: started, feeds the SQLite standby {target} every 1 s" in said
    assert f"standby secours: the SQLite standby {target}: " in said  # not set up at first: said once
    assert "follows again" in said
    assert prefix(target) == final  # every transaction, and the file passes quick_check
    nothing_beside(target)


def _has(target: Path, txid: int) -> bool:
    try:
        return prefix(target) == txid
    except Exception:  # the agent is writing a pass: looked at again
        return False


def test_the_agent_captures_a_mariadb_binary_log_and_feeds_its_standby(
        repo: Coffre, logging_server: Logging, spare: MariaDBServer, tmp_path: Path) -> None:
    server, state = logging_server.server, tmp_path / "standby.json"
    env = {**repo.env, **logging_server.env()}  # the password in MYSQL_PWD, never in the file
    config = write_config(tmp_path, repo, f"""
[continuity.officine]
repository = "nas"
spool = "{logging_server.spool}"
mysql = "{logging_server.server_dsn()}"

[continuity.secours]
repository = "nas"
standby_mysql = "{state}"
""")
    log = tmp_path / "agent.log"
    with agent(config, env, log) as proc:
        with Writer(server, pause=0.002) as before:
            before.wait_for(50)
        wait_for("the binary log shipped", lambda: shipped(config, env), agent=proc)
        repo.ok("backup", "--mysql", logging_server.dsn(), env=env)
        logging_server.wait_caught_up()  # the agent's capture is past the dump's position...
        wait_for("the spool to empty", lambda: not any(  # ... and has shipped it
            p.suffix == ".piece" for p in logging_server.spool.iterdir()), agent=proc)
        repo.ok("standby", "mysql-init", "--dsn", spare.dsn("standby"), "--state", str(state), env=env)
        after = Writer(server, pause=0.002)
        after.next = len(before.log)  # the counter sells on
        with after:
            after.wait_for(250)
        committed = {n for n, _, _ in before.log + after.log}
        assert len(committed) == len(before.log) + len(after.log)

        def caught_up() -> bool:
            line = status(config, env).get("secours/standby", {})
            return line.get("behind_pieces") == 0 and ids(spare, "standby") == committed

        wait_for(f"the standby to hold the {len(committed)} rows", caught_up, agent=proc)
        lines = status(config, env)
        capture, standby = lines["officine/capture"], lines["secours/standby"]
        assert capture["light"] == "ok" and capture["capture_error"] is None
        assert standby["light"] == "ok" and standby["behind_bytes"] == 0
    said = log.read_text()
    assert "continuous capture officine: started, follows the binary log of mysql://coffre@127.0.0.1:" in said
    assert f"feeds the MariaDB standby of {state}" in said
    assert "MYSQL_PWD" not in said and logging_server.env()["MYSQL_PWD"] not in said + config.read_text()


def test_a_capture_that_cannot_start_is_said_alerts_after_max_backlog_and_starts_again(
        repo: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captures, "RETRY_FIRST", 0.05)  # the pauses between starts, not the test's clock
    database = tmp_path / "caisse.db"
    config = load_config(write_config(tmp_path, repo, f"""
[continuity.officine]
repository = "nas"
spool = "{tmp_path / 'spool'}"
sqlite = "{database}"
"""))
    entry, lines = config.continuity["officine"], []
    now = [1_767_225_600.0]
    looped = loop.Entry(entry, config.repositories["nas"], open_store(config), lines.append, lambda: now[0])
    [capture] = looped.captures
    stop = threading.Event()
    thread = threading.Thread(target=capture.run, args=(stop,))
    thread.start()
    try:
        wait_for("the capture's error", lambda: capture.error is not None)
        assert capture.error == f"{database}: no such database file"
        st = looped.pass_once()
        assert st.source_error == capture.error
        assert continuity_problems(config, {"officine": st}, now[0]) == []  # not for max_backlog yet
        now[0] += entry.max_backlog + 1
        st = looped.pass_once()
        [problem] = continuity_problems(config, {"officine": st}, now[0])
        assert problem.kind == "capture_behind" and problem.detail["error"] == capture.error
        Pharmacy(tmp_path).conn.close()  # the database appears (the counter software installed)
        wait_for("the capture to run again", lambda: capture.error is None)
        st = looped.pass_once()
        assert st.source_error is None and continuity_problems(config, {"officine": st}, now[0]) == []
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert sum("no such database file" in line for line in lines) == 1  # said once, not at every start
    assert f"continuous capture officine: the capture of {database} runs again" in lines
    assert any(" begins (first capture) with a copy of " in line for line in lines)
