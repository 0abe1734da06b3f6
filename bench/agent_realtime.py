"""The whole agent in real-time mode (issue 14): its cost while idle-watching the benchmark data
set, and the delay from a file written to it being in a snapshot under a steady write load.

    .venv/bin/python bench/agent_realtime.py [--tree /tmp/pharmabench/pristine-small]
        [--idle-seconds 60] [--load-seconds 300] [--write-every 2]
        [--debounce 60] [--min-interval 600] [--work /tmp/coffre-agent-bench]

A copy of the tree (the writes must not touch the benchmark's data set), a local repository
(the real key derivation), and `coffre agent` with one job: the copy, `realtime = true`, no
times of day, no check. Then:
1. the first backup (the job never ran: at once) — its duration;
2. `--idle-seconds` of nothing: the agent process's CPU time (utime + stime from /proc) and
   its resident memory before and after (nothing runs: it only waits in select);
3. `--load-seconds` of a steady load: a new 100 kB file every `--write-every` seconds; each
   file's delay is from its write to the end of the first successful run that started after
   it (an upper bound: a run that started earlier may already hold it). Median and maximum.
One JSON line on stdout. The bound to expect: min_interval + debounce + one backup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coffre.agent.status import StatusStore, store_path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def runs(state: Path) -> list[tuple[float, float, str]]:
    path = store_path(str(state))
    if not path.exists():
        return []
    with StatusStore(path) as store:
        return [(r.started, r.ended or 0.0, r.outcome) for r in store.runs(job="temps-reel")
                if r.outcome != "running"]


def wait_ok_run(state: Path, started_after: float, agent: subprocess.Popen[bytes]) -> tuple[float, float]:
    while True:
        for started, ended, outcome in runs(state):
            if outcome == "ok" and started > started_after:
                return started, ended
        if agent.poll() is not None:
            raise SystemExit(f"the agent ended with status {agent.returncode}")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tmp = tempfile.gettempdir()
    ap.add_argument("--tree", default=os.path.join(tmp, "pharmabench", "pristine-small"))
    ap.add_argument("--work", default=os.path.join(tmp, "coffre-agent-bench"))
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--load-seconds", type=float, default=300.0)
    ap.add_argument("--write-every", type=float, default=2.0)
    ap.add_argument("--debounce", type=float, default=60.0)
    ap.add_argument("--min-interval", type=float, default=600.0)
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = work / "tree"
    shutil.copytree(args.tree, tree, symlinks=True)
    pw = work / "password"
    pw.write_text("bench-agent-password\n")
    pw.chmod(0o600)
    env = {**os.environ, "COFFRE_PASSWORD_FILE": str(pw), "COFFRE_CACHE_DIR": str(work / "cache"),
           "COFFRE_STATE_DIR": str(work / "coffre-state")}
    coffre = [sys.executable, "-m", "coffre"]
    subprocess.run([*coffre, "init", "-q", "--repo", str(work / "repo")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    state = work / "agent"
    config = work / "coffre.toml"
    config.write_text(f"""
[agent]
state_dir = "{state}"
language = "en"

[repositories.local]
url = "{work / 'repo'}"
password_file = "{pw}"

[jobs.temps-reel]
paths = ["{tree}"]
repository = "local"

[jobs.temps-reel.schedule]
times = []
realtime = true
debounce = {args.debounce}
min_interval = {args.min_interval}

[jobs.temps-reel.verification]
check_subset = false
""")
    with open(work / "agent.log", "wb") as log:
        t0 = time.time()
        agent = subprocess.Popen([*coffre, "agent", "--config", str(config)], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        started, ended = wait_ok_run(state, 0.0, agent)
        first = {"seconds_to_first_snapshot": round(ended - t0, 2),
                 "first_backup_seconds": round(ended - started, 2)}
        # Idle: nothing changes; the agent only waits.
        time.sleep(1.0)
        cpu0, rss0 = cpu_seconds(agent.pid), rss_kib(agent.pid)
        time.sleep(args.idle_seconds)
        idle = {"idle_seconds": args.idle_seconds,
                "idle_cpu_seconds": round(cpu_seconds(agent.pid) - cpu0, 4),
                "rss_kib_before": rss0, "rss_kib_after": rss_kib(agent.pid)}
        # Steady load: a new file every `write_every` seconds.
        scans = tree / "bench-scans"
        scans.mkdir()
        writes: list[float] = []
        cpu1 = cpu_seconds(agent.pid)
        end = time.time() + args.load_seconds
        i = 0
        while time.time() < end:
            (scans / f"scan-{i:05d}.pdf").write_bytes(os.urandom(100_000))
            writes.append(time.time())
            i += 1
            time.sleep(args.write_every)
        wait_ok_run(state, writes[-1], agent)
        load_cpu = cpu_seconds(agent.pid) - cpu1
        done = [(s, e) for s, e, o in runs(state) if o == "ok"]
        delays = []
        for w in writes:
            after = [e for s, e in done if s > w]
            delays.append(min(after) - w)
        realtime_runs = len([1 for s, _e in done if s > writes[0]])
        load = {"load_seconds": args.load_seconds, "files_written": len(writes),
                "runs_during_load": realtime_runs,
                "delay_median_seconds": round(statistics.median(delays), 1),
                "delay_max_seconds": round(max(delays), 1),
                "agent_cpu_seconds_during_load": round(load_cpu, 3),
                "debounce": args.debounce, "min_interval": args.min_interval}
        print(json.dumps({"tree": args.tree, **first, **idle, **load}))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=300)


if __name__ == "__main__":
    main()
