"""The benchmark cannot rot: a tiny run of bench/run.py against restic and borg."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def bench_module(name: str) -> ModuleType:
    """A module of bench/, imported as the bench scripts import each other (by bare name)."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH.parent))


def run_bench(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A bench script beside run.py, run as a user would, its output kept for the assertions."""
    return subprocess.run([sys.executable, str(BENCH.with_name(script)), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_bench_smoke_run_compares_the_three_tools(tmp_path: Path) -> None:
    out = run_bench("run.py", "--size-mib", "4", "--small-files", "40", "--runs", "1", "--warm", "--out",
                    str(tmp_path), "--json", str(tmp_path / "results.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout
    for step in ("initial backup", "unchanged backup", "backup after one day", "restore",
                 "check all data", "day: bytes added", "lower bound"):
        assert step in table
    assert "coffre/restic" in table and "coffre/borg" in table
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["tool"] for r in data["results"]} == {"coffre", "restic", "borg"}
    assert all(r["restore_identical"] for r in data["results"])
    assert all(r["bytes_added_day"] > 0 for r in data["results"])
    lb = data["lower_bound"]
    assert 0 < lb["compressed_bytes"] <= lb["changed_bytes"]
    assert lb["db_pages_changed"] > 0 and lb["files_new"] > 0
    assert not (tmp_path / "runs").exists()  # every run's folders, kept until the end, then removed


def test_remote_bench_smoke_run_against_seaweedfs(tmp_path: Path) -> None:
    out = run_bench("remote.py", "--size-mib", "4", "--small-files", "40", "--turn", "1", "--runs", "1",
                    "--out", str(tmp_path), "--link", "1000/1000/1")
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("coffre restore identical: True", "restic restore identical: True", "coffre/restic",
                 "rerun after a cut at 50%",
                 "emulating a line of 1000 Mbit/s down, 1000 Mbit/s up, 1 ms round trip"):
        assert line in out.stdout
    for step in ("initial backup", "unchanged backup", "backup after one day", "restore"):
        assert f"coffre {step}:" in out.stdout and f"restic {step}:" in out.stdout
    # The table's columns follow its header, whichever tool ran first (--turn 1: coffre-server).
    header = next(line for line in out.stdout.splitlines() if line.startswith("step "))
    tools = header.split()[1:4]
    assert tools == ["coffre", "coffre-server", "restic"], header
    for step in ("restore", "copy to a 2nd remote"):
        row = next(line for line in out.stdout.splitlines() if line.startswith(step + " "))
        for i, tool in enumerate(tools):
            cell = row[22 + 40 * i : 22 + 40 * (i + 1)].strip()
            timed = re.search(rf"^{tool} {step}: ([0-9.]+s),", out.stdout, re.M)
            assert (cell.split(" ")[0] if cell else None) == (timed.group(1) if timed else None), row


def test_sftp_bench_smoke_run_against_openssh(tmp_path: Path) -> None:
    out = run_bench("sftp.py", "--size-mib", "4", "--small-files", "40", "--runs", "1", "--out",
                    str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "coffre restore identical: True" in out.stdout and "restic restore identical: True" in out.stdout
    for step in ("initial backup", "unchanged backup", "backup after one day", "restore"):
        assert f"coffre {step}:" in out.stdout and f"restic {step}:" in out.stdout
        assert re.search(rf"^{step} +[0-9.]+s +[0-9.]+s +[0-9.]+ \([0-9.]+\)$", out.stdout, re.M), step


def test_database_bench_smoke_run_against_postgresql(tmp_path: Path) -> None:
    out = run_bench("databases.py", "--scale", "1", "--filler", "random", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("coffre/restic, bytes added by the day", "drill:", "PASS", "restic-plain"):
        assert line in out.stdout


def test_server_load_bench_smoke_run(tmp_path: Path) -> None:
    """bench/server.py with four pharmacies: every daily backup succeeds, every repository
    checks clean, and the request statistics come from the server's own log."""
    out = run_bench("server.py", "--pharmacies", "4", "--size-mib", "1", "--small-files", "20", "--work",
                    str(tmp_path / "work"), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["errors"] == 0 and result["repositories_unclean"] == []
    assert result["repositories_checked"] == 4
    assert result["requests"] > 0 and "PUT snapshots" in result["by_kind"]
    assert result["by_kind"]["PUT snapshots"]["count"] == 4  # one new snapshot per pharmacy
    assert result["server_cpu_s"][0] > 0 and result["server_peak_rss_mib"][0] > 0


def test_continuity_bench_smoke_run() -> None:
    """bench/continuity.py, one short death and a short cost run: the standby takes over with a
    prefix of the committed rows and consistent balances (the bench asserts both)."""
    out = run_bench("continuity.py", "--trials", "1", "--scale", "1", "--min-load", "3", "--max-load", "4",
                    "--archive-timeout", "1", "--cost-seconds", "5", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    result = json.loads(out.stdout)
    [trial] = result["trials"]
    assert trial["rows"] > 0 and trial["recovery_time_s"] > 0 and trial["recovery_point_s"] >= 0
    assert result["cost"]["segments_per_day"] > 0


def test_year_bench_smoke_run_three_days_of_both_tools(tmp_path: Path) -> None:
    """bench/year.py over three simulated days on a tiny tree: a CSV per tool with a row a
    day and sane values, the summary and the plots (no speed asserted); and the tree grows
    linearly: each day adds as many scans as the first and changes as many database rows."""
    import csv
    import random
    import sqlite3
    from contextlib import closing
    from itertools import pairwise

    # The tiny tree, generated as year.py would, then given 449 scans (a few hundred bytes
    # each): the mutator's day adds 449 // 50 = 8 and, left to compound, the next (457 // 50 =) 9.
    data = tmp_path / "data"
    generate = (f"import sys; from pathlib import Path; sys.path.insert(0, {str(BENCH.parent)!r}); "
                f"from run import pristine_tree; print(pristine_tree(Path({str(data)!r}), False, 4, 40))")
    pristine = Path(subprocess.run([sys.executable, "-c", generate], capture_output=True, text=True,
                                   timeout=300, check=True).stdout.strip()) / "pharmacy-server"
    scans = pristine / "scans" / "ordonnances"
    existing = sum(1 for p in scans.rglob("ORD-*") if p.suffix in (".jpg", ".pdf"))
    (scans / "2019" / "12").mkdir(parents=True, exist_ok=True)
    for i in range(449 - existing):
        (scans / "2019" / "12" / f"ORD-{5_000_000 + i}.jpg").write_bytes(random.Random(i).randbytes(300))
    database = pristine / "app" / "officine" / "data" / "officine.db"
    with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as con:
        rows_before = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                          for t in ("products", "patients", "prescriptions", "sales"))

    out_dir = tmp_path / "out"
    out = run_bench("year.py", "--size-mib", "4", "--small-files", "40", "--days", "3", "--prune-every", "2",
                    "--out", str(out_dir), "--data", str(data), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "last/ref" in out.stdout and "coffre/restic" in out.stdout
    assert "on day 365" in out.stdout
    for tool in ("coffre", "restic"):
        with (out_dir / f"{tool}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["day"]) for r in rows] == [1, 2, 3]
        for row in rows:
            pruned = int(row["day"]) == 2
            for column, cell in row.items():
                if column == "date":
                    continue
                if column.startswith("prune_") and not pruned:
                    assert cell == ""
                else:
                    assert float(cell) >= 0, (tool, column, cell)
            assert int(row["snapshots"]) == int(row["day"])  # three days: forget keeps them all
            assert int(row["repo_bytes"]) > 0 and int(row["index_files"]) > 0
            assert int(row["packs"]) > 0
        assert int(rows[0]["bytes_added"]) > 0
        # Linear growth: 8 new scans every day, counted in the tree, and as many rows inserted.
        scan_files = [449] + [int(r["scan_files"]) for r in rows]
        assert [b - a for a, b in pairwise(scan_files)] == [8, 8, 8], scan_files
        assert [int(r["scans_added"]) for r in rows] == [8, 8, 8]
        db_rows = [rows_before] + [int(r["db_rows"]) for r in rows]
        inserted = [b - a for a, b in pairwise(db_rows)]
        assert inserted[0] > 0 and inserted == [inserted[0]] * 3, db_rows
        assert int(rows[-1]["tree_bytes"]) > int(rows[0]["tree_bytes"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["days"] == 3 and summary["repository_coffre_over_restic"] > 0
    assert summary["growth"] == "linear" and summary["scans_per_day"] == 8
    assert summary["tree_bytes_per_day"] > 0
    assert {c["tool"] for c in summary["comparisons"]} == {"coffre", "restic"}
    # A daily job that succeeds while warning (a false alarm every night) shows in the counts.
    assert summary["days_with_warnings"] == {"coffre": [], "restic": []}
    for plot in summary["plots"]:
        assert Path(plot).read_bytes().startswith(b"\x89PNG")
    assert len(summary["plots"]) == 13  # 10 measures, and the 3 times per GB
    assert not (out_dir / "work").exists()
    # The table again from the CSVs alone, with the costs per GB of what each command went through.
    again = run_bench("year.py", "--report", "--out", str(out_dir), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    for line in ("backup time ", "backup per GB of tree", "check per GB of repo", "repository on day 3",
                 "coffre: 0 day(s) with warnings"):
        assert line in again.stdout, again.stdout


def test_a_kept_year_goes_on_for_more_days_on_a_copy(tmp_path: Path) -> None:
    """bench/year_more.py: two days of a kept year on a tiny tree, then two more on a copy with
    the year's schedule (prune every 2 days: on day 4); the kept run is left as it was."""
    out_dir, more = tmp_path / "out", tmp_path / "more"
    year = run_bench("year.py", "--size-mib", "4", "--small-files", "40", "--days", "2", "--prune-every", "2",
                     "--tools", "coffre", "--keep-work", "--out", str(out_dir),
                     "--data", str(tmp_path / "data"), timeout=300)
    assert year.returncode == 0, year.stdout + year.stderr
    kept = sorted(p.name for p in (out_dir / "work" / "coffre" / "repo" / "snapshots").iterdir())
    out = run_bench("year_more.py", "--from", str(out_dir), "--days", "2", "--to", str(more), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["day 3 coffre", "day 4 coffre"], out.stdout
    assert "prune" not in lines[0] and "prune" in lines[1] and all("check" in line for line in lines)
    assert len(list((more / "coffre" / "repo" / "snapshots").iterdir())) == 4
    assert sorted(p.name for p in (out_dir / "work" / "coffre" / "repo" / "snapshots").iterdir()) == kept
    refused = run_bench("year_more.py", "--from", str(out_dir), "--to", str(out_dir / "work" / "again"),
                        timeout=60)
    assert refused.returncode == 2 and "outside --from" in refused.stderr


def kept_year(tmp_path: Path, days: int, tool: str = "coffre") -> Path:
    """A year.py run of `days` days on a 4 MiB tree with `tool` alone, its work kept."""
    out_dir = tmp_path / f"year-{tool}-{days}"
    run = run_bench("year.py", "--size-mib", "4", "--small-files", "40", "--days", str(days), "--tools", tool,
                    "--keep-work", "--out", str(out_dir), "--data", str(tmp_path / "data"), timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return out_dir


def test_two_ages_of_a_year_live_their_next_day_in_turns_and_are_left_as_they_were(tmp_path: Path) -> None:
    """bench/year_pair.py: a kept run of one day and one of three, each living its next day
    twice in turns (day 2 and day 4), every round from the kept state (its snapshots as the
    run left them, plus the day's); both runs end as they were."""

    def state(out_dir: Path) -> dict[str, tuple[int, int]]:
        work = out_dir / "work"
        return {str(p.relative_to(work)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in work.rglob("*") if p.is_file()}

    early, late = kept_year(tmp_path, 1), kept_year(tmp_path, 3)
    before = {early: state(early), late: state(late)}
    out = run_bench("year_pair.py", "--early", str(early), "--late", str(late), "--rounds", "2",
                    "--json", str(tmp_path / "pair.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.split(":")[0] for line in out.stdout.splitlines() if line.startswith("round")]
    assert lines == ["round 1, day 2, coffre", "round 1, day 4, coffre",
                     "round 2, day 4, coffre", "round 2, day 2, coffre"], out.stdout
    figures = json.loads((tmp_path / "pair.json").read_text())
    ages = {(r["age"], r["day"], r["snapshots"]) for r in figures["rounds"]}
    assert ages == {("early", 2, 2), ("late", 4, 4)}
    assert all(r["prune_s"] > 0 and r["check_s"] > 0 for r in figures["rounds"])
    assert {f["measure"] for f in figures["table"]} == {"backup_s", "backup_cpu_s", "prune_s", "check_s",
                                                        "peak_rss_mib"}
    assert all(f["ratio"] == pytest.approx(f["late"] / f["early"]) for f in figures["table"])
    assert "late/early" in out.stdout and "backup time" in out.stdout
    assert state(early) == before[early] and state(late) == before[late]
    assert not (early / "work-before-pairing").exists() and not (late / "work-before-pairing").exists()
    for (young, old), reason in (((late, early), "must be younger"), ((early, early), "same run")):
        refused = run_bench("year_pair.py", "--early", str(young), "--late", str(old), timeout=60)
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr
    (late / "work-before-pairing").mkdir()  # left by a pairing that was stopped
    refused = run_bench("year_pair.py", "--early", str(early), "--late", str(late), timeout=60)
    assert refused.returncode == 2 and "interrupted" in refused.stderr, refused.stderr
    assert state(late) == before[late]


def test_tools_kept_in_separate_runs_are_paired_in_the_same_rounds(tmp_path: Path) -> None:
    """bench/year_pair.py with two pairs (Coffre's year and restic's, each run alone): every
    round lives the four days in turn, and the table has each tool's ratio; a tool given in
    two pairs, or an --early without its --late, is refused."""
    c1, c3, r1, r3 = (kept_year(tmp_path, days, tool) for tool in ("coffre", "restic") for days in (1, 3))
    out = run_bench("year_pair.py", "--early", str(c1), "--late", str(c3), "--early", str(r1),
                    "--late", str(r3), "--rounds", "2", "--json", str(tmp_path / "pair.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.split(":")[0] for line in out.stdout.splitlines() if line.startswith("round")]
    turn = ["day 2, coffre", "day 4, coffre", "day 2, restic", "day 4, restic"]
    assert lines == [f"round 1, {t}" for t in turn] + [f"round 2, {t}" for t in reversed(turn)], out.stdout
    figures = json.loads((tmp_path / "pair.json").read_text())
    assert {(f["tool"], f["measure"]) for f in figures["table"]} == {
        (tool, m) for tool in ("coffre", "restic")
        for m in ("backup_s", "backup_cpu_s", "prune_s", "check_s", "peak_rss_mib")}
    assert [p["tools"] for p in figures["pairs"]] == [["coffre"], ["restic"]]

    def both_tools(coffre: Path, restic: Path) -> Path:
        """A kept run's summary as if both tools had run in it (refused before anything runs)."""
        out_dir = tmp_path / f"both-{coffre.name}"
        (out_dir / "work").mkdir(parents=True)
        summary = json.loads((coffre / "summary.json").read_text())
        summary["last_day"] |= json.loads((restic / "summary.json").read_text())["last_day"]
        (out_dir / "summary.json").write_text(json.dumps(summary))
        return out_dir

    for argv, reason in (
            ([c1, c3, r1, c3], "given twice"),
            ([c1, c3, r1], "one of each per pair"),
            ([both_tools(c1, r1), both_tools(c3, r3), r1, r3], "restic is in two pairs")):
        flags = ["--early", "--late"] * 2
        options = [x for path, flag in zip(argv, flags, strict=False) for x in (flag, str(path))]
        refused = run_bench("year_pair.py", *options, timeout=60)
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr


def test_a_steady_year_keeps_the_tree_s_size_removing_the_oldest_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/year.py --steady: every day the tree loses as much of its oldest data as the day
    added (scans, database rows, pg dump rows, var/log bytes; the day's new files some days
    later), so the tree keeps its size while the mutator's days go on; a resumed pharmacy
    (year_more.py) knows which files are still to expire."""
    import shutil

    year = bench_module("year")
    monkeypatch.setattr(year, "EXPIRE_DAYS", 2)
    data = tmp_path / "data"
    pristine = year.pristine_tree(data, False, 4, 40)
    tree = tmp_path / "pharmacy-server"
    shutil.copytree(pristine / "pharmacy-server", tree, symlinks=True)
    for i in range(30):  # more scans than the 3 days add (5 a day), a few hundred bytes each
        (tree / year.SCANS_DIR / "2019").mkdir(parents=True, exist_ok=True)
        (tree / year.SCANS_DIR / "2019" / f"ORD-{5_000_000 + i}.jpg").write_bytes(bytes(300))
    scans, rows, dump = len(year.scan_ids(tree)), year.table_rows(tree), year.dump_rows(tree / year.PG_DUMP)
    var_log = sum(year.file_sizes(tree / year.VAR_LOG).values())
    pharmacy = year.Pharmacy(tree, "steady", rotating=True)
    new_by_day = []
    for day in (1, 2, 3):
        before = year.regular_files(tree)
        activity = pharmacy.live_one_day(year.mutation_seed(None, day))
        new_by_day.append({f for f in year.regular_files(tree) - before if not f.startswith("scans/")})
        assert activity.scans_added > 0 and activity.old_scans_removed == activity.scans_added
        assert len(year.scan_ids(tree)) == scans == activity.scan_files
        assert year.table_rows(tree) == rows and activity.old_db_rows_removed > 0
        assert year.dump_rows(tree / year.PG_DUMP) == dump and activity.old_dump_rows_removed > 0
        logs = sum(year.file_sizes(tree / year.VAR_LOG).values())
        assert 0.95 * var_log <= logs <= var_log and activity.old_log_bytes_removed > 0
    # The new files of day 1 (logs, export, orders; not scans) are gone on day 3, day 3's are there.
    assert new_by_day[0] and not new_by_day[0] & year.regular_files(tree)
    assert new_by_day[2] and new_by_day[2] <= year.regular_files(tree)
    assert activity.old_files_removed == len(new_by_day[0])
    # The oldest scans went first: the 15 of lowest number, the data set's 3 then 12 of the 30 added.
    assert scans == 33
    left = sorted(year.scan_ids(tree).values())
    assert [n for n in left if n < 5_000_030] == list(range(5_000_012, 5_000_030))
    resumed = year.Pharmacy.resumed(tree, json.loads(json.dumps(pharmacy.figures())), 3)
    assert resumed.steady and resumed.expiring == pharmacy.expiring and resumed.expiring


def test_small_files_bench_smoke_run(tmp_path: Path) -> None:
    """bench/smallfiles.py on a generated tree of a few hundred files and a tiny real folder."""
    system = tmp_path / "system"
    (system / "doc").mkdir(parents=True)
    (system / "doc" / "README").write_text("lisez-moi\n")
    (system / "link").symlink_to("doc/README")
    out = run_bench("smallfiles.py", "--files", "300", "--runs", "1", "--warm", "--system", str(system),
                    "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "generated: 301 files" in out.stdout and "system: 3 files" in out.stdout, out.stdout
    for step in ("initial backup", "unchanged backup", "restore"):
        assert out.stdout.count(f"  {step} ") == 2, out.stdout
    sizes = [p.stat().st_size for p in (tmp_path / "out").glob("generated-*/*/*/*/f*")]
    assert len(sizes) == 300 and min(sizes) >= 1024 and max(sizes) <= 65536


def test_parts_bench_smoke_run(tmp_path: Path) -> None:
    """bench/parts.py: each top folder alone, the empty folder and the whole set, both tools."""
    out = run_bench("parts.py", "--size-mib", "4", "--small-files", "40", "--runs", "1", "--out",
                    str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout.split("medians of 1 run(s)\n", 1)[1].splitlines()
    labels = [line.split()[0] for line in table[1:]]
    tree = tmp_path / "pristine-4mib-40" / "pharmacy-server"
    tops = sorted(p.name + "/" for p in tree.iterdir() if p.is_dir())
    assert labels == ["(empty", *tops, "(whole"], table
    whole = table[-1].split()
    assert int(whole[2]) == sum(int(line.split()[1]) for line in table[2:-1])  # every file in one part
    assert not (tmp_path / "parts" / "coffre").exists() and not (tmp_path / "parts" / "restic").exists()


def test_the_year_rotates_the_current_logs_weekly_keeping_four(tmp_path: Path) -> None:
    year = bench_module("year")
    logs = tmp_path / year.LOG_DIR
    logs.mkdir(parents=True)
    for week in range(1, 7):
        for name in year.CURRENT_LOGS:
            with open(logs / name, "a") as f:
                f.write(f"semaine {week}\n")
        assert year.rotate_logs(tmp_path)
    for name in year.CURRENT_LOGS:
        assert (logs / name).read_text() == ""
        assert [(logs / f"{name}.{n}").read_text() for n in range(1, 5)] == [
            "semaine 6\n", "semaine 5\n", "semaine 4\n", "semaine 3\n"]
        assert not (logs / f"{name}.5").exists()
    assert not year.rotate_logs(tmp_path / "elsewhere")


def test_a_short_year_is_read_on_day_365_along_each_measure_s_fitted_line() -> None:
    """bench/year.py over fewer days than a year (the ~2 GiB set over 60): each measure's
    least-squares line from the reference day on, read on day 365 and set against day 7."""
    year = bench_module("year")

    def day(n: int) -> object:
        pruned = n % 7 == 0
        return year.Day(
            day=n, date="", tree_bytes=10**9 + n * 10**7, scan_files=0, scans_added=0, db_rows=0,
            backup_s=1.0 + 0.01 * n, backup_cpu_s=0.0, backup_rss_mib=100.0, bytes_added=0, forget_s=0.0,
            forget_rss_mib=0.0, prune_s=2.0 + 0.02 * n if pruned else None,
            prune_rss_mib=90.0 if pruned else None, check_s=None, check_rss_mib=None,
            peak_rss_mib=100.0, repo_bytes=10**9, cache_bytes=0, index_files=1, snapshots=1)

    rows = {"coffre": [day(n) for n in range(1, 61)]}
    found = {c.measure: c for c in year.compare(rows, 7, 1, year.projection_day(60))}
    backup, prune, rss = found["backup time"], found["prune time"], found["peak RSS of the day"]
    assert backup.projected_day == 365 and backup.projected == pytest.approx(4.65)
    assert backup.projected_ratio == pytest.approx(4.65 / 1.07) and backup.projected_within_target is False
    assert prune.projected == pytest.approx(9.3)  # its line through the prune days only
    assert rss.projected == pytest.approx(100.0) and rss.projected_within_target is True
    assert "check time" not in found  # never measured: no row, no line
    table = year.comparison_table(list(found.values()))
    assert "fit, day 365" in table and "met, fit MISSED" in table
    # A whole year is read as measured.
    whole = year.compare({"coffre": [day(n) for n in range(1, 366)]}, 7, 1, year.projection_day(365))
    assert all(c.projected is None for c in whole)
    assert "fit" not in year.comparison_table(whole)


def test_several_data_sets_give_the_median_and_the_worst_ratio() -> None:
    """bench/run.py --sets: Coffre/restic per data set, then the median and the worst."""
    run = bench_module("run")
    assert run.parse_sets("small, 500:3,small:2") == [(True, None, None), (False, 500, 3), (True, None, 2)]

    def result(tool: str, seconds: float) -> object:
        r = run.RunResult(tool)
        r.steps = {step: run.Measure(seconds, seconds, 100.0) for step in run.STEPS}
        return r

    per_set = {"a": [result("coffre", 1.0), result("restic", 2.0),
                     result("coffre", 3.0), result("restic", 2.0)],
               "b": [result("coffre", 1.0), result("restic", 4.0)],
               "c": [result("coffre", 3.0), result("restic", 3.0)]}
    table = run.robustness(per_set).splitlines()
    assert table[0].split()[-2:] == ["median", "worst"]
    # per set: a 2/2 = 1.00 (medians of its runs), b 0.25, c 1.00: median 1.00, worst 1.00
    assert table[1].split()[-5:] == ["1.00", "0.25", "1.00", "1.00", "1.00"], table[1]


def test_big_index_bench_smoke_run(tmp_path: Path) -> None:
    """bench/bigindex.py with a few thousand synthetic blobs: built, backed up beside, and
    all kept by prune (the second snapshot's listings reach every one)."""
    out = run_bench("bigindex.py", "--blobs", "3000", "--out", str(tmp_path / "big"), "--keep")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3,000 synthetic blobs built" in out.stdout, out.stdout
    for step in ("snapshots (open only)", "unchanged backup", "prune (keeps everything)"):
        assert step in out.stdout, out.stdout
    from coffre.repository.repo import Repository
    from coffre.storage.local import LocalBackend

    repo = Repository.open(LocalBackend(tmp_path / "big" / "repo"), bench_module("bigindex").PASSWORD)
    repo.load_index()
    assert len(repo.index) > 3000 and len(repo.snapshots()) == 3


def test_each_tool_runs_first_in_turn() -> None:
    """What one tool's steps leave on the machine (pages still being written, a file system slow
    after a deletion) falls on each tool in turn, not always on coffre."""
    in_turn = bench_module("tools").in_turn
    tools = ["coffre", "restic", "borg"]
    orders = [in_turn(tools, run) for run in range(3)]
    assert [order[0] for order in orders] == tools
    assert all(sorted(order) == sorted(tools) for order in orders)
    assert in_turn(["coffre", "restic"], 3) == ["restic", "coffre"]
