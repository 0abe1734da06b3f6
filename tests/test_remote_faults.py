"""A storage server that dies mid-backup, over each remote kind (its own real server, killed
with SIGKILL and started again): the backup fails with a clear message and a non-zero exit,
leaves no snapshot and no visible partial object, and the next run completes."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_process import CoffreServer
from servers import SECRET_KEY, FTPServer, SeaweedFS, Server, SSHServer

from conftest import Coffre, snapshot_ids, tree_digest

Running = tuple[Server, str, dict[str, str], str]  # server, repository URL, its env, words of the error


@pytest.fixture(params=["s3", "sftp", "ftps", "coffre"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    kind = request.param
    srv: Server
    if kind == "s3":
        srv = SeaweedFS.start(tmp_path / "srv")
        # "connection to the storage failed" for a cut transfer, "the S3 storage at ... refused
        # the connection" for a new one: either may end the backup.
        url, env, words = srv.url("pharmacie", "coffre"), SeaweedFS.env(), "storage"
    elif kind == "sftp":
        srv = SSHServer.start(tmp_path / "srv")
        url, env, words = srv.url(str(tmp_path / "nas")), srv.env(), "SSH server"
    elif kind == "ftps":
        srv = FTPServer.start(tmp_path / "srv")
        url, env, words = srv.url("/coffre"), srv.env(), "FTP server"
    else:
        coffre = CoffreServer.start(tmp_path / "srv")
        srv = coffre
        env = {**coffre.env(), "COFFRE_SERVER_TOKEN": coffre.tenant()["backup"]}
        url, words = coffre.url("coffre"), "Coffre server"
    yield srv, url, env, words
    srv.stop()


def backup_then_kill(c: Coffre, src: Path, srv: Server, url: str, env: dict[str, str],
                     monkeypatch: pytest.MonkeyPatch) -> subprocess.Popen[bytes]:
    """Start a backup of src and kill the server once three packs are stored."""
    from coffre.storage.url import open_backend

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    watcher = open_backend(url)
    proc = c.popen("backup", str(src))
    deadline = time.monotonic() + 120
    while len(list(watcher.list("data"))) < 3:
        assert proc.poll() is None, "the backup ended before the server could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)  # watching the storage for the first packs
    watcher.close()
    srv.kill()
    return proc


def test_server_killed_mid_backup_fails_clearly_and_the_rerun_completes(
    server: Running, pwfile: Path, cache_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    srv, url, env, words = server
    c = Coffre(url, pwfile, cache_dir)
    c.env.update({**env, "COFFRE_STORAGE_RETRIES": "1"})
    c.ok("init", "--pack-size", "1")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"scan-{i}.pdf").write_bytes(os.urandom(3_000_000))
    proc = backup_then_kill(c, src, srv, url, env, monkeypatch)
    err = proc.communicate(timeout=300)[1].decode(errors="replace")
    assert proc.returncode == 1
    assert words in err and "Traceback" not in err
    srv.restart()
    assert snapshot_ids(c) == []  # no snapshot that looks complete
    check = c("check", "--read-data")
    assert check.code == 0, check  # what the dead backup left is whole or invisible
    c.ok("backup", str(src))
    assert "no errors" in c.ok("check", "--read-data").out
    restored = tmp_path / "restored"
    c.ok("restore", "latest", "--target", str(restored))
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)


class StalledServer:
    """Accepts connections, reads what comes, and never answers: a stuck link or server."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)  # held open, never answered

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("scheme", ["s3+http", "sftp", "ftps", "https"])
def test_a_stuck_server_times_out_and_is_retried(scheme: str, pwfile: Path, cache_dir: Path) -> None:
    stalled = StalledServer()
    try:
        url = (f"s3+http://127.0.0.1:{stalled.port}/pharmacie/coffre" if scheme == "s3+http"
               else f"https://127.0.0.1:{stalled.port}/coffre" if scheme == "https"
               else f"{scheme}://coffre@127.0.0.1:{stalled.port}/coffre")
        c = Coffre(url, pwfile, cache_dir)
        c.env.update({"COFFRE_STORAGE_TIMEOUT": "0.5", "COFFRE_STORAGE_RETRIES": "2",
                      "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret-key-never-shown",
                      "COFFRE_FTP_PASSWORD": "ftp-password-never-shown",
                      "COFFRE_SERVER_TOKEN": "cft_aaaaaaaaaaaaaaaa_token-never-shown"})
        res = c("init", timeout=120)
        assert res.code == 1
        assert "gave up after 2 attempts" in res.err and "Traceback" not in res.err
        assert stalled.accepted >= 2  # timed out, then tried again on a new connection
        assert "never-shown" not in res.out + res.err
    finally:
        stalled.close()


def test_a_dead_s3_server_ends_the_backup_after_the_retry_budget(
    pwfile: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the budget, each pack in flight and then the lock removal had its own ~4 minutes
    of retries: a dead server held the backup (and the jobs behind it) for a quarter of an hour."""

    srv = SeaweedFS.start(tmp_path / "srv")
    try:
        url = srv.url("pharmacie", "coffre")
        c = Coffre(url, pwfile, cache_dir)
        c.env.update({**SeaweedFS.env(), "COFFRE_STORAGE_RETRY_BUDGET": "10"})  # 10 attempts a request
        c.ok("init", "--pack-size", "1")
        src = tmp_path / "src"
        src.mkdir()
        (src / "officine.db").write_bytes(os.urandom(48_000_000))
        proc = backup_then_kill(c, src, srv, url, SeaweedFS.env(), monkeypatch)
        try:
            # A bound on behaviour (the budget, not retries per object), far above the budget.
            err = proc.communicate(timeout=90)[1].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the backup still retried 90 s after the server died, with a 10 s budget")
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        # One message, last, after the warnings of the retries: no pile of per-thread errors.
        lines = err.splitlines()
        assert sum(line.startswith("coffre: ") for line in lines) == 1, err
        message, hint = lines[-2:]
        said = re.fullmatch(rf"coffre: the storage at {re.escape(url)} has not answered for (\d+) s "
                            r"\(last error: .+\); gave up", message)
        assert said and 10 <= int(said[1]) < 90, err
        assert hint.startswith("hint: ") and "the next run resumes" in hint
        assert SECRET_KEY not in err
        srv.restart()
        assert snapshot_ids(c) == []
        c.ok("backup", str(src))
        assert len(snapshot_ids(c)) == 1
        c.ok("check")
    finally:
        srv.stop()
