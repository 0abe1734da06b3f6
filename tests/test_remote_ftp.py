"""Repositories on FTP servers (a real pyftpdlib server on 127.0.0.1): FTPS end to end, the
certificate and the password checked, plain FTP only when asked for, and never a password
in an output."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffre.core.errors import StoragePermissionDenied, UsageError
from coffre.storage.url import open_backend, parse_ftp
from servers import FTP_PASSWORD, FTPServer

from conftest import Coffre, make_tree, snapshot_ids, tree_digest


def test_backup_restore_check_prune_over_ftps(
    ftps_server: FTPServer, ftp_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    c = Coffre(ftps_server.url("/officine/coffre"), pwfile, cache_dir)
    c.env.update(ftp_env)
    c.ok("init")
    src = make_tree(tmp_path / "src")
    c.ok("backup", str(src))
    first = snapshot_ids(c)[0]
    (src / "docs" / "lettre-1.txt").write_text("changée\n")
    c.ok("backup", str(src))
    restored = tmp_path / "restored"
    c.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    c.ok("forget", first, "--prune")
    res = c.ok("check", "--read-data")
    assert "no errors" in res.out
    assert FTP_PASSWORD not in res.out + res.err
    assert list((ftps_server.root / "officine" / "coffre").rglob(".tmp-*")) == []


def test_untrusted_certificate_is_refused(
    ftps_server: FTPServer, ftp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")  # the system's authorities do not know the test server
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    b = open_backend(ftps_server.url("/elsewhere"))
    with pytest.raises(StoragePermissionDenied) as info:
        b.exists()
    assert "cannot be trusted" in info.value.message and "SSL_CERT_FILE" in (info.value.hint or "")


def test_wrong_password_is_a_clear_error_without_the_password(
    ftps_server: FTPServer, ftp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFRE_FTP_PASSWORD", "not-the-password-42")
    b = open_backend(ftps_server.url("/elsewhere"))
    with pytest.raises(StoragePermissionDenied) as info:
        b.exists()
    assert "refused the login" in info.value.message
    assert "not-the-password-42" not in f"{info.value.message} {info.value.hint}"


def test_plain_ftp_only_with_insecure_ftp_and_a_warning(
    pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    server = FTPServer.start(tmp_path / "plain", tls=False)
    try:
        c = Coffre(server.url("/coffre"), pwfile, cache_dir)
        c.env.update(server.env())
        res = c("init")
        assert res.code == 2 and "in clear" in res.err and "--insecure-ftp" in res.err
        assert not (server.root / "coffre").exists()
        res = c.ok("init", "--insecure-ftp")
        assert "warning: plain FTP" in res.err
        src = make_tree(tmp_path / "src", big=100_000)
        c.ok("backup", "--insecure-ftp", str(src))
        assert c("snapshots").code == 2  # every command needs the flag again
    finally:
        server.stop()


def test_missing_password_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from coffre.storage.ftp import _password

    monkeypatch.delenv("COFFRE_FTP_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StoragePermissionDenied) as info:
        _password(parse_ftp("ftps://pharmacie@ftp.example.fr/coffre"))
    assert "COFFRE_FTP_PASSWORD" in (info.value.hint or "") and ".netrc" in (info.value.hint or "")
    (tmp_path / ".netrc").write_text("machine ftp.example.fr login pharmacie password from-netrc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert _password(parse_ftp("ftps://pharmacie@ftp.example.fr/coffre")) == "from-netrc"


def test_ftp_urls() -> None:
    where = parse_ftp("ftps://pharmacie@ftp.example.fr:2121/~/coffre")
    assert (where.user, where.host, where.port, where.path, where.tls) == (
        "pharmacie", "ftp.example.fr", 2121, "coffre", True)
    assert parse_ftp(where.display) == where
    with pytest.raises(UsageError, match="password does not belong"):
        open_backend("ftps://pharmacie:secret@ftp.example.fr/coffre")

