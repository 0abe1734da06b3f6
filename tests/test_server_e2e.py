"""The real command line through a real `coffre server` process over TLS: init, backup,
restore, check --read-data; a hard quota that stops a backup cleanly; the server killed with
SIGKILL while several clients upload; two server instances on PostgreSQL and SeaweedFS."""

from __future__ import annotations

from pathlib import Path

from server_process import CoffreServer, coffre_server  # noqa: F401 (fixture)

from conftest import Coffre, make_tree, snapshot_ids, tree_digest


def client(server: CoffreServer, repo: str, token: str, pwfile: Path, cache: Path) -> Coffre:
    c = Coffre(server.url(repo), pwfile, cache)
    c.env.update(server.env())
    c.env["COFFRE_SERVER_TOKEN"] = token
    c.env.pop("COFFRE_SERVER_TOKEN_FILE", None)
    return c


def test_init_backup_restore_check_through_the_server(
    coffre_server: CoffreServer, tmp_path: Path, pwfile: Path, cache_dir: Path,  # noqa: F811
) -> None:
    tokens = coffre_server.tenant()
    src = make_tree(tmp_path / "src")
    c = client(coffre_server, "officine", tokens["backup"], pwfile, cache_dir)
    c.ok("init")
    c.ok("backup", str(src))
    (src / "docs" / "lettre-3.txt").write_text("changed\n")
    c.ok("backup", str(src))
    assert len(snapshot_ids(c)) == 2
    assert "no errors" in c.ok("check", "--read-data").out
    # A restore with the read-only role, on another machine (its own cache).
    r = client(coffre_server, "officine", tokens["read"], pwfile, tmp_path / "cache2")
    r.ok("restore", "latest", "--target", str(tmp_path / "restored"))
    assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)
