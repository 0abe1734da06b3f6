"""Keyless scrubbing (server/scrub.py): objects stored through the real store with rows
inserted as the server does; damage on disk found and named, then resolved; missing and
unreadable objects; orphans reported and left alone; the rate held on an injected clock;
one scrubber at a time across two contexts on one database; the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coffre.core.clock import FixedClock
from coffre.core.errors import CoffreError
from coffre.server import scrub, tenants
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.housekeeping import Housekeeping
from coffre.storage.base import Handle
from server_support import T0, add_tenant, make_context

MIB = 1024 * 1024


class VirtualTime:
    """monotonic() and sleep() for a Pacer: sleeping moves the time, nothing waits."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept = 0.0
        self.during_sleep: list[Any] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds
        for hook in self.during_sleep:
            hook()


def tenant_id(ctx: ServerContext, name: str) -> int:
    with ctx.db.read() as conn:
        found = tenants.by_name(conn, name)
    assert found is not None
    return found.id


def put(ctx: ServerContext, tenant: int, repo: str, kind: str, data: bytes, binned: bool = False,
        row: bool = True) -> str:
    """Store bytes as the server does: Backend.save, then the objects row (and usage)."""
    name = "config" if kind == "config" else hashlib.sha256(data).hexdigest()
    backend = ctx.store.backend(tenant, repo)
    if kind == "config":
        backend.create()  # what POST /v1/repos/{repo} does
    backend.save(Handle(kind, name), data)
    if row:
        now = ctx.clock.now_ns()
        with ctx.db.begin() as conn:
            rid = tenants.add_repository(conn, tenant, repo, now)
            conn.execute(tables.objects.insert().values(
                repository_id=rid, kind=kind, name=name, size=len(data), received_ns=now,
                token_id="tok", binned_ns=now if binned else None, binned_by="tok" if binned else None))
    return name


def path_of(ctx: ServerContext, tenant: int, repo: str, kind: str, name: str) -> Path:
    root = Path(ctx.settings.objects_location) / f"t{tenant}" / repo
    if kind == "config":
        return root / "config"
    if kind == "data":
        return root / "data" / name[:2] / name
    return root / kind / name


def flip(path: Path, at: int = 10) -> bytes:
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[at] ^= 0x01
    path.write_bytes(bytes(damaged))
    return original


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    c = make_context(tmp_path / "server", scrub_rate=0)  # 0: unlimited, unless a test paces
    yield c
    c.close()


