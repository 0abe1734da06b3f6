"""MariaDB hot backups against a real server while a client commits transactions: the restored
database is one consistent instant, the drill passes, and every failing dump leaves no
snapshot."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbservers import DB_PASSWORD
from servers import free_port
from test_db_postgres import wrapper

from conftest import Coffre, snapshot_ids

ORDERS = 30_000
STOCK = 10_000_000


@pytest.fixture
def officine(mariadb: Any) -> str:
    name = f"officine_{uuid.uuid4().hex[:8]}"
    mariadb.sql(f"""
        CREATE DATABASE {name}; USE {name};
        CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, total INT NOT NULL, note VARCHAR(200))
            ENGINE=InnoDB;
        CREATE TABLE order_lines (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL, qty INT NOT NULL,
                                  KEY (order_id)) ENGINE=InnoDB;
        CREATE TABLE stock (id INT PRIMARY KEY, qty BIGINT NOT NULL) ENGINE=InnoDB;
        INSERT INTO stock VALUES (1, {STOCK});
        INSERT INTO orders (total, note) SELECT 3, CONCAT('it''s line\\nnumber ', seq) FROM seq_1_to_{ORDERS};
        INSERT INTO order_lines (order_id, qty) SELECT o.id, 1 FROM orders o, seq_1_to_3;
        UPDATE stock SET qty = qty - {3 * ORDERS};
    """)
    return name


class Sales:
    """A client committing sales without pause: each one an order, its three lines and the
    stock, in one transaction."""

    SALE = ("START TRANSACTION; INSERT INTO orders (total) VALUES (3); SET @o = LAST_INSERT_ID(); "
            "INSERT INTO order_lines (order_id, qty) VALUES (@o, 1), (@o, 1), (@o, 1); "
            "UPDATE stock SET qty = qty - 3 WHERE id = 1; COMMIT;\n")

    def __init__(self, mariadb: Any, dbname: str) -> None:
        self.proc = subprocess.Popen(
            ["mariadb", "--no-defaults", f"--socket={mariadb.socket}", "-uroot", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        assert self.proc.stdin is not None
        try:
            while not self.stop.is_set():
                self.proc.stdin.write(self.SALE.encode() * 20)
                self.proc.stdin.flush()
        finally:
            self.proc.stdin.close()

    def __enter__(self) -> Sales:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        assert self.proc.wait() == 0, self.proc.stderr.read() if self.proc.stderr else b""


def consistent(mariadb: Any, dbname: str) -> int:
    orders, lines, qty, totals = map(int, mariadb.sql(
        "SELECT (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM order_lines), "
        "(SELECT qty FROM stock), (SELECT SUM(total) FROM orders)", dbname).split("\t"))
    assert lines == 3 * orders == totals
    assert qty + lines == STOCK
    assert mariadb.sql("SELECT note FROM orders WHERE id = 7", dbname) == "it's line\\nnumber 7"
    return orders


def count_orders(mariadb: Any, dbname: str) -> int:
    return int(mariadb.sql("SELECT COUNT(*) FROM orders", dbname))


def test_backup_under_load_restores_one_instant(repo: Coffre, mariadb: Any, officine: str) -> None:
    env = mariadb.env()
    with Sales(mariadb, officine):
        while count_orders(mariadb, officine) < ORDERS + 50:
            pass
        before = count_orders(mariadb, officine)
        res = repo.ok("backup", "--mysql", mariadb.dsn(officine), "--json", env=env)
        after = count_orders(mariadb, officine)
    assert after > before
    assert DB_PASSWORD not in res.out + res.err
    snap = res.json()["snapshot"]

    copy = f"copie_{uuid.uuid4().hex[:8]}"
    repo.ok("restore-db", snap, "--mysql", mariadb.dsn(copy), env=env)
    orders = consistent(mariadb, copy)
    assert before <= orders <= after
    # One client commits in order: the restored sales are exactly the source's first ones.
    for query in ("SELECT id, total, note FROM orders WHERE id <= {} ORDER BY id",
                  "SELECT id, order_id, qty FROM order_lines WHERE order_id <= {} ORDER BY id"):
        last = mariadb.sql("SELECT MAX(id) FROM orders", copy)
        assert mariadb.sql(query.format(last), copy) == mariadb.sql(query.format(last), officine)

    drill = repo.ok("drill", snap, "--json").json()
    assert drill["ok"] is True, drill
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["CHECK TABLE"]["ok"] and checks["row counts"]["ok"]
    assert f"{orders * 4 + 1} rows" in checks["row counts"]["detail"]

    res = repo("restore-db", snap, "--mysql", mariadb.dsn(copy), env=env)
    assert res.code == 1 and "is not empty" in res.err, res
    mariadb.sql("DELETE FROM order_lines WHERE id < 10", copy)
    repo.ok("restore-db", snap, "--mysql", mariadb.dsn(copy), "--force", env=env)
    assert consistent(mariadb, copy) == orders


def test_failures_write_no_snapshot(repo: Coffre, mariadb: Any, officine: str, tmp_path: Path) -> None:
    res = repo("backup", "--mysql", mariadb.dsn(officine), env={"MYSQL_PWD": "wrong-pw-1234"})
    assert res.code == 1 and "Access denied" in res.err, res
    assert "wrong-pw-1234" not in res.out + res.err
    res = repo("backup", "--mysql", f"mysql://coffre@127.0.0.1:{free_port()}/officine", env=mariadb.env())
    assert res.code == 1 and "Can't connect" in res.err, res
    res = repo("backup", "--mysql", f"mysql://coffre:{DB_PASSWORD}@127.0.0.1:{mariadb.port}/{officine}")
    assert res.code == 2 and "MYSQL_PWD" in res.err and DB_PASSWORD not in res.out + res.err, res

    real = shutil.which("mariadb-dump")
    assert real is not None
    killed = wrapper(tmp_path, "mariadb-dump", real, 'REAL "$@" | head -c 200000\nkill -KILL $$')
    res = repo("backup", "--mysql", mariadb.dsn(officine), env={**mariadb.env(), **killed})
    assert res.code == 1 and "killed by signal 9" in res.err and "no snapshot was written" in res.err, res
    # A dump cut short that still says "success" is caught by its missing last line.
    cut = wrapper(tmp_path, "mariadb-dump", real, 'REAL "$@" | head -c 200000\nexit 0')
    res = repo("backup", "--mysql", mariadb.dsn(officine), env={**mariadb.env(), **cut})
    assert res.code == 1 and "incomplete" in res.err, res
    assert snapshot_ids(repo) == []
    repo.ok("backup", "--mysql", mariadb.dsn(officine), env=mariadb.env())
    assert len(snapshot_ids(repo)) == 1


def test_counts_hold_with_triggers_column_lists_and_user_defaults(
    repo: Coffre, mariadb: Any, tmp_path: Path
) -> None:
    """Rows are counted from the dump's data sections only (not a trigger's INSERT), with or
    without column lists, and the user's ~/.my.cnf cannot turn off what the count and the
    completeness check rely on."""
    name = f"caisse_{uuid.uuid4().hex[:8]}"
    mariadb.sql(f"""CREATE DATABASE {name}; USE {name};
        CREATE TABLE ventes (id INT PRIMARY KEY, montant INT, secret INT INVISIBLE DEFAULT 7);
        CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, vente INT);
        CREATE TABLE vide (id INT PRIMARY KEY);
        CREATE TRIGGER journal AFTER INSERT ON ventes FOR EACH ROW
        INSERT INTO `audit` VALUES (NULL, NEW.id);
        INSERT INTO ventes (id, montant) SELECT seq, seq FROM seq_1_to_100;""")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".my.cnf").write_text("[mysqldump]\nskip-comments\ncomplete-insert\ninsert-ignore\n")
    res = repo.ok("backup", "--mysql", mariadb.dsn(name), "--json", env={**mariadb.env(), "HOME": str(home)})
    [record] = res.json()["databases"]
    assert record["tables"] == {"ventes": 100, "audit": 100, "vide": 0}
    drill = repo.ok("drill", "--json").json()
    assert drill["ok"] is True, drill
