"""The pharmacy's page in headless Chromium, served by a real `coffre agent` process over a real
local repository: log in with the repository's password, press « Sauvegarder maintenant » and
watch the backup finish, then make the destination unreachable, run again, and see the light
turn red with the reason in plain French. Screenshots of the status page (desktop and a 390 px
phone), the progress page, the history and the plots are saved under the test's folder.

Without a browser (the forms over HTTP): a request lost when the agent restarts before its
run starts is said so by the new agent's page, whose button then runs the backup.

The job has no schedule: the agent runs it once when it starts (it never ran), then only
when the page asks.
The test waits for events (an element, a line in the log), never for a length of time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from server_support import free_port
from web_restore_support import csrf_of

from conftest import Coffre

XSS = "<script>alert(1)</script>"
CONTACT = "Informatique Dupont, 01 23 45 67 89"


def wait_for(what: str, predicate: Callable[[], Any], agent: subprocess.Popen[bytes], log: Path,
             timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if agent.poll() is not None:
            raise AssertionError(f"the agent ended while waiting for {what}:\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")


def write_config(tmp_path: Path, coffre: Coffre, nas: Path, docs: Path, listen: str) -> Path:
    config = tmp_path / "coffre.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
language = "fr"

[repositories.nas]
url = "{nas}"
password_file = "{coffre.pwfile}"

[jobs.officine]
repository = "nas"
paths = ["{docs}"]
retries = 0

[jobs.officine.schedule]
times = []

[jobs.officine.verification]
check_subset = "100%"

[web]
listen = "{listen}"
contact = "{CONTACT}"

# The repository sits on this machine's disk: how full that disk is must not colour the light.
[alerts]
medium_full_share = 1.0
medium_full_days = 0.001
""")
    return config


@contextmanager
def running_agent(config: Path, coffre: Coffre, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**coffre.env}
    env.pop("LANG", None)
    with open(log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "coffre", "agent", "--config", str(config)],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield agent
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()


def _setup(tmp_path: Path, coffre: Coffre) -> tuple[Path, Path]:
    docs = tmp_path / "officine" / "documents"
    docs.mkdir(parents=True)
    for i in range(30):
        (docs / f"ordonnance-{i:03d}.pdf").write_bytes(os.urandom(30_000))
    # The repository's folder name holds markup: its error messages must render as text.
    nas = tmp_path / f"nas {XSS}"
    coffre.ok("init", "--repo", str(nas), repo=False, env={"COFFRE_PASSWORD_FILE": str(coffre.pwfile)})
    return nas, docs


