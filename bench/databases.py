"""A PostgreSQL database backed up by Coffre and by `pg_dump | restic backup --stdin`, in one
run: pgbench -i -s SCALE, a first backup, a day of load (pgbench transactions touching ~1 % of
the accounts), a second backup. Reported: wall time and bytes added to each repository, as a
share of the database's size; then Coffre's restore-db and drill of the day's snapshot.

    python bench/databases.py              # scale 50: 5,000,000 accounts, ~750 MB
    python bench/databases.py --scale 5    # quicker
    python bench/databases.py --filler random

pgbench fills its rows with blanks, which compress to almost nothing and flatter every tool;
`--filler random` gives each account 84 characters of hex text (about as compressible as real
records) before the first backup.

The server is a real PostgreSQL on 127.0.0.1 (the tests' launcher). restic gets the very same
dump (custom format, uncompressed), and also a plain SQL dump, the usual restic recipe;
"coffre-plain" is Coffre given the plain SQL dump (`--stdin-from-command`), to compare the
two formats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the real-server launchers

from tools import ensure_installed

from coffre.sources.databases.command import find_program
from coffre.sources.databases.postgres import bin_dirs
from dbservers import PostgresServer

PASSWORD = "benchmark password\n"  # noqa: S105 (a throwaway repository)


def repo_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Runner:
    def __init__(self, name: str, home: Path, pg: PostgresServer, dsn: str) -> None:
        self.name, self.home, self.pg, self.dsn = name, home, pg, dsn
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "password").write_text(PASSWORD)
        self.repo = home / "repo"
        self.env = {**os.environ, **pg.env()}
        if name.startswith("coffre"):
            self.env.update({"COFFRE_REPOSITORY": str(self.repo),
                             "COFFRE_PASSWORD_FILE": str(home / "password"),
                             "COFFRE_CACHE_DIR": str(home / "cache"),
                             "COFFRE_STATE_DIR": str(home / "state")})
            self.run([sys.executable, "-m", "coffre", "init"])
        else:
            self.env.update({"RESTIC_REPOSITORY": str(self.repo),
                             "RESTIC_PASSWORD_FILE": str(home / "password"),
                             "RESTIC_CACHE_DIR": str(home / "cache")})
            self.run(["restic", "init", "-q"])

    def run(self, argv: list[str], shell: bool = False) -> str:
        done = subprocess.run(argv if not shell else ["sh", "-c", argv[0]], env=self.env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{argv} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def backup(self) -> tuple[float, int]:
        before = repo_bytes(self.repo)
        start = time.monotonic()
        pg_dump = find_program("pg_dump", extra_dirs=bin_dirs())
        if self.name == "coffre":
            self.run([sys.executable, "-m", "coffre", "backup", "--host", "bench", "--postgres", self.dsn])
        elif self.name == "coffre-plain":  # the other dump format, for docs/databases.md's choice
            self.run([sys.executable, "-m", "coffre", "backup", "--host", "bench", "--stdin-from-command",
                      "--stdin-filename", "officine.sql", "--", pg_dump, "--format=plain", "--no-password",
                      f"--dbname={self.dsn}"])
        else:
            fmt = "--format=custom --compress=0" if self.name == "restic" else "--format=plain"
            pipeline = (f"{pg_dump} {fmt} --no-password '--dbname={self.dsn}' | restic backup -q "
                        "--host bench --stdin --stdin-filename officine.dump")
            self.run([pipeline], shell=True)  # noqa: S604 (the pipeline restic users run)
        return time.monotonic() - start, repo_bytes(self.repo) - before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--filler", choices=("blank", "random"), default="blank")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pharmabench" / "databases")
    args = ap.parse_args(argv)
    ensure_installed(["restic"])
    pg = PostgresServer()
    try:
        pg.psql("CREATE DATABASE officine")
        start = time.monotonic()
        pg.pgbench("-i", "-s", str(args.scale), "-q")
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - start:.0f} s", flush=True)
        if args.filler == "random":
            pg.psql("UPDATE pgbench_accounts SET filler = substr(md5(random()::text) || md5(random()::text) "
                    "|| md5(random()::text), 1, 84)", "officine")
            pg.psql("VACUUM FULL", "officine")
        pg.psql("VACUUM ANALYZE", "officine")
        dsn = pg.dsn("officine")
        db_size = int(pg.psql("SELECT pg_database_size('officine')"))
        names = ("coffre", "coffre-plain", "restic", "restic-plain")
        runners = [Runner(n, args.out / n, pg, dsn) for n in names]
        first = {r.name: r.backup() for r in runners}
        accounts = args.scale * 100_000
        per_client = accounts // 100 // 2
        start = time.monotonic()
        pg.pgbench("-c", "2", "-j", "2", "-t", str(per_client))
        print(f"day of load: 2 x {per_client} pgbench transactions in {time.monotonic() - start:.0f} s",
              flush=True)
        touched = int(pg.psql("SELECT count(DISTINCT aid) FROM pgbench_history", "officine"))
        changed = int(pg.psql(
            "SELECT (SELECT sum(pg_column_size(a.*)) FROM pgbench_accounts a WHERE aid IN "
            "(SELECT aid FROM pgbench_history)) + pg_table_size('pgbench_history')", "officine"))
        day_size = int(pg.psql("SELECT pg_database_size('officine')"))
        second = {r.name: r.backup() for r in runners}

        coffre = runners[0]
        start = time.monotonic()
        coffre.run([sys.executable, "-m", "coffre", "restore-db", "latest", "--postgres", pg.dsn("restored")])
        restore_s = time.monotonic() - start
        start = time.monotonic()
        # --json prints status events, then the summary: the last line.
        drill = json.loads(coffre.run([sys.executable, "-m", "coffre", "drill", "--json"]).splitlines()[-1])
        drill_s = time.monotonic() - start
    finally:
        pg.stop()

    mb = 1e6
    print(f"\nfiller: {args.filler}; database: {db_size / mb:.0f} MB after init, "
          f"{day_size / mb:.0f} MB after the day; "
          f"{accounts} accounts, {touched} touched ({100 * touched / accounts:.2f} %), "
          f"changed rows ~{changed / mb:.1f} MB (accounts touched + history)")
    print(f"{'tool':<14}{'first backup':>22}{'day backup':>14}{'bytes added by the day':>26}"
          f"{'share of DB':>13}")
    for name in first:
        (t1, b1), (t2, b2) = first[name], second[name]
        print(f"{name:<14}{t1:>9.1f} s {b1 / mb:>8.1f} MB{t2:>12.1f} s{b2 / mb:>22.1f} MB"
              f"{100 * b2 / day_size:>12.2f} %")
    c2, r2 = second["coffre"][1], second["restic"][1]
    print(f"coffre/restic, bytes added by the day (same dump): {c2 / r2:.3f}; "
          f"coffre/changed rows: {c2 / changed:.2f}")
    print(f"coffre/restic, day backup time: {second['coffre'][0] / second['restic'][0]:.2f}")
    print(f"coffre restore-db into an empty database: {restore_s:.1f} s; drill: {drill_s:.1f} s, "
          f"{'PASS' if drill['ok'] else 'FAIL'}: "
          + "; ".join(f"{c['name']}: {c['detail']}" for c in drill["databases"][0]["checks"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
