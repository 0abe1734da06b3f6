"""The command line against what shells and service managers really do: empty values from unset
variables, a password command with an unbalanced quote, SIGINT and SIGTERM at any moment.
Real `coffre` processes throughout (issue 11, items 7, 15 and 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coffre.storage.local import LocalBackend

from conftest import Coffre, Result, _default_sigint, communicate_after_signal, make_tree, snapshot_ids

SECRET = "sesame-7731"  # stands for something private inside a password command


def run(c: Coffre, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        input: bytes = b"") -> Result:
    proc = subprocess.run(argv, cwd=cwd, env={**c.env, **(env or {})}, input=input,
                          capture_output=True, timeout=120, check=False, preexec_fn=_default_sigint)
    return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                  proc.stderr.decode(errors="replace"), proc.stdout)


def files_of(root: Path) -> dict[str, int]:
    """Every file below root with its size: what "nothing was written" compares."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def assert_usage_error(res: Result, option: str) -> None:
    assert res.code == 2, res
    assert option in res.err, res
    assert "Traceback" not in res.err, res


# --- 7. An empty value is an unset variable, never the current folder -------------------------


@pytest.mark.parametrize(("args", "option"), [
    ([""], "a path to back up"),
    (["{tree}", ""], "a path to back up"),
    (["{tree}", "--", ""], "a path to back up"),
    (["--exclude-file", "", "{tree}"], "--exclude-file"),
    (["--stdin", "--stdin-filename", ""], "--stdin-filename"),
    (["--sqlite", ""], "--sqlite"),
    (["--postgres", ""], "--postgres"),
    (["--postgres-cluster", ""], "--postgres-cluster"),
    (["--mysql", ""], "--mysql"),
])
def test_empty_value_in_backup_is_a_usage_error_and_writes_nothing(
    repo: Coffre, tree: Path, args: list[str], option: str
) -> None:
    before = files_of(Path(repo.repo))
    argv = repo.argv("backup", *[a.format(tree=tree) for a in args])
    # Run from a folder with data in it: `coffre backup "$UNSET"` used to back it up.
    res = run(repo, argv, cwd=tree, input=b"from stdin")
    assert_usage_error(res, option)
    assert files_of(Path(repo.repo)) == before
    assert snapshot_ids(repo) == []


def test_empty_repo_option_is_refused_not_replaced_by_the_variable(
    repo: Coffre, tree: Path, tmp_path: Path
) -> None:
    before = files_of(Path(repo.repo))
    env = {"COFFRE_REPOSITORY": str(repo.repo), "COFFRE_PASSWORD_FILE": str(repo.pwfile)}
    res = run(repo, repo.argv("backup", "--repo", "", str(tree), repo=False), env=env)
    assert_usage_error(res, "--repo")
    assert files_of(Path(repo.repo)) == before
    fresh = tmp_path / "fresh"
    res = run(repo, repo.argv("init", "--repo", "", repo=False), env={**env, "COFFRE_REPOSITORY": str(fresh)})
    assert_usage_error(res, "--repo")
    assert not fresh.exists()


def test_empty_password_file_option_is_refused(repo: Coffre, tree: Path) -> None:
    before = files_of(Path(repo.repo))
    res = run(repo, repo.argv("backup", "--repo", str(repo.repo), "--password-file", "", str(tree),
                              repo=False), env={"COFFRE_PASSWORD_FILE": str(repo.pwfile)})
    assert_usage_error(res, "--password-file")
    assert files_of(Path(repo.repo)) == before


