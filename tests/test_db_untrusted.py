"""A backed-up database is untrusted input, and its dump is code: what Coffre feeds it to, and
the paths it hands to a shell, must not let it run commands. Real PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

from coffre.sources.databases.mysql import MysqlTarget
from dbservers import DB_PASSWORD
from test_db_postgres import wrapper

from conftest import NOBODY, PASSWORD, AsNobody, Coffre


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
    assert repo.ok("drill", "--work-dir", str(plain), "--json").json()["ok"] is True


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


def test_restore_db_as_the_owner_of_a_database_with_extensions(repo: Coffre, postgres: Any) -> None:
    """As docs/databases.md says to restore without a superuser: a superuser creates the
    database, owned by its owner, with the untrusted extensions it uses (pg_stat_statements);
    restore-db --no-owner as the owner restores the rest, trusted extensions included
    (pg_trgm), leaving alone the extension it was given."""
    name = f"officine_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("CREATE EXTENSION pg_trgm; CREATE EXTENSION pg_stat_statements; "
                  "CREATE TABLE produits (cip bigint PRIMARY KEY, nom text); "
                  "CREATE INDEX produits_nom ON produits USING gin (nom gin_trgm_ops); "
                  "INSERT INTO produits VALUES (3400930000001, 'doliprane')", name)
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{DB_PASSWORD}'")
    postgres.psql(f"CREATE DATABASE {name}_own OWNER {owner}")
    postgres.psql("CREATE EXTENSION pg_stat_statements", f"{name}_own")

    dsn = postgres.dsn(f"{name}_own").replace("user=coffre", f"user={owner}")
    res = repo.ok("restore-db", "latest", "--postgres", dsn, "--no-owner", env=postgres.env())

    assert "warning" not in res.err, res
    assert postgres.psql("SELECT cip FROM produits WHERE nom % 'dolipran'", f"{name}_own") == "3400930000001"
    owners = postgres.psql("SELECT e.extname, r.rolname FROM pg_extension e JOIN pg_roles r "
                           "ON r.oid = e.extowner WHERE extname IN ('pg_trgm', 'pg_stat_statements') "
                           "ORDER BY 1", f"{name}_own")
    assert owners.splitlines() == ["pg_stat_statements|coffre", f"pg_trgm|{owner}"]


# -- the backed-up database's code never runs with privileges in a drill ------------------------
def plant_waiting_function(postgres: Any, dbname: str, marker: Path, role: str) -> None:
    """The review's finding: functions of `role` that run a program only when they run as a
    superuser (COPY ... TO PROGRAM), so nothing happens while the pharmacy works; `same(i)`
    is the immutable face that a CHECK constraint or an expression index can use."""
    postgres.psql(f"""
        SET ROLE {role};
        CREATE FUNCTION public.run_when_superuser() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch {marker}; cat >/dev/null');
          END IF;
        END $$;
        CREATE FUNCTION public.same(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN PERFORM public.run_when_superuser(); RETURN i; END $$;
    """, dbname)


def owner_database(postgres: Any, marker: Path) -> str:
    """A database as the review made it: everything belongs to an ordinary owner role, whose
    function sits in a CHECK constraint and in an expression index (which pg_amcheck
    --heapallindexed evaluates)."""
    name = f"caisse_{uuid.uuid4().hex[:8]}"
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {owner} LOGIN")
    postgres.psql(f"CREATE DATABASE {name} OWNER {owner}")
    plant_waiting_function(postgres, name, marker, owner)
    postgres.psql(f"SET ROLE {owner}; "
                  "CREATE TABLE ventes (id int PRIMARY KEY CHECK (public.same(id) = id), montant int); "
                  "CREATE INDEX ventes_same ON ventes ((public.same(id))); "
                  "INSERT INTO ventes SELECT g, g * 10 FROM generate_series(1, 500) g", name)
    return name


def test_a_postgres_drill_never_runs_the_dumps_code_as_a_superuser(
        repo: Coffre, postgres: Any, shared_dir: Path) -> None:
    """The review's reproduction: an ordinary owner's function that runs a program when it
    runs as a superuser, in a CHECK constraint and an expression index. The drill restores
    and checks everything (rows loaded through the constraint, the index read by pg_amcheck)
    and passes, and the program never runs."""
    marker = shared_dir / "ran"
    name = owner_database(postgres, marker)
    assert not marker.exists()  # the pharmacy's own work never sets it off
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())

    drill = repo.ok("drill", "--json").json()

    assert not marker.exists()
    assert drill["ok"] is True, drill
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["pg_amcheck (tables and indexes)"]["detail"] == "no corruption found"
    assert checks["row counts"]["detail"] == "1 table, 500 rows, as at backup time"


def test_a_drill_as_an_ordinary_user_says_what_protects_it(postgres: Any, shared_dir: Path) -> None:
    """Not run as root, Coffre cannot give the servers an account of their own: they run as
    its user, who can read the repository's password. The drill says so, and the database
    role still keeps the dump's code from running a program."""
    marker = shared_dir / "ran"
    name = owner_database(postgres, marker)
    pw = shared_dir / "password"
    pw.write_text(PASSWORD + "\n")
    os.chown(pw, NOBODY, NOBODY)
    pw.chmod(0o600)
    nobody = AsNobody(shared_dir / "repo", pw, shared_dir / "cache")
    nobody.ok("init")
    nobody.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())

    res = nobody("drill", "--json", env={"TMPDIR": str(shared_dir)})

    assert not marker.exists()
    assert res.code == 0 and res.json()["ok"] is True, res
    assert "note: Coffre is not running as root" in res.err and "(nobody)" in res.err, res
    assert "ordinary database role" in res.err
    assert not marker.exists()


