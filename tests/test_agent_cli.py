"""The agent's commands through the real command line, as a technician types them:
`coffre config init|check`, `coffre run JOB`, `coffre status`, `coffre agent` and
`coffre agent install|uninstall` (docs/agent.md). Each test runs `python -m coffre` in a
subprocess on a small local setup: a repository made with `coffre init`, a few files."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from coffre.agent.status import StatusStore, store_path
from coffre.cli import cmd_agent, entry
from coffre.cli.parser import build_parser
from coffre.core.errors import EXIT_INTERRUPTED

from conftest import Coffre, Result, snapshot_ids

UNIT = "coffre-agent.service"


# --------------------------------------------------------------------------- helpers


def setup_site(tmp_path: Path, coffre: Coffre, repository: Path | None = None, retries: int | None = None,
               config: Path | None = None) -> Path:
    """A configuration with one job, `officine`, backing up a folder of a few files into a
    local repository (made with `coffre init` unless `repository` is given), and a second
    job, `compta`. Returns the configuration's path."""
    src = tmp_path / "officine"
    if not src.exists():
        src.mkdir()
        for i in range(3):
            (src / f"ordonnance-{i}.txt").write_text(f"ordonnance {i}\n" * 50)
    if repository is None:
        repository = Path(coffre.repo)
        if not (repository / "config").exists():
            coffre.ok("init")
    config = config or tmp_path / "coffre.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"""\
[agent]
state_dir = "{tmp_path / 'agent-state'}"
nice = 0
ionice = "none"

[repositories.local]
url = "{repository}"
password_file = "{coffre.pwfile}"

[jobs.officine]
repository = "local"
paths = ["{src}"]
{"" if retries is None else f"retries = {retries}"}

[jobs.compta]
repository = "local"
paths = ["{src}"]
""", encoding="utf-8")
    return config


def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-state"


@contextmanager
def job_lock(state: Path, job: str) -> Iterator[None]:
    """Hold the job's lock, as a running agent or `coffre run` does (flock on
    STATE_DIR/locks/job-NAME.lock)."""
    (state / "locks").mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "locks" / f"job-{job}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def in_folder(coffre: Coffre, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """The real command run from `folder` (for relative paths, as a technician types them)."""
    proc = subprocess.run(coffre.argv(*args, repo=False), cwd=folder, capture_output=True,
                          env={**coffre.env, **(env or {})}, timeout=120, check=False)
    return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                  proc.stderr.decode(errors="replace"), proc.stdout)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_words(line: str) -> list[str]:
    """The words systemd makes of an ExecStart= value (systemd.service(5), systemd.syntax(7)):
    `%%` is a percent sign, words split on blanks, "..." and '...' quote a word, backslash
    escapes (C style), `$$` is a dollar sign."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i == n:
            break
        word, quote = "", ""
        while i < n and (quote or line[i] not in " \t"):
            c = line[i]
            if c == "%":
                assert line[i + 1] == "%", f"a specifier in {line!r}"
                word, i = word + "%", i + 2
                continue
            if c == "\\":
                nxt = line[i + 1]
                if nxt == "x":
                    word, i = word + chr(int(line[i + 2:i + 4], 16)), i + 4
                else:
                    word, i = word + {"n": "\n", "t": "\t"}.get(nxt, nxt), i + 2
                continue
            if quote and c == quote:
                quote = ""
            elif not quote and c in "\"'":
                quote = c
            else:
                word += c
            i += 1
        assert not quote, f"an unclosed quote in {line!r}"
        assert "$" not in word.replace("$$", ""), f"a variable in {line!r}"
        words.append(word.replace("$$", "$"))
    return words


