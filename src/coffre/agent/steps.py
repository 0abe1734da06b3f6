"""One step of a job: a child `coffre` process, exactly the command a technician would type,
with `--json`.

Why a child process and not a call into `ops`: a crash, a memory peak or a stuck storage call
in a backup never takes the agent down, the agent's own memory stays flat between runs, and
the step runs at the priority the agent gives it (nice, ionice) without lowering the agent's.
Secrets never go through the command line: the passwords come from the environment
(`COFFRE_PASSWORD_FILE` / `COFFRE_PASSWORD_COMMAND`, `COFFRE_FROM_*`, `COFFRE_AGAINST_*`), as
for the CLI. An interrupted step gets SIGINT, as Ctrl-C would: no snapshot, no damage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from coffre.agent.model import Repository
from coffre.core.interpreter import python_module

_ERROR_TAIL = 4000  # characters of a step's standard error kept for its record


@dataclass(frozen=True)
class Endpoint:
    """A repository as a step reaches it: its location, the options it needs on the command
    line (none secret), and the environment giving its password and credentials, by role."""

    name: str  # the configuration's name (a repository, or a media set)
    url: str
    password_file: str | None = None
    password_command: str | None = None
    options: tuple[str, ...] = ()
    aws_profile: str | None = None
    disk_id: str | None = None  # a media set's disk
    disk_name: str | None = None
    token_file: str | None = None  # a hosting server's token

    def env(self, role: str = "") -> dict[str, str]:
        """The environment that opens it: role "" (the command's repository), "FROM_" (copy's
        source) or "AGAINST_" (check --against)."""
        out: dict[str, str] = {}
        if self.password_file is not None:
            out[f"COFFRE_{role}PASSWORD_FILE"] = self.password_file
        if self.password_command is not None:
            out[f"COFFRE_{role}PASSWORD_COMMAND"] = self.password_command
        if self.aws_profile is not None and role == "":
            out["AWS_PROFILE"] = self.aws_profile
        if self.token_file is not None:  # one per job (agent/config.py checks it)
            out["COFFRE_SERVER_TOKEN_FILE"] = self.token_file
        return out


def endpoint_for(repo: Repository) -> Endpoint:
    options: list[str] = []
    if repo.limit_upload:
        options += ["--limit-upload", repo.limit_upload]
    if repo.limit_download:
        options += ["--limit-download", repo.limit_download]
    if repo.insecure_ftp:
        options.append("--insecure-ftp")
    if repo.insecure_http:
        options.append("--insecure-http")
    return Endpoint(repo.name, repo.url, repo.password_file, repo.password_command,
                    tuple(options), repo.aws_profile, token_file=repo.token_file)


@dataclass
class Priority:
    nice: int = 10
    ionice: str = "idle"  # "idle" | "best-effort:N" | "none"

    def prefix(self) -> list[str]:
        """`ionice` in front of the command, when the system has it (util-linux)."""
        if self.ionice == "none" or shutil.which("ionice") is None:
            return []
        if self.ionice == "idle":
            return ["ionice", "-c", "3"]
        level = self.ionice.partition(":")[2] or "7"
        return ["ionice", "-c", "2", "-n", level]


@dataclass
class Outcome:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # what the step said on standard error (its messages to people)
    started: float = 0.0
    ended: float = 0.0


def last_json(text: str) -> dict[str, Any]:
    """The step's result: its whole output when it is one JSON document (`check`, `stats`),
    else its last line that is one (`backup`, `restore`, `copy`: status lines, then the
    summary)."""
    text = text.strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return {}


class Interrupted(Exception):
    """The run is being stopped (the agent stopping, or `coffre run` told to stop): the step
    was interrupted."""


def run_step(args: list[str], env: dict[str, str], priority: Priority, language: str,
             cancel: threading.Event, clock: Any = time.time, locks: tuple[int, ...] = ()) -> Outcome:
    """Run `coffre ARGS --json` and wait for it; SIGINT to it when `cancel` is set. `locks`:
    the run's lock descriptors (agent/locks.py), inherited so that they stay held while the
    step lives."""
    command = [*priority.prefix(), *python_module("coffre"), "--lang", language, *args, "--json"]
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("COFFRE_PASSWORD", "COFFRE_FROM_", "COFFRE_AGAINST_"))}
    child_env.update(env)
    child_env.pop("COFFRE_REPOSITORY", None)
    started = clock()
    nice = priority.nice

    def lower_priority() -> None:
        if nice > 0:
            os.nice(nice)

    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env, preexec_fn=lower_priority,
                            start_new_session=True, pass_fds=locks)
    finished = threading.Event()

    def interrupt_on_cancel() -> None:
        while not finished.is_set():
            if cancel.wait(0.5) and not finished.is_set():
                try:
                    proc.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass
                return

    watcher = threading.Thread(target=interrupt_on_cancel, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate()
    finally:
        finished.set()
    text = err.decode("utf-8", "replace").strip()
    return Outcome(proc.returncode, last_json(out.decode("utf-8", "replace")),
                   text[-_ERROR_TAIL:] or None, started, clock())