def test_a_drill_restores_common_extensions_and_names_what_it_left_out(
        repo: Coffre, postgres: Any) -> None:
    """A legitimate pharmacy database with extensions: trusted ones (pg_trgm for searching
    product names, hstore) are restored by the drill's ordinary role; untrusted ones that
    hold no rows (pg_stat_statements, amcheck) and event triggers are left out and named;
    the drill passes. A table whose type comes from an untrusted extension, or a function in
    C, cannot be restored without a superuser: the drill fails and says why, not that the
    backup is damaged."""
    name = f"officine_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("""
        CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore; CREATE EXTENSION pg_stat_statements;
        CREATE EXTENSION amcheck;
        CREATE TABLE produits (cip bigint PRIMARY KEY, nom text, attributs hstore);
        CREATE INDEX produits_nom ON produits USING gin (nom gin_trgm_ops);
        INSERT INTO produits SELECT 3400930000000 + g, 'produit ' || g, 'forme => comprime'
            FROM generate_series(1, 300) g;
        COMMENT ON TABLE produits IS 'catalogue';
        CREATE FUNCTION public.journal_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
        CREATE EVENT TRIGGER journal_ddl ON ddl_command_end EXECUTE FUNCTION public.journal_ddl();
    """, name)
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())

    drill = repo.ok("drill", "--json").json()

    assert drill["ok"] is True, drill
    [left_out, *_] = drill["databases"][0]["checks"][1:]
    assert left_out["name"].startswith("left out") and left_out["ok"], drill
    assert left_out["detail"] == "extension pg_stat_statements, event trigger journal_ddl"
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["row counts"]["detail"] == "1 table, 300 rows, as at backup time"

    postgres.psql("CREATE EXTENSION cube; CREATE EXTENSION earthdistance; "
                  "CREATE TABLE officines (id int PRIMARY KEY, lieu earth)", name)
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())
    res = repo("drill", "--json")
    assert res.code == 1, res
    [restore] = [c for c in res.json()["databases"][0]["checks"] if c["name"] == "restore"]
    assert not restore["ok"] and 'type "public.earth" does not exist' in restore["detail"], restore
    assert "Left out of the drill, as only a superuser can create them: extension earthdistance, " \
           "extension pg_stat_statements, event trigger journal_ddl" in restore["detail"], restore
    assert "it is not damage in the backup" in restore["detail"]
    assert "corrupt" not in res.out

    # A function in C: only a superuser may create one.
    postgres.psql("DROP TABLE officines; DROP EXTENSION earthdistance; "
                  "CREATE FUNCTION public.distance(text, text) RETURNS int "
                  "AS '$libdir/fuzzystrmatch', 'levenshtein' LANGUAGE c IMMUTABLE STRICT", name)
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())
    res = repo("drill", "--json")
    assert res.code == 1, res
    [restore] = [c for c in res.json()["databases"][0]["checks"] if c["name"] == "restore"]
    assert "permission denied for language c" in restore["detail"], restore
    assert "This is not damage in the backup: a drill restores as an ordinary database role" \
           in restore["detail"], restore


def test_drill_servers_run_as_their_own_account(shared_dir: Path) -> None:
    """As root, the throwaway servers run as the system account coffre-drill, never as
    postgres, mysql or root; their folder is Coffre's, which the account may only pass
    through, and their data folders are the account's."""
    from coffre.sources.databases.mysql import throwaway_mysql
    from coffre.sources.databases.pgdrill import DrillTarget, throwaway_postgres

    with throwaway_postgres(str(shared_dir)) as target:
        assert isinstance(target, DrillTarget)
        account = pwd.getpwnam("coffre-drill")  # made on demand
        assert account.pw_uid not in (0, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("mysql").pw_uid)
        with psycopg.connect(target.conn.conninfo()) as conn:
            backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                    ).fetchone()[0]  # type: ignore[index]
            assert _uid(backend) == account.pw_uid  # while it serves this connection
            # No ANALYZE of its own: it would evaluate expression indexes as their owner.
            assert conn.execute("SHOW autovacuum").fetchone()[0] == "off"  # type: ignore[index]
        folder = os.path.dirname(target.conn.params["host"])  # the socket's folder is in it
        top = os.stat(folder)
        assert (top.st_uid, top.st_gid, top.st_mode & 0o7777) == (0, account.pw_gid, 0o710)
        assert os.stat(os.path.join(folder, "data")).st_uid == account.pw_uid
    with throwaway_mysql(str(shared_dir)) as target:
        assert isinstance(target, MysqlTarget)
        pid_file = target.conn.query("SELECT @@pid_file", "pid")[0][0]
        with open(pid_file) as f:
            assert _uid(int(f.read())) == account.pw_uid
        grants = target.conn.query("SHOW GRANTS", "grants")
        assert [g[0] for g in grants] == ["GRANT USAGE ON *.* TO `drill`@`localhost`",
                                          "GRANT ALL PRIVILEGES ON `drill`.* TO `drill`@`localhost`"]


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_a_cluster_drill_never_runs_the_clusters_code_as_a_superuser(
        repo: Coffre, postgres: Any, shared_dir: Path) -> None:
    """A physical copy keeps production's roles, superusers included, and their objects: the
    review's database; a table of the superuser (as when the pharmacy's software connects as
    one) whose expression index calls the waiting function (amcheck evaluates it as the
    table's owner); an event trigger that calls it on any DDL. The drill checks every
    database (pg_amcheck --heapallindexed, row counts) and passes; the program never runs."""
    marker = shared_dir / "ran"
    name = owner_database(postgres, marker)
    postgres.psql("""
        CREATE TABLE stock (cip bigint PRIMARY KEY, qte int) WITH (autovacuum_enabled = off);
        CREATE INDEX stock_same ON stock ((public.same(qte)));
        INSERT INTO stock SELECT g, g FROM generate_series(1, 200) g;
        CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql
            AS 'BEGIN PERFORM public.run_when_superuser(); END';
        CREATE EVENT TRIGGER on_ddl ON ddl_command_start EXECUTE FUNCTION public.on_ddl();
    """, name)
    assert marker.exists()  # on the live server, its superuser's own writes set it off
    # (and so would the live server's autovacuum ANALYZE, evaluating the index as its
    # owner: switched off for this table, so only the drill can set the marker off now)
    marker.unlink()
    try:
        repo.ok("backup", "--postgres-cluster", f"host=127.0.0.1 port={postgres.port} user=coffre",
                env=postgres.env())
        res = repo("drill", "--json")
    finally:
        postgres.psql(f"DROP DATABASE {name}")

    assert not marker.exists()
    assert res.code == 0, res
    checks = {c["name"]: c for c in res.json()["databases"][0]["checks"]}
    assert checks["pg_amcheck (every database, tables and indexes)"]["detail"] == "no corruption found"
    contents = checks["contents (a physical copy records no row counts)"]["detail"]
    assert f"{name}: 2 tables, 700 rows" in contents


