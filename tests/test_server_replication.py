"""Replication to a second site (server/replication.py): to a folder and to SeaweedFS, a cut
copy resumes from its cursor without copying again, bytes damaged on the way are refused and
written again, nothing is deleted there by default, --verify finds a missing and a differing
object, a second server starts on the replica with the same tenants and tokens; PostgreSQL;
the real command line, killed mid-copy and run again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from coffre.core.clock import FixedClock
from coffre.core.errors import CoffreError, TransientStorageError, UsageError
from coffre.server import replication, scrub, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.storage.base import Backend, Handle, Wrapper
from server_support import T0, add_tenant, make_context
from test_server_scrub import coffre_server, flip, put, tenant_id

KIB = 1024


class Cut(Wrapper):
    """The link to the second site drops at the N-th object saved (counting every backend
    this wrapper was put around), and stays down."""

    saves = 0

    def __init__(self, inner: Backend, at: int) -> None:
        super().__init__(inner)
        self.at = at

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        if handle.kind != "index" or "manifest" not in self.location:
            Cut.saves += 1
            if Cut.saves >= self.at:
                raise TransientStorageError("writing: connection reset by peer")
        self.inner.save(handle, data)


class Garble(Wrapper):
    """Flips a bit of what is sent for the objects named in `names`, `times` times each."""

    garbled: ClassVar[dict[str, int]] = {}  # name: times garbled, over every wrapped backend

    def __init__(self, inner: Backend, names: set[str], times: int) -> None:
        super().__init__(inner)
        self.names, self.times = names, times

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        done = Garble.garbled.get(handle.name, 0)
        if handle.name in self.names and done < self.times:
            Garble.garbled[handle.name] = done + 1
            bad = bytearray(data)
            bad[len(bad) // 2] ^= 0x10
            data = bytes(bad)
        self.inner.save(handle, data)


def fill(ctx: ServerContext) -> dict[str, Any]:
    """Two tenants, two repositories, objects of every usual kind, one in the recycle bin."""
    add_tenant(ctx, "pharmacie-du-port")
    add_tenant(ctx, "pharmacie-des-lilas")
    port, lilas = tenant_id(ctx, "pharmacie-du-port"), tenant_id(ctx, "pharmacie-des-lilas")
    names = [
        ("config", put(ctx, port, "main", "config", b"port config")),
        ("keys", put(ctx, port, "main", "keys", os.urandom(400))),
        *[("data", put(ctx, port, "main", "data", os.urandom(20 * KIB + i))) for i in range(4)],
        ("index", put(ctx, port, "main", "index", os.urandom(3 * KIB))),
        ("snapshots", put(ctx, port, "main", "snapshots", os.urandom(500), binned=True)),
        ("config", put(ctx, lilas, "caisse", "config", b"lilas config")),
        *[("data", put(ctx, lilas, "caisse", "data", os.urandom(30 * KIB + i))) for i in range(2)],
    ]
    return {"port": port, "lilas": lilas, "names": names}


def target_path(root: Path, tenant: int, repo: str, kind: str, name: str) -> Path:
    base = root / f"t{tenant}" / repo
    if kind == "config":
        return base / "config"
    return base / "data" / name[:2] / name if kind == "data" else base / kind / name


def rows(ctx: ServerContext) -> list[tuple[int, str, str, int]]:
    o, r = tables.objects, tables.repositories
    import sqlalchemy as sa

    with ctx.db.read() as conn:
        return [(t, k, n, s) for t, k, n, s in conn.execute(
            sa.select(r.c.tenant_id, o.c.kind, o.c.name, o.c.size)
            .select_from(o.join(r, r.c.id == o.c.repository_id)).order_by(o.c.id))]


def target_holds(ctx: ServerContext, target: replication.Target) -> int:
    """How many of the server's objects the target holds with exactly their bytes."""
    held = 0
    repos = {t: repo for t, repo in ((tenant_id(ctx, "pharmacie-du-port"), "main"),
                                     (tenant_id(ctx, "pharmacie-des-lilas"), "caisse"))}
    for t, kind, name, _size in rows(ctx):
        src = ctx.store.backend(t, repos[t]).load(Handle(kind, name))
        try:
            held += target.backend(t, repos[t]).load(Handle(kind, name)) == src
        except Exception:
            pass
    return held


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    c = make_context(tmp_path / "server")
    yield c
    c.close()


