"""Coffre and restic backing up to the same S3 server, in one run: SeaweedFS on 127.0.0.1,
reached through a counting proxy, so each step reports its wall time, the requests it made and
the bytes it sent (what would cross the pharmacy's uplink) and received. `coffre-server` is
Coffre through its own hosting server (`coffre server`, the embedded default: local disk and
SQLite, on 127.0.0.1 behind the same kind of proxy), side by side with the S3 gateway.

    python bench/remote.py                      # the ~2 GiB data set
    python bench/remote.py --size-mib 64        # quicker
    python bench/remote.py --size-mib 50 --link 100/20/30   # as over a pharmacy's line

Steps for each tool, on a fresh copy of the pristine tree and a fresh bucket: init, initial
backup, backup with nothing changed, one day of activity then backup, full restore (compared
byte for byte), then (coffre and restic) a copy of every snapshot to a second repository in the
same bucket that shares the first one's chunking. The page cache is dropped before each step
when run as root. `--runs` runs of all that (3 by default), each tool going first in turn, in one
process: every run's folders and repositories are kept until the last run is over, so no run
restores where an earlier one just deleted thousands of files (bench/README.md, "Reading the
ratios"); the table gives the medians.

On the loopback every request is nearly free and the storage answers at memory speed, so the
tools' own costs decide. `--link DOWN/UP/RTT` makes the proxy behave like a pharmacy's internet
access instead (Mbit/s down, Mbit/s up, round trip in ms; proxy.Link): then the bytes each tool
moves and how well it keeps the line busy decide, as after a fire.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the real-server launchers

from proxy import CountingProxy, Link
from run import SHARED_BENCH, drop_caches, identical, timed, tree_sizes
from tools import bytecode_env, compile_coffre, ensure_installed, in_turn

from servers import SeaweedFS

STEPS = ("initial backup", "unchanged backup", "backup after one day", "restore")
COPY_STEP = "copy to a 2nd remote"
CUT_AT = 0.5  # the interrupted first backup is killed once this share of the data is sent


def interrupted_first_backup(name: str, proxy: CountingProxy, env: dict[str, str], source: Path,
                             full: int) -> float:
    """Kill a first backup once CUT_AT of `full` bytes are sent, run it again: what the second
    run sends, as a share of a whole first backup."""
    import signal
    import time

    argv = tool_commands(name, source, source)
    run_env = {**os.environ, **env}
    subprocess.run(argv["init"], env=run_env, check=True, capture_output=True)
    start = proxy.counts.snapshot()[1]
    proc = subprocess.Popen(argv["backup"], env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proxy.counts.snapshot()[1] - start < CUT_AT * full and proc.poll() is None:
        time.sleep(0.02)  # watching the bytes sent
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if name == "restic":  # restic refuses to run while the dead process's lock is fresh
        subprocess.run(["restic", "unlock", "-q"], env=run_env, check=True, capture_output=True)
    before = proxy.counts.snapshot()[1]
    subprocess.run(argv["backup"], env=run_env, check=True, capture_output=True)
    return (proxy.counts.snapshot()[1] - before) / full


def timed_copy(name: str, proxy: CountingProxy, env: dict[str, str], home: Path
               ) -> tuple[str, str, float, dict[str, int], int, int]:
    """Copy every snapshot of the tool's repository to a second one in the same bucket, made to
    share its chunking (coffre init --copy-chunking-from, restic init --copy-chunker-params):
    the off-site copy of a NAS's repository, both remote here. Untimed init, timed copy."""
    run_env = {**os.environ, **env}
    if name == "coffre":
        source = env["COFFRE_REPOSITORY"]
        run_env |= {"COFFRE_REPOSITORY": source + "-copy",
                    "COFFRE_FROM_PASSWORD_FILE": env["COFFRE_PASSWORD_FILE"]}
        init = [sys.executable, "-m", "coffre", "init", "--copy-chunking-from", source]
        copy = [sys.executable, "-m", "coffre", "copy", "--from", source, "--to", source + "-copy"]
    else:
        source = env["RESTIC_REPOSITORY"]
        run_env |= {"RESTIC_REPOSITORY": source + "-copy",
                    "RESTIC_FROM_PASSWORD_FILE": env["RESTIC_PASSWORD_FILE"]}
        init = ["restic", "init", "-q", "--from-repo", source, "--copy-chunker-params"]
        copy = ["restic", "copy", "-q", "--from-repo", source]
    subprocess.run(init, env=run_env, check=True, capture_output=True)
    return measured_step(name, COPY_STEP, proxy, copy, run_env, home)