def test_a_mysql_drill_loads_definers_and_gives_the_dump_no_rights_on_the_server(
        repo: Coffre, mariadb: Any, shared_dir: Path, tmp_path: Path) -> None:
    """A legitimate database whose trigger, function, procedure and view name a definer of
    the live server (`coffre`@`127.0.0.1`, unknown to the throwaway one): the drill's user,
    which has rights on its own database only, loads them as its own and the drill passes.
    A dump that calls the procedure, which writes a file (SELECT ... INTO OUTFILE needs the
    FILE right), writes nothing, and the drill says why. (Loading a mariadb-dump never fires
    its triggers: each table's come after its rows; a line added to the dump calls the
    procedure, the most a dump can do.)"""
    marker = shared_dir / "ran"
    name = f"stock_{uuid.uuid4().hex[:8]}"
    definer = "DEFINER=`coffre`@`127.0.0.1`"
    mariadb.sql(f"""CREATE DATABASE {name}; USE {name};
        CREATE TABLE ventes (id INT PRIMARY KEY, montant INT);
        CREATE TABLE journal (id INT AUTO_INCREMENT PRIMARY KEY, vente INT);
        CREATE {definer} TRIGGER journal_vente AFTER INSERT ON ventes FOR EACH ROW
            INSERT INTO journal VALUES (NULL, NEW.id);
        CREATE {definer} FUNCTION total() RETURNS INT READS SQL DATA RETURN (SELECT SUM(montant) FROM ventes);
        CREATE {definer} SQL SECURITY DEFINER VIEW chiffre AS SELECT total() AS total;
        CREATE {definer} PROCEDURE exporter() SQL SECURITY DEFINER SELECT total() INTO OUTFILE '{marker}';
        INSERT INTO ventes SELECT seq, seq * 10 FROM seq_1_to_50;""")
    repo.ok("backup", "--mysql", mariadb.dsn(name), env=mariadb.env())

    drill = repo.ok("drill", "--json").json()

    assert drill["ok"] is True, drill
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["CHECK TABLE"]["detail"] == "2 tables OK"
    assert checks["row counts"]["detail"] == "2 tables, 100 rows, as at backup time"

    real = shutil.which("mariadb-dump")
    assert real is not None
    calling = wrapper(tmp_path, "mariadb-dump", real,
                      "REAL \"$@\" | sed '/^-- Dump completed/i CALL exporter();'")
    repo.ok("backup", "--mysql", mariadb.dsn(name), env={**mariadb.env(), **calling})
    res = repo("drill", "--json")

    assert not marker.exists()
    assert res.code == 1, res
    [restore] = [c for c in res.json()["databases"][0]["checks"] if c["name"] == "restore"]
    assert "Access denied; you need (at least one of) the FILE privilege(s)" in restore["detail"], res


