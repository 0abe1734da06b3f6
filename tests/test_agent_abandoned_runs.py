"""A run left "running" in the status by processes that died (`coffre run` killed in a
terminal, the machine stopped) is recorded as interrupted, and never while one of them lives.
A run and its steps hold its job's lock (agent/locks.py) from before its row is written until
after its end is: a job whose lock is free has no process of a run left. Real `coffre run`,
`coffre backup` and `coffre agent` processes; the job's backup waits for its password until the
test lets it go on."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from coffre.agent.config import load_config
from coffre.agent.records import RunRecord
from coffre.agent.scheduler import Runner, open_store
from coffre.agent.status import ABANDONED_ERROR
from test_agent_cli import setup_site, state_dir

from conftest import Coffre, snapshot_ids, until

SETTLED_ONE = "1 run left unfinished by a stopped process recorded as interrupted"


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


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _job_lock_free(tmp_path: Path) -> bool:
    lock = state_dir(tmp_path) / "locks" / "job-officine.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@contextmanager
def _terminal_run(config: Path, coffre: Coffre) -> Iterator[subprocess.Popen[bytes]]:
    """`coffre run officine` as typed in a terminal, once its run is recorded as going on
    (its backup step waiting for the password). Whatever is left of it is killed at the end."""
    before = len(_runs(config))
    proc = subprocess.Popen(coffre.argv("run", "officine", "--config", str(config), repo=False),
                            env={**coffre.env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        until("the run recorded as going on",
              lambda: len(runs := _runs(config)) > before and runs[-1].outcome == "running")
        until("its backup step", lambda: _descendants(proc.pid))
        yield proc
    finally:
        if proc.returncode is None:  # else its pid may be another process's by now
            _kill_tree(proc)


def _exit_status(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """`coffre run`'s exit status; if it does not end, an AssertionError that says what its
    processes were doing: each one's state and kernel wait (/proc), and every thread's Python
    stack of `coffre run` (faulthandler, on SIGABRT: _terminal_run sets PYTHONFAULTHANDLER).
    A run that hangs once in a while under load is then told, not only timed out."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        seen = []
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                continue
            seen.append(f"{pid} [{state} {wchan}] {command[:300]}")
        os.kill(proc.pid, signal.SIGABRT)
        proc.wait(30)
        said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise AssertionError("coffre run did not end:\n" + "\n".join(seen) + "\n" + said[-12000:]) from None


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process and every process it started (its steps run in sessions of their
    own): the machine's power cut, as far as this run goes."""
    tree = [proc.pid, *_descendants(proc.pid)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    until("the run's processes gone", lambda: not any(map(_alive, tree)))


def test_a_run_killed_with_its_steps_is_settled_once_they_are_gone_and_by_the_next_run(
        tmp_path: Path, coffre: Coffre) -> None:
    """What the agent does at its start and every minute, and what a job's next run does."""
    config, go = _site(tmp_path, coffre)
    logged: list[str] = []
    with open_store(load_config(str(config))) as store:
        runner = Runner(load_config(str(config)), store, logged.append)
        with _terminal_run(config, coffre) as terminal:
            assert runner.settle_abandoned() == 0  # its processes live: its run is left alone
            assert [r.outcome for r in _runs(config)] == ["running"]
            _kill_tree(terminal)
        assert runner.settle_abandoned() == 1
        [left] = _runs(config)
        assert (left.outcome, left.error) == ("interrupted", ABANDONED_ERROR)
        assert left.ended is not None and left.ended >= left.started
        assert logged == [SETTLED_ONE]
    # Killed again, nothing looks at it until the job runs again: that run holds the job's lock
    # and settles what a dead run left, before its own.
    with _terminal_run(config, coffre) as terminal:
        _kill_tree(terminal)
    assert [r.outcome for r in _runs(config)] == ["interrupted", "running"]
    go.touch()
    done = coffre("run", "officine", "--config", str(config), repo=False)
    assert done.code == 0, done
    assert SETTLED_ONE in done.err, done
    runs = _runs(config)
    assert [(r.outcome, r.error) for r in runs] == [("interrupted", ABANDONED_ERROR)] * 2 + [("ok", None)]
    status = coffre("status", "--json", "--config", str(config), repo=False)
    assert status.code == 0, status
    officine = next(j for j in json.loads(status.out)["jobs"] if j["job"] == "officine")
    assert officine["light"] == "ok", officine


def test_a_run_whose_command_alone_was_killed_is_left_to_its_step(tmp_path: Path, coffre: Coffre) -> None:
    """`coffre run` killed, its backup step still at work (it was started in a session of its
    own): the step keeps the job's lock, so the run is not called finished while it backs up,
    and the job is not run a second time beside it. Once the step ends, the run is settled."""
    config, go = _site(tmp_path, coffre)
    with open_store(load_config(str(config))) as store:
        runner = Runner(load_config(str(config)), store, lambda line: None)
        with _terminal_run(config, coffre) as terminal:
            steps = _descendants(terminal.pid)
            try:
                terminal.kill()
                terminal.wait()
                assert any(map(_alive, steps))
                assert runner.settle_abandoned() == 0
                assert [r.outcome for r in _runs(config)] == ["running"]
                again = coffre("run", "officine", "--config", str(config), repo=False, timeout=60)
                assert again.code == 11, again
                # The log names who keeps the job from running: the step, not the dead command.
                held = re.search(r"job officine: already running, its lock held by process (\d+) "
                                 r"\([^,()]+, started [^()]+\); not started again", again.err)
                assert held and int(held[1]) in steps and int(held[1]) != terminal.pid, again.err
                go.touch()  # the step goes on to the end of its backup
                until("the step's end", lambda: _job_lock_free(tmp_path))
            finally:
                go.touch()  # a password command the step started after `steps` was read ends too
                for pid in filter(_alive, steps):
                    os.kill(pid, signal.SIGKILL)
        assert len(snapshot_ids(coffre)) == 1
        assert runner.settle_abandoned() == 1
        assert [(r.outcome, r.error) for r in _runs(config)] == [("interrupted", ABANDONED_ERROR)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["ctrl-c", "stop", "terminal-closed"])
def test_a_run_stopped_by_a_signal_stops_its_step_and_says_so(tmp_path: Path, coffre: Coffre,
                                                              sig: signal.Signals) -> None:
    """Ctrl-C, a stop or a closed terminal reach `coffre run` only (its step has a session of
    its own): it stops its step as the agent does, records the run as interrupted and exits
    130, leaving no process behind. It used to exit at once, its step backing up on its own
    and its run "running" in the status."""
    config, _go = _site(tmp_path, coffre)
    with _terminal_run(config, coffre) as terminal:
        steps = _descendants(terminal.pid)
        terminal.send_signal(sig)
        status = _exit_status(terminal)
        assert status == 130, terminal.stderr.read() if terminal.stderr else ""
        assert _job_lock_free(tmp_path)  # its step ended before it did
        until("its step's processes gone", lambda: not any(map(_alive, steps)))
    [stopped] = _runs(config)
    assert stopped.outcome == "interrupted" and stopped.error is not None
    assert "stopped before its end" in stopped.error
    assert snapshot_ids(coffre) == []


def test_ctrl_c_while_waiting_for_another_jobs_repository_ends_the_command(tmp_path: Path,
                                                                           coffre: Coffre) -> None:
    """`coffre run` waits for the repository another job uses (its lock held here): Ctrl-C
    ends the wait and the command (130) before anything is recorded or started."""
    config, _go = _site(tmp_path, coffre)
    lock = state_dir(tmp_path) / "locks" / "repository-local.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen(coffre.argv("run", "officine", "--config", str(config), repo=False),
                                env=coffre.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            until("its job's lock taken", lambda: not _job_lock_free(tmp_path))
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 130, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.returncode is None:
                _kill_tree(proc)
    assert _runs(config) == [] and _job_lock_free(tmp_path)


def test_a_closed_terminal_is_ignored_under_nohup_and_loses_only_log_lines(tmp_path: Path,
                                                                          coffre: Coffre) -> None:
    """Started under `nohup` (SIGHUP ignored), a run goes on when its terminal closes; and
    lines it can no longer write (its terminal gone: here its standard error closed) never
    turn its end into a failure."""
    config, go = _site(tmp_path, coffre)
    argv = ["nohup", *coffre.argv("run", "officine", "--config", str(config), repo=False)]
    proc = subprocess.Popen(argv, env=coffre.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        until("the run recorded as going on", lambda: [r.outcome for r in _runs(config)] == ["running"])
        proc.send_signal(signal.SIGHUP)
        assert proc.stderr is not None
        proc.stderr.close()  # every line written from now on fails
        go.touch()
        proc.wait(120)
    finally:
        if proc.returncode is None:
            _kill_tree(proc)
    [run] = _runs(config)
    assert (run.outcome, run.error) == ("ok", None), run
    assert len(snapshot_ids(coffre)) == 1


def test_an_agent_starting_leaves_a_terminal_run_going_on_alone(tmp_path: Path, coffre: Coffre) -> None:
    """The agent used to record every run still "running" as interrupted at its start, a
    `coffre run` going on in a terminal included (its end then overwrote it). Now only a run
    whose processes are gone: here, once the terminal's were killed, at the next start."""
    config, _go = _site(tmp_path, coffre)
    log = tmp_path / "agent.log"
    with open_store(load_config(str(config))) as store:  # both jobs ran last night: none is due
        for job in ("officine", "compta"):
            night = time.time() - 3600
            run_id = store.start_run(job, "local", "schedule", night, night)
            store.finish_run(run_id, RunRecord(job, "local", "schedule", night, night + 60, "ok", slot=night))

    def agent_run(until_log: str) -> str:
        """`coffre agent` from its start to `until_log` in its log, then stopped; its log."""
        with open(log, "wb") as out:
            agent = subprocess.Popen(coffre.argv("agent", "--config", str(config), repo=False),
                                     env=coffre.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            until(until_log, lambda: until_log in log.read_text() or agent.poll() is not None)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0 and until_log in log.read_text(), log.read_text()
        return log.read_text()

    with _terminal_run(config, coffre) as terminal:
        first = agent_run("agent started")
        assert "left unfinished" not in first, first
        assert [r.outcome for r in _runs(config)] == ["running"]
        _kill_tree(terminal)
    second = agent_run("agent started")
    assert SETTLED_ONE in second, second
    [left] = _runs(config)
    assert (left.outcome, left.error) == ("interrupted", ABANDONED_ERROR)