def measured_step(name: str, step: str, proxy: CountingProxy, argv: list[str], env: dict[str, str],
                  home: Path) -> tuple[str, str, float, dict[str, int], int, int]:
    """One timed command on a cold page cache, with the requests it made (by method) and the bytes
    it sent and received through the proxy; printed, and returned as a row of the table."""
    drop_caches()
    before = proxy.counts.snapshot()
    traced = len(proxy.counts.trace) if proxy.counts.trace is not None else 0
    measure = timed(argv, env, home)
    after = proxy.counts.snapshot()
    if proxy.counts.trace is not None:  # --trace: each request of the step, one per line
        lines = ["\t".join(map(str, r)) for r in proxy.counts.trace[traced:]]
        (home / f"requests-{step.replace(' ', '-')}.tsv").write_text("".join(f"{x}\n" for x in lines))
    requests = {k: v - before[0].get(k, 0) for k, v in after[0].items() if v - before[0].get(k, 0)}
    sent, received = after[1] - before[1], after[2] - before[2]
    print(f"{name} {step}: {measure.wall:.2f}s, {sum(requests.values())} requests {requests}, "
          f"sent {sent / 1e6:.1f} MB, received {received / 1e6:.1f} MB", flush=True)
    return name, step, measure.wall, requests, sent, received


def tool_commands(name: str, source: Path, target: Path) -> dict[str, list[str]]:
    if name in ("coffre", "coffre-server"):
        base = [sys.executable, "-m", "coffre"]
        http = ["--insecure-http"] if name == "coffre-server" else []  # loopback, no TLS to time
        return {"init": [*base, "init", *http],
                "backup": [*base, "backup", *http, "--host", "bench", str(source)],
                "restore": [*base, "restore", *http, "latest", "--target", str(target)]}
    return {"init": ["restic", "init", "-q"],
            "backup": ["restic", "backup", "-q", "--host", "bench", str(source)],
            "restore": ["restic", "restore", "-q", "latest", "--target", str(target)]}


def tool_env(name: str, port: int, home: Path, token_file: Path | None = None,
             run: int = 0) -> dict[str, str]:
    """The environment of one tool's commands in run `run`, whose repository is its own."""
    password = home / "password"
    password.write_text("benchmark password\n")
    if name == "coffre-server":
        assert token_file is not None
        return {"COFFRE_REPOSITORY": f"http://127.0.0.1:{port}/bench-{run}",
                "COFFRE_PASSWORD_FILE": str(password), "COFFRE_CACHE_DIR": str(home / "cache"),
                "COFFRE_STATE_DIR": str(home / "state"), "COFFRE_SERVER_TOKEN_FILE": str(token_file),
                **bytecode_env(home)}
    if name == "coffre":
        return {"COFFRE_REPOSITORY": f"s3+http://127.0.0.1:{port}/coffre-bench/run{run}/repo",
                "COFFRE_PASSWORD_FILE": str(password), "COFFRE_CACHE_DIR": str(home / "cache"),
                "COFFRE_STATE_DIR": str(home / "state"), **bytecode_env(home)}
    return {"RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{port}/restic-bench/run{run}",
            "RESTIC_PASSWORD_FILE": str(password), "RESTIC_CACHE_DIR": str(home / "cache")}