@pytest.fixture(params=["folder", "s3"])
def second_site(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "second-centre")
    import boto3

    seaweedfs = request.getfixturevalue("seaweedfs")
    request.getfixturevalue("s3_env")
    bucket = f"replica-{request.node.name.split('[')[0][-20:].replace('_', '-')}-{os.getpid() % 1000}"
    client = boto3.client("s3", endpoint_url=seaweedfs.endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return str(seaweedfs.url(bucket, f"centre-2/{os.urandom(4).hex()}"))


def test_replicate_to_a_folder(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    first = replication.replicate_once(ctx, target)
    assert first.error is None and first.copied == 11 and first.manifest_written
    assert first.copied_bytes == sum(size for *_x, size in rows(ctx))
    # The primary's layout: a second server can serve it as its object store.
    for kind, name in made["names"][:8]:
        assert target_path(site, made["port"], "main", kind, name).is_file()
    assert target_path(site, made["lilas"], "caisse", "config", "config").read_bytes() == b"lilas config"
    manifest = replication.read_manifest(target)
    assert manifest is not None
    assert {t["name"]: t["id"] for t in manifest["tenants"]} == {
        "pharmacie-du-port": made["port"], "pharmacie-des-lilas": made["lilas"]}
    assert {(r["tenant_id"], r["name"]) for r in manifest["repositories"]} == {
        (made["port"], "main"), (made["lilas"], "caisse")}
    assert all("secret" not in json.dumps(k).replace("secret_sha256", "") for k in manifest["tokens"])

    again = replication.replicate_once(ctx, target)  # nothing new: nothing read, nothing written
    assert again.copied == 0 and again.present == 0 and not again.manifest_written
    with ctx.db.begin() as conn:
        token_id, _token = tokens.issue(conn, made["lilas"], "read", "auditor", ctx.clock.now_ns())
    ctx.clock.advance(1)  # type: ignore[attr-defined]
    assert replication.replicate_once(ctx, target).manifest_written  # a new token: a new manifest
    newest = replication.read_manifest(target)
    assert newest is not None and token_id in {k["id"] for k in newest["tokens"]}
    newer = put(ctx, made["port"], "main", "snapshots", b"a new snapshot")
    third = replication.replicate_once(ctx, target)
    assert third.copied == 1 and target_path(site, made["port"], "main", "snapshots", newer).is_file()

    # Journaled in each tenant's chain: what went where.
    with ctx.db.read() as conn:
        entries = conn.execute(tables.audit_entries.select().where(
            tables.audit_entries.c.operation == "replicate")).all()
    assert {(e.tenant_id, e.count) for e in entries} == {(made["port"], 8), (made["lilas"], 3),
                                                         (made["port"], 1)}
    assert all(e.detail == target.display for e in entries)
    state = replication.all_targets(ctx.db)
    assert [(s["location"], s["copied"]) for s in state] == [(target.display, 12)]


def test_a_cut_copy_resumes_where_it_stopped(ctx: ServerContext, second_site: str) -> None:
    fill(ctx)
    Cut.saves = 0
    cut = replication.Target(second_site, wrap=lambda b: Cut(b, at=6))
    stopped = replication.replicate_once(ctx, cut)
    assert stopped.error is not None and "connection reset" in stopped.error
    assert stopped.copied == 5
    ids = [i for (i,) in _ids(ctx)]
    assert stopped.after_id == ids[4]  # the cursor: past the five copies, not one more
    assert replication.target_state(ctx.db, cut)["after_id"] == ids[4]

    Cut.saves = 0
    resumed_target = replication.Target(second_site, wrap=lambda b: Cut(b, at=10**9))
    resumed = replication.replicate_once(ctx, resumed_target)
    assert resumed.error is None and resumed.copied == 6 and resumed.present == 0
    assert Cut.saves == 6  # nothing written twice
    assert target_holds(ctx, resumed_target) == 11


def _ids(ctx: ServerContext) -> list[tuple[int]]:
    import sqlalchemy as sa

    with ctx.db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(tables.objects.c.id).order_by(tables.objects.c.id))]


