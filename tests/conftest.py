"""Shared fixtures: a fast KDF, a private cache, a runner for the real `coffre` command,
and sample trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mutation_support import child_env, collect_hits

# Weak Argon2 parameters: an explicit test-only switch (see coffre.crypto.kdf).
os.environ["COFFRE_TEST_WEAK_KDF"] = "1"
# Messages in English unless a test asks for French (LANG=fr_FR.UTF-8 or --lang fr).
for _var in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
    os.environ.pop(_var, None)
os.environ["LANG"] = "C.UTF-8"

PASSWORD = "correct horse battery staple"


@dataclass
class Result:
    code: int
    out: str
    err: str
    outb: bytes

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"

    def json(self) -> Any:
        """The result of a --json command: the last JSON document on stdout (long operations
        print status lines before it)."""
        return json_documents(self.out)[-1]


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (one per line, or indented)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def until(what: str, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    """The first true value of `predicate`, looked at every 10 ms: waiting for an event (a
    process's record, a thread's step), never for a length of time; AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _default_sigint() -> None:
    """As in a terminal: Ctrl-C (SIGINT) reaches the command even when the test runner was
    started in the background, where SIGINT is inherited as ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def communicate_after_signal(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[bytes, bytes]:
    """The output of a process sent a signal; if it hangs instead, a failure with every thread's
    stack (started with PYTHONFAULTHANDLER=1, it prints them on SIGABRT)."""
    import signal

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        raise AssertionError("the command did not end after the signal; its threads:\n"
                             + err.decode(errors="replace")[-12000:]) from None


def state_for(cache: Path | str) -> Path:
    """The state folder (marks of repositories) of the machine whose cache is `cache`: one
    machine, one cache, one state; a test's second cache is a second machine."""
    cache = Path(cache)
    return cache.with_name(cache.name + "-state")


