"""The real command line through a real `coffre server` process over TLS: init, backup,
restore, check --read-data; a hard quota that stops a backup cleanly; the server killed with
SIGKILL while several clients upload; two server instances on PostgreSQL and SeaweedFS."""

from __future__ import annotations

from pathlib import Path

from server_process import CoffreServer, coffre_server, fresh_server  # noqa: F401 (fixtures)

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


def test_server_killed_during_uploads_from_several_clients(
    tmp_path: Path, pwfile: Path, fresh_server: CoffreServer,  # noqa: F811
) -> None:
    """SIGKILL while three pharmacies upload: after the restart every recorded (so every
    acknowledged) object is whole in storage under its name, the interrupted backups either
    finished (their retries reached the restarted server) or failed cleanly, and every next
    backup succeeds and checks clean."""
    import hashlib
    import os
    import time

    import sqlalchemy as sa

    from coffre.server.db import tables

    srv = fresh_server
    clients, sources = [], []
    for i in range(3):
        tokens = srv.tenant(f"pharmacie-kill-{i}")
        c = client(srv, "officine", tokens["backup"], pwfile, tmp_path / f"cache-{i}")
        c.env["COFFRE_STORAGE_RETRY_BUDGET"] = "60"
        c.ok("init", "--pack-size", "1")
        src = tmp_path / f"src-{i}"
        src.mkdir()
        for k in range(8):
            (src / f"scan-{k}.pdf").write_bytes(os.urandom(1_000_000))
        clients.append(c)
        sources.append(src)

    def recorded() -> list[tuple[int, str, str, str, int]]:
        o, r = tables.objects, tables.repositories
        ctx = srv.context()
        try:
            with ctx.db.read() as conn:
                return [tuple(row) for row in conn.execute(  # type: ignore[misc]
                    sa.select(r.c.tenant_id, r.c.name, o.c.kind, o.c.name, o.c.size)
                    .select_from(o.join(r, r.c.id == o.c.repository_id)))]
        finally:
            ctx.db.close()

    procs = [c.popen("backup", str(src)) for c, src in zip(clients, sources, strict=True)]
    deadline = time.monotonic() + 120
    while sum(kind == "data" for _, _, kind, _, _ in recorded()) < 6:
        assert all(p.poll() is None for p in procs), "a backup ended before the server was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)  # watching the server's records for the first packs
    srv.kill()
    srv.restart()
    for p in procs:
        _out, err = p.communicate(timeout=180)
        assert p.returncode in (0, 1), err  # finished through the restart, or failed cleanly
        assert b"Traceback" not in err, err

    # Every recorded object is whole, under its name, in the object store.
    rows = recorded()
    assert rows
    for tenant_id, repo, kind, name, size in rows:
        folder = srv.data / "objects" / f"t{tenant_id}" / repo
        path = folder / "config" if kind == "config" else (
            folder / kind / name[:2] / name if kind == "data" else folder / kind / name)
        data = path.read_bytes()
        assert len(data) == size
        if kind != "config":
            assert hashlib.sha256(data).hexdigest() == name

    for c, src in zip(clients, sources, strict=True):
        (src / "new.txt").write_text("after the crash\n")
        c.ok("backup", str(src))
        assert "no errors" in c.ok("check", "--read-data").out
    c = clients[0]
    c.ok("restore", "latest", "--target", str(tmp_path / "restored"))
    assert tree_digest(tmp_path / "restored" / str(sources[0]).lstrip("/")) == tree_digest(sources[0])