def test_bytes_damaged_on_the_way_are_refused_and_written_again(ctx: ServerContext,
                                                                 second_site: str) -> None:
    made = fill(ctx)
    victim = made["names"][3][1]
    Garble.garbled = {}
    target = replication.Target(second_site, wrap=lambda b: Garble(b, {victim}, times=1))
    summary = replication.replicate_once(ctx, target)
    assert Garble.garbled == {victim: 1}
    assert summary.error is None and summary.copied == 11
    assert target_holds(ctx, replication.Target(second_site)) == 11

    # Damaged every time: the copy stops there (no bad copy left behind), and resumes later.
    hopeless = put(ctx, made["port"], "main", "data", os.urandom(5000))
    later = put(ctx, made["port"], "main", "index", os.urandom(100))
    target = replication.Target(second_site, wrap=lambda b: Garble(b, {hopeless}, times=99))
    stopped = replication.replicate_once(ctx, target)
    assert stopped.error is not None and "3 tries" in stopped.error
    assert Garble.garbled[hopeless] == replication.COPY_TRIES
    plain = replication.Target(second_site)
    with pytest.raises(Exception, match="not found"):
        plain.backend(made["port"], "main").load(Handle("data", hopeless))
    resumed = replication.replicate_once(ctx, plain)
    assert resumed.copied == 2 and resumed.error is None
    assert plain.backend(made["port"], "main").load(Handle("index", later))