class OwnServer:
    """`coffre server` with the embedded default, one tenant and its backup token."""

    def __init__(self, data: Path) -> None:
        import time
        import urllib.error
        import urllib.request

        from coffre.server import tenants, tokens
        from coffre.server.db import Database
        from coffre.server.settings import Settings

        data.mkdir(parents=True)
        db = Database(Settings(data_dir=data).database_url)
        db.create()
        with db.begin() as conn:
            tenant = tenants.add(conn, "bench", time.time_ns())
            token = tokens.issue(conn, tenant, "prune", "bench", time.time_ns())[1]
        db.close()
        self.token_file = data / "bench.token"
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)
        from servers import free_port

        self.port = free_port()
        self.log = open(data / "server.log", "wb")  # noqa: SIM115 (open while it runs)
        self.proc = subprocess.Popen([sys.executable, "-m", "coffre", "server", "--data", str(data),
                                      "--listen", f"127.0.0.1:{self.port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/whoami", timeout=2)
            except urllib.error.HTTPError:
                return  # answering (401 without a token)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("coffre server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)  # it lets requests in flight finish (30 s at most)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def pristine_tree(out: Path, size_mib: int | None, small_files: int | None) -> Path:
    """The data set of this size under `out`, generated the first time."""
    pristine = out / f"pristine-{size_mib or 2048}mib-{small_files or 'default'}"
    if not (pristine / "pharmacy-server").exists():
        gen = [sys.executable, str(SHARED_BENCH / "make_dataset.py"), "--out", str(pristine), "--force"]
        gen += ["--size-mib", str(size_mib)] if size_mib else []
        gen += ["--small-files", str(small_files)] if small_files else []
        subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
    return pristine


def fresh_home(home: Path, pristine: Path) -> tuple[Path, Path]:
    """An empty folder for one tool's run, with its own copy of the tree: (source, target)."""
    shutil.rmtree(home, ignore_errors=True)
    (home / "work").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(pristine / "pharmacy-server"), str(home / "work")], check=True)
    return home / "work" / "pharmacy-server", home / "restored"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, help="data set size (default ~2048)")
    ap.add_argument("--small-files", type=int, help="number of small config/log files")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pharmabench")  # noqa: S108
    ap.add_argument("--tools", default="coffre,coffre-server,restic")
    ap.add_argument("--runs", type=int, default=3, help="runs, each tool going first in turn (default 3)")
    ap.add_argument("--trace", action="store_true",
                    help="write each step's requests (method, path, range, bytes back) to "
                         "requests-STEP.tsv in the tool's folder, which is kept")
    ap.add_argument("--turn", type=int, default=0,
                    help="the first run's number among several (0, 1, 2...): the tool that starts")
    ap.add_argument("--link", type=_link, help="DOWN/UP/RTT: the proxy paces the traffic as a line of "
                    "DOWN Mbit/s down, UP Mbit/s up and RTT ms round trip (e.g. 100/20/30); "
                    "default: the loopback as it is")
    args = ap.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    compile_coffre()
    ensure_installed([t for t in tools if not t.startswith("coffre")])
    pristine = pristine_tree(args.out, args.size_mib, args.small_files)
    source_bytes = sum(tree_sizes(pristine / "pharmacy-server").values())
    server_dir = Path(tempfile.mkdtemp(prefix="seaweedfs-", dir=args.out))
    server = SeaweedFS.start(server_dir)
    proxies = {"coffre": CountingProxy(server.port, args.link), "restic": None}
    proxies["restic"] = proxies["coffre"]
    if args.trace:
        proxies["coffre"].counts.trace = []
    own = OwnServer(server_dir / "coffre-server") if "coffre-server" in tools else None
    if own is not None:
        proxies["coffre-server"] = CountingProxy(own.port, args.link)
    rows: list[Row] = []
    resumed: dict[str, float] = {}
    all_identical = True
    runs_dir = args.out / "remote"
    try:
        for run in range(args.runs):
            for name in in_turn(tools, args.turn + run):
                proxy = proxies[name]
                assert proxy is not None
                token = own.token_file if own is not None and name == "coffre-server" else None
                home = runs_dir / f"run{run}" / name
                source, target = fresh_home(home, pristine)
                env = {**server.env(), **tool_env(name, proxy.port, home, token, run)}
                cmds = tool_commands(name, source, target)
                subprocess.run(cmds["init"], env={**os.environ, **env}, check=True, capture_output=True)
                for step in STEPS:
                    if step == "backup after one day":
                        subprocess.run([sys.executable, str(SHARED_BENCH / "mutate_dataset.py"), "--root",
                                        str(source)], check=True, stdout=subprocess.DEVNULL)
                    argv = cmds["restore" if step == "restore" else "backup"]
                    rows.append(Row(run, *measured_step(name, step, proxy, argv, env, home)))
                if name in ("coffre", "restic"):
                    rows.append(Row(run, *timed_copy(name, proxy, env, home)))
                same = identical(source, target / str(source).lstrip("/"))
                all_identical = all_identical and same
                print(f"{name} restore identical: {same}", flush=True)
                if run == 0:  # what a second run sends does not vary: measured once
                    full = next(r.sent for r in rows if r.tool == name and r.step == "initial backup")
                    resume_env = {**env, **tool_env(name, proxy.port, home, token, run)}
                    if name.startswith("coffre"):
                        resume_env["COFFRE_REPOSITORY"] += "-resume"
                    else:
                        resume_env["RESTIC_REPOSITORY"] += "-resume"
                    resumed[name] = interrupted_first_backup(
                        name, proxy, resume_env, pristine / "pharmacy-server", full)
                    print(f"{name} first backup cut at {CUT_AT:.0%}, run again: the second run sent "
                          f"{resumed[name]:.0%} of a whole first backup", flush=True)
    finally:
        # Every run's folders are kept until all have run (bench/run.py, KEEP_NOTE).
        for home in runs_dir.glob("run*/*"):
            if args.trace:
                for kept in ("restored", "work"):
                    shutil.rmtree(home / kept, ignore_errors=True)
            else:
                shutil.rmtree(home, ignore_errors=True)
        for p in {id(p): p for p in proxies.values() if p is not None}.values():
            p.stop()
        if own is not None:
            own.stop()
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)
    print_table(rows, tools, resumed, source_bytes, own is not None, args.runs, args.link)
    return 0 if all_identical else 1


