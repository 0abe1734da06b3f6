"""What showing progress costs a backup: the same initial backup with the display off (pipes),
on a terminal (a pseudo-terminal, the line redrawn 4 times a second) and with --json (status
events every second), interleaved, medians of wall and CPU time; then one backup run in this
process with stderr on a pseudo-terminal, timing rich's redraws and counting the operation's
`advance` calls, which is precise where the machine is too busy for wall times to be.

    .venv/bin/python bench/progress_display.py /tmp/smallfiles /tmp/pharmabench/pristine-small --runs 5

Backup shows progress once its wiring (progress_for(args, _("backup"))) is in; before that the
three modes cost the same and the in-process figures count no redraw.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("off", "terminal", "json")


def _pty(columns: int = 160) -> tuple[int, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    return master, slave


def _drain(master: int) -> None:
    while True:
        try:
            if not os.read(master, 65536):
                return
        except OSError:
            return


def _env(work: Path) -> dict[str, str]:
    env = {**os.environ, "COFFRE_TEST_WEAK_KDF": "1", "COFFRE_CACHE_DIR": str(work / "cache"),
           "COFFRE_STATE_DIR": str(work / "state"), "TERM": "xterm"}
    env.pop("COFFRE_PROGRESS_INTERVAL", None)
    return env


def _fresh(work: Path, password: Path) -> list[str]:
    """A new repository in `work`; the repository options of a command."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    opts = ["--repo", str(work / "repo"), "--password-file", str(password)]
    subprocess.run([sys.executable, "-m", "coffre", "init", *opts], env=_env(work), check=True,
                   capture_output=True)
    return opts


def one_run(mode: str, data: Path, work: Path, password: Path) -> tuple[float, float]:
    """Wall and CPU seconds of an initial backup of `data` in this mode."""
    opts = _fresh(work, password)
    argv = [sys.executable, "-m", "coffre", "backup", *opts, str(data)]
    argv += ["--json"] if mode == "json" else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    if mode == "terminal":
        master, slave = _pty()
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=_env(work),
                                start_new_session=True)
        os.close(slave)
        _drain(master)
        os.close(master)
        code = proc.wait()
    else:
        code = subprocess.run(argv, env=_env(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=False).returncode
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"backup of {data} failed ({mode})")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def in_process(data: Path, work: Path, password: Path) -> dict[str, Any]:
    """One backup in this process, stderr on a pseudo-terminal: rich's redraws timed on their
    own thread, the operation's advance() calls counted."""
    from rich.live import Live

    from coffre.cli.main import main
    from coffre.core import progress as core

    opts = _fresh(work, password)
    os.environ.update({k: v for k, v in _env(work).items() if k.startswith(("COFFRE_", "TERM"))})
    master, slave = _pty()
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    redraws = [0, 0.0]
    calls = [0]
    refresh, advance = Live.refresh, core.Progress.advance

    def timed_refresh(self: Live) -> None:
        t = time.thread_time()
        refresh(self)
        redraws[0] += 1
        redraws[1] += time.thread_time() - t

    def counted_advance(self: core.Progress, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        advance(self, *args, **kwargs)

    Live.refresh = timed_refresh  # type: ignore[method-assign]
    core.Progress.advance = counted_advance  # type: ignore[method-assign]
    stderr, sys.stderr = sys.stderr, open(slave, "w", buffering=1)  # noqa: SIM115
    try:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        code = main(["backup", *opts, str(data)])
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    finally:
        sys.stderr.close()
        sys.stderr = stderr
        Live.refresh = refresh  # type: ignore[method-assign]
        core.Progress.advance = advance  # type: ignore[method-assign]
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    # What one advance() costs, measured apart.
    p = core.Progress()
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        p.advance(1, 4096, current=b"/srv/officine/scans/ordonnance.jpg")
    per_call = (time.perf_counter() - t) / n
    return {"exit": code, "wall": wall, "cpu": cpu, "redraws": redraws[0], "redraw_cpu": redraws[1],
            "advances": calls[0], "advance_cpu": calls[0] * per_call}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="coffre-progress-cost-"))
    password = root / "password"
    password.write_text("progress cost\n")
    password.chmod(0o600)
    try:
        for data in args.datasets:
            one_run("off", data, root / "work", password)  # warms the page cache
            results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
            for _ in range(args.runs):
                for mode in MODES:
                    results[mode].append(one_run(mode, data, root / "work", password))
            off_wall = statistics.median(w for w, _ in results["off"])
            off_cpu = statistics.median(c for _, c in results["off"])
            for mode, runs in results.items():
                wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
                print(f"{data.name:<16} {mode:<9} wall {wall:6.2f} s ({100 * (wall / off_wall - 1):+5.1f} %)"
                      f"  cpu {cpu:6.2f} s ({100 * (cpu / off_cpu - 1):+5.1f} %)", flush=True)
            r = in_process(data, root / "work", password)
            print(f"{data.name:<16} in-process: wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s; "
                  f"{r['redraws']} redraws took {1000 * r['redraw_cpu']:.0f} ms cpu "
                  f"({100 * r['redraw_cpu'] / r['wall']:.2f} % of the wall time); {r['advances']} advance() "
                  f"calls, about {1000 * r['advance_cpu']:.0f} ms "
                  f"({100 * r['advance_cpu'] / r['wall']:.2f} %)",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
