"""The console's page-load benchmark (bench/web_console.py) runs: a smoke run on 20 tenants,
in-process and over HTTP, within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "web_console.py"


def test_the_fleet_page_benchmark_runs_on_a_small_fleet() -> None:
    res = subprocess.run([sys.executable, str(BENCH), "--tenants", "20", "--days", "5", "--runs", "3"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["tenants"] == 20 and out["in_process"]["bytes"] > 10_000
    assert 0 < out["http"]["warm_first_byte_ms"] <= out["http"]["warm_last_byte_ms"] < 1000