def test_damage_is_found_named_and_resolved(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    add_tenant(ctx, "pharmacie-des-lilas")
    port, lilas = tenant_id(ctx, "pharmacie-du-port"), tenant_id(ctx, "pharmacie-des-lilas")
    put(ctx, port, "main", "config", b"opaque config bytes")
    data = put(ctx, port, "main", "data", os.urandom(5000))
    index = put(ctx, port, "main", "index", os.urandom(300))
    binned = put(ctx, lilas, "caisse", "snapshots", os.urandom(700), binned=True)

    clean = scrub.scrub_now(ctx)
    assert clean.complete and clean.objects == 4 and clean.problems == []
    assert clean.bytes == 5000 + 300 + 700  # config: presence and size only

    original = flip(path_of(ctx, port, "main", "data", data))
    flip(path_of(ctx, lilas, "caisse", "snapshots", binned))  # the recycle bin is scrubbed too
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    found = scrub.scrub_now(ctx)
    named = {(f.tenant, f.repository, f.kind, f.name, f.problem) for f in found.problems}
    assert named == {("pharmacie-du-port", "main", "data", data, "mismatch"),
                     ("pharmacie-des-lilas", "caisse", "snapshots", binned, "mismatch")}
    assert all(f.found_ns == T0 + 60 * 10**9 and f.resolved_ns is None for f in found.problems)
    assert found.found == 2

    # Found again: still one finding each, from when it was first found.
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    again = scrub.scrub_now(ctx)
    assert again.found == 0 and len(again.problems) == 2

    path_of(ctx, port, "main", "data", data).write_bytes(original)
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    healed = scrub.scrub_now(ctx)
    assert healed.resolved == 1
    assert [(f.name, f.problem) for f in healed.problems] == [(binned, "mismatch")]
    resolved = [f for f in scrub.findings(ctx.db, include_resolved=True) if f.name == data]
    assert len(resolved) == 1 and resolved[0].resolved_ns == T0 + 180 * 10**9
    assert index not in {f.name for f in scrub.findings(ctx.db, include_resolved=True)}


def test_missing_short_and_unreadable_objects(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    put(ctx, t, "main", "config", b"config v1")
    gone = put(ctx, t, "main", "data", os.urandom(2000))
    short = put(ctx, t, "main", "index", os.urandom(2000))
    longer = put(ctx, t, "main", "keys", os.urandom(100))
    broken = put(ctx, t, "main", "snapshots", os.urandom(100))

    path_of(ctx, t, "main", "data", gone).unlink()
    p = path_of(ctx, t, "main", "index", short)
    p.write_bytes(p.read_bytes()[:1500])
    p = path_of(ctx, t, "main", "keys", longer)
    p.write_bytes(p.read_bytes() + b"more")
    path_of(ctx, t, "main", "config", "config").write_bytes(b"config v22")  # other size
    p = path_of(ctx, t, "main", "snapshots", broken)
    p.unlink()
    p.mkdir()  # the storage cannot give bytes for it

    problems = {(f.kind, f.problem) for f in scrub.scrub_now(ctx).problems}
    assert problems == {("data", "missing"), ("index", "size"), ("keys", "size"),
                        ("config", "size"), ("snapshots", "unreadable")}


def test_a_purged_object_is_no_finding_and_its_finding_is_resolved(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    name = put(ctx, t, "main", "data", os.urandom(1000), binned=True)
    path_of(ctx, t, "main", "data", name).unlink()
    assert [f.problem for f in scrub.scrub_now(ctx).problems] == ["missing"]
    with ctx.db.begin() as conn:  # purged from the recycle bin
        conn.execute(tables.objects.delete().where(tables.objects.c.name == name))
    after = scrub.scrub_now(ctx)
    assert after.problems == [] and after.resolved == 1


def test_orphans_are_reported_not_removed_and_old_partial_uploads_go(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    put(ctx, t, "main", "config", b"config")
    old = put(ctx, t, "main", "data", os.urandom(800), row=False)
    fresh = put(ctx, t, "main", "data", os.urandom(900), row=False)
    old_path, fresh_path = path_of(ctx, t, "main", "data", old), path_of(ctx, t, "main", "data", fresh)
    two_days_ago = (T0 - 2 * 86400 * 10**9) / 1e9
    os.utime(old_path, (two_days_ago, two_days_ago))
    os.utime(fresh_path, (T0 / 1e9 - 3600, T0 / 1e9 - 3600))  # an upload an hour ago
    tmp_old = old_path.parent / ".tmp-deadbeef"
    tmp_old.write_bytes(b"half an upload")
    os.utime(tmp_old, (two_days_ago, two_days_ago))
    tmp_new = fresh_path.parent / ".tmp-cafe"
    tmp_new.write_bytes(b"an upload in progress")
    os.utime(tmp_new, (T0 / 1e9 - 60, T0 / 1e9 - 60))

    summary = scrub.scrub_now(ctx)
    assert [(o.kind, o.name, o.size) for o in summary.orphans] == [("data", old, 800)]
    assert summary.problems == []  # an orphan is no damage
    assert old_path.exists() and fresh_path.exists()
    assert not tmp_old.exists() and tmp_new.exists() and summary.temporaries_removed == 1
    assert scrub.findings(ctx.db) == []  # no finding: the fleet would count it as the tenant's risk
    named, count, size = scrub.orphans(ctx.db)
    assert [(o.tenant_id, o.repository, o.name) for o in named] == [(t, "main", old)]
    assert (count, size) == (1, 800)

    # The client uploads it again (its row is committed): no longer an orphan.
    with ctx.db.begin() as conn:
        rid = tenants.repository_id(conn, t, "main")
        conn.execute(tables.objects.insert().values(repository_id=rid, kind="data", name=old, size=800,
                                                    received_ns=T0, token_id="tok"))
    again = scrub.scrub_now(ctx)
    assert again.orphans == [] and scrub.orphans(ctx.db) == ([], 0, 0)


def test_the_rate_is_held_on_an_injected_clock(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    for _i in range(8):
        put(ctx, t, "main", "data", os.urandom(MIB))
    vt = VirtualTime()
    scrubber = scrub.Scrubber(ctx, rate=2 * MIB, monotonic=vt.monotonic, sleep=vt.sleep)
    summary = scrubber.whole_pass()
    assert summary.bytes == 8 * MIB
    # 8 MiB at 2 MiB/s: 4 s, less the half-second burst the pacer allows after idling.
    assert 3.4 <= vt.slept <= 4.1


def test_background_slices_resume_and_a_pass_starts_each_interval(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "server", scrub_rate=MIB, scrub_interval_s=86400)
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    names = [put(ctx, t, "main", "data", os.urandom(MIB // 2)) for _i in range(12)]
    flip(path_of(ctx, t, "main", "data", names[-1]))
    vt = VirtualTime()
    scrubber = scrub.Scrubber(ctx, monotonic=vt.monotonic, sleep=vt.sleep)

    seen = []
    for _slice in range(10):
        before = vt.t
        summary = scrubber.slice(ctx.clock.now_ns(), budget_s=2.0)
        if summary is None:
            break
        seen.append(summary)
        # At most a 2-second slice, at 1 MiB/s (plus the object being read when time ran out).
        assert vt.t - before <= 2.0 + 0.5 + 0.01
        if summary.complete:
            break
    assert len(seen) >= 3, "a pass of 6 MiB at 1 MiB/s in 2-second slices takes several slices"
    assert [s.objects for s in seen] == sorted(s.objects for s in seen)
    assert seen[-1].complete and seen[-1].objects == 12 and seen[-1].bytes == 6 * MIB
    assert [f.name for f in scrub.findings(ctx.db, scrub.DAMAGE)] == [names[-1]]
    with ctx.db.read() as conn:
        assert scrub.read_state(conn, scrub.CURSOR_KEY) is None
        assert scrub.read_state(conn, scrub.LAST_KEY)["objects"] == 12  # type: ignore[index]

    assert scrubber.slice(ctx.clock.now_ns()) is None  # the next pass is not due yet
    ctx.clock.advance(86400)  # type: ignore[attr-defined]
    assert scrubber.slice(ctx.clock.now_ns(), budget_s=1.0) is not None  # a new pass begins
    ctx.close()


def test_housekeeping_runs_the_background_scrub(ctx: ServerContext) -> None:
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    name = put(ctx, t, "main", "data", os.urandom(3000))
    flip(path_of(ctx, t, "main", "data", name))
    Housekeeping(ctx).run_due()  # what a running server does every few seconds
    assert [(f.name, f.problem) for f in scrub.findings(ctx.db)] == [(name, "mismatch")]


def test_one_scrubber_at_a_time_across_contexts_on_one_database(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    first = make_context(tmp_path / "server", clock=clock, scrub_rate=MIB)
    second = make_context(tmp_path / "server", clock=clock, scrub_rate=MIB)
    add_tenant(first, "pharmacie-du-port")
    t = tenant_id(first, "pharmacie-du-port")
    for _i in range(6):
        put(first, t, "main", "data", os.urandom(MIB // 2))
    vt_a, vt_b = VirtualTime(), VirtualTime()
    a = scrub.Scrubber(first, monotonic=vt_a.monotonic, sleep=vt_a.sleep)
    b = scrub.Scrubber(second, monotonic=vt_b.monotonic, sleep=vt_b.sleep)

    # While A's slice is working (paused by its pacer), B finds the lease taken.
    tries: list[Any] = []
    vt_a.during_sleep.append(lambda: tries.append(b.slice(clock.now_ns())))
    assert a.slice(clock.now_ns(), budget_s=1.5) is not None
    assert tries and all(r is None for r in tries)
    with first.db.read() as conn:
        position = scrub.read_state(conn, scrub.CURSOR_KEY)
    assert position is not None and position["objects"] >= 1

    # A worker that died holding the lease: B waits, then gives up clearly...
    assert a.lease.acquire(clock.now_ns())
    with pytest.raises(CoffreError) as info:
        b.whole_pass(wait_s=5)
    assert "another server instance is scrubbing" in info.value.message
    assert b.slice(clock.now_ns()) is None
    # ...and takes over once the lease has expired, from where A was.
    clock.advance(scrub.LEASE_S + 1)
    summary = b.slice(clock.now_ns(), budget_s=100)
    assert summary is not None and summary.complete and summary.objects == 6
    first.close()
    second.close()


def test_a_long_pass_keeps_its_lease(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    first = make_context(tmp_path / "server", clock=clock)
    second = make_context(tmp_path / "server", clock=clock)
    add_tenant(first, "pharmacie-du-port")
    t = tenant_id(first, "pharmacie-du-port")
    for _i in range(4):
        put(first, t, "main", "data", os.urandom(MIB))
    vt = VirtualTime()
    vt.during_sleep.append(lambda: clock.advance(vt.slept - (clock.now_ns() - T0) / 1e9))
    rival = scrub.Lease(second.db, scrub.LEASE_KEY, "other-host:1:rival")
    taken: list[bool] = []
    vt.during_sleep.append(lambda: taken.append(rival.acquire(clock.now_ns())))
    # 4 MiB at 8 KiB/s: over 8 minutes of (virtual) reading, four times the lease's length.
    summary = scrub.Scrubber(first, rate=8 * 1024, monotonic=vt.monotonic, sleep=vt.sleep).whole_pass()
    assert summary.complete and vt.slept > 4 * scrub.LEASE_S
    assert taken and not any(taken)
    assert rival.acquire(clock.now_ns())  # released at the end
    first.close()
    second.close()


def test_scrub_on_s3_object_storage(tmp_path: Path, seaweedfs: Any, s3_env: dict[str, str]) -> None:
    import boto3

    bucket = "scrub-objects"
    client = boto3.client("s3", endpoint_url=seaweedfs.endpoint)
    client.create_bucket(Bucket=bucket)
    ctx = make_context(tmp_path / "server", objects_url=seaweedfs.url(bucket, "objects"), scrub_rate=0)
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    put(ctx, t, "main", "config", b"config")
    big = put(ctx, t, "main", "data", os.urandom(9 * MIB))  # read in several ranged pieces
    assert scrub.scrub_now(ctx).problems == []
    key = f"objects/t{t}/main/data/{big[:2]}/{big}"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-1] ^= 0x80
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    assert [(f.name, f.problem) for f in scrub.scrub_now(ctx).problems] == [(big, "mismatch")]
    ctx.close()


# -- the command line ----------------------------------------------------------------------

def coffre_server(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFRE_SERVER")}
    return subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(data), *args],
                          capture_output=True, text=True, env={**env, "LANG": "C"}, timeout=120,
                          check=False)


def test_cli_scrub_now_and_findings(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    ctx = make_context(data_dir, clock=FixedClock(T0))
    add_tenant(ctx, "pharmacie-du-port")
    t = tenant_id(ctx, "pharmacie-du-port")
    put(ctx, t, "main", "config", b"config")
    name = put(ctx, t, "main", "data", os.urandom(4000))
    ctx.close()

    clean = coffre_server(data_dir, "scrub", "--now")
    assert clean.returncode == 0, clean.stderr
    assert "scrubbed 2 objects" in clean.stdout and "every stored object matches its name" in clean.stdout

    p = data_dir / "objects" / f"t{t}" / "main" / "data" / name[:2] / name
    original = flip(p)
    damaged = coffre_server(data_dir, "scrub", "--now", "--json")
    assert damaged.returncode == 1, damaged.stderr
    doc = json.loads(damaged.stdout)
    assert doc["ok"] is False
    assert [(f["tenant"], f["repository"], f["kind"], f["name"], f["problem"])
            for f in doc["summary"]["problems"]] == [("pharmacie-du-port", "main", "data", name, "mismatch")]

    listed = coffre_server(data_dir, "scrub", "--findings")
    assert listed.returncode == 1 and name in listed.stdout
    assert "bytes no longer match the name" in listed.stdout

    p.write_bytes(original)
    assert coffre_server(data_dir, "scrub", "--now").returncode == 0
    after = coffre_server(data_dir, "scrub", "--findings", "--all", "--json")
    assert after.returncode == 0
    doc = json.loads(after.stdout)
    assert doc["last_pass"]["objects"] == 2
    assert [f["resolved_ns"] is not None for f in doc["findings"]] == [True]

    french = subprocess.run([sys.executable, "-m", "coffre", "--lang", "fr", "server", "--data",
                             str(data_dir), "scrub", "--findings"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert french.returncode == 0
    usage = coffre_server(data_dir, "scrub")
    assert usage.returncode == 2
