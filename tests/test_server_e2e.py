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



def set_quota(server: CoffreServer, tenant: str, soft: int | None, hard: int | None) -> None:
    """The provider changes a tenant's quotas (what `coffre server tenant quota` does)."""
    from coffre.server.db import tables

    ctx = server.context()
    try:
        with ctx.db.begin() as conn:
            t = tables.tenants
            conn.execute(t.update().where(t.c.name == tenant).values(quota_soft=soft, quota_hard=hard))
    finally:
        ctx.db.close()


def test_a_backup_over_the_hard_quota_stops_cleanly_and_the_repository_stays_whole(
    coffre_server: CoffreServer, tmp_path: Path, pwfile: Path, cache_dir: Path,  # noqa: F811
) -> None:
    import os

    tokens = coffre_server.tenant("quota-e2e", quota_soft=500_000, quota_hard=2_000_000)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"scan-{i}.pdf").write_bytes(os.urandom(1_000_000))
    c = client(coffre_server, "officine", tokens["backup"], pwfile, cache_dir)
    c.ok("init", "--pack-size", "1")
    res = c("backup", str(src))
    assert res.code == 1, res
    assert "hard quota of 1.91 MiB (2000000 bytes) would be exceeded" in res.err, res
    assert "ask the provider to raise the quota" in res.err
    assert res.err.count("warning: the soft quota on the Coffre server is reached") == 1, res
    assert "Traceback" not in res.err and tokens["backup"] not in res.out + res.err
    assert snapshot_ids(c) == []
    check = c("check", "--read-data")
    assert check.code == 0, check
    set_quota(coffre_server, "quota-e2e", None, 50_000_000)
    c.ok("backup", str(src))
    assert "no errors" in c.ok("check", "--read-data").out
    c.ok("restore", "latest", "--target", str(tmp_path / "restored"))
    assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)