def test_empty_path_in_ls_and_dump_is_a_usage_error(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    for command in ("ls", "dump"):
        res = repo(command, "latest", "")
        assert_usage_error(res, "the path is empty")
        assert res.out == ""


def test_empty_database_target_and_work_dir_are_usage_errors(repo: Coffre, tmp_path: Path) -> None:
    before = files_of(tmp_path)
    assert_usage_error(repo("restore-db", "latest", "--sqlite", ""), "--sqlite")
    assert_usage_error(repo("restore-db", "latest", "--pgdata", ""), "--pgdata")
    assert_usage_error(repo("drill", "--work-dir", ""), "--work-dir")
    assert files_of(tmp_path) == before


# --- 15. A password command that cannot be split ----------------------------------------------


@pytest.mark.parametrize("command", [f"sh -c 'echo {SECRET}", f'echo "{SECRET}', f"echo {SECRET}\\", "   "])
def test_password_command_that_cannot_run_is_a_usage_error_that_hides_it(
    repo: Coffre, tree: Path, command: str
) -> None:
    before = files_of(Path(repo.repo))
    res = run(repo, repo.argv("backup", "--repo", str(repo.repo), str(tree), repo=False),
              env={"COFFRE_PASSWORD_COMMAND": command})
    assert_usage_error(res, "COFFRE_PASSWORD_COMMAND")
    assert SECRET not in res.err + res.out
    assert files_of(Path(repo.repo)) == before


def test_source_password_command_with_unbalanced_quote_is_a_usage_error(repo: Coffre, tmp_path: Path) -> None:
    res = run(repo, repo.argv("copy", "--from", str(repo.repo), "--to", str(tmp_path / "other"),
                              "--password-file", str(repo.pwfile), repo=False),
              env={"COFFRE_FROM_PASSWORD_COMMAND": f"printf '{SECRET}"})
    assert_usage_error(res, "COFFRE_FROM_PASSWORD_COMMAND")
    assert SECRET not in res.err + res.out


# --- 17. SIGINT and SIGTERM at any moment -------------------------------------------------------


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough incompressible data (384 MiB) that a backup is still running well after it
    wrote its first pack."""
    root = tmp_path_factory.mktemp("big")
    for i in range(3):
        with open(root / f"scan-{i}.bin", "wb") as f:
            for _ in range(8):
                f.write(os.urandom(16 << 20))
    return root


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)


def wait_for_python(proc: subprocess.Popen[bytes]) -> None:
    """Until the interpreter has loaded its first extension module. The interpreter's own start
    (site, runpy) loads none and no program can handle a signal during it; Coffre's entry point
    installs its handlers before any. Delays are counted from here so that a busy machine, slow
    to start Python, still puts the early signals inside Coffre's imports."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if ".cpython-" in Path(f"/proc/{proc.pid}/maps").read_text():
                return
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.001)
    raise AssertionError(f"coffre did not start (exit status {proc.poll()})")


def interrupt(argv: list[str], env: dict[str, str], sig: int, delay: float,
              ready: Callable[[], bool] | None = None) -> Result:
    """Run argv and send it `sig` `delay` seconds after Python started, or once `ready()`."""
    proc = start(argv, {**env, "PYTHONFAULTHANDLER": "1"})
    wait_for_python(proc)
    time.sleep(delay)
    deadline = time.monotonic() + 60
    while ready is not None and not ready():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before the moment"
        assert time.monotonic() < deadline, "the moment to interrupt never came"
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = communicate_after_signal(proc)
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), out)


def lock_objects(repo: Coffre) -> list[str]:
    """The locks others would see: the storage's own listing. A partial write (`.tmp-*`) is
    not one: a signal landing as the write's file is created leaves it, as a power cut would,
    and prune removes it."""
    return [info.name for info in LocalBackend(repo.repo).list("locks")]


def assert_interrupted(res: Result, sig: int) -> None:
    assert res.code == 128 + sig, res
    assert "interrupted" in res.err and "the repository is consistent" in res.err, res
    assert "Traceback" not in res.err and "KeyboardInterrupt" not in res.err, res


def packs_written(repo: Coffre) -> Callable[[], bool]:
    """The backup is under way: it has written a first pack of data (of 384 MiB, some 20)."""
    return lambda: any(True for _ in LocalBackend(repo.repo).list("data"))