class Coffre:
    """Runs the real command line in a subprocess, as a user would. Its machine is its cache
    folder, with the state folder beside it (state_for)."""

    def __init__(self, repo: Path | str, pwfile: Path, cache: Path) -> None:
        self.repo = repo
        self.pwfile = pwfile
        self.env = {
            **os.environ,
            "COFFRE_CACHE_DIR": str(cache),
            "COFFRE_STATE_DIR": str(state_for(cache)),
            "COFFRE_TEST_WEAK_KDF": "1",
            **child_env(),  # under mutmut only: the child runs the mutated code too
        }
        self.env.pop("COFFRE_REPOSITORY", None)
        self.env.pop("COFFRE_PASSWORD_FILE", None)
        self.env.pop("COFFRE_PASSWORD_COMMAND", None)

    def argv(self, *args: str, repo: bool = True) -> list[str]:
        base = [sys.executable, "-m", "coffre"]
        if not repo:
            return [*base, *args]
        cmd, rest = args[0], list(args[1:])
        head = [cmd]
        if cmd in ("key", "repair", "wal", "standby") and rest:
            head.append(rest.pop(0))
        return [*base, *head, "--repo", str(self.repo), "--password-file", str(self.pwfile), *rest]

    def __call__(self, *args: str, repo: bool = True, input: bytes | None = None,
                 env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        proc = subprocess.run(
            self.argv(*args, repo=repo), input=input, capture_output=True,
            env={**self.env, **(env or {})}, timeout=timeout, check=False,
            preexec_fn=_default_sigint,
        )
        return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"), proc.stdout)

    def ok(self, *args: str, **kw: object) -> Result:
        res = self(*args, **kw)  # type: ignore[arg-type]
        assert res.code == 0, res
        return res

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env={**self.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


NOBODY = 65534


class AsNobody(Coffre):
    """The real command, run as the unprivileged 'nobody' user."""

    def argv(self, *args: str, repo: bool = True) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                *super().argv(*args, repo=repo)]


def chown_tree(root: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's private one (which only root can enter), that 'nobody' and a
    database server's account can reach and write in, as a share would be."""
    d = Path(tempfile.mkdtemp(prefix="coffre-shared-"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _bytecode() -> None:
    """Coffre's modules compiled once, as pip compiles an installed Coffre: this machine sets
    PYTHONDONTWRITEBYTECODE, so every `coffre` a test starts would otherwise compile each
    module from source again (about 0.25 s of the 0.5 s a command takes to start). Python
    checks each compiled file against its source's time and size, so a stale one is never
    used."""
    import compileall

    import coffre

    compileall.compile_dir(str(Path(coffre.__file__).parent), quiet=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Under mutmut's stats phase, before it reads what a test reached: add what the test's
    `coffre` processes reached (see mutation_support)."""
    collect_hits()
    yield


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes marks into the machine's own state folder (/var/lib/coffre as root)."""
    monkeypatch.setenv("COFFRE_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("COFFRE_CACHE_DIR", str(d))
    monkeypatch.setenv("COFFRE_STATE_DIR", str(state_for(d)))
    return d


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    p = tmp_path / "password"
    p.write_text(PASSWORD + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def coffre(tmp_path: Path, pwfile: Path, cache_dir: Path) -> Coffre:
    return Coffre(tmp_path / "repo", pwfile, cache_dir)


@pytest.fixture
def repo(coffre: Coffre) -> Coffre:
    """An initialised repository."""
    coffre.ok("init")
    return coffre


def make_tree(root: Path, seed: int = 7, big: int = 3_000_000) -> Path:
    """A small pharmacy-like tree with compressible and incompressible files."""
    import random

    rnd = random.Random(seed)
    (root / "db").mkdir(parents=True)
    (root / "db" / "officine.db").write_bytes(
        b"".join(f"vente {i} produit {rnd.randrange(10**6)}\n".encode() for i in range(big // 30))
    )
    scans = root / "scans" / "2026"
    scans.mkdir(parents=True)
    for i in range(5):
        (scans / f"scan-{i}.jpg").write_bytes(rnd.randbytes(rnd.randrange(20_000, 300_000)))
    docs = root / "docs"
    docs.mkdir()
    for i in range(20):
        (docs / f"lettre-{i}.txt").write_text(f"Bonjour {i}\n" * (i * 10 + 1))
    (docs / "empty.txt").write_bytes(b"")
    (root / "empty-dir").mkdir()
    age_tree(root)
    return root


def age_tree(root: Path, seconds: int = 3600) -> None:
    """Set every mtime an hour back, as for files written before the backup started
    (files modified in the last seconds are deliberately not trusted to the files cache)."""
    import time

    t = time.time_ns() - seconds * 1_000_000_000
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, ns=(t, t), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


def agent_toml(folder: Path, url: Path | str, pwfile: Path, entries: str, language: str = "en") -> Path:
    """An agent's configuration file in `folder`: its state there, in `language`, the
    repository `nas` at `url`, then `entries` (its jobs, its continuity tables...)."""
    path = folder / "coffre.toml"
    path.write_text(f"""
[agent]
state_dir = "{folder / 'agent'}"
language = "{language}"

[repositories.nas]
url = "{url}"
password_file = "{pwfile}"

{entries}
""")
    return path


def snapshot_ids(c: Coffre) -> list[str]:
    import json

    return [s["id"] for s in json.loads(c.ok("snapshots", "--json").out)]


def tree_digest(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Path -> (type, mode, content or link target) of every entry below root."""
    out: dict[str, tuple[str, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", 0, os.readlink(p).encode())
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, b"")
            else:
                out[rel] = ("file", st.st_mode & 0o7777, p.read_bytes())
    return out


Mount = Callable[..., Path]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """mount(name, *args): a real mount at tmp_path/name (a small tmpfs for a full disk, a
    read-only bind mount for a write-protected one), unmounted at teardown."""
    done: list[Path] = []

    def make(name: str, *args: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", *args, str(point)], check=True)
        done.append(point)
        return point

    yield make
    for point in reversed(done):
        subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.fixture
def exfat(tmp_path: Path) -> Iterator[Path]:
    """A real exFAT file system, as on most USB disks sold (no hard links, no owners, not every
    mode), in an image on a loop device: mounted through FUSE (exfat-fuse), since a kernel may
    have no exFAT driver (this machine's has none); unmounted and detached at teardown."""
    image = tmp_path / "usb-disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.exfat", "-L", "COFFRE-A", str(image)], check=True, capture_output=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    point = tmp_path / "usb"
    point.mkdir()
    try:
        subprocess.run(["mount.exfat-fuse", device, str(point)], check=True, capture_output=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", "--lazy", str(point)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


@pytest.fixture
def posix_exfat(exfat: Path, tmp_path: Path) -> Iterator[Path]:
    """The exFAT disk through fuse-posixovl, which keeps in files of its own what FAT has not
    (symlinks, hard links, modes, owners): a target that ignores case and has symlinks and hard
    links, as an SMB share with symlinks has. Unmounted at teardown, before the disk."""
    point = tmp_path / "posix-usb"
    point.mkdir()
    subprocess.run(["mount.posixovl", "-S", str(exfat), str(point)], check=True, capture_output=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.fixture
def restored(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "restored"


def _session_server(start: Any, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Any]:
    server = start(tmp_path_factory.mktemp(name))
    yield server
    server.stop()


def _environment(server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What a user of this server sets (credentials, keys), in this process's environment too."""
    env: dict[str, str] = server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session."""
    from servers import SeaweedFS

    yield from _session_server(SeaweedFS.start, tmp_path_factory, "seaweedfs")


@pytest.fixture
def s3_env(seaweedfs: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _environment(seaweedfs, monkeypatch)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real OpenSSH server on 127.0.0.1 for the whole session."""
    from servers import SSHServer

    yield from _session_server(SSHServer.start, tmp_path_factory, "sshd")


@pytest.fixture
def ssh_env(sshd: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _environment(sshd, monkeypatch)


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real FTP server (pyftpdlib) requiring explicit TLS, on 127.0.0.1."""
    from servers import FTPServer

    yield from _session_server(FTPServer.start, tmp_path_factory, "ftps")


@pytest.fixture
def ftp_env(ftps_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _environment(ftps_server, monkeypatch)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL server on 127.0.0.1 for the whole session (password over TCP)."""
    from dbservers import PostgresServer

    yield from _session_server(PostgresServer.start, tmp_path_factory, "postgres")


@pytest.fixture
def pg_env(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _environment(postgres, monkeypatch)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real MariaDB server on 127.0.0.1 for the whole session (password over TCP)."""
    from dbservers import MariaDBServer

    yield from _session_server(MariaDBServer.start, tmp_path_factory, "mariadb")


@pytest.fixture
def my_env(mariadb: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _environment(mariadb, monkeypatch)


from browser import browser_page, chromium, shots  # noqa: E402,F401  (the pages' browser fixtures)