def systemd_complaints(unit: Path) -> list[str] | None:
    """What `systemd-analyze verify` says is wrong with the unit's settings; None when the
    tool is not installed. Only the lines about the unit's own syntax count: in a container
    without a running systemd it may say other things (no manager, no man page)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    done = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    words = ("Unknown key", "Unknown section", "Invalid", "Failed to parse", "Specifier",
             "not executable", "Missing", "Neither")
    return [line for line in (done.stdout + done.stderr).splitlines() if any(w in line for w in words)]


# --------------------------------------------------------------------------- config init / check


def test_config_init_writes_a_private_commented_file_that_check_accepts(tmp_path: Path,
                                                                         coffre: Coffre) -> None:
    config = tmp_path / "etc" / "coffre" / "coffre.toml"  # its folder does not exist yet
    written = coffre.ok("config", "init", "--config", str(config), repo=False)
    assert str(config) in written.out and "coffre config check" in written.out
    assert config.stat().st_mode & 0o777 == 0o600  # it names password files and mail accounts
    text = config.read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comments) > 40 and "[jobs.officine]" in text

    check = coffre("config", "check", "--config", str(config), repo=False)
    assert check.code == 0, check
    assert f"{config}: valid" in check.out
    # The plan: each job, where it goes, and its next run (the sample's 12:30 and 19:30).
    assert "job officine" in check.out and "into: nas (/mnt/nas/coffre)" in check.out
    assert "when: at 12:30, 19:30" in check.out
    assert re.search(r"next run: \d{4}-\d\d-\d\d (12:30|19:30)\n", check.out), check.out

    fr = coffre("--lang", "fr", "config", "check", "--config", str(config), repo=False)
    assert fr.code == 0, fr
    assert "tâche officine" in fr.out and "prochaine exécution :" in fr.out

    # A second init never replaces the file the technician has edited.
    config.write_text(text + "\n# edited by the technician\n", encoding="utf-8")
    before = config.read_bytes(), config.stat().st_mtime_ns
    again = coffre("config", "init", "--config", str(config), repo=False)
    assert again.code == 2, again
    assert str(config) in again.err and "exists already" in again.err and again.out == ""
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    refused_fr = coffre("--lang", "fr", "config", "init", "--config", str(config), repo=False)
    assert refused_fr.code == 2 and "existe déjà" in refused_fr.err, refused_fr
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before


def test_config_init_prints_with_stdout_in_the_language_asked(tmp_path: Path, coffre: Coffre) -> None:
    config = tmp_path / "coffre.toml"
    env = {"COFFRE_CONFIG": str(config)}
    english = coffre.ok("--lang", "en", "config", "init", "--stdout", repo=False, env=env).out
    french = coffre.ok("--lang", "fr", "config", "init", "--stdout", repo=False, env=env).out
    assert not config.exists()  # printed, not written
    assert english.startswith("# Coffre — the pharmacy's backup agent configuration\n")
    assert "# the time zone of the schedules\n" in english and 'language = "en"' in english
    assert french.startswith("# Coffre — configuration de l'agent de sauvegarde de l'officine\n")
    assert 'language = "fr"' in french and "# the time zone" not in french
    # A server's C locale says nothing of who reads the alerts: the pharmacist reads French.
    for lang in ("C", "C.UTF-8", "POSIX"):
        c_locale = coffre.ok("config", "init", "--stdout", repo=False,
                             env={**env, "LANG": lang, "LC_ALL": "", "LC_MESSAGES": ""}).out
        assert 'language = "fr"' in c_locale
    english_locale = coffre.ok("config", "init", "--stdout", repo=False,
                               env={**env, "LANG": "en_GB.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}).out
    assert 'language = "en"' in english_locale
    # What is printed is a configuration as good as the written one.
    for text in (english, french):
        config.write_text(text, encoding="utf-8")
        coffre.ok("config", "check", repo=False, env=env)


class Broken(NamedTuple):
    text: str
    line: int  # where the problem is
    english: tuple[str, ...]  # what must be said
    french: tuple[str, ...]


BROKEN = {
    "toml": Broken('[repositories.nas]\nurl = "/srv/nas"\npassword_file = "/etc/pw"\n\n'
             '[jobs.officine]\nrepository = "nas"\npaths = ["/srv"]\n\n[jobs.officine.schedule]\n'
             'times = [12:30]\n', 10, ("not valid TOML",), ("TOML invalide",)),
    "unknown key": Broken('[repositories.nas]\nurl = "/srv/nas"\npassword_file = "/etc/pw"\n\n'
                    '[jobs.officine]\nrepository = "nas"\npaths = ["/srv"]\n\n[jobs.officine.retention]\n'
                    'keep_dayly = 3\n', 10,
                    ("jobs.officine.retention.keep_dayly: unknown key (did you mean keep_daily?)",),
                    ("jobs.officine.retention.keep_dayly: clé inconnue (vouliez-vous dire keep_daily ?)",)),
    "missing repository": Broken('[repositories.nas]\nurl = "/srv/nas"\npassword_file = "/etc/pw"\n\n'
                           '[jobs.officine]\npaths = ["/srv"]\nrepository = "nass"\n', 7,
                           ("jobs.officine.repository: no repository or media set is named 'nass'",
                            "did you mean nas?"),
                           ("jobs.officine.repository: aucun dépôt ni jeu de disques ne s'appelle 'nass'",
                            "vouliez-vous dire nas ?")),
}


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_config_check_names_the_file_the_line_and_the_key(tmp_path: Path, coffre: Coffre, case: str,
                                                          lang: str) -> None:
    text, line, english, french = BROKEN[case]
    config = tmp_path / "coffre.toml"
    config.write_text(text, encoding="utf-8")
    res = coffre("--lang", lang, "config", "check", "--config", str(config), repo=False)
    assert res.code == 2, res
    assert res.out == ""  # no plan for a file the agent would refuse
    assert f"{config}:{line}: " in res.err, res
    for words in english if lang == "en" else french:
        assert words in res.err, res
    head = (f"the configuration {config} has 1 problem:" if lang == "en"
            else f"la configuration {config} contient 1 problème :")
    assert head in res.err, res


# --------------------------------------------------------------------------- coffre run, coffre status


def test_run_backs_up_now_and_status_shows_the_job_green(tmp_path: Path, coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    assert snapshot_ids(coffre) == []
    run = coffre("run", "officine", "--config", str(config), repo=False)
    assert run.code == 0, run
    assert "job officine: succeeded" in run.err
    listed = json.loads(coffre.ok("snapshots", "--json").out)
    assert len(listed) == 1 and listed[0]["paths"] == [str(tmp_path / "officine")]

    # Both jobs are in the status; only officine has run. compta never ran and is not late yet.
    status = coffre("status", "--config", str(config), repo=False)
    assert status.code == 0, status
    row = next(line for line in status.out.splitlines() if " officine " in line)
    assert row.split()[:3] == ["OK", "officine", "local"]
    report = json.loads(coffre("status", "--json", "--config", str(config), repo=False).out)
    assert report["ok"] is True
    officine = next(j for j in report["jobs"] if j["job"] == "officine")
    assert officine["light"] == "ok" and officine["last_backup"] is not None and officine["problems"] == []


def test_run_of_an_unknown_job_lists_the_jobs(tmp_path: Path, coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    res = coffre("run", "officne", "--config", str(config), repo=False)
    assert res.code == 2, res
    assert f"no job named officne in {config}" in res.err
    assert "the jobs are: compta, officine" in res.err
    fr = coffre("--lang", "fr", "run", "officne", "--config", str(config), repo=False)
    assert fr.code == 2 and "compta, officine" in fr.err, fr
    assert snapshot_ids(coffre) == []


def test_run_refuses_a_job_already_running(tmp_path: Path, coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    with job_lock(state_dir(tmp_path), "officine"):
        busy = coffre("run", "officine", "--config", str(config), repo=False, timeout=60)
        assert busy.code == 11, busy
        assert "job officine: already running" in busy.err
        assert snapshot_ids(coffre) == []
        # Another job on the same repository is not held back by officine's lock.
        coffre.ok("run", "compta", "--config", str(config), repo=False)
    # The lock is the kernel's: once its holder is gone, the job runs.
    coffre.ok("run", "officine", "--config", str(config), repo=False)
    assert len(snapshot_ids(coffre)) == 2


def test_run_stopped_as_it_starts_runs_nothing(tmp_path: Path, coffre: Coffre,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C in the first moments of `coffre run` can land while Python synchronises threads:
    the entry point then defers it a few ms (cli/entry.py). `coffre run` takes such a signal
    over as it takes the signals itself: no run starts, nothing is recorded, and the signal is
    not raised later in the middle of a run (that left a step backing up on its own)."""
    config = setup_site(tmp_path, coffre)
    args = build_parser().parse_args(["run", "officine", "--config", str(config)])
    entry._raise_later(signal.SIGINT, 60.0)  # what entry._raise does with such a signal
    try:
        assert cmd_agent.cmd_run(args) == EXIT_INTERRUPTED
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # not raised later
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        entry._pending = None
    assert "stopped before the run started: nothing was done" in capfd.readouterr().err
    assert snapshot_ids(coffre) == []
    with StatusStore(store_path(str(state_dir(tmp_path)))) as store:
        assert store.runs() == []


