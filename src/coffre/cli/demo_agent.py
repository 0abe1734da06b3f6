"""The second half of `coffre demo`: the pharmacy's real flow. A configuration is written for
the sample tree and its SQLite database (a local repository, and a set of rotating disks of
which none is plugged in), the real agent (`coffre agent`) runs the job, the missing disk
raises an alert that a local mail sink (aiosmtpd on 127.0.0.1) receives, and `coffre status`
shows the result."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from coffre.cli.output import say
from coffre.core.errors import CoffreError
from coffre.core.i18n import _, language
from coffre.core.interpreter import python_module
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

WAIT = 300.0  # seconds the demo waits for the agent's run and its mail
T = TypeVar("T")


class MailSink:
    """An SMTP server on 127.0.0.1 that keeps what it receives (a relay on the machine: no
    TLS, no login, as `security = "none"` allows for loopback only)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append(bytes(envelope.original_content or envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def received(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)


def _wait(what: str, probe: Callable[[], T | None], agent: subprocess.Popen[bytes]) -> T:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if agent.poll() is not None:
            raise CoffreError(_("the agent ended while the demo waited for {what}").format(what=what))
        time.sleep(0.2)
    raise CoffreError(_("the demo waited {seconds:.0f} s for {what} in vain").format(seconds=WAIT, what=what))


def _config(base: Path, source: Path, repo_dir: Path, pwfile: Path, disk_id: str, port: int) -> str:
    return f"""# Written by 'coffre demo': the sample pharmacy's configuration.
[agent]
state_dir = "{base / 'agent'}"
language = "{language()}"
nice = 0

[repositories.depot]
url = "{repo_dir}"
password_file = "{pwfile}"

[media_sets.disques]
search = ["{base / 'media'}"]
password_file = "{pwfile}"

[media_sets.disques.disks]
A = "{disk_id}"

[jobs.officine]
paths = ["{source / 'documents'}", "{source / 'scans'}"]
sqlite = ["{source / 'officine' / 'data' / 'officine.db'}"]
repository = "depot"
copies = ["disques"]
retries = 0

[jobs.officine.schedule]
times = ["12:30", "19:30"]

[jobs.officine.verification]
check_subset = "10%"
drill_every = false

[alerts.email]
server = "127.0.0.1"
port = {port}
security = "none"
sender = "coffre@officine.example"
to = ["pharmacien@officine.example"]
"""


def agent_demo(base: Path, source: Path, repo_dir: Path, password: str, step: int) -> None:
    """Steps `step`, `step + 1`...: the configuration, the agent's run, the alert, the status."""
    from email import message_from_bytes
    from email.policy import default

    pwfile = base / "mot-de-passe"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    # Disk A of the rotating set exists, but sits on the shelf: not plugged in.
    disk = base / "etagere" / "COFFRE-A" / "coffre"
    disk_repo, _recovery = Repository.init(LocalBackend(disk), password)
    (base / "media").mkdir()
    env = {**os.environ, "COFFRE_CACHE_DIR": str(base / "cache"), "COFFRE_STATE_DIR": str(base / "state")}
    for name in ("COFFRE_CONFIG", "COFFRE_REPOSITORY", "COFFRE_PASSWORD_FILE", "COFFRE_PASSWORD_COMMAND"):
        env.pop(name, None)
    with MailSink() as sink:
        config = base / "coffre.toml"
        config.write_text(_config(base, source, repo_dir, pwfile, disk_repo.config.id.hex(), sink.port))
        say(_("{n}. agent configuration written: {path} (job 'officine': documents, scans and the "
              "SQLite base into the local repository, then a copy to the rotating disks)")
            .format(n=step, path=config))
        command = [*python_module("coffre"), "--lang", language()]
        checked = subprocess.run([*command, "config", "check", "--config", str(config)], env=env,
                                 capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise CoffreError(checked.stderr.strip())
        log = base / "agent.log"
        with open(log, "wb") as out:
            agent = subprocess.Popen([*command, "agent", "--config", str(config)], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
        try:
            mail = _wait(_("the alert mail"), sink.received, agent)[0]
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        say(_("{n}. the agent ran the job (its log, {path}):").format(n=step + 1, path=log))
        for line in lines:
            say("     " + line)
        message = message_from_bytes(mail, policy=default)
        body = message.get_body(("plain",))
        text = str(body.get_content()) if body is not None else ""
        say(_("{n}. the alert mail the local mail sink received:").format(n=step + 2))
        say("     " + _("To: {to}").format(to=message["To"]))
        say("     " + _("Subject: {subject}").format(subject=message["Subject"]))
        for line in text.strip().splitlines()[:12]:
            say("     " + line)
        status = subprocess.run([*command, "status", "--config", str(config)], env=env,
                                capture_output=True, text=True, check=False)
        say(_("{n}. coffre status (exit status {code}: not all green while no disk is plugged in):")
            .format(n=step + 3, code=status.returncode))
        for line in status.stdout.rstrip().splitlines():
            say("     " + line)
        if status.returncode == 0:
            raise CoffreError(_("coffre status says all is well although no disk was plugged in"))
