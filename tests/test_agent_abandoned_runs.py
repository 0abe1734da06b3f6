"""A run left "running" in the status by a process that died (`coffre run` killed in a
terminal, the machine stopped) is recorded as interrupted, and never while its process lives.
Every run holds its job's lock (agent/locks.py) from before its row is written until after its
end is: a job whose lock is free has no run going on. Real `coffre run` and `coffre agent`
processes; the runs are killed with SIGKILL, their whole process tree at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coffre.agent.config import load_config
from coffre.agent.records import RunRecord
from coffre.agent.scheduler import Runner, open_store
from coffre.agent.status import ABANDONED_ERROR
from test_agent_cli import setup_site

from conftest import Coffre, until


def _site(tmp_path: Path, coffre: Coffre) -> tuple[Path, Path]:
    """The job `officine`, whose backup waits for its password until the file `go` exists:
    a run then stays in its backup for as long as the test wants. Returns (config, go)."""
    config = setup_site(tmp_path, coffre)
    go = tmp_path / "go"
    waits = f"sh -c 'until [ -e {go} ]; do sleep 0.05; done; cat {coffre.pwfile}'"
    text = config.read_text()
    assert f'password_file = "{coffre.pwfile}"' in text
    text = text.replace(f'password_file = "{coffre.pwfile}"', f'password_command = "{waits}"')
    config.write_text(text + "\n[jobs.officine.schedule]\ntimes = []\n\n[jobs.compta.schedule]\ntimes = []\n")
    return config, go


def _runs(config: Path) -> list[RunRecord]:
    """Job officine's runs asked by hand (`coffre run`)."""
    with open_store(load_config(str(config))) as store:
        return [r for r in store.runs(job="officine") if r.trigger == "manual"]


@contextmanager
def _terminal_run(config: Path, coffre: Coffre) -> Iterator[subprocess.Popen[bytes]]:
    """`coffre run officine` in a session of its own (killed with all its children), once its
    run is recorded as going on."""
    before = len(_runs(config))
    proc = subprocess.Popen(coffre.argv("run", "officine", "--config", str(config), repo=False),
                            env=coffre.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        until("the run recorded as going on",
               lambda: len(runs := _runs(config)) > before and runs[-1].outcome == "running")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_run_is_settled_once_its_process_is_gone_and_by_the_next_run(
        tmp_path: Path, coffre: Coffre) -> None:
    """What the agent does at its start and every minute, and what a job's next run does."""
    config, go = _site(tmp_path, coffre)
    logged: list[str] = []
    with open_store(load_config(str(config))) as store:
        runner = Runner(load_config(str(config)), store, logged.append)
        with _terminal_run(config, coffre) as terminal:
            assert runner.settle_abandoned() == 0  # its process lives: its run is left alone
            assert [r.outcome for r in _runs(config)] == ["running"]
            _kill(terminal)
        assert runner.settle_abandoned() == 1
        [left] = _runs(config)
        assert (left.outcome, left.error) == ("interrupted", ABANDONED_ERROR)
        assert left.ended is not None and left.ended >= left.started
        assert logged == ["1 run left unfinished by a stopped process recorded as interrupted"]
    # Killed again, nothing looks at it until the job runs again: that run holds the job's lock
    # and settles what a dead run left, before its own.
    with _terminal_run(config, coffre) as terminal:
        _kill(terminal)
    assert [r.outcome for r in _runs(config)] == ["interrupted", "running"]
    go.touch()
    done = coffre("run", "officine", "--config", str(config), repo=False)
    assert done.code == 0, done
    assert "1 run left unfinished by a stopped process recorded as interrupted" in done.err, done
    runs = _runs(config)
    assert [(r.outcome, r.error) for r in runs] == [("interrupted", ABANDONED_ERROR)] * 2 + [("ok", None)]
    status = coffre("status", "--config", str(config), repo=False)
    assert status.code == 0, status  # the last run succeeded: nothing shown as going on


def test_an_agent_starting_leaves_a_terminal_run_going_on_alone(tmp_path: Path, coffre: Coffre) -> None:
    """The agent used to record every run still "running" as interrupted at its start, a
    `coffre run` going on in a terminal included (its end then overwrote it). Now only a run
    whose process is gone: here, once the terminal's run was killed, at the next start."""
    config, _go = _site(tmp_path, coffre)
    log = tmp_path / "agent.log"
    with open_store(load_config(str(config))) as store:  # both jobs ran last night: none is due
        for job in ("officine", "compta"):
            night = time.time() - 3600
            run_id = store.start_run(job, "local", "schedule", night, night)
            store.finish_run(run_id, RunRecord(job, "local", "schedule", night, night + 60, "ok", slot=night))

    def started(agent: subprocess.Popen[bytes], times: int) -> None:
        until("the agent's start", lambda: log.read_text().count("agent started") == times
               or agent.poll() is not None)
        assert agent.poll() is None, log.read_text()

    with _terminal_run(config, coffre) as terminal, open(log, "ab") as out:
        agent = subprocess.Popen(coffre.argv("agent", "--config", str(config), repo=False),
                                 env=coffre.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            started(agent, 1)
            assert [r.outcome for r in _runs(config)] == ["running"]
            assert "left unfinished" not in log.read_text()
            _kill(terminal)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0, log.read_text()
        agent = subprocess.Popen(coffre.argv("agent", "--config", str(config), repo=False),
                                 env=coffre.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            started(agent, 2)
            assert "1 run left unfinished by a stopped process recorded as interrupted" in log.read_text()
            [left] = _runs(config)
            assert (left.outcome, left.error) == ("interrupted", ABANDONED_ERROR)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0, log.read_text()