def test_the_pharmacy_page_with_a_real_agent(tmp_path: Path, coffre: Coffre, browser_page: Any,
                                             shots: Any) -> None:
    nas, docs = _setup(tmp_path, coffre)
    port = free_port()
    config = write_config(tmp_path, coffre, nas, docs, f"127.0.0.1:{port}")
    log = tmp_path / "agent.log"
    base = f"http://127.0.0.1:{port}"
    with running_agent(config, coffre, log) as agent:
        wait_for("the page's address in the log", lambda: f"{base}/" in log.read_text(), agent, log)
        # DNS rebinding: a site's own name pointed at 127.0.0.1 is not answered.
        rebound = urllib.request.Request(base + "/login", headers={"Host": f"evil.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 421
        page = browser_page
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # A job that never ran runs when the agent starts.
        wait_for("the first backup", lambda: "job officine: succeeded" in log.read_text(), agent, log,
                 timeout=120)

        # Log in with the repository's password.
        page.goto(base + "/")
        assert page.url.startswith(base + "/login")
        page.fill("#password", "not the password")
        page.click("main button[type=submit]")
        assert "Connexion refusée" in page.inner_text(".flash-error")
        page.fill("#password", coffre.pwfile.read_text().strip())
        page.click("main button[type=submit]")
        page.wait_for_url(base + "/")
        assert page.locator("#light.light-green").count() == 1

        # A new prescription is scanned; run now, and watch it finish (htmx swaps the progress).
        (docs / "ordonnance-nouvelle.pdf").write_bytes(os.urandom(200_000))
        page.click("text=Sauvegarder maintenant — officine")
        page.wait_for_url(re.compile(re.escape(base) + r"/jobs/officine/run\?after="))
        assert "La sauvegarde officine démarre" in page.inner_text(".flash")
        page.wait_for_selector("#progress.progress-done", timeout=120_000)
        done = page.inner_text("#progress")
        assert "réussie" in done and "vérification des données" in done, done
        assert "à la main" in done
        assert re.search(r"lu \d+(,\d+)? (Ko|Mo), envoyé \d+(,\d+)? Ko", done), done  # bytes read, sent
        assert "1 nouveau ou modifié" in done, done
        shots(page, "run-progress-done")
        shots.phone(page, "run-progress-done")

        page.goto(base + "/")
        light = page.inner_text("#light")
        assert re.search(r"Sauvegardes OK — dernière sauvegarde aujourd'hui à \d\d:\d\d, données relues et "
                         r"vérifiées", light), light
        assert page.locator("#light.light-green").count() == 1
        shots(page, "status-green")
        shots.phone(page, "status-green")

        # The destination goes away: the next run fails, the light turns red, in plain French.
        nas.rename(tmp_path / "nas-debranche")
        page.click("text=Sauvegarder maintenant — officine")
        page.wait_for_selector("#progress.progress-done", timeout=120_000)
        assert "en échec" in page.inner_text("#progress")
        shots(page, "run-failed")
        page.goto(base + "/")
        light = page.inner_text("#light")
        assert re.search(r"En échec depuis aujourd'hui à \d\d:\d\d\u00a0: la destination nas est injoignable",
                         light), light
        assert "Vérifiez que nas est allumé et branché" in light and CONTACT in light
        assert page.locator("#light.light-red").count() == 1
        shots(page, "status-red")
        shots.phone(page, "status-red")

        # The history: both runs, the failure's message (holding markup) shown as text.
        page.goto(base + "/history")
        page.click("details.run-failed > summary")
        detail = page.inner_text("details.run-failed")
        assert XSS in detail, detail
        shots(page, "history")
        shots.phone(page, "history")
        page.goto(base + "/plots")
        assert page.locator("svg.plot").count() >= 3
        shots(page, "plots")
        shots.phone(page, "plots")
        assert dialogs == []  # no script from a name or a message ever ran
    assert agent.returncode == 0, log.read_text()


def test_a_taken_port_does_not_stop_the_backups(tmp_path: Path, coffre: Coffre) -> None:
    """The page cannot listen (another program has the port): the agent says so and runs its
    schedule all the same."""
    import socket

    nas, docs = _setup(tmp_path, coffre)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_config(tmp_path, coffre, nas, docs, f"127.0.0.1:{port}")
        log = tmp_path / "agent.log"
        with running_agent(config, coffre, log) as agent:
            wait_for("the page's error", lambda: "the pharmacy's page could not start" in log.read_text(),
                     agent, log)
            assert "backups run all the same" in log.read_text()
            wait_for("a backup all the same", lambda: "job officine: succeeded" in log.read_text(),
                     agent, log, timeout=120)
        assert agent.returncode == 0, log.read_text()


def test_listening_beyond_loopback_needs_tls(tmp_path: Path, coffre: Coffre) -> None:
    nas, docs = _setup(tmp_path, coffre)
    config = write_config(tmp_path, coffre, nas, docs, f"0.0.0.0:{free_port()}")
    done = subprocess.run([sys.executable, "-m", "coffre", "agent", "--config", str(config)],
                          env=coffre.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "web.listen" in done.stderr and "TLS" in done.stderr


def _page_client(base: str, password: str) -> Any:
    """The agent's page over HTTP, logged in (its session cookie kept; redirects not followed)."""
    import httpx2

    page = httpx2.Client(base_url=base, timeout=30)
    logged = page.post("/login", data={"password": password, "csrf": csrf_of(page.get("/login").text)})
    assert logged.status_code == 303, logged.text
    return page


def test_a_request_lost_with_a_restarted_agent_is_said_so(tmp_path: Path, coffre: Coffre) -> None:
    """« Sauvegarder maintenant » pressed, then the agent restarted before the run could start
    (it waited for the repository, which another program held): the page of the new agent says
    the backup did not start and nothing was backed up, stops asking, and its button starts the
    backup, which the page follows to its end. Real agents, real repository, over HTTP."""
    import fcntl

    nas, docs = _setup(tmp_path, coffre)
    port = free_port()
    config = write_config(tmp_path, coffre, nas, docs, f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    password = coffre.pwfile.read_text().strip()
    first_log, second_log = tmp_path / "agent-1.log", tmp_path / "agent-2.log"
    with running_agent(config, coffre, first_log) as agent:
        wait_for("the first backup", lambda: "job officine: succeeded" in first_log.read_text(), agent,
                 first_log, timeout=120)
        wait_for("the page's address", lambda: f"{base}/" in first_log.read_text(), agent, first_log)
        page = _page_client(base, password)
        with open(tmp_path / "state" / "locks" / "repository-nas.lock", "a+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # another job on this repository, say
            clicked = page.post("/jobs/officine/run", data={"csrf": csrf_of(page.get("/").text)})
            assert clicked.status_code == 303, clicked.text
            followed = clicked.headers["location"]
            assert re.fullmatch(r"/jobs/officine/run\?after=\d+&agent=[0-9a-f]{8}", followed), followed
            fragment = followed.replace("/run?", "/progress?")
            waiting = page.get(fragment).text  # its thread waits for the repository
            assert 'hx-trigger="every 1s"' in waiting and "progress-lost" not in waiting, waiting
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0, first_log.read_text()
    assert first_log.read_text().count("job officine: started") == 1, first_log.read_text()
    with running_agent(config, coffre, second_log) as agent:
        wait_for("the page's address", lambda: f"{base}/" in second_log.read_text(), agent, second_log)
        page = _page_client(base, password)
        # Until its loop has looked at the schedule, the new agent may still start the job.
        lost = wait_for("the request said lost", lambda: (lambda f: "progress-lost" in f and f)(
            page.get(fragment).text), agent, second_log)
        assert "hx-trigger" not in lost, lost
        assert "Rien n&#39;a été sauvegardé" in lost, lost
        posted = page.post(re.search(r'<form method="post" action="([^"]+)"', lost).group(1),  # type: ignore[union-attr]
                           data={"csrf": csrf_of(lost)})
        assert posted.status_code == 303, posted.text
        again = posted.headers["location"]
        done = wait_for("the run asked again", lambda: (lambda f: "progress-done" in f and f)(
            page.get(again.replace("/run?", "/progress?")).text), agent, second_log, timeout=120)
        assert "réussie" in done and "à la main" in done, done