def test_definers_are_rewritten_at_the_start_of_lines_only_whatever_the_chunks() -> None:
    """Definers of triggers, routines, views and events become CURRENT_USER; a row that holds
    the same text is left alone; the result does not depend on where the stream is cut."""
    from coffre.sources.databases.mysql import definers_to_current_user

    row = b"INSERT INTO `ddl` VALUES (1,'CREATE DEFINER=`root`@`localhost` PROCEDURE p()');\n"
    long_row = b"INSERT INTO `scans` VALUES (2,'" + b"ab" * 20_000 + b"');\n"
    long_routine = b"CREATE DEFINER=`a``b`@`%` FUNCTION `f`() RETURNS INT RETURN '" + b"x" * 20_000 + b"'\n"
    dump = b"".join([
        b"/*!50003 CREATE*/ /*!50017 DEFINER=`vendeur`@`127.0.0.1`*/ /*!50003 TRIGGER t AFTER INSERT\n",
        row, long_row,
        b"CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\n",
        b"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n",
        b"/*!50106 CREATE*/ /*!50117 DEFINER=`role_only`*/ /*!50106 EVENT `e` ON SCHEDULE\n",
        long_routine, row, b"-- Dump completed",
    ])
    expected = b"".join([
        b"/*!50003 CREATE*/ /*!50017 DEFINER=CURRENT_USER*/ /*!50003 TRIGGER t AFTER INSERT\n",
        row, long_row,
        b"CREATE DEFINER=CURRENT_USER PROCEDURE `p`()\n",
        b"/*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */\n",
        b"/*!50106 CREATE*/ /*!50117 DEFINER=CURRENT_USER*/ /*!50106 EVENT `e` ON SCHEDULE\n",
        long_routine.replace(b"DEFINER=`a``b`@`%`", b"DEFINER=CURRENT_USER"), row, b"-- Dump completed",
    ])
    for size in (1, 7, 64, 1000, 8191, 8192, 50_000, len(dump)):
        chunks = [dump[i:i + size] for i in range(0, len(dump), size)]
        assert b"".join(definers_to_current_user(chunks)) == expected, size


