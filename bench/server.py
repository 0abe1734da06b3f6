"""The hosting server under a fleet's daily backups (issue 15): N simulated pharmacies, each a
real `coffre backup` process of its own small tree and changed SQLite database, all started
together against one `coffre server` on 127.0.0.1.

    python bench/server.py                       # 200 pharmacies, embedded default (disk + SQLite)
    python bench/server.py --scale-out           # the same against two instances on
                                                 # PostgreSQL + SeaweedFS (needs root: initdb)
    python bench/server.py --pharmacies 4 --size-mib 1     # the smoke run

Steps: one small pharmacy tree is generated (bench/../shared make_dataset.py) and copied for
each pharmacy; tenants and backup tokens are created; each pharmacy initialises its repository
and makes its first backup (8 at a time, not measured); each tree then lives one day
(mutate_dataset.py with the pharmacy's own seed); then the measured phase: every pharmacy's
daily backup started at once. Reported: wall time, requests per second, p50/p99 latency per
request kind (from the server's access log), server CPU seconds and peak RSS, client errors
(must be 0), then `coffre check` of every repository (must all be clean). One JSON document
on stdout (--json) or a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the real-server launchers

from run import SHARED_BENCH

PASSWORD = "pharmacy bench password"  # noqa: S105 (the benchmark's throwaway repositories)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_trees(work: Path, count: int, size_mib: int, small_files: int) -> list[Path]:
    pristine = work / "pristine"
    subprocess.run([sys.executable, str(SHARED_BENCH / "make_dataset.py"), "--out", str(pristine),
                    "--size-mib", str(size_mib), "--small-files", str(small_files), "--force"],
                   check=True, capture_output=True)
    trees = []
    for i in range(count):
        tree = work / f"p{i:03d}" / "src"
        shutil.copytree(pristine, tree, symlinks=True)
        trees.append(tree)
    return trees


def one_day(tree: Path, seed: int) -> None:
    roots = [p for p in tree.iterdir() if p.is_dir()]
    root = roots[0] if len(roots) == 1 else tree
    subprocess.run([sys.executable, str(SHARED_BENCH / "mutate_dataset.py"), "--root", str(root),
                    "--seed", str(seed)], check=True, capture_output=True)


def setup_tenants(data: Path, count: int, db_url: str = "", objects_url: str = "") -> list[str]:
    """Create the server's database and one tenant + backup token per pharmacy (returns tokens)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from coffre.server import tenants, tokens
    from coffre.server.db import Database
    from coffre.server.settings import Settings

    settings = Settings(data_dir=data, db_url=db_url, objects_url=objects_url)
    data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    db.create()
    out = []
    now = time.time_ns()
    with db.begin() as conn:
        for i in range(count):
            tid = tenants.add(conn, f"pharmacie-{i:03d}", now)
            out.append(tokens.issue(conn, tid, "backup", "bench", now)[1])
    db.close()
    return out


class ServerProcess:
    """One `coffre server` instance; its CPU time and peak memory are read from /proc."""

    def __init__(self, data: Path, port: int, log: Path, env: dict[str, str], extra: list[str]) -> None:
        self.port = port
        self.log = log
        argv = [sys.executable, "-m", "coffre", "server", "--data", str(data), *extra,
                "--listen", f"127.0.0.1:{port}", "--insecure-http", "--max-connections", "2000"]
        with open(log, "wb") as out:  # the server's log: one line per request (app.py)
            self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                         stderr=out)
        self.peak_rss_kib = 0
        deadline = time.monotonic() + 60
        import urllib.error
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/whoami", timeout=2)
            except urllib.error.HTTPError:
                break  # it answers (401 without a token)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start: " + log.read_text()) from None
                time.sleep(0.1)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
            except OSError:
                return

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client_env(home: Path, url: str, token: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "password").write_text(PASSWORD + "\n")
    token_file = home / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return {**os.environ, "COFFRE_REPOSITORY": url, "COFFRE_PASSWORD_FILE": str(home / "password"),
            "COFFRE_SERVER_TOKEN_FILE": str(token_file), "COFFRE_CACHE_DIR": str(home / "cache"),
            "COFFRE_STATE_DIR": str(home / "state")}


def coffre(env: dict[str, str], command: str, *args: str) -> tuple[int, float, str]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "coffre", command, "--insecure-http", *args], env=env,
                          capture_output=True, text=True)
    return done.returncode, time.monotonic() - start, done.stderr[-2000:]


ACCESS = re.compile(r"coffre\.server\.access: \S+ (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d+) "
                    r"\d+ (?P<ms>[\d.]+)ms")