MID_BACKUP = -1.0  # delay: not a time, the moment the first pack is written (packs_written)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1, 0.3, MID_BACKUP], ids=str)
def test_signal_at_any_moment_ends_like_an_interruption(
    repo: Coffre, big_tree: Path, sig: int, delay: float
) -> None:
    """From the imports (the first ~0.2 s) to the middle of the backup: one message, exit
    128 + signal, the lock removed, no snapshot, never a traceback."""
    mid = delay == MID_BACKUP
    res = interrupt(repo.argv("backup", str(big_tree)), repo.env, sig, 0.0 if mid else delay,
                    packs_written(repo) if mid else None)
    assert_interrupted(res, sig)
    assert lock_objects(repo) == []
    assert snapshot_ids(repo) == []


def test_after_sigterm_mid_backup_the_next_backup_succeeds_and_check_is_clean(
    repo: Coffre, big_tree: Path
) -> None:
    res = interrupt(repo.argv("backup", str(big_tree)), repo.env, signal.SIGTERM, 0.0,
                    packs_written(repo))
    assert_interrupted(res, signal.SIGTERM)
    assert lock_objects(repo) == []
    assert snapshot_ids(repo) == []
    repo.ok("backup", str(big_tree))
    assert len(snapshot_ids(repo)) == 1
    assert repo.ok("check", "--json").json()["ok"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_console_script_handles_a_signal_during_its_imports(repo: Coffre, tmp_path: Path, sig: int) -> None:
    """The installed `coffre` command takes the same guarded path as `python -m coffre`."""
    script = Path(sys.executable).with_name("coffre")
    argv = [str(script), *repo.argv("backup", str(make_tree(tmp_path / "src")))[3:]]
    res = interrupt(argv, repo.env, sig, 0.0)
    assert_interrupted(res, sig)
    assert snapshot_ids(repo) == []


# A command whose import makes a class with a descriptor, and SIGTERM lands in the descriptor's
# __set_name__, as it did in a CI run inside the standard library's ipaddress (a cached_property).
INTERRUPTED_IN_SET_NAME = """
import os, signal, sys, time
import coffre.cli.main
from coffre.cli import entry

class Descriptor:
    def __set_name__(self, owner, name):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the handler runs in here
            pass

def command_line():
    class Network:  # as an import would make it
        address = Descriptor()
    print("completed")
    return 0

coffre.cli.main.main = command_line
sys.exit(entry.main())
"""


def test_a_signal_in_a_descriptor_of_a_class_being_made_interrupts_cleanly() -> None:
    """Python 3.11 wraps an exception raised by __set_name__ in a RuntimeError: the signal must
    still end the command as an interruption (143, one line), not as a failure with a traceback."""
    res = subprocess.run([sys.executable, "-c", INTERRUPTED_IN_SET_NAME], capture_output=True,
                         text=True, timeout=60, preexec_fn=_default_sigint)
    assert res.returncode == 128 + signal.SIGTERM, res
    assert "completed" not in res.stdout, res
    assert "interrupted by SIGTERM" in res.stderr and "Traceback" not in res.stderr, res


# A command whose work drops an object with a finalizer that a SIGINT interrupts: the signal
# is sent from the finalizer itself, so its handler runs there, where Python cannot raise.
INTERRUPTED_IN_A_FINALIZER = """
import os, signal, sys, time
import coffre.cli.main
from coffre.cli import entry

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the handler runs in here
            pass

def command_line():
    Finalized()  # dropped at once: its finalizer runs now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the command's own work, where the interruption belongs
        pass
    print("completed")
    return 0

coffre.cli.main.main = command_line
sys.exit(entry.main())
"""


def test_a_signal_that_lands_in_a_finalizer_still_interrupts_the_command() -> None:
    """The garbage collector runs finalizers and weakref callbacks between any two steps of a
    command; Python only prints an exception raised there and goes on. A Ctrl-C landing there
    (a CI run caught one during a backup's imports: the backup then completed, exit 0, with a
    traceback) must end the command like any other interruption."""
    res = subprocess.run([sys.executable, "-c", INTERRUPTED_IN_A_FINALIZER], capture_output=True,
                         text=True, timeout=60, preexec_fn=_default_sigint)
    assert res.returncode == 128 + signal.SIGINT, res
    assert "completed" not in res.stdout, res
    assert "interrupted" in res.stderr and "Exception ignored" not in res.stderr, res
    assert "Traceback" not in res.stderr, res