def test_the_restore_list_leaves_out_what_only_a_superuser_creates() -> None:
    from coffre.sources.databases.pgdrill import drill_listing

    listing = "\n".join([
        ";     TOC Entries: 9",
        "4; 3079 16499 EXTENSION - amcheck ",
        "3520; 0 0 COMMENT - EXTENSION amcheck ",
        "3; 3079 16468 EXTENSION - pg_stat_statements ",
        "3522; 0 0 COMMENT - EXTENSION pg_stat_statements ",
        "2; 3079 16387 EXTENSION - pg_trgm ",
        "3523; 0 0 COMMENT - EXTENSION pg_trgm ",
        "220; 1259 16634 TABLE public t boss",
        "3363; 3466 16643 EVENT TRIGGER - journal ddl boss",
        "3364; 0 0 COMMENT - EVENT TRIGGER journal ddl boss",
    ])
    kept, left_out = drill_listing(listing, untrusted={"pg_stat_statements", "dblink"}, installed={"amcheck"})
    assert left_out == ["extension pg_stat_statements", "event trigger journal ddl"]
    assert [line for line in kept.splitlines() if not line.startswith(";")] == [
        "2; 3079 16387 EXTENSION - pg_trgm ", "3523; 0 0 COMMENT - EXTENSION pg_trgm ",
        "220; 1259 16634 TABLE public t boss"]


def test_the_drill_account_is_made_once_by_drills_starting_together(repo: Coffre, postgres: Any) -> None:
    """On a machine that never drilled, the first drills to start create coffre-drill; the
    others see it made and use it. Without useradd, the drill says what to do."""
    name = f"caisse_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    repo.ok("backup", "--postgres", postgres.dsn(name), env=postgres.env())
    gone = subprocess.run(["userdel", "coffre-drill"], capture_output=True, text=True, check=False)
    assert gone.returncode in (0, 6), gone.stderr  # 6: there was none
    without_useradd = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind /dev/null /usr/sbin/useradd && exec "$@"',
         "sh", *repo.argv("drill")], capture_output=True, text=True, env=repo.env, check=False)
    assert without_useradd.returncode == 1, without_useradd
    assert ("which does not exist, and useradd is not installed: install the passwd package, or "
            "create it with: useradd --system --user-group") in without_useradd.stdout, without_useradd

    probe = [sys.executable, "-c", "from coffre.sources.databases.throwaway import drill_account; "
             "print(drill_account().pw_uid)"]
    drills = [subprocess.Popen(probe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
    done = [(d.communicate(), d.returncode) for d in drills]

    assert [code for _, code in done] == [0, 0, 0, 0], done
    assert {out.strip() for (out, _), _ in done} == {str(pwd.getpwnam("coffre-drill").pw_uid)}
    assert "drill passed" in repo.ok("drill").out
