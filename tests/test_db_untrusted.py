"""A backed-up database is untrusted input, and its dump is code: what Coffre feeds it to, and
the paths it hands to a shell, must not let it run commands. Real PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from dbservers import DB_PASSWORD
from test_db_postgres import wrapper

from conftest import Coffre


def test_a_drill_folder_the_shell_would_expand_is_refused(repo: Coffre, postgres: Any,
                                                           shared_dir: Path) -> None:
    """pg_ctl starts the server through /bin/sh, with the data folder in double quotes: a
    work folder (or TMPDIR) named `$(...)` would run that command. Refused before anything
    runs; the same drill in a plain folder passes."""
    name = f"caisse_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("CREATE TABLE ventes (id int PRIMARY KEY); INSERT INTO ventes VALUES (1), (2)", name)
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())
    marker = shared_dir / "ran"
    for hostile in ("w$(touch $COFFRE_MARKER)", "w`touch $COFFRE_MARKER`"):
        work = shared_dir / hostile
        work.mkdir()
        work.chmod(0o755)
        for args, env in ((["--work-dir", str(work)], {}), ([], {"TMPDIR": str(work)})):
            res = repo("drill", *args, env={"COFFRE_MARKER": str(marker), **env})
            assert res.code == 2 and "choose a work folder without" in res.err, res
            assert not marker.exists()
    plain = shared_dir / "plain"
    plain.mkdir()
    plain.chmod(0o755)
    assert json.loads(repo.ok("drill", "--work-dir", str(plain), "--json").out)["ok"] is True


def test_a_mysql_client_without_a_sandbox_is_never_fed_a_dump(repo: Coffre, mariadb: Any,
                                                              tmp_path: Path) -> None:
    """A dump can carry client commands (`\\!` runs a shell as Coffre): it is loaded only by a
    client that runs it in its sandbox. An older client without one is refused, before the
    target database is even created."""
    name = f"stock_{uuid.uuid4().hex[:8]}"
    mariadb.sql(f"CREATE DATABASE {name}")
    mariadb.sql("CREATE TABLE produits (cip BIGINT PRIMARY KEY);"
                " INSERT INTO produits VALUES (3400930000001)", name)
    repo.ok("backup", "--mysql", mariadb.dsn(name), env=mariadb.env())
    real = shutil.which("mariadb")
    assert real is not None
    old_client = wrapper(tmp_path, "mariadb", real,
                         'case "$*" in *--help*) REAL --help | grep -vi sandbox;;\n'
                         '*--sandbox*) echo "unknown option --sandbox" >&2; exit 7;;\n'
                         '*) exec REAL "$@";; esac')
    copy = f"{name}_copie"
    res = repo("restore-db", "latest", "--mysql", mariadb.dsn(copy), env={**mariadb.env(), **old_client})
    assert res.code == 1 and "has no --sandbox option" in res.err, res
    assert mariadb.sql(f"SHOW DATABASES LIKE '{copy}'") == ""
    repo.ok("restore-db", "latest", "--mysql", mariadb.dsn(copy), env=mariadb.env())
    assert mariadb.sql("SELECT cip FROM produits", copy) == "3400930000001"


def test_restore_db_warns_when_the_restoring_account_rules_the_server(
        repo: Coffre, postgres: Any, mariadb: Any) -> None:
    """A dump's functions, triggers and constraints run with the rights of whoever restores
    it: as a superuser (or a MariaDB account with SUPER or FILE), restore-db says so; as the
    database's owner, it says nothing."""
    name = f"caisse_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("CREATE TABLE ventes (id int PRIMARY KEY); INSERT INTO ventes VALUES (1)", name)
    mariadb.sql(f"CREATE DATABASE {name}")
    mariadb.sql("CREATE TABLE stock (cip BIGINT PRIMARY KEY); INSERT INTO stock VALUES (1)", name)
    repo.ok("backup", "--postgres", postgres.dsn(name), "--mysql", mariadb.dsn(name),
            env={**postgres.env(), **mariadb.env()})

    res = repo.ok("restore-db", "latest", "--postgres", postgres.dsn(f"{name}_su"), env=postgres.env())
    assert "warning: the PostgreSQL role 'coffre' is a superuser" in res.err, res
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{DB_PASSWORD}'")
    postgres.psql(f"CREATE DATABASE {name}_own OWNER {owner}")
    dsn = postgres.dsn(f"{name}_own").replace("user=coffre", f"user={owner}")
    res = repo.ok("restore-db", "latest", "--postgres", dsn, "--no-owner", env=postgres.env())
    assert "warning" not in res.err, res
    assert postgres.psql("SELECT id FROM ventes", f"{name}_own") == "1"

    res = repo.ok("restore-db", "latest", "--mysql", mariadb.dsn(f"{name}_su"), env=mariadb.env())
    assert "warning: the MariaDB account 'coffre@127.0.0.1' holds" in res.err, res
    mariadb.sql(f"CREATE USER '{owner}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                f"CREATE DATABASE {name}_own; GRANT ALL ON {name}_own.* TO '{owner}'@'127.0.0.1'")
    res = repo.ok("restore-db", "latest", "--mysql",
                  mariadb.dsn(f"{name}_own").replace("coffre@", f"{owner}@"), env=mariadb.env())
    assert "warning" not in res.err, res
    assert mariadb.sql("SELECT cip FROM stock", f"{name}_own") == "1"