def test_verify_finds_a_missing_and_a_differing_object(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    replication.replicate_once(ctx, target)
    clean = replication.verify_sites(ctx, target, deep=True)
    assert not clean.divergent and sum(t.hashed for t in clean.tenants) == 11

    (_k, gone), (_k2, garbled), (_k3, short) = made["names"][2], made["names"][3], made["names"][4]
    target_path(site, made["port"], "main", "data", gone).unlink()
    flip(target_path(site, made["port"], "main", "data", garbled))          # same size
    p = target_path(site, made["port"], "main", "data", short)
    p.write_bytes(p.read_bytes()[:-1])                                       # other size
    pending = put(ctx, made["lilas"], "caisse", "index", b"not replicated yet")

    listing_only = replication.verify_sites(ctx, target, sample=0)
    port = next(t for t in listing_only.tenants if t.tenant == "pharmacie-du-port")
    lilas = next(t for t in listing_only.tenants if t.tenant == "pharmacie-des-lilas")
    assert listing_only.divergent and port.divergent and not lilas.divergent
    assert port.missing == [f"main/data/{gone}"]
    assert port.differs == [f"main/data/{short}"]      # a listing sees sizes, not bytes
    assert lilas.pending == 1 and pending not in json.dumps(listing_only.to_json())

    deep = replication.verify_sites(ctx, target, deep=True)
    port = next(t for t in deep.tenants if t.tenant == "pharmacie-du-port")
    assert port.missing == [f"main/data/{gone}"]
    assert sorted(port.differs) == sorted([f"main/data/{short}", f"main/data/{garbled}"])
    recorded = {(f.tenant, f.name, f.problem) for f in scrub.findings(ctx.db, scrub.REPLICA)}
    assert recorded == {("pharmacie-du-port", gone, "replica-missing"),
                        ("pharmacie-du-port", short, "replica-differs"),
                        ("pharmacie-du-port", garbled, "replica-differs")}
    state = replication.target_state(ctx.db, target)["verify"]
    assert state["divergent"] is True and state["tenants"][str(made["port"])]["differs"] == 2

    # The next copy repairs what the verify found; a deep verify then finds both sites equal.
    repaired = replication.replicate_once(ctx, target)
    assert repaired.repaired == 2 and repaired.copied == 2  # the missing one and the new one
    again = replication.verify_sites(ctx, target, deep=True)
    assert not again.divergent
    assert scrub.findings(ctx.db, scrub.REPLICA) == []


def test_verify_on_seaweedfs(ctx: ServerContext, seaweedfs: Any, s3_env: dict[str, str]) -> None:
    import boto3

    made = fill(ctx)
    client = boto3.client("s3", endpoint_url=seaweedfs.endpoint)
    client.create_bucket(Bucket="replica-verify")
    target = replication.Target(seaweedfs.url("replica-verify", "centre-2"))
    assert replication.replicate_once(ctx, target).copied == 11
    assert not replication.verify_sites(ctx, target, deep=True).divergent
    gone, garbled = made["names"][2][1], made["names"][3][1]
    base = f"centre-2/t{made['port']}/main/data"
    client.delete_object(Bucket="replica-verify", Key=f"{base}/{gone[:2]}/{gone}")
    key = f"{base}/{garbled[:2]}/{garbled}"
    body = bytearray(client.get_object(Bucket="replica-verify", Key=key)["Body"].read())
    body[0] ^= 0xFF
    client.put_object(Bucket="replica-verify", Key=key, Body=bytes(body))
    report = replication.verify_sites(ctx, target, deep=True)
    port = next(t for t in report.tenants if t.tenant == "pharmacie-du-port")
    assert (port.missing, port.differs) == ([f"main/data/{gone}"], [f"main/data/{garbled}"])
    assert replication.replicate_once(ctx, target).repaired == 1
    assert not replication.verify_sites(ctx, target, deep=True).divergent


def test_the_second_centre_has_its_own_credentials(ctx: ServerContext, tmp_path: Path, seaweedfs: Any,
                                                  s3_env: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    boto3.client("s3", endpoint_url=seaweedfs.endpoint).create_bucket(Bucket="replica-profile")
    fill(ctx)
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(f"[centre2]\naws_access_key_id = {s3_env['AWS_ACCESS_KEY_ID']}\n"
                           f"aws_secret_access_key = {s3_env['AWS_SECRET_ACCESS_KEY']}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "this-server-s-own-key")  # not valid over there
    location = seaweedfs.url("replica-profile", "centre-2")
    refused = replication.replicate_once(ctx, replication.Target(location))
    assert refused.error is not None and refused.copied == 0
    target = replication.Target(location, profile="centre2")
    assert replication.replicate_once(ctx, target).copied == 11
    assert not replication.verify_sites(ctx, target, deep=True).divergent
    with pytest.raises(UsageError, match="no credentials profile"):
        replication.Target(location, profile="nowhere")
    with pytest.raises(UsageError, match="s3://"):
        replication.Target(str(tmp_path), profile="centre2")


def test_a_damaged_primary_object_is_not_replicated(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    kind, name = made["names"][2]
    root = Path(ctx.settings.objects_location)
    flip(target_path(root, made["port"], "main", kind, name))
    target = replication.Target(str(tmp_path / "second-centre"))
    summary = replication.replicate_once(ctx, target)
    assert summary.source_damaged == 1 and summary.copied == 10 and summary.error is None
    assert not target_path(tmp_path / "second-centre", made["port"], "main", kind, name).exists()
    assert [(f.name, f.problem) for f in scrub.findings(ctx.db, scrub.DAMAGE)] == [(name, "mismatch")]
    # Missing here: recorded, and the copy goes on past it.
    lost = put(ctx, made["lilas"], "caisse", "index", b"lost index")
    after = put(ctx, made["lilas"], "caisse", "index", b"later index")
    target_path(root, made["lilas"], "caisse", "index", lost).unlink()
    more = replication.replicate_once(ctx, target)
    assert more.error is None and more.source_damaged == 1 and more.copied == 1
    assert target_path(tmp_path / "second-centre", made["lilas"], "caisse", "index", after).exists()
    assert (lost, "missing") in {(f.name, f.problem) for f in scrub.findings(ctx.db, scrub.DAMAGE)}


def test_damage_here_is_repaired_from_the_second_site(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    replication.replicate_once(ctx, target)
    root = Path(ctx.settings.objects_location)
    (_k, garbled), (_k2, gone), (_k3, lost_twice) = made["names"][2], made["names"][3], made["names"][4]
    flip(target_path(root, made["port"], "main", "data", garbled))
    target_path(root, made["port"], "main", "data", gone).unlink()
    target_path(root, made["port"], "main", "data", lost_twice).unlink()
    target_path(site, made["port"], "main", "data", lost_twice).unlink()
    flip(target_path(root, made["port"], "main", "config", "config"), at=2)  # same size
    path_of_config = target_path(root, made["port"], "main", "config", "config")
    path_of_config.write_bytes(path_of_config.read_bytes() + b"!")
    assert len(scrub.scrub_now(ctx).problems) == 4

    healed = replication.heal_from(ctx, target)
    assert sorted(healed.repaired) == sorted(f"pharmacie-du-port/main/data/{n}" for n in (garbled, gone))
    assert {o.rsplit("/", 1)[-1] for o, _why in healed.unrepaired} == {lost_twice, "config"}
    left = {(f.kind, f.name, f.problem) for f in scrub.scrub_now(ctx).problems}
    assert left == {("config", "config", "size"), ("data", lost_twice, "missing")}
    for name in (garbled, gone):
        assert hashlib.sha256(target_path(root, made["port"], "main", "data", name).read_bytes()
                              ).hexdigest() == name
    with ctx.db.read() as conn:
        repairs = conn.execute(tables.audit_entries.select().where(
            tables.audit_entries.c.operation == "admin.repair")).all()
    assert len(repairs) == 2 and all(e.tenant_id == made["port"] for e in repairs)


def test_nothing_is_deleted_there_unless_remove_vanished_after_the_hold(ctx: ServerContext,
                                                                          tmp_path: Path) -> None:
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    replication.replicate_once(ctx, target)
    kind, purged = made["names"][7]  # the binned snapshot, now purged from the primary
    with ctx.db.begin() as conn:
        conn.execute(tables.objects.delete().where(tables.objects.c.name == purged))
    (Path(ctx.settings.objects_location) / f"t{made['port']}" / "main" / kind / purged).unlink()
    on_target = target_path(site, made["port"], "main", kind, purged)

    kept = replication.Replicator(ctx, target).round(catch_up=True)
    assert kept.caught_up and kept.vanished == 1 and kept.vanished_removed == 0 and on_target.exists()
    clock: FixedClock = ctx.clock  # type: ignore[assignment]
    pruning = replication.Replicator(ctx, target, remove_vanished=True, hold_s=10 * 86400)
    assert pruning.round(catch_up=True).vanished_removed == 0  # first seen gone now: the hold starts
    clock.advance(9 * 86400)
    assert pruning.round(catch_up=True).vanished_removed == 0 and on_target.exists()
    clock.advance(1 * 86400 + 1)
    assert pruning.round(catch_up=True).vanished_removed == 1 and not on_target.exists()
    assert target_holds(ctx, target) == 10  # everything the primary still has


def test_catch_up_copies_what_the_cursor_missed(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    replication.replicate_once(ctx, target)
    # A row behind the cursor the target never got (an id reused after a purge, a row committed
    # late on PostgreSQL): the daily listing comparison copies it.
    kind, name = made["names"][1]
    target_path(site, made["port"], "main", kind, name).unlink()
    assert replication.replicate_once(ctx, target).copied == 0  # not due yet
    ctx.clock.advance(replication.CATCH_UP_S)  # type: ignore[attr-defined]
    caught = replication.replicate_once(ctx, target)
    assert caught.caught_up and caught.copied == 1
    assert target_holds(ctx, target) == 11


def test_young_rows_keep_the_cursor_behind_on_a_database_without_ordered_commits(
        ctx: ServerContext, tmp_path: Path) -> None:
    fill(ctx)
    target = replication.Target(str(tmp_path / "second-centre"))
    replicator = replication.Replicator(ctx, target)
    replicator.settle_ns = 300 * 10**9  # as on PostgreSQL
    first = replicator.round()
    assert first.copied == 11 and first.after_id == 0 and first.pending == 11
    assert replicator.round().copied == 0  # copied rows are remembered by this process
    ctx.clock.advance(301)  # type: ignore[attr-defined]
    settled = replication.Replicator(ctx, target)
    settled.settle_ns = 300 * 10**9
    done = settled.round()
    assert done.present == 11 and done.copied == 0 and done.after_id == max(i for (i,) in _ids(ctx))


def test_one_replicator_per_target(ctx: ServerContext, tmp_path: Path) -> None:
    fill(ctx)
    target = replication.Target(str(tmp_path / "second-centre"))
    busy = replication.Replicator(ctx, target)
    assert busy.lease.acquire(ctx.clock.now_ns())
    with pytest.raises(CoffreError, match="another replication"):
        replication.Replicator(ctx, target).round()
    with pytest.raises(UsageError, match="another Coffre server"):
        replication.Target("https://second.example/v1")


def test_a_second_server_starts_on_the_replica(ctx: ServerContext, tmp_path: Path) -> None:
    made = fill(ctx)
    with ctx.db.begin() as conn:
        _tid, backup_token = tokens.issue(conn, made["port"], "backup", "agent", ctx.clock.now_ns())
    site = tmp_path / "second-centre"
    replication.replicate_once(ctx, replication.Target(str(site)))

    second = make_context(tmp_path / "second-server", objects_url=str(site))
    done = replication.adopt(second, replication.Target(str(site)))
    assert (done.tenants, done.repositories, done.objects) == (2, 2, 11)
    with second.db.read() as conn:
        principal = tokens.authenticate(conn, f"Bearer {backup_token}", second.clock.now_ns())
        assert principal.tenant_id == made["port"] and principal.role == "backup"
        stored = {t.name: t.stored_bytes for t in tenants.all_tenants(conn)}
    assert sum(stored.values()) == sum(size for *_x, size in rows(ctx))
    assert scrub.scrub_now(second).problems == []  # every adopted row names good bytes
    with pytest.raises(UsageError):
        replication.adopt(second, replication.Target(str(site)))  # only into an empty database
    second.close()


def test_replication_and_scrub_on_postgresql(tmp_path: Path, postgres: Any, pg_env: dict[str, str]) -> None:
    from dbservers import DB_PASSWORD, DB_USER

    name = f"coffre_repl_{os.getpid()}"
    postgres.psql(f"CREATE DATABASE {name}")
    url = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{name}"
    ctx = make_context(tmp_path / "server", db_url=url)
    made = fill(ctx)
    site = tmp_path / "second-centre"
    target = replication.Target(str(site))
    first = replication.replicate_once(ctx, target)
    assert first.copied == 11 and first.pending == 11  # young rows: the cursor waits on PostgreSQL
    ctx.clock.advance(replication.SETTLE_S + 1)  # type: ignore[attr-defined]
    settled = replication.replicate_once(ctx, target)
    assert settled.pending == 0 and settled.present == 11
    target_path(site, made["port"], "main", "data", made["names"][2][1]).unlink()
    assert replication.verify_sites(ctx, target).divergent
    flip(Path(ctx.settings.objects_location) / f"t{made['port']}" / "main" / "keys" / made["names"][1][1])
    assert [f.problem for f in scrub.scrub_now(ctx).problems] == ["mismatch"]

    adopted_name = name + "_b"
    postgres.psql(f"CREATE DATABASE {adopted_name}")
    second = make_context(tmp_path / "second", objects_url=str(site),
                          db_url=url.rsplit("/", 1)[0] + "/" + adopted_name)
    replication.adopt(second, target)
    with second.db.begin() as conn:  # the sequences moved past the adopted ids
        conn.execute(tables.repositories.insert().values(tenant_id=made["port"], name="new", created_ns=T0))
    second.close()
    ctx.close()


# -- the command line ----------------------------------------------------------------------

def test_cli_replicate_killed_mid_copy_then_verify(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    ctx = make_context(data_dir, clock=FixedClock(T0))
    made = fill(ctx)
    ctx.close()
    site = tmp_path / "second-centre"

    # SIGKILL right after the 4th object written to the first repository (storage/faults.py).
    env = {**os.environ, "COFFRE_TEST_CRASH_AT": "4:after", "LANG": "C"}
    killed = subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(data_dir),
                             "replicate", "--to", str(site), "--once"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr

    resumed = coffre_server(data_dir, "replicate", "--to", str(site), "--once", "--verify", "--deep",
                            "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["round"]["error"] is None and doc["verify"]["divergent"] is False
    # The four objects written before the kill are found there, read back, not written again.
    assert doc["round"]["copied"] == 7 and doc["round"]["present"] <= 4
    assert sum(t["hashed"] for t in doc["verify"]["tenants"]) == 11

    target_path(site, made["port"], "main", "data", made["names"][2][1]).unlink()
    diverged = coffre_server(data_dir, "replicate", "--to", str(site), "--verify")
    assert diverged.returncode == 1
    assert made["names"][2][1] in diverged.stdout and "missing on the second site" in diverged.stdout
    findings = coffre_server(data_dir, "scrub", "--findings", "--json")
    assert findings.returncode == 1
    assert [f["problem"] for f in json.loads(findings.stdout)["findings"]] == ["replica-missing"]

    text = coffre_server(data_dir, "replicate", "--to", str(site), "--once")
    assert text.returncode == 0 and "1 object copied" in text.stdout
    assert coffre_server(data_dir, "replicate", "--to", str(site), "--verify").returncode == 0

    damaged = data_dir / "objects" / f"t{made['port']}" / "main" / "data"
    name = made["names"][3][1]
    flip(damaged / name[:2] / name)
    assert coffre_server(data_dir, "scrub", "--now").returncode == 1
    repaired = coffre_server(data_dir, "scrub", "--repair-from", str(site))
    assert repaired.returncode == 0 and name in repaired.stdout
    assert coffre_server(data_dir, "scrub", "--now").returncode == 0

    adopted = tmp_path / "second-server"
    init = make_context(adopted)
    init.close()
    out = coffre_server(adopted, "--objects", str(site), "adopt", str(site), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["objects"] == 11
    assert coffre_server(adopted, "--objects", str(site), "scrub", "--now").returncode == 0

    usage = coffre_server(data_dir, "replicate", "--to", str(site), "--deep")
    assert usage.returncode == 2
