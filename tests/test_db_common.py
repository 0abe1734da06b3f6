"""Databases and files together: several in one snapshot, their sizes over time, copies,
the snapshot record's validation, and the usage errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coffre.core.errors import FormatError
from coffre.format.snapshot import DatabaseRecord, Snapshot
from coffre.ops.databases import SizePoint, unusual_growth
from test_copy import copy, second
from test_db_sqlite import check_one_state, make_db

from conftest import Coffre, make_tree, snapshot_ids, tree_digest


def test_several_databases_and_files_in_one_snapshot(
    repo: Coffre, tmp_path: Path, postgres: Any, mariadb: Any
) -> None:
    postgres.psql("CREATE DATABASE caisse")
    postgres.psql("CREATE TABLE ventes (id serial PRIMARY KEY, montant int); "
                  "INSERT INTO ventes (montant) SELECT g FROM generate_series(1, 1000) g", "caisse")
    mariadb.sql("CREATE DATABASE stock; USE stock; CREATE TABLE produits (id INT PRIMARY KEY, nom TEXT); "
                "INSERT INTO produits SELECT seq, CONCAT('produit ', seq) FROM seq_1_to_500; "
                "CREATE TABLE journal (id INT PRIMARY KEY) ENGINE=MyISAM")
    db = tmp_path / "officine.db"
    make_db(db, "wal")
    docs = make_tree(tmp_path / "docs", big=200_000)
    env = {**postgres.env(), **mariadb.env()}
    args = ["--postgres", postgres.dsn("caisse"), "--mysql", mariadb.dsn("stock"), "--sqlite", str(db),
            str(docs)]
    res = repo.ok("backup", *args, "--verify", env=env)
    out = res.out
    assert "database postgres caisse" in out and "1,000 rows" in out
    assert "verify: the snapshot matches the files" in out
    assert "tables not in InnoDB (journal)" in res.err
    [snap] = json.loads(repo.ok("snapshots", "--json").out)
    assert sorted(snap["paths"]) == sorted([str(docs), "@databases/postgres-caisse.dump",
                                            "@databases/mysql-stock.sql", "@databases/sqlite-officine.db"])
    listing = repo.ok("ls", "latest", "/@databases").out
    assert "postgres-caisse.dump" in listing and "mysql-stock.sql" in listing

    # A plain restore brings the files and the dumps; the SQLite dump is a working database.
    repo.ok("restore", "latest", "--target", str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out" / str(docs).lstrip("/")) == tree_digest(docs)
    check_one_state(tmp_path / "out" / "@databases" / "sqlite-officine.db")
    assert (tmp_path / "out" / "@databases" / "postgres-caisse.dump").read_bytes().startswith(b"PGDMP")

    drill = repo.ok("drill", "latest")
    assert drill.out.count("PASS") == 3 and "drill passed" in drill.out

    # Sizes over time: the SQLite base grows between the two backups.
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO filler(body) VALUES (?)", (("y" * 500,) for _ in range(20_000)))
    conn.commit()
    conn.close()
    repo.ok("backup", *args, env=env)
    stats = json.loads(repo.ok("stats", "--databases", "--json").out)["databases"]
    by_name = {(d["engine"], d["name"]): d["sizes"] for d in stats}
    assert set(by_name) == {("postgres", "caisse"), ("mysql", "stock"), ("sqlite", str(db))}
    lite = by_name[("sqlite", str(db))]
    assert len(lite) == 2 and lite[1]["size"] > lite[0]["size"] + 10_000_000
    assert lite[1]["rows"] == lite[0]["rows"] + 20_000
    text = repo.ok("stats", "--databases").out
    assert "sqlite " + str(db) in text and "growth: +" in text

    # One failing database: no snapshot at all, the others' and the files' included.
    res = repo("backup", *args, env={**env, "MYSQL_PWD": "wrong"})
    assert res.code == 1 and len(snapshot_ids(repo)) == 2


def test_copy_keeps_the_databases(repo: Coffre, tmp_path: Path, cache_dir: Path) -> None:
    db = tmp_path / "officine.db"
    make_db(db, "delete")
    repo.ok("backup", "--sqlite", str(db))
    b = second(tmp_path, "offsite", cache_dir, "another password")
    b.ok("init")
    copy(repo, b)
    [snap] = json.loads(b.ok("snapshots", "--json").out)
    assert snap["paths"] == ["@databases/sqlite-officine.db"]
    assert "drill passed" in b.ok("drill").out


def test_usage_errors(repo: Coffre, tmp_path: Path) -> None:
    db = tmp_path / "officine.db"
    make_db(db, "wal")
    res = repo("backup", "--stdin", "--sqlite", str(db), input=b"x")
    assert res.code == 2 and "separate snapshots" in res.err, res
    repo.ok("backup", str(tmp_path / "officine.db"))
    res = repo("drill")
    assert res.code == 1 and "no snapshot holds a database" in res.err, res
    first = repo.ok("snapshots", "--json").out
    res = repo("drill", json.loads(first)[0]["id"])
    assert res.code == 1 and "holds no database" in res.err, res
    repo.ok("backup", "--sqlite", str(db))
    # A files-only backup afterwards: 'latest' still means the newest with a database.
    repo.ok("backup", str(tmp_path / "officine.db"))
    assert "drill passed" in repo.ok("drill").out
    res = repo("restore-db", "latest", "--postgres", "dbname=x")
    assert res.code == 1 and "no snapshot holds a postgres database" in res.err, res
    with_db = json.loads(repo.ok("snapshots", "--json").out)[1]["id"]
    res = repo("restore-db", with_db, "--postgres", "dbname=x")
    assert res.code == 1 and "holds no postgres database" in res.err and "sqlite" in res.err, res
    res = repo("restore-db", "latest", "--sqlite", str(tmp_path / "x.db"), "--no-owner")
    assert res.code == 2, res
    res = repo("restore-db", "latest", "--mysql", "postgres://nope")
    assert res.code == 2 and "mysql://" in res.err, res
    res = repo("drill", "--work-dir", str(tmp_path / "missing"))
    assert res.code == 2, res


def _record(**kw: Any) -> dict[str, Any]:
    d = DatabaseRecord("sqlite", "/srv/officine.db", "sqlite-officine.db", "page image", 4096,
                       {"ventes": 3}, "SQLite 3.40", {"journal_mode": "wal"}).to_map()
    d.update(kw)
    return d


def _snapshot_with(record: dict[str, Any]) -> bytes:
    import msgpack

    snap = Snapshot(time_ns=1, hostname="h", username="u", paths=[], tree=b"\0" * 32)
    raw = msgpack.unpackb(snap.to_bytes(), raw=False)
    raw["databases"] = [record]
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def test_database_records_round_trip_and_are_validated() -> None:
    snap = Snapshot.from_bytes(_snapshot_with(_record()), "x")
    assert snap.databases[0].tables == {"ventes": 3}
    assert snap.databases[0].path == "@databases/sqlite-officine.db"
    assert Snapshot.from_bytes(snap.to_bytes(), "x").databases == snap.databases
    # A snapshot without databases encodes as before (older versions read it).
    assert b"databases" not in Snapshot(1, "h", "u", [], b"\0" * 32).to_bytes()
    for bad in (_record(engine="oracle"), _record(file="../../etc/passwd"), _record(size=-1),
                _record(tables={"t": "many"}), _record(tables=[1]), "not a map"):
        with pytest.raises(FormatError):
            Snapshot.from_bytes(_snapshot_with(bad), "x")  # type: ignore[arg-type]


def test_unusual_growth() -> None:
    def points(*sizes: int) -> list[SizePoint]:
        return [SizePoint(str(i), i, s, 0) for i, s in enumerate(sizes)]

    assert not unusual_growth(points(100, 101, 102, 103))
    assert not unusual_growth(points(1000, 1001))  # too little history to judge
    assert unusual_growth(points(1000, 1010, 1020, 1030, 1300))
    assert not unusual_growth(points(1000, 1010, 1020, 1030, 1060))  # 3x, but under 5 %


def test_database_backups_to_s3_send_deltas_and_drill_from_there(
    seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Off-site: the second day's copy of the database goes up as deltas, and the drill
    restores from the remote repository."""
    from test_remote_s3 import s3_coffre

    c = s3_coffre(seaweedfs, s3_env, pwfile, cache_dir)
    c.ok("init")
    db = tmp_path / "officine.db"
    make_db(db, "wal")
    first = c.ok("backup", "--sqlite", str(db), "--json").json()["summary"]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE filler SET body = 'changed' WHERE id % 500 = 0")
    conn.commit()
    conn.close()
    second = c.ok("backup", "--sqlite", str(db), "--json").json()["summary"]
    assert second["deltas_added"] > 0
    assert second["data_added_stored"] < first["data_added_stored"] / 10
    drill = c.ok("drill", "--json").json()
    assert drill["ok"] is True, drill
