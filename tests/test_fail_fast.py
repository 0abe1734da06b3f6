"""Setup errors fail at once, with the reason: a refused connection, an unknown host, a TLS or
host-key failure, a refused login. Each is made real on 127.0.0.1 (a closed port, a name under
.invalid, the real sshd, SeaweedFS and FTP servers of tests/servers.py) and run through the
real `coffre` with the default retry budget (4 minutes): the command must end in seconds, having
tried once. Retries stay for a storage that answered before (tests/test_remote_faults.py kills
servers mid-backup; the unit tests at the end check the rule itself)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from coffre.core.errors import ConnectFailed, StorageSetupError, StorageUnreachable
from coffre.storage.memory import MemoryBackend
from coffre.storage.retry import RetryBackend

from conftest import Coffre, Result

FAST_S = 10.0  # the retry budget is 240 s, the first pause about 1 s: one try only takes < 2 s


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(c: Coffre, *args: str, env: dict[str, str] | None = None) -> tuple[Result, float]:
    started = time.monotonic()
    res = c(*args, env=env)
    return res, time.monotonic() - started


def failed_at_once(res: Result, elapsed: float, *words: str) -> None:
    assert res.code == 1, res
    assert elapsed < FAST_S, (elapsed, res)
    assert "trying again" not in res.err and "Traceback" not in res.err, res
    for w in words:
        assert w in res.err, (w, res)


@pytest.fixture
def machine(tmp_path: Path, pwfile: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Coffre for a repository URL, with the default retry policy (nothing lowers it)."""
    for var in ("COFFRE_STORAGE_RETRY_BUDGET", "COFFRE_STORAGE_RETRIES", "COFFRE_STORAGE_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)

    def make(url: str, env: dict[str, str] | None = None) -> Coffre:
        c = Coffre(url, pwfile, cache_dir)
        for var in ("COFFRE_STORAGE_RETRY_BUDGET", "COFFRE_STORAGE_RETRIES", "COFFRE_STORAGE_TIMEOUT"):
            c.env.pop(var, None)
        c.env.update(env or {})
        return c

    return make


# -- refused connections, unknown hosts ----------------------------------------------------------
@pytest.mark.parametrize("scheme", ["sftp", "ftps", "s3+http", "s3"])
def test_a_refused_connection_fails_at_once_naming_host_and_port(machine: Any, scheme: str) -> None:
    port = closed_port()
    user = "" if scheme.startswith("s3") else "pharmacie@"
    c = machine(f"{scheme}://{user}127.0.0.1:{port}/coffre/depot",
                {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "COFFRE_FTP_PASSWORD": "p",
                 "AWS_DEFAULT_REGION": "us-east-1"})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, f"at 127.0.0.1, port {port}, refused the connection",
                   "check the host and port in the repository URL")
    # An existing repository's commands too, not only init.
    res, elapsed = run(c, "snapshots")
    failed_at_once(res, elapsed, "refused the connection")


def test_the_reported_case_init_on_a_wrong_sftp_port(machine: Any) -> None:
    c = machine("sftp://127.0.0.1:1/x")
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "the SSH server at 127.0.0.1, port 1, refused the connection")


@pytest.mark.parametrize("scheme", ["sftp", "ftps", "s3"])
def test_an_unknown_host_fails_at_once(machine: Any, scheme: str) -> None:
    # .invalid never resolves (RFC 2606), with or without a network.
    started = time.monotonic()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("nas-pharmacie.invalid", 22)
    assert time.monotonic() - started < 2, "name resolution is slow here: the test would not measure Coffre"
    user = "" if scheme == "s3" else "pharmacie@"
    c = machine(f"{scheme}://{user}nas-pharmacie.invalid/coffre/depot",
                {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "COFFRE_FTP_PASSWORD": "p",
                 "AWS_DEFAULT_REGION": "us-east-1"})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "the host name nas-pharmacie.invalid is unknown",
                   "check the spelling of the host")


# -- SSH: host keys and logins -----------------------------------------------------------------
def test_sftp_with_a_changed_host_key_fails_at_once(machine: Any, sshd: Any, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True, capture_output=True)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    c = machine(sshd.url(str(tmp_path / "nas")), {**sshd.env(), "COFFRE_SSH_KNOWN_HOSTS": str(wrong)})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "presented a different key than the one known", "attack")
    assert not (tmp_path / "nas").exists()


def test_sftp_with_an_unknown_host_key_fails_at_once(machine: Any, sshd: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    c = machine(sshd.url(str(tmp_path / "nas")), {**sshd.env(), "COFFRE_SSH_KNOWN_HOSTS": str(empty)})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "is not known", "SHA256:", "ssh-keyscan")


