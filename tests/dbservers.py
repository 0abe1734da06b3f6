"""Real database servers for the tests: PostgreSQL (initdb + postgres) and MariaDB
(mariadb-install-db + mariadbd), each in its own temporary folder, on 127.0.0.1 with a free
port and a password, run as their system account since the tests run as root. A missing
server program is a failure, never a skip: `./run check` installs them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from coffre.sources.databases.command import find_program, service_account
from coffre.sources.databases.postgres import bin_dirs
from servers import Server, free_port

DB_USER = "coffre"
DB_PASSWORD = "db-secret-do-not-log"


def _account(name: str) -> pwd.struct_passwd:
    account = service_account(name)
    assert account is not None, "the database tests run as root (they start servers as their account)"
    return account


def _workdir(account: pwd.struct_passwd, name: str) -> Path:
    """A folder the server's account can reach (pytest's own temporary tree is root's only)."""
    d = Path(tempfile.mkdtemp(prefix=f"coffre-test-{name}-", dir="/tmp"))
    os.chown(d, account.pw_uid, account.pw_gid)
    return d


def _run(argv: list[str], **kw: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")


class _AsAccount(Server):
    account: pwd.struct_passwd
    dir: Path

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                    user=self.account.pw_uid, group=self.account.pw_gid,
                                    extra_groups=[])


class PostgresServer(_AsAccount):
    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.account = _account("postgres")
        self.dir = workdir = _workdir(self.account, "pg")
        self.port = free_port()
        pw = workdir / "pw"
        pw.write_text(DB_PASSWORD)
        os.chown(pw, self.account.pw_uid, self.account.pw_gid)
        data = workdir / "data"
        _run([self.program("initdb"), "-D", str(data), "-U", DB_USER, "--auth-local=trust",
              "--auth-host=scram-sha-256", f"--pwfile={pw}", "-E", "UTF8", "--no-locale", "--no-sync"],
             user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[], cwd="/")
        super().__init__([self.program("postgres"), "-D", str(data), "-p", str(self.port),
                          "-k", str(workdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                          "-c", "full_page_writes=off",
                          *[a for k, v in (settings or {}).items() for a in ("-c", f"{k}={v}")]],
                         workdir / "server.log")
        self.wait_ready()

    @staticmethod
    def program(name: str) -> str:
        return find_program(name, extra_dirs=bin_dirs())

    def ready(self) -> bool:
        self.psql("SELECT 1")
        return True

    def dsn(self, dbname: str = "officine") -> str:
        """Over TCP: needs the password (from PGPASSWORD, see env())."""
        return f"host=127.0.0.1 port={self.port} user={DB_USER} dbname={dbname}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": DB_PASSWORD}

    def psql(self, statement: str, dbname: str = "postgres") -> str:
        """Over the local socket (trusted)."""
        done = subprocess.run([self.program("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.dir), "-p", str(self.port), "-U", DB_USER, "-d", dbname,
                               "-c", statement], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()

    def pgbench(self, *args: str, dbname: str = "officine") -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.program("pgbench"), "-h", str(self.dir), "-p", str(self.port),
                               "-U", DB_USER, *args, dbname], capture_output=True, text=True, check=True)

    def pgbench_popen(self, *args: str, dbname: str = "officine") -> subprocess.Popen[str]:
        return subprocess.Popen([self.program("pgbench"), "-h", str(self.dir), "-p", str(self.port),
                                 "-U", DB_USER, *args, dbname], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @classmethod
    def start(cls, _pytest_dir: Path) -> PostgresServer:
        return cls()


class MariaDBServer(_AsAccount):
    """`binlog`: write binary logs (row format, server id 1) for the point-in-time tests."""

    def __init__(self, binlog: bool = False) -> None:
        self.account = _account("mysql")
        self.dir = workdir = _workdir(self.account, "mariadb")
        self.port = free_port()
        self.socket = str(workdir / "server.sock")
        data = workdir / "data"
        logging = (["--log-bin=binlog", "--binlog-format=ROW", "--server-id=1"] if binlog
                   else ["--skip-log-bin"])
        _run([find_program("mariadb-install-db", extra_dirs=["/usr/sbin"]), "--no-defaults",
              f"--datadir={data}", f"--user={self.account.pw_name}", "--skip-test-db",
              "--auth-root-authentication-method=normal"])
        super().__init__([find_program("mariadbd", extra_dirs=["/usr/sbin"]), "--no-defaults",
                          f"--datadir={data}", f"--socket={self.socket}", f"--port={self.port}",
                          "--bind-address=127.0.0.1", *logging, f"--pid-file={workdir}/pid",
                          "--innodb-flush-log-at-trx-commit=2"], workdir / "server.log")
        self.wait_ready()
        self.sql(f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                 f"GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1'")

    def ready(self) -> bool:
        self.sql("SELECT 1")
        return True

    def dsn(self, dbname: str = "officine") -> str:
        return f"mysql://{DB_USER}@127.0.0.1:{self.port}/{dbname}"

    def env(self) -> dict[str, str]:
        return {"MYSQL_PWD": DB_PASSWORD}

    def sql(self, statement: str, dbname: str = "") -> str:
        """As root over the local socket."""
        done = subprocess.run([find_program("mariadb"), "--no-defaults", f"--socket={self.socket}",
                               "-uroot", "-N", "-B", "-e", statement, *([dbname] if dbname else [])],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()

    @classmethod
    def start(cls, _pytest_dir: Path) -> MariaDBServer:
        return cls()
