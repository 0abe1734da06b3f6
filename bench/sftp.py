"""Coffre and restic backing up to the same SFTP server, in one run: OpenSSH's sshd on
127.0.0.1 (its internal-sftp, a key of its own, no agent), the NAS or the provider's server
that many pharmacies reach over SSH. Each step reports its wall time; SFTP has no requests to
count (bench/remote.py counts them on S3).

    python bench/sftp.py --size-mib 50              # 3 runs, medians and the worst ratio
    python bench/sftp.py --size-mib 4 --runs 1      # the smoke run of the test suite

Steps for each tool, on a fresh copy of the pristine tree and a fresh repository: init,
initial backup, backup with nothing changed, one day of activity then backup, full restore
(compared byte for byte). The page cache is dropped before each step when run as root.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the real-server launchers

from remote import STEPS, fresh_home, pristine_tree
from run import SHARED_BENCH, drop_caches, identical, timed
from tools import bytecode_env, compile_coffre, ensure_installed, in_turn

from servers import SSHServer


def tool_setup(name: str, server: SSHServer, home: Path) -> tuple[dict[str, str], list[str]]:
    """The tool's environment and the global options that reach the server with its key."""
    password = home / "password"
    password.write_text("benchmark password\n")
    if name == "coffre":
        return ({"COFFRE_REPOSITORY": server.url(str(home / "repo")), "COFFRE_PASSWORD_FILE": str(password),
                 "COFFRE_CACHE_DIR": str(home / "cache"), "COFFRE_STATE_DIR": str(home / "state"),
                 **server.env(), **bytecode_env(home)}, [])
    ssh = (f"ssh -p {server.port} -i {server.client_key} -o UserKnownHostsFile={server.known_hosts} "
           f"-o BatchMode=yes -o IdentitiesOnly=yes {server.user}@127.0.0.1 -s sftp")
    return ({"RESTIC_REPOSITORY": f"sftp:{server.user}@127.0.0.1:{home / 'repo'}",
             "RESTIC_PASSWORD_FILE": str(password), "RESTIC_CACHE_DIR": str(home / "cache"),
             "SSH_AUTH_SOCK": ""}, ["-o", f"sftp.command={ssh}"])


def commands(name: str, options: list[str], source: Path, target: Path) -> dict[str, list[str]]:
    if name == "coffre":
        base = [sys.executable, "-m", "coffre"]
        return {"init": [*base, "init"], "backup": [*base, "backup", "--host", "bench", str(source)],
                "restore": [*base, "restore", "latest", "--target", str(target)]}
    base = ["restic", *options]
    return {"init": [*base, "init", "-q"], "backup": [*base, "backup", "-q", "--host", "bench", str(source)],
            "restore": [*base, "restore", "-q", "latest", "--target", str(target)]}


def one_run(name: str, server: SSHServer, pristine: Path, home: Path) -> tuple[dict[str, float], bool]:
    """The four steps of one tool, timed; and whether the restore is identical."""
    source, target = fresh_home(home, pristine)
    env, options = tool_setup(name, server, home)
    argv = commands(name, options, source, target)
    subprocess.run(argv["init"], env={**os.environ, **env}, check=True, capture_output=True)
    times = {}
    for step in STEPS:
        if step == "backup after one day":
            subprocess.run([sys.executable, str(SHARED_BENCH / "mutate_dataset.py"), "--root", str(source)],
                           check=True, stdout=subprocess.DEVNULL)
        drop_caches()
        times[step] = timed(argv["restore" if step == "restore" else "backup"], env, home).wall
        print(f"{name} {step}: {times[step]:.2f}s", flush=True)
    same = identical(source, target / str(source).lstrip("/"))
    return times, same  # home is kept until every run is over (bench/run.py, KEEP_NOTE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, help="data set size (default ~2048)")
    ap.add_argument("--small-files", type=int, help="number of small config/log files")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pharmabench")  # noqa: S108
    args = ap.parse_args(argv)
    tools = ("coffre", "restic")
    compile_coffre()
    ensure_installed(["restic"])
    pristine = pristine_tree(args.out, args.size_mib, args.small_files)
    args.out.mkdir(parents=True, exist_ok=True)
    server_dir = Path(tempfile.mkdtemp(prefix="sshd-", dir=args.out))
    server = SSHServer.start(server_dir / "sshd")
    times: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    all_identical = True
    try:
        for n in range(args.runs):
            for name in in_turn(tools, n):
                run, same = one_run(name, server, pristine, server_dir / f"{name}-{n}")
                times[name].append(run)
                all_identical = all_identical and same
                print(f"{name} restore identical: {same}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)
    print()
    print(f"SFTP: OpenSSH sshd on 127.0.0.1; {args.runs} run(s); medians; ratio: the median of the "
          "per-run ratios (worst)")
    print(f"{'step':<22}{'coffre':>10}{'restic':>10}   coffre/restic")
    for step in STEPS:
        ours = [r[step] for r in times["coffre"]]
        theirs = [r[step] for r in times["restic"]]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(f"{step:<22}{statistics.median(ours):>9.2f}s{statistics.median(theirs):>9.2f}s   "
              f"{statistics.median(ratios):.2f} ({max(ratios):.2f})")
    return 0 if all_identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