def _link(text: str) -> Link:
    try:
        return Link.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Row(NamedTuple):
    run: int
    tool: str
    step: str
    wall: float
    requests: dict[str, int]
    sent: int
    received: int


def print_table(rows: list[Row], tools: list[str], resumed: dict[str, float], source_bytes: int,
                own: bool, runs: int, link: Link | None = None) -> None:
    """Each tool's medians over the runs (time, requests, bytes sent) and the ratios of the
    medians, with the worst run's ratio beside the time's."""
    print()
    print(f"data set: {source_bytes / 1e6:.0f} MB; S3: SeaweedFS on 127.0.0.1 through a counting proxy"
          + (f" emulating a line of {link.describe()}" if link is not None else "")
          + ("; coffre-server: `coffre server` (disk + SQLite) through the same proxy" if own else "")
          + f"; medians of {runs} run(s)")
    header = f"{'step':<22}" + "".join(f"{t:>40}" for t in tools)
    ratios = [r for r in ("coffre/restic", "coffre-server/restic", "coffre-server/coffre")
              if set(r.split("/")) <= set(tools)]
    print(header + "".join(f"   {r} (time, worst run, sent)" for r in ratios))
    print("-" * len(header))
    for step in [*STEPS, COPY_STEP]:
        ran = {t: [r for r in rows if r.step == step and r.tool == t] for t in tools}
        cells = {t: (statistics.median(r.wall for r in rs),
                     statistics.median(sum(r.requests.values()) for r in rs),
                     statistics.median(r.sent for r in rs)) for t, rs in ran.items() if rs}
        # In the header's order, whichever tool ran first; blank where a tool has no such step.
        line = f"{step:<22}" + "".join(
            f"{f'{c[0]:.2f}s {c[1]:.0f} req {c[2] / 1e6:.1f} MB up' if c else '':>40}"
            for c in (cells.get(t) for t in tools))
        walls = {(r.run, r.tool): r.wall for r in rows if r.step == step}
        for ratio in ratios:
            a, b = ratio.split("/")
            if a not in cells or b not in cells:
                continue
            worst = max(wall / walls[run, b] for (run, tool), wall in walls.items()
                        if tool == a and (run, b) in walls)
            sent = f"{cells[a][2] / cells[b][2]:.2f}" if cells[b][2] > 1_000_000 else "-"  # both ~0: no ratio
            line += f"   {ratio} {cells[a][0] / cells[b][0]:.2f} ({worst:.2f})  {sent}"
        print(line)
    print(f"{'rerun after a cut at 50%':<22}" + "".join(f"{f'{resumed[t]:.0%} of a full backup sent':>40}"
                                                        for t in tools if t in resumed))


if __name__ == "__main__":
    raise SystemExit(main())