def test_a_failing_job_exits_1_and_status_says_why(tmp_path: Path, coffre: Coffre) -> None:
    # The repository's disk is not there. (An absent destination is retried within the job's
    # window, as for a NAS that drops: `retries = 0` declares the failure at once.)
    config = setup_site(tmp_path, coffre, repository=tmp_path / "absent", retries=0)
    run = coffre("run", "officine", "--config", str(config), repo=False)
    assert run.code == 1, run
    assert "job officine: failed" in run.err and str(tmp_path / "absent") in run.err
    status = coffre("status", "--config", str(config), repo=False)
    assert status.code == 1, status
    assert "officine" in status.out and "the last backup failed" in status.out
    report = json.loads(coffre("status", "--json", "--config", str(config), repo=False).out)
    assert report["ok"] is False
    officine = next(j for j in report["jobs"] if j["job"] == "officine")
    assert officine["light"] == "failed" and [p["kind"] for p in officine["problems"]] == ["failed"]


# --------------------------------------------------------------------------- coffre agent


def test_agent_install_writes_a_hardened_unit_and_uninstall_removes_it(tmp_path: Path,
                                                                        coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    units = tmp_path / "units"
    # A relative --config, as typed in the configuration's folder: the unit holds it absolute.
    res = in_folder(coffre, tmp_path, "agent", "install", "--config", "coffre.toml", "--unit-dir", str(units),
                    "--no-enable")
    assert res.code == 0, res
    assert "installed:" in res.out and UNIT in res.out
    unit = units / UNIT
    assert unit.stat().st_mode & 0o777 == 0o644
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    [exec_start] = settings["ExecStart"]
    words = exec_words(exec_start)
    assert words[-3:] == ["agent", "--config", str(config)]
    assert Path(words[0]).is_absolute() and os.access(words[0], os.X_OK)  # an existing program
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["true"]  # /usr read-only; the drills' useradd writes /etc
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["WantedBy"] == ["multi-user.target"]
    complaints = systemd_complaints(unit)
    # (None: no systemd-analyze on this machine, only that check is left out.)
    assert not complaints, complaints

    # `coffre agent --config F install` is the same command: F is kept.
    other = tmp_path / "other"
    coffre.ok("agent", "--config", str(config), "install", "--unit-dir", str(other), "--no-enable",
              repo=False)
    assert exec_words(unit_settings((other / UNIT).read_text())["ExecStart"][0])[-1] == str(config)

    gone = coffre("agent", "uninstall", "--unit-dir", str(units), "--no-enable", repo=False)
    assert gone.code == 0 and str(unit) in gone.out, gone
    assert not unit.exists()
    again = coffre("agent", "uninstall", "--unit-dir", str(units), "--no-enable", repo=False)
    assert again.code == 1, again
    assert "the agent's service is not installed" in again.err


def test_the_unit_starts_the_agent_on_a_path_systemd_would_misread(tmp_path: Path, coffre: Coffre) -> None:
    # A French folder name and a percent sign: shell quoting is not systemd's ('%' is a
    # specifier, '$' a variable, quotes only around whole words).
    config = setup_site(tmp_path, coffre, config=tmp_path / "l'officine 100%" / "coffre $HOME.toml")
    units = tmp_path / "units"
    coffre.ok("agent", "install", "--config", str(config), "--unit-dir", str(units), "--no-enable",
              repo=False)
    unit = units / UNIT
    words = exec_words(unit_settings(unit.read_text())["ExecStart"][0])
    assert words[-3:] == ["agent", "--config", str(config)]
    complaints = systemd_complaints(unit)
    assert not complaints, complaints


def test_agent_install_refuses_a_broken_configuration_and_writes_nothing(tmp_path: Path,
                                                                          coffre: Coffre) -> None:
    config = tmp_path / "coffre.toml"
    config.write_text(BROKEN["unknown key"].text, encoding="utf-8")
    units = tmp_path / "units"
    res = coffre("agent", "install", "--config", str(config), "--unit-dir", str(units), "--no-enable",
                 repo=False)
    assert res.code == 2, res
    assert f"{config}:10: jobs.officine.retention.keep_dayly: unknown key" in res.err
    assert not units.exists()
    absent = coffre("agent", "install", "--config", str(tmp_path / "absent.toml"), "--unit-dir", str(units),
                    "--no-enable", repo=False)
    assert absent.code == 2 and "absent.toml" in absent.err, absent
    assert not units.exists()


def fake_systemctl(tmp_path: Path, fail: bool = False) -> tuple[dict[str, str], Path]:
    """A `systemctl` first on the PATH that records its arguments (no systemd manager runs
    here), failing when `fail`."""
    bindir, log = tmp_path / "fakebin", tmp_path / "systemctl.log"
    bindir.mkdir(exist_ok=True)
    script = bindir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {1 if fail else 0}\n')
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_agent_install_enables_and_starts_the_service(tmp_path: Path, coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    units = tmp_path / "units"
    env, log = fake_systemctl(tmp_path)
    install = ("agent", "install", "--config", str(config), "--unit-dir", str(units))
    res = coffre(*install, repo=False, env=env)
    assert res.code == 0, res
    assert calls(log) == ["daemon-reload", f"enable --now {UNIT}"]
    assert "the agent is running" in res.out
    # Installed again unchanged: nothing to restart.
    coffre.ok(*install, repo=False, env=env)
    assert calls(log)[2:] == ["daemon-reload", f"enable --now {UNIT}"]
    # With another configuration: the running agent is restarted on the new unit.
    moved = setup_site(tmp_path, coffre, config=tmp_path / "etc" / "coffre.toml")
    coffre.ok("agent", "install", "--config", str(moved), "--unit-dir", str(units), repo=False, env=env)
    assert calls(log)[4:] == ["daemon-reload", f"enable --now {UNIT}", f"try-restart {UNIT}"]
    assert str(moved) in (units / UNIT).read_text()

    coffre.ok("agent", "uninstall", "--unit-dir", str(units), repo=False, env=env)
    assert calls(log)[7:] == [f"disable --now {UNIT}", "daemon-reload"]
    assert not (units / UNIT).exists()


def test_agent_install_without_systemd_says_what_to_do(tmp_path: Path, coffre: Coffre) -> None:
    config = setup_site(tmp_path, coffre)
    units = tmp_path / "units"
    env, _log = fake_systemctl(tmp_path, fail=True)
    res = coffre("agent", "install", "--config", str(config), "--unit-dir", str(units), repo=False, env=env)
    assert res.code == 1, res
    assert "systemctl daemon-reload failed" in res.err and "The unit file is written" in res.err
    assert (units / UNIT).exists()
    gone = coffre("agent", "uninstall", "--unit-dir", str(units), repo=False, env=env)
    assert gone.code == 1, gone
    assert "The unit file is left in place" in gone.err and "--no-enable" in gone.err
    assert (units / UNIT).exists()
    coffre.ok("agent", "uninstall", "--unit-dir", str(units), "--no-enable", repo=False, env=env)
    assert not (units / UNIT).exists()


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_the_agent_refuses_to_start_on_a_broken_configuration(tmp_path: Path, coffre: Coffre,
                                                               lang: str) -> None:
    config = tmp_path / "coffre.toml"
    config.write_text(BROKEN["missing repository"].text, encoding="utf-8")
    res = coffre("--lang", lang, "agent", "--config", str(config), repo=False, timeout=60)
    assert res.code == 2, res
    broken = BROKEN["missing repository"]
    said = (broken.english if lang == "en" else broken.french)[0]
    assert f"{config}:7: {said}" in res.err, res
