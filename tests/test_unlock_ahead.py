"""The password's key is derived while the storage is reached (repository/unlockahead.py): the
next opening of a location starts Argon2 for the slot that opened it last, and a stale or
planted record only costs the time it would have saved."""

from __future__ import annotations

import ast
import json
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from coffre.cli import context
from coffre.core.errors import CoffreError, WrongPasswordError
from coffre.crypto import argon2id, kdf
from coffre.repository.repo import Repository

from conftest import PASSWORD, Coffre


def open_with(repo: Coffre, pwfile: Path) -> Repository:
    return context.open_repo_at(str(repo.repo), lambda: context.read_secret_file(str(pwfile)), watch=False,
                                ahead=True)


class Runs(list[tuple[str, int]]):
    """Each Argon2 run: the thread that ran it and its memory parameter; `started` is set at
    the first."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> Runs:
    runs = Runs()
    real = kdf.hash_secret_raw

    def recorded(secret: bytes, salt: bytes, t: int, m: int, *rest: Any) -> bytes:
        runs.append((threading.current_thread().name, m))
        runs.started.set()
        return real(secret, salt, t, m, *rest)

    monkeypatch.setattr(kdf, "hash_secret_raw", recorded)  # an opening's own derivation
    monkeypatch.setattr(argon2id, "hash_secret_raw", recorded)  # the one started ahead
    return runs


def record_of(cache: Path) -> Path:
    (record,) = (cache / "unlock").iterdir()
    return record


def test_the_key_is_derived_while_the_storage_is_reached(
        repo: Coffre, pwfile: Path, cache_dir: Path, derivations: Runs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """From the first opening after init (the first backup): init recorded its slot."""
    assert record_of(cache_dir).is_file()
    real_backend_for = context.backend_for

    def storage_reached_after_the_derivation_started(location: str, args: Any) -> Any:
        # Set by the derivation's thread, started before the storage is reached: at once.
        assert derivations.started.wait(10), "the storage was reached before any key derivation"
        return real_backend_for(location, args)

    monkeypatch.setattr(context, "backend_for", storage_reached_after_the_derivation_started)
    opened = open_with(repo, pwfile)
    assert [name for name, _ in derivations] == ["derive-ahead"]  # used, not derived again
    assert opened.master == Repository.open(opened.backend, PASSWORD).master


def new_password(tmp_path: Path) -> Path:
    new = tmp_path / "new-password"
    new.write_text("another password\n")
    new.chmod(0o600)
    return new


def test_a_stale_record_costs_one_more_derivation_and_is_replaced(
        repo: Coffre, pwfile: Path, tmp_path: Path, cache_dir: Path,
        derivations: Runs) -> None:
    before = record_of(cache_dir).read_bytes()
    new = new_password(tmp_path)
    other_machine = Coffre(repo.repo, pwfile, tmp_path / "other-machine")
    other_machine.ok("key", "passwd", "--new-password-file", str(new))
    open_with(repo, new)  # this machine's record names the old slot, gone
    assert sorted(name for name, _ in derivations) == ["MainThread", "derive-ahead"]
    assert record_of(cache_dir).read_bytes() != before
    derivations.clear()
    open_with(repo, new)
    assert [name for name, _ in derivations] == ["derive-ahead"]


def test_a_password_changed_here_is_derived_ahead_at_once(
        repo: Coffre, tmp_path: Path, cache_dir: Path, derivations: Runs) -> None:
    new = new_password(tmp_path)
    repo.ok("key", "passwd", "--new-password-file", str(new))  # records the new slot
    open_with(repo, new)
    assert [name for name, _ in derivations] == ["derive-ahead"]


def test_a_record_beyond_coffres_parameters_starts_nothing(
        repo: Coffre, pwfile: Path, cache_dir: Path, derivations: Runs) -> None:
    """A record planted or damaged in the cache cannot make an opening cost gigabytes."""
    open_with(repo, pwfile)
    record = record_of(cache_dir)
    doc = json.loads(record.read_bytes())
    record.write_text(json.dumps({**doc, "params": {"t": 1, "m": 2**22, "p": 1}}))
    derivations.clear()
    open_with(repo, pwfile)
    assert derivations == [("MainThread", kdf.argon2_params()["m"])]
    for junk in (b"", b"{", b'{"salt": "!!", "params": {}}', b"[1]", b"x" * 100_000):
        record_of(cache_dir).write_bytes(junk)
        open_with(repo, pwfile)  # opens as usual, and the record is written again
    assert json.loads(record_of(cache_dir).read_bytes()) == doc


def test_a_wrong_password_is_still_refused_and_the_record_kept(
        repo: Coffre, pwfile: Path, tmp_path: Path, cache_dir: Path) -> None:
    open_with(repo, pwfile)
    before = record_of(cache_dir).read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    with pytest.raises(WrongPasswordError):
        open_with(repo, wrong)
    assert record_of(cache_dir).read_bytes() == before


def test_the_record_holds_nothing_secret(repo: Coffre, pwfile: Path, cache_dir: Path) -> None:
    open_with(repo, pwfile)
    record = record_of(cache_dir)
    doc = json.loads(record.read_bytes())
    assert set(doc) == {"salt", "params"} and set(doc["params"]) == {"t", "m", "p"}
    assert PASSWORD.encode() not in record.read_bytes()
    assert Path(repo.repo).name not in record.name and str(repo.repo) not in record.read_text()
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700


def test_a_missing_repository_is_said_before_an_unreadable_password_file(
        tmp_path: Path, cache_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "no-password-file"
    with pytest.raises(CoffreError, match="not a Coffre repository"):
        context.open_repo_at(str(empty), lambda: context.read_secret_file(str(missing)), watch=False,
                             ahead=True)


def test_a_command_starts_the_derivation_before_its_modules_load(repo: Coffre, pwfile: Path) -> None:
    """On a local repository nothing else overlaps Argon2: the entry point starts it from the
    --repo and --password-file of the command line before it imports the command line's
    modules (~0.1 s, more on a cold page cache), which then load beside it."""
    repo.ok("snapshots")  # the first opening on this machine records its slot
    code = (
        "import sys, threading\n"
        "from coffre.crypto import argon2id, kdf\n"
        "seen = []\n"
        "ahead, derive = argon2id.derive_ahead, argon2id.hash_secret_raw\n"
        "def started(*a):\n"
        "    seen.append(('started', 'coffre.cli.main' in sys.modules))\n"
        "    return ahead(*a)\n"
        "def derived(*a):\n"
        "    seen.append(('derived', threading.current_thread().name))\n"
        "    return derive(*a)\n"
        "argon2id.derive_ahead, argon2id.hash_secret_raw, kdf.hash_secret_raw = started, derived, derived\n"
        "from coffre.cli.entry import main\n"
        "sys.argv = ['coffre', *sys.argv[1:]]\n"
        "code = main()\n"
        "print(seen)\n"
        "sys.exit(code)\n")
    out = subprocess.run([sys.executable, "-c", code, *repo.argv("snapshots")[3:]], env=repo.env,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    seen = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert seen[0] == ("started", False)  # before the command line's module was imported
    # Derived once, in that thread: the opening started nothing new and derived nothing itself.
    assert [s for s in seen if s[0] == "derived"] == [("derived", "derive-ahead")]


def test_a_password_given_through_a_pipe_is_read_once_by_the_command(repo: Coffre) -> None:
    """`--password-file <(pass show coffre)` or /dev/stdin can be read once: the derivation
    started ahead leaves it to the command."""
    repo.ok("snapshots")  # a record exists: the next command starts a derivation ahead
    argv = [sys.executable, "-m", "coffre", "snapshots", "--repo", str(repo.repo), "--password-file",
            "/dev/stdin"]
    out = subprocess.run(argv, input=(PASSWORD + "\n").encode(), env=repo.env, capture_output=True,
                         check=False)
    assert out.returncode == 0, out.stderr


def test_the_early_start_loads_nothing_heavy() -> None:
    """What the entry point imports to start Argon2 stays out of the way of what it overlaps:
    no cryptography, no storage, no cache database, no command line parser, no translations."""
    code = ("import sys\n"
            "import coffre.cli.keyahead, coffre.repository.unlockahead\n"
            "print(' '.join(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    heavy = {"cryptography", "msgspec", "sqlite3", "argparse", "gettext", "concurrent.futures",
             "coffre.crypto.kdf", "coffre.repository.cache", "coffre.storage", "coffre.core.i18n"}
    assert "argon2.low_level" in loaded and not heavy & loaded, heavy & loaded
