"""The real agent process, end to end: a local repository, a rotating disk set (two folders
standing for disks: one plugged in, then swapped), a copy to S3 on SeaweedFS, a live SQLite
database, alerts to a real SMTP server and heartbeat pings to a real HTTP receiver.

The schedule is shortened through the configuration (`every`); the test waits for events
(runs recorded, mails received), never for a length of time."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from alert_servers import SMTP_PASSWORD, SMTP_USER, HttpReceiver, SmtpSink
from coffre.agent.records import RunRecord
from coffre.agent.status import StatusStore, store_path

from conftest import Coffre

TIMEOUT = 180.0


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = TIMEOUT,
             agent: subprocess.Popen[bytes] | None = None) -> Any:
    """Poll for an event (a run recorded, a mail received), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if agent is not None and agent.poll() is not None:
            raise AssertionError(f"the agent ended (status {agent.returncode}) while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _runs(state: Path) -> list[RunRecord]:
    path = store_path(str(state))
    if not path.exists():
        return []
    with StatusStore(path) as store:
        return store.runs(job="officine")


def _finished(state: Path, after: int, outcome: str | None = None) -> list[RunRecord]:
    done = [r for r in _runs(state)[after:] if r.outcome != "running"]
    return [r for r in done if outcome is None or r.outcome == outcome]


def _children(pid: int) -> list[str]:
    """The command lines of a process's children (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


@contextmanager
def _job_lock(state: Path) -> Iterator[None]:
    """Hold the job's lock (waiting for a run in progress to end), as `coffre run` would."""
    fd = os.open(state / "locks" / "job-officine.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _init(coffre: Coffre, url: str) -> str:
    coffre.ok("init", "--repo", url, repo=False, env={"COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
    return url


def _repo_id(folder: Path) -> str:
    return str(json.loads((folder / "config").read_text())["id"])


@pytest.fixture
def smtp(tmp_path: Path) -> Any:
    with SmtpSink(tmp_path / "smtp") as sink:
        yield sink


@pytest.fixture
def pings() -> Any:
    with HttpReceiver() as receiver:
        yield receiver


def test_the_agent_runs_its_jobs_alerts_in_french_and_recovers(
        tmp_path: Path, coffre: Coffre, s3_env: dict[str, str], seaweedfs: Any, smtp: SmtpSink,
        pings: HttpReceiver) -> None:
    coffre.env.update(s3_env)
    docs = tmp_path / "officine" / "documents"
    docs.mkdir(parents=True)
    for i in range(20):
        (docs / f"ordonnance-{i:03d}.pdf").write_bytes(os.urandom(20_000))
    base = tmp_path / "officine" / "base.sqlite"
    with sqlite3.connect(base) as db:
        db.execute("create table ventes(id integer primary key, produit text)")
        db.executemany("insert into ventes(produit) values (?)", [(f"p{i}",) for i in range(2000)])
    nas = tmp_path / "nas"
    _init(coffre, str(nas))
    s3_url = _init(coffre, seaweedfs.url("agent-e2e", f"t{os.getpid()}-{time.time_ns()}"))
    mounts, shelf = tmp_path / "media", tmp_path / "shelf"
    shelf.mkdir()
    for name in ("A", "B"):
        _init(coffre, str(mounts / f"COFFRE-{name}" / "coffre"))
    ids = {n: _repo_id(mounts / f"COFFRE-{n}" / "coffre") for n in ("A", "B")}
    (mounts / "COFFRE-B").rename(shelf / "COFFRE-B")  # B on the shelf, A plugged in
    smtp_password = tmp_path / "smtp-password"
    smtp_password.write_text(SMTP_PASSWORD + "\n")
    smtp_password.chmod(0o600)
    state = tmp_path / "agent-state"
    config = tmp_path / "coffre.toml"
    config.write_text(f"""
[agent]
state_dir = "{state}"
language = "fr"

[repositories.nas]
url = "{nas}"
password_file = "{coffre.pwfile}"

[repositories.horsite]
url = "{s3_url}"
password_file = "{coffre.pwfile}"

[media_sets.disques]
search = ["{mounts}"]
password_file = "{coffre.pwfile}"

[media_sets.disques.disks]
A = "{ids['A']}"
B = "{ids['B']}"

[jobs.officine]
paths = ["{docs}"]
sqlite = ["{base}"]
repository = "nas"
copies = ["disques", "horsite"]
retries = 1
retry_pause = "1s"

[jobs.officine.schedule]
times = []
every = "2s"

[jobs.officine.retention]
keep_last = 20

[jobs.officine.verification]
check_subset = "20%"
drill_every = "30d"

[alerts.email]
server = "127.0.0.1"
port = {smtp.port}
security = "starttls"
ca_file = "{smtp.ca_file}"
username = "{SMTP_USER}"
password_file = "{smtp_password}"
sender = "coffre@pharmacie.example"
to = ["pharmacien@pharmacie.example"]
provider = ["support@prestataire.example"]

[alerts.heartbeat]
url = "{pings.url}/ping/officine"
""")
    env = {**coffre.env, **s3_env, "COFFRE_STORAGE_RETRIES": "1"}
    env.pop("LANG", None)
    check = subprocess.run([sys.executable, "-m", "coffre", "config", "check", "--config", str(config)],
                           capture_output=True, env=env, check=False)
    assert check.returncode == 0, check.stderr.decode()
    agent_log = tmp_path / "agent.log"
    with open(agent_log, "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "coffre", "agent", "--config", str(config)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _scenario(agent, state, config, env, coffre, nas, mounts, shelf, ids, docs, smtp, pings, s3_url)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        print(agent_log.read_text(errors="replace")[-6000:])


def _status(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coffre", "status", "--config", str(config)],
                          capture_output=True, text=True, env=env, check=False)


def _scenario(agent: subprocess.Popen[bytes], state: Path, config: Path, env: dict[str, str],
              coffre: Coffre, nas: Path, mounts: Path, shelf: Path, ids: dict[str, str], docs: Path,
              smtp: SmtpSink, pings: HttpReceiver, s3_url: str) -> None:
    # 1. The first run: backup, copies to disk A and to S3, verification, drill.
    first = wait_for("a first good run", lambda: _finished(state, 0, "ok"), agent=agent)[0]
    steps = [s.name for s in first.steps]
    assert {"backup", "copy:disques", "against:disques", "copy:horsite", "against:horsite",
            "check", "drill", "stats"} <= set(steps), steps
    assert first.snapshot and first.drill and first.drill["ok"]
    assert first.db_sizes
    listed = coffre.ok("snapshots", "--json", "--repo", s3_url, repo=False,
                       env={**env, "COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
    assert json.loads(listed.out), "the copy is on S3"
    paths = [r.path for r in pings.received()]
    assert "/ping/officine/start" in paths and "/ping/officine" in paths

    # 2. Disk A goes on the shelf, disk B is plugged in: the next run writes to B. The swap
    # happens between two runs: the test holds the job's lock as `coffre run` would (the agent
    # then does not start the job), which waits for the run in progress to end.
    with _job_lock(state):
        (mounts / "COFFRE-A").rename(shelf / "COFFRE-A")
        (shelf / "COFFRE-B").rename(mounts / "COFFRE-B")
        count = len(_runs(state))
    on_b = wait_for("a run on disk B", lambda: [r for r in _finished(state, count, "ok")], agent=agent)[0]
    copies = [s for s in on_b.steps if s.name == "copy:disques"]
    assert copies and copies[0].ok
    with StatusStore(store_path(str(state))) as store:
        assert {s.disk_name for s in store.sightings("disques")} == {"A", "B"}

    # 3. The NAS goes away: the job fails, the pharmacist gets a mail in French.
    assert not smtp.messages()
    with _job_lock(state):
        nas.rename(nas.with_name("nas-debranche"))
        count = len(_runs(state))
    failed = wait_for("a failed run", lambda: _finished(state, count, "failed"), agent=agent)[0]
    assert failed.error
    mail = wait_for("the alert mail", lambda: smtp.messages(), agent=agent)[0]
    assert mail.rcpt_tos == ["pharmacien@pharmacie.example"]
    assert "officine" in mail.message["Subject"]
    assert "échec" in (mail.message["Subject"] + mail.body).lower()
    assert SMTP_PASSWORD.encode() not in mail.raw
    assert coffre.pwfile.read_text().strip().encode() not in mail.raw
    assert mail.login == SMTP_USER
    wait_for("a fail ping", lambda: "/ping/officine/fail" in [r.path for r in pings.received()], agent=agent)
    red = _status(config, env)
    assert red.returncode != 0, red.stdout
    assert "en échec" in red.stdout, red.stdout

    # 4. The NAS is back: the next run succeeds, the "back to normal" mail arrives, all green.
    with _job_lock(state):
        nas.with_name("nas-debranche").rename(nas)
        count = len(_runs(state))
    wait_for("a good run again", lambda: _finished(state, count, "ok"), agent=agent)
    wait_for("the back-to-normal mail", lambda: len(smtp.messages()) >= 2, agent=agent)
    back = smtp.messages()[-1]
    assert back.rcpt_tos == ["pharmacien@pharmacie.example"]
    assert back.message["Subject"] != mail.message["Subject"]
    green = _status(config, env)
    assert green.returncode == 0, green.stdout
    assert len(smtp.messages()) == 2, "no storm: one mail for the problem, one for its end"

    # 5. SIGTERM in the middle of a backup: no damage, the run recorded as interrupted.
    pw = {"COFFRE_PASSWORD_FILE": str(coffre.pwfile)}
    with _job_lock(state):  # no run between counting the snapshots and the big file
        snapshots_before = len(json.loads(coffre.ok("snapshots", "--json", "--repo", str(nas),
                                                    repo=False, env=pw).out))
        with open(docs / "gros-scan.tif", "wb") as f:
            for _ in range(100):
                f.write(os.urandom(4 << 20))
    wait_for("a backup in progress", lambda: any(" backup " in c for c in _children(agent.pid)),
             timeout=60, agent=agent)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=120) == 0
    last = _runs(state)[-1]
    assert last.outcome == "interrupted", last
    coffre.ok("check", "--repo", str(nas), repo=False, env=pw)
    after = json.loads(coffre.ok("snapshots", "--json", "--repo", str(nas), repo=False, env=pw).out)
    assert len(after) == snapshots_before, "an interrupted backup leaves no snapshot"


def test_real_time_backups_follow_the_files_and_a_broken_job_stops_nothing(
        tmp_path: Path, coffre: Coffre) -> None:
    docs = tmp_path / "scans"
    docs.mkdir()
    (docs / "ordonnance-001.pdf").write_bytes(os.urandom(10_000))
    nas = tmp_path / "nas"
    _init(coffre, str(nas))
    _init(coffre, str(tmp_path / "autre"))  # its password command will fail
    state = tmp_path / "agent-state"
    config = tmp_path / "coffre.toml"
    good = f"""
[agent]
state_dir = "{state}"
language = "en"

[repositories.nas]
url = "{nas}"
password_file = "{coffre.pwfile}"

[repositories.coffre-fort]
url = "{tmp_path / 'autre'}"
password_command = "false"

[jobs.scans]
paths = ["{docs}"]
repository = "nas"

[jobs.scans.schedule]
times = []
realtime = true
debounce = "1s"
min_interval = "3s"

[jobs.scans.verification]
check_subset = false

[jobs.casse]
paths = ["{docs}"]
repository = "coffre-fort"
retries = 0

[jobs.casse.schedule]
times = []
"""
    config.write_text(good)
    env = {**coffre.env}
    agent_log = tmp_path / "agent.log"
    with open(agent_log, "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "coffre", "agent", "--config", str(config)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def runs(job: str, outcome: str | None = None) -> list[RunRecord]:
            path = store_path(str(state))
            if not path.exists():
                return []
            with StatusStore(path) as store:
                found = store.runs(job=job)
            return [r for r in found if r.outcome != "running" and outcome in (None, r.outcome)]

        # Both jobs run at start (they never ran); the broken one fails with a clear reason.
        broken = wait_for("the broken job's run", lambda: runs("casse"), agent=agent)[0]
        assert broken.outcome == "failed" and broken.error and "password" in broken.error.lower()
        first = wait_for("the first real-time backup", lambda: runs("scans", "ok"), agent=agent)
        # A file written now is in a snapshot within debounce + min_interval (+ the run).
        written = time.time()
        (docs / "ordonnance-002.pdf").write_bytes(os.urandom(10_000))
        later = wait_for("a backup triggered by the change",
                         lambda: [r for r in runs("scans", "ok")[len(first):] if r.trigger == "realtime"],
                         agent=agent)[0]
        listing = coffre.ok("ls", later.snapshot or "-", "--repo", str(nas), repo=False,
                            env={"COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
        assert "ordonnance-002.pdf" in listing.out
        latency = (later.ended or 0) - written
        print(f"real time: written to in a snapshot in {latency:.1f} s (debounce 1 s, min_interval 3 s)")
        # Within the configured delay (debounce 1 s + min_interval 3 s), with room for a loaded machine.
        assert later.started - written < 1 + 3 + 30
        # A broken configuration on SIGHUP is refused; the agent goes on with the one in force.
        config.write_text(good + "\n[jobs.scans.schedule.oops]\n")
        agent.send_signal(signal.SIGHUP)
        wait_for("the reload refused", lambda: b"not reloaded" in agent_log.read_bytes(), agent=agent)
        (docs / "ordonnance-003.pdf").write_bytes(os.urandom(10_000))
        count = len(runs("scans", "ok"))
        wait_for("a backup after the refused reload", lambda: len(runs("scans", "ok")) > count, agent=agent)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        print(agent_log.read_text(errors="replace")[-4000:])
