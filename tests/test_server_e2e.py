"""The real command line through a real `coffre server` process over TLS: init, backup,
restore, check --read-data; a hard quota that stops a backup cleanly; the server killed with
SIGKILL while several clients upload; two server instances on PostgreSQL and SeaweedFS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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

    # The first pack (at most ~2.1 MB: 1 MiB, then the chunk that crosses it) always fits
    # under the hard quota; the 4 MB of scans never do.
    tokens = coffre_server.tenant("quota-e2e", quota_soft=500_000, quota_hard=3_000_000)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"scan-{i}.pdf").write_bytes(os.urandom(1_000_000))
    c = client(coffre_server, "officine", tokens["backup"], pwfile, cache_dir)
    c.ok("init", "--pack-size", "1")
    res = c("backup", str(src))
    assert res.code == 1, res
    assert "hard quota of 2.86 MiB (3000000 bytes) would be exceeded" in res.err, res
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


def verify_chains(ctx: Any) -> dict[int, int]:
    """Every tenant's audit chain whole: numbered without gaps, each entry's hash over the
    previous one and its body, the head at the last entry. {tenant: entries}."""
    import sqlalchemy as sa

    from coffre.server import audit
    from coffre.server.db import tables

    a, h = tables.audit_entries, tables.audit_heads
    counts: dict[int, int] = {}
    with ctx.db.read() as conn:
        heads = {r.tenant_id: r for r in conn.execute(sa.select(h))}
        previous: dict[int, tuple[int, str]] = {}
        for e in conn.execute(sa.select(a).order_by(a.c.tenant_id, a.c.seq)):
            seq, prev = previous.get(e.tenant_id, (0, audit.GENESIS))
            assert (e.seq, e.prev_hash) == (seq + 1, prev)
            body = audit.Entry(e.tenant_id, e.operation, e.outcome, e.token_id, e.client, e.kind, e.count,
                               e.bytes, e.detail)
            canonical = audit.canonical(e.tenant_id, e.seq, e.time_ns, body)
            assert e.entry_hash == audit.chain_hash(prev, canonical)
            previous[e.tenant_id] = (e.seq, e.entry_hash)
            counts[e.tenant_id] = counts.get(e.tenant_id, 0) + 1
    for tenant, (seq, digest) in previous.items():
        assert (heads[tenant].seq, heads[tenant].entry_hash) == (seq, digest)
    return counts


def test_two_instances_on_postgresql_and_seaweedfs(
    tmp_path: Path, pwfile: Path, postgres: Any, pg_env: dict[str, str], seaweedfs: Any,
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scale-out layout: metadata in PostgreSQL, objects in SeaweedFS (S3), two stateless
    instances. Clients alternate between them (commands, and uploads racing for one quota);
    afterwards usage matches the objects, the quota held, every audit chain is whole."""
    import hashlib
    import threading

    import sqlalchemy as sa

    from coffre.core.errors import QuotaExceeded
    from coffre.server.db import tables
    from coffre.storage.base import Handle
    from coffre.storage.server import ServerBackend
    from coffre.storage.url import parse_server
    from dbservers import DB_USER

    postgres.psql("CREATE DATABASE coffre_two")
    env = {**s3_env, **pg_env}
    one = CoffreServer.start(
        tmp_path / "one", env=env, db_url=f"postgresql://{DB_USER}@127.0.0.1:{postgres.port}/coffre_two",
        objects_url=seaweedfs.url("coffre-server", "objects"))
    two = one.twin(tmp_path / "two")
    try:
        # One pharmacy's commands, alternating between the instances.
        tokens = one.tenant("pharmacie-scale")
        src = make_tree(tmp_path / "src")
        c1 = client(one, "officine", tokens["backup"], pwfile, tmp_path / "cache")
        c2 = client(two, "officine", tokens["backup"], pwfile, tmp_path / "cache")
        c1.ok("init")
        c2.ok("backup", str(src))
        (src / "docs" / "lettre-1.txt").write_text("changed\n")
        c1.ok("backup", str(src))
        assert "no errors" in c2.ok("check", "--read-data").out
        prune = client(one, "officine", tokens["prune"], pwfile, tmp_path / "cache")
        prune.ok("forget", "--keep-last", "1", "--prune")
        assert "no errors" in client(two, "officine", tokens["read"], pwfile, tmp_path / "cache").ok(
            "check", "--read-data").out
        c2.ok("restore", "latest", "--target", str(tmp_path / "restored"))
        assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)

        # Two uploaders of one tenant, each on its own instance, racing for the last room.
        racing = one.tenant("pharmacie-race", quota_hard=200_000)["backup"]
        monkeypatch.setenv("SSL_CERT_FILE", str(one.cert))
        backends = [ServerBackend(parse_server(s.url("course")), token=racing) for s in (one, two)]
        backends[0].create()
        stored: list[int] = []

        def upload(b: ServerBackend, who: int) -> None:
            for i in range(40):
                data = f"{who}-{i}-".encode() * 1_000
                try:
                    b.save(Handle("data", hashlib.sha256(data).hexdigest()), data)
                except QuotaExceeded:
                    return
                stored.append(len(data))

        threads = [threading.Thread(target=upload, args=(b, i)) for i, b in enumerate(backends)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for b in backends:
            b.close()
        assert 190_000 < sum(stored) <= 200_000
    finally:
        two.stop()
        one.stop()  # its read tally flushed into the journal at stop

    ctx = one.context()
    try:
        o, r, t, u = tables.objects, tables.repositories, tables.tenants, tables.usage_days
        with ctx.db.read() as conn:
            for tenant in conn.execute(sa.select(t)):
                live = binned = 0
                for row in conn.execute(sa.select(o.c.size, o.c.binned_ns).select_from(
                        o.join(r, r.c.id == o.c.repository_id)).where(r.c.tenant_id == tenant.id)):
                    live += row.size if row.binned_ns is None else 0
                    binned += row.size if row.binned_ns is not None else 0
                assert (tenant.stored_bytes, tenant.binned_bytes) == (live, binned), tenant.name
            race = conn.execute(sa.select(t).where(t.c.name == "pharmacie-race")).one()
            assert race.stored_bytes == sum(stored)
            scale = conn.execute(sa.select(t).where(t.c.name == "pharmacie-scale")).one()
            assert scale.binned_bytes > 0  # what forget --prune deleted is in the recycle bin
            uploads = conn.execute(sa.select(sa.func.sum(u.c.uploads))
                                   .where(u.c.tenant_id == race.id)).scalar()
            assert uploads == len(stored)
        counts = verify_chains(ctx)
        assert counts[race.id] >= len(stored) + 2  # create, every upload, the refusals
    finally:
        ctx.db.close()


def test_serving_sigterm_the_request_log_and_plain_http(
    tmp_path: Path, fresh_server: CoffreServer, pwfile: Path,  # noqa: F811
) -> None:
    """SIGTERM stops the server with status 0 once answered, the reads counted meanwhile in
    the journal; one log line per request, with token ids and never a token; plain HTTP is
    refused on an address other than loopback unless --insecure-http."""
    import signal
    import subprocess
    import sys

    import sqlalchemy as sa

    from coffre.server import tokens as tokens_module
    from coffre.server.db import tables

    srv = fresh_server
    tokens = srv.tenant("pharmacie-log")
    c = client(srv, "officine", tokens["backup"], pwfile, tmp_path / "cache")
    c.ok("init")
    c.ok("snapshots")
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    log = srv.log.read_text()
    assert "stopped" in log.splitlines()[-1]
    token_id = tokens_module.token_id_of(tokens["backup"])
    requests = [line for line in log.splitlines() if "coffre.server.access" in line]
    assert len(requests) > 5 and all(f"token={token_id}" in line for line in requests[1:]), log
    assert "POST /v1/repos/officine 201" in log and "/v1/repos/officine/keys/" in log
    for secret in tokens.values():
        assert secret.split("_", 2)[2] not in log
    ctx = srv.context()
    try:
        a = tables.audit_entries
        with ctx.db.read() as conn:
            reads = conn.execute(sa.select(a.c.operation).where(a.c.operation.in_(["get", "head", "list"]),
                                                               a.c.token_id == token_id)).all()
        assert reads  # flushed at the stop
    finally:
        ctx.db.close()

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        bare = tmp_path / "no-certificate"  # (--data of a server without tls/cert.pem)
        return subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(bare), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    refused = serve("--listen", "0.0.0.0:1")
    assert refused.returncode == 2 and "take tokens in clear on 0.0.0.0" in refused.stderr, refused
    assert "--insecure-http" in refused.stderr
    assert serve("--listen", "nonsense:99999").returncode == 2
    assert "--tls-cert and --tls-key go together" in serve("--tls-cert", str(srv.cert)).stderr


def test_the_agent_copies_to_a_hosting_server_with_its_token_file(
    coffre_server: CoffreServer, tmp_path: Path, coffre: Coffre,  # noqa: F811
) -> None:
    """A pharmacy's job: the NAS first, then a copy to the provider's server (https://, the
    token in a file only root reads), checked against the NAS copy; the token never shows."""
    tokens = coffre_server.tenant()
    src = make_tree(tmp_path / "officine")
    coffre.ok("init")
    token_file = tmp_path / "hebergeur.token"
    token_file.write_text(tokens["backup"] + "\n")
    token_file.chmod(0o600)
    config = tmp_path / "coffre.toml"
    config.write_text(f"""\
[agent]
state_dir = "{tmp_path / 'agent-state'}"
nice = 0
ionice = "none"

[repositories.nas]
url = "{coffre.repo}"
password_file = "{coffre.pwfile}"

[repositories.hebergeur]
url = "{coffre_server.url('officine')}"
password_file = "{coffre.pwfile}"
token_file = "{token_file}"

[jobs.officine]
repository = "nas"
paths = ["{src}"]
copies = ["hebergeur"]
""", encoding="utf-8")
    offsite = client(coffre_server, "officine", tokens["prune"], coffre.pwfile, tmp_path / "cache2")
    offsite.env["COFFRE_FROM_PASSWORD_FILE"] = str(coffre.pwfile)
    offsite.ok("init", "--copy-chunking-from", coffre.repo)
    coffre.env.update(coffre_server.env())
    coffre.env.pop("COFFRE_SERVER_TOKEN", None)
    coffre.env.pop("COFFRE_SERVER_TOKEN_FILE", None)
    run = coffre("run", "officine", "--config", str(config), repo=False)
    assert run.code == 0, run
    assert tokens["backup"] not in run.out + run.err
    assert len(snapshot_ids(offsite)) == 1
    assert "no errors" in offsite.ok("check", "--read-data").out
