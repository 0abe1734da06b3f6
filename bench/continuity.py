"""Continuity, measured: recovery point and recovery time of a PostgreSQL primary that dies
under load, with its WAL captured by Coffre and a warm standby fed from the repository; then
what continuous capture costs a day against twice-daily base backups.

    python bench/continuity.py                        # local repository, 3 deaths
    python bench/continuity.py --repo s3 --upload 1MiB/s --archive-timeout 30 --every 10 --rate 50
    python bench/continuity.py --trials 1 --scale 1   # seconds-long smoke run (the suite's)

Each trial: a fresh primary (pgbench -i -s SCALE) archiving through `coffre wal push`
(archive_timeout as given) into a spool, `coffre wal ship --every` into the repository, a base
backup, `coffre standby init` on a second data folder with a PostgreSQL in standby on it and
`coffre standby follow --every`. Then pgbench -c 4 and a writer committing numbered rows (its
own log of commit times) run for a random 20-40 s, and the primary's postmaster and its
shipper are killed with SIGKILL at once (the machine is dead).

- recovery point: from the kill back to the moment the first lost committed row was sent
  (0 when nothing committed was lost);
- recovery time: from the kill to the promoted standby accepting a write (`coffre standby
  promote`, its last pass and its checks included);
- the pgbench balances agree after promotion, and the rows kept are a prefix of those committed.

Then the cost: pgbench at a pharmacy's pace (-R 5 transactions a second) for 60 s, extrapolated
to a 12-hour day: the repository bytes and CPU seconds of continuous capture, against two base
backups a day.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from coffre.sources.databases.command import service_account  # noqa: E402
from coffre.sources.databases.pgdrill import start_server, stop_server  # noqa: E402
from coffre.sources.databases.throwaway import DrillFolder  # noqa: E402
from test_pg_continuity import Archiving, Writer, query  # noqa: E402

PASSWORD = "benchmark password\n"  # noqa: S105 (a throwaway repository)


class Site:
    """A repository (local folder or SeaweedFS S3) and the coffre command line against it."""

    def __init__(self, home: Path, kind: str, upload: str) -> None:
        self.home = home
        home.mkdir(parents=True)
        (home / "password").write_text(PASSWORD)
        self.env = {**os.environ, "COFFRE_PASSWORD_FILE": str(home / "password"),
                    "COFFRE_CACHE_DIR": str(home / "cache"), "COFFRE_STATE_DIR": str(home / "state")}
        self.s3 = None
        if kind == "s3":
            from servers import SeaweedFS

            self.s3 = SeaweedFS.start(home / "s3")
            self.env.update(SeaweedFS.env())
            self.env["COFFRE_REPOSITORY"] = self.s3.url("bench", "pharmacie")
        else:
            self.env["COFFRE_REPOSITORY"] = str(home / "repo")
        if upload:
            self.env["COFFRE_LIMIT_UPLOAD"] = upload
        self.run("init")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "coffre", *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(self.argv(*args), env={**self.env, **(env or {})}, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"coffre {' '.join(args)}: {done.stderr}")
        return done.stdout

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.s3 is not None:
            self.s3.stop()


def cpu_of(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds of a child that has been waited for (its rusage)."""
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def trial(work: Path, args: argparse.Namespace, rnd: random.Random) -> dict[str, float]:
    primary = Archiving(archive_timeout=args.archive_timeout, scale=args.scale)
    site = Site(work / "site", args.repo, args.upload)
    account = service_account("postgres")
    folder = DrillFolder("coffre-bench-standby-", "/tmp", account)  # noqa: S108 (the postgres account reaches it)
    top = Path(tempfile.mkdtemp(prefix="coffre-bench-pgdata-", dir="/tmp"))
    os.chmod(top, 0o755)  # noqa: S103 (the postgres account passes through to its data folder)
    server = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        site.run("backup", "--postgres-cluster", primary.cluster(), env=primary.pg.env())
        pgdata = top / "standby"
        site.run("standby", "init", "--pgdata", str(pgdata))
        sockets = folder.owned("run")
        server = start_server(str(pgdata), sockets, folder)
        shipping = site.popen("wal", "ship", "--spool", str(primary.spool), "--every", str(args.every))
        following = site.popen("standby", "follow", "--pgdata", str(pgdata), "--every", str(args.every))
        procs = [shipping, following]
        rate = ["-R", str(args.rate)] if args.rate else []
        load = primary.pg.pgbench_popen("-c", "4", *rate, "-T", "600", dbname="officine")
        seconds = rnd.uniform(args.min_load, args.max_load)
        try:
            with Writer(primary.conninfo()) as writer:
                time.sleep(seconds)  # the load runs for a random while: the death comes at any moment
                killed_at = time.time()
                os.kill(primary.pg.proc.pid, signal.SIGKILL)
                shipping.send_signal(signal.SIGKILL)
            log = writer.log
        finally:
            load.kill()
            load.wait()
        following.send_signal(signal.SIGKILL)
        following.wait()
        out = site.run("standby", "promote", "--pgdata", str(pgdata), "--socket", sockets, "--port", "5432",
                       "--user", "coffre", "--json")
        query(sockets, "CREATE TABLE after_promotion (x int); INSERT INTO after_promotion VALUES (1)")
        recovery_time = time.time() - killed_at
        promoted = json.loads(out)
        present = sorted(int(x) for x in query(sockets, "SELECT id FROM ledger").split())
        assert present == list(range(1, len(present) + 1)), "the kept rows are not a prefix"
        sums = query(sockets, "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                              "(SELECT sum(bbalance) FROM pgbench_branches), "
                              "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)").split("|")
        assert len(set(sums)) == 1 and promoted["ok"], (sums, promoted)
        lost = [before for n, before, _after in log if n > len(present)]
        return {"load_s": seconds, "recovery_point_s": killed_at - min(lost) if lost else 0.0,
                "recovery_time_s": recovery_time, "rows": len(log), "rows_lost": len(lost)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if server is not None:
            stop_server(server)
        folder.remove()
        shutil.rmtree(top, ignore_errors=True)
        primary.stop()
        site.stop()
        shutil.rmtree(work / "site", ignore_errors=True)


def cost(work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Bytes and CPU of a minute of capture at a pharmacy's pace, for a 12-hour day."""
    primary = Archiving(archive_timeout=args.archive_timeout, scale=args.scale)
    site = Site(work / "cost", args.repo, args.upload)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        site.run("backup", "--postgres-cluster", primary.cluster(), env=primary.pg.env())
        base_s = time.perf_counter() - t0
        base_cpu = _cpu_since(before)
        # What was archived before (pgbench -i, the base backup's own WAL) is shipped first and
        # left out of the day's count.
        site.run("wal", "ship", "--spool", str(primary.spool))
        base_bytes = _repo_bytes(site)
        pushed_before = int(primary.pg.psql("SELECT archived_count FROM pg_stat_archiver"))
        shipping = site.popen("wal", "ship", "--spool", str(primary.spool), "--every", str(args.every))
        primary.pg.pgbench("-c", "2", "-R", "5", "-T", str(args.cost_seconds), dbname="officine")
        deadline = time.monotonic() + 120
        while any(p.suffix == ".piece" for p in primary.spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.5)  # waiting on the shipper
        shipping.send_signal(signal.SIGTERM)
        ship_cpu = cpu_of(shipping)
        wal_bytes = _repo_bytes(site) - base_bytes
        pushes = int(primary.pg.psql("SELECT archived_count FROM pg_stat_archiver")) - pushed_before
        push_cpu = _push_cpu(primary)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        again = last_json(site.run("backup", "--postgres-cluster", primary.cluster(), "--json",
                                   env=primary.pg.env()))
        again_cpu = _cpu_since(before)
        per_day = 12 * 3600 / args.cost_seconds
        return {"base_backup_bytes": base_bytes, "base_backup_cpu_s": base_cpu, "base_backup_s": base_s,
                "next_base_added_bytes": again["summary"]["data_added_stored"], "next_base_cpu_s": again_cpu,
                "capture_bytes_per_day": wal_bytes * per_day,
                "capture_cpu_s_per_day": (ship_cpu + pushes * push_cpu) * per_day,
                "segments_per_day": pushes * per_day}
    finally:
        primary.stop()
        site.stop()
        shutil.rmtree(work / "cost", ignore_errors=True)


def last_json(text: str) -> dict[str, Any]:
    """The last of the JSON documents a command printed (progress lines come first)."""
    from conftest import json_documents

    return dict(json_documents(text)[-1])


def _cpu_since(before: resource.struct_rusage) -> float:
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (now.ru_utime - before.ru_utime) + (now.ru_stime - before.ru_stime)


def _repo_bytes(site: Site) -> int:
    """What the repository holds on its medium."""
    if site.s3 is None:
        return sum(p.stat().st_size for p in (site.home / "repo").rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in (site.home / "s3" / "data").rglob("*") if p.is_file())


def _push_cpu(primary: Archiving) -> float:
    """CPU seconds of one `coffre wal push` of a 16 MiB segment (measured on 5)."""
    from test_pg_continuity import fake_segment

    with tempfile.TemporaryDirectory() as d:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for i in range(5):
            seg = Path(d) / f"0000000100000000000000{i + 10:02X}"
            seg.write_bytes(fake_segment(i + 10, sysid=7))
            subprocess.run([sys.executable, "-m", "coffre", "wal", "push", "--spool", f"{d}/spool", str(seg),
                            seg.name], check=True, capture_output=True)
        return _cpu_since(before) / 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--scale", type=int, default=5)
    ap.add_argument("--repo", choices=("local", "s3"), default="local")
    ap.add_argument("--upload", default="", help="upload limit for s3, e.g. 1MiB/s")
    ap.add_argument("--archive-timeout", type=int, default=5)
    ap.add_argument("--every", type=float, default=1.0, help="shipper and follower interval (s)")
    ap.add_argument("--rate", type=int, default=0,
                    help="pgbench transactions a second during the trials (default: as fast as it goes)")
    ap.add_argument("--min-load", type=float, default=20.0)
    ap.add_argument("--max-load", type=float, default=40.0)
    ap.add_argument("--cost-seconds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rnd = random.Random(args.seed)  # noqa: S311 (when the machine dies, not a secret)
    work = Path(tempfile.mkdtemp(prefix="coffre-bench-continuity-"))
    try:
        results = [trial(work, args, rnd) for _ in range(args.trials)]
        spent = cost(work, args) if args.cost_seconds else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rp = [r["recovery_point_s"] for r in results]
    rt = [r["recovery_time_s"] for r in results]
    summary = {"settings": {"repo": args.repo, "upload": args.upload, "archive_timeout": args.archive_timeout,
                            "every": args.every, "scale": args.scale, "rate": args.rate or "max"},
               "trials": results, "recovery_point_s": {"median": statistics.median(rp), "worst": max(rp)},
               "recovery_time_s": {"median": statistics.median(rt), "worst": max(rt)}, "cost": spent}
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"settings: {summary['settings']}")
    for r in results:
        print(f"  load {r['load_s']:.0f} s, {r['rows']} rows: recovery point {r['recovery_point_s']:.1f} s "
              f"({r['rows_lost']} rows lost), recovery time {r['recovery_time_s']:.1f} s")
    print(f"recovery point: median {statistics.median(rp):.1f} s, worst {max(rp):.1f} s")
    print(f"recovery time: median {statistics.median(rt):.1f} s, worst {max(rt):.1f} s")
    if spent:
        mb = 1e6
        print(f"a 12-hour day at 5 transactions/s: capture {spent['capture_bytes_per_day'] / mb:.1f} MB, "
              f"{spent['capture_cpu_s_per_day']:.0f} CPU s ({spent['segments_per_day']:.0f} segments)")
        print(f"a base backup: first {spent['base_backup_bytes'] / mb:.1f} MB, "
              f"{spent['base_backup_cpu_s']:.1f} CPU s; the next one adds "
              f"{spent['next_base_added_bytes'] / mb:.1f} MB, {spent['next_base_cpu_s']:.1f} CPU s")


if __name__ == "__main__":
    main()