def test_sftp_with_a_refused_login_fails_at_once(machine: Any, sshd: Any, tmp_path: Path) -> None:
    # Coffre logs in to SSH with keys only: the wrong credential is a key the server does not know.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
                   check=True, capture_output=True)
    c = machine(sshd.url(str(tmp_path / "nas")), {**sshd.env(), "COFFRE_SSH_KEY": str(tmp_path / "stranger")})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, f"refused the login of {sshd.user}", "authorized_keys")


def test_sftp_with_a_key_behind_a_passphrase_says_so(machine: Any, sshd: Any, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret phrase", "-f",
                    str(tmp_path / "locked")], check=True, capture_output=True)
    c = machine(sshd.url(str(tmp_path / "nas")), {**sshd.env(), "COFFRE_SSH_KEY": str(tmp_path / "locked")})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "is protected by a passphrase", "ssh-add")


# -- S3: credentials, TLS ------------------------------------------------------------------------
def test_s3_with_a_wrong_secret_key_fails_at_once(machine: Any, seaweedfs: Any) -> None:
    c = machine(seaweedfs.url("pharmacie", "mauvais-secret"),
                {**seaweedfs.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY")
    assert "not-the-secret" not in res.err


def test_s3_with_an_unknown_access_key_fails_at_once(machine: Any, seaweedfs: Any) -> None:
    c = machine(seaweedfs.url("pharmacie", "mauvaise-cle"),
                {**seaweedfs.env(), "AWS_ACCESS_KEY_ID": "nobody-knows-me"})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "InvalidAccessKeyId", "AWS_ACCESS_KEY_ID")


def test_s3_over_tls_to_a_plain_http_server_fails_at_once(machine: Any, seaweedfs: Any) -> None:
    c = machine(f"s3://127.0.0.1:{seaweedfs.port}/pharmacie/tls", seaweedfs.env())
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, f"the TLS handshake with the S3 storage at 127.0.0.1, port {seaweedfs.port}",
                   "s3+http://")


# -- FTP: passwords, TLS -------------------------------------------------------------------------
def test_ftps_with_a_wrong_password_fails_at_once(machine: Any, ftps_server: Any) -> None:
    c = machine(ftps_server.url("/mauvais"), {**ftps_server.env(), "COFFRE_FTP_PASSWORD": "wrong-password"})
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "refused the login", "COFFRE_FTP_PASSWORD")
    assert "wrong-password" not in res.err


def test_ftps_with_an_untrusted_certificate_fails_at_once(machine: Any, ftps_server: Any) -> None:
    env = {**ftps_server.env(), "SSL_CERT_FILE": os.devnull}  # no authority vouches for it
    c = machine(ftps_server.url("/sans-ca"), env)
    res, elapsed = run(c, "init")
    failed_at_once(res, elapsed, "presented a certificate that cannot be trusted", "SSL_CERT_FILE")


def test_ftps_to_a_server_without_tls_fails_at_once(machine: Any, tmp_path: Path) -> None:
    from servers import FTPServer

    plain = FTPServer.start(tmp_path / "plain", tls=False)
    try:
        c = machine(plain.url("/x").replace("ftp://", "ftps://"), plain.env())
        res, elapsed = run(c, "init")
        failed_at_once(res, elapsed, f"the FTP server at 127.0.0.1, port {plain.port}, does not offer TLS",
                       "--insecure-ftp")
    finally:
        plain.stop()


# -- the rule itself: first contact fails at once, a storage that answered is retried ------------
class Flaky(MemoryBackend):
    """Answers `answers` requests, then cannot be connected to."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers
        self.calls = 0

    def exists(self) -> bool:
        self.calls += 1
        if self.calls > self.answers:
            raise ConnectFailed("the SSH server at nas, port 22, refused the connection", "check it")
        return super().exists()


def test_a_storage_never_reached_is_not_retried() -> None:
    pauses: list[float] = []
    b = RetryBackend(Flaky(0), sleep=pauses.append)
    with pytest.raises(StorageSetupError) as info:
        b.exists()
    assert pauses == [] and b.inner.calls == 1  # type: ignore[attr-defined]
    assert info.value.message == "the SSH server at nas, port 22, refused the connection"
    assert info.value.hint == "check it"


def test_a_storage_that_answered_before_is_retried_when_refusing() -> None:
    pauses: list[float] = []
    warnings: list[str] = []
    b = RetryBackend(Flaky(1), sleep=pauses.append, warn=warnings.append, attempts=3)
    assert b.exists() is False  # answered: the storage is there; now it restarts
    with pytest.raises(StorageUnreachable):
        b.exists()
    assert len(pauses) == 2 and b.inner.calls == 4  # type: ignore[attr-defined]
    assert "refused the connection; trying again in" in warnings[0]