def request_kind(method: str, path: str) -> str:
    """'PUT data', 'GET index/', 'POST status'...: the method and the object kind of a path."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 3 and parts[:2] == ["v1", "repos"]:
        rest = parts[3:]
        if not rest:
            return f"{method} repository"
        return f"{method} {rest[0]}" + ("/" if len(rest) == 1 and rest[0] != "config" else "")
    return f"{method} {'/'.join(parts[1:2]) or path}"


def log_size(logs: list[Path]) -> list[int]:
    return [log.stat().st_size for log in logs]


def request_stats(logs: list[Path], start: list[int], end: list[int], seconds: float) -> dict[str, Any]:
    """Per request kind: count, p50/p99 milliseconds; requests per second over the phase (the
    log lines written between the two offsets)."""
    durations: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    for log, a, b in zip(logs, start, end, strict=True):
        with open(log, "rb") as f:
            f.seek(a)
            text = f.read(b - a).decode("utf-8", "replace")
        for m in ACCESS.finditer(text):
            durations[request_kind(m["method"], m["path"])].append(float(m["ms"]))
            statuses[m["status"]] += 1
    total = sum(len(v) for v in durations.values())
    kinds = {k: {"count": len(v), "p50_ms": round(statistics.median(v), 1),
                 "p99_ms": round(sorted(v)[max(0, -(-len(v) * 99 // 100) - 1)], 1)}
             for k, v in sorted(durations.items())}
    return {"requests": total, "requests_per_s": round(total / max(seconds, 1e-9), 1),
            "by_kind": kinds, "statuses": dict(sorted(statuses.items()))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="coffre-server-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    trees = make_trees(work, args.pharmacies, args.size_mib, args.small_files)
    extra_env: dict[str, str] = {}
    db_url = objects_url = ""
    stoppers: list[Any] = []
    if args.scale_out:
        from dbservers import PostgresServer
        from servers import SeaweedFS

        pg = PostgresServer()
        stoppers.append(pg.stop)
        pg.psql("CREATE DATABASE coffre_server")
        weed = SeaweedFS.start(work / "weed")
        stoppers.append(weed.stop)
        extra_env = {**pg.env(), **SeaweedFS.env()}
        os.environ.update(extra_env)
        from dbservers import DB_USER

        db_url = f"postgresql://{DB_USER}@127.0.0.1:{pg.port}/coffre_server"
        objects_url = weed.url("coffre-server", "objects")
        subprocess.run([sys.executable, "-c", "import boto3,os; boto3.client('s3', endpoint_url="
                        f"'{weed.endpoint}').create_bucket(Bucket='coffre-server')"], check=True)
    data = work / "server"
    tokens = setup_tenants(data, args.pharmacies, db_url, objects_url)
    instances = 2 if args.scale_out else 1
    extra = (["--db", db_url, "--objects", objects_url] if args.scale_out else [])
    servers = [ServerProcess(data, free_port(), work / f"access-{n}.log", extra_env, extra)
               for n in range(instances)]
    try:
        envs = [client_env(work / f"p{i:03d}" / "home",
                           f"http://127.0.0.1:{servers[i % instances].port}/main", tokens[i])
                for i in range(args.pharmacies)]

        def first(i: int) -> tuple[int, float, str]:
            rc, t, err = coffre(envs[i], "init")
            if rc != 0:
                return rc, t, err
            return coffre(envs[i], "backup", "--host", f"p{i:03d}", str(trees[i]))

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            initial = list(pool.map(first, range(args.pharmacies)))
        initial_s = time.monotonic() - t0
        failed = [(i, err) for i, (rc, _t, err) in enumerate(initial) if rc != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} initial backups failed; first: {failed[0][1]}")
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(lambda i: one_day(trees[i], 1000 + i), range(args.pharmacies)))

        cpu0 = [s.cpu_seconds() for s in servers]
        logs = [s.log for s in servers]
        offsets0 = log_size(logs)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.pharmacies) as pool:
            daily = list(pool.map(lambda i: coffre(envs[i], "backup", "--host", f"p{i:03d}",
                                                   str(trees[i])), range(args.pharmacies)))
        daily_s = time.monotonic() - t0
        cpu = [s.cpu_seconds() - c for s, c in zip(servers, cpu0, strict=True)]
        errors = [(i, err) for i, (rc, _t, err) in enumerate(daily) if rc != 0]
        stats = request_stats(logs, offsets0, log_size(logs), daily_s)
        with ThreadPoolExecutor(4) as pool:
            checks = list(pool.map(lambda i: coffre(envs[i], "check", "--read-data"),
                                   range(args.pharmacies)))
        unclean = [i for i, (rc, _t, _e) in enumerate(checks) if rc != 0]
        client_times = sorted(t for _rc, t, _e in daily)
        return {
            "pharmacies": args.pharmacies, "instances": instances,
            "backend": "postgresql+seaweedfs" if args.scale_out else "sqlite+disk",
            "tree_mib": args.size_mib, "initial_phase_s": round(initial_s, 1),
            "daily_phase_s": round(daily_s, 1),
            "client_backup_s": {"p50": round(statistics.median(client_times), 2),
                                "max": round(client_times[-1], 2)},
            **stats,
            "server_cpu_s": [round(c, 1) for c in cpu],
            "server_peak_rss_mib": [round(s.peak_rss_kib / 1024, 1) for s in servers],
            "errors": len(errors), "first_error": errors[0][1] if errors else "",
            "repositories_checked": len(checks), "repositories_unclean": unclean,
        }
    finally:
        for s in servers:
            s.stop()
        for stop in reversed(stoppers):
            stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pharmacies", type=int, default=200)
    ap.add_argument("--size-mib", type=int, default=4, help="each pharmacy's tree (default 4)")
    ap.add_argument("--small-files", type=int, default=60)
    ap.add_argument("--scale-out", action="store_true",
                    help="two instances on PostgreSQL + SeaweedFS instead of one on SQLite + disk")
    ap.add_argument("--work", help="working folder (default: a new temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if result["errors"] == 0 and not result["repositories_unclean"] else 1


if __name__ == "__main__":
    sys.exit(main())
