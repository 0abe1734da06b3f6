"""A real `coffre server` process for the tests: a server folder (database, tenants), a
self-signed certificate for 127.0.0.1 made with `cryptography`, and `python -m coffre server`
serving it over TLS on a free loopback port. It can be killed with SIGKILL (a crash) and
started again on the same port and data.

Clients trust it through SSL_CERT_FILE (`env()`), as a pharmacy trusts a provider's
self-signed certificate. Fixtures: `coffre_server` (one per test session; each test uses
its own tenant or repository names) and `fresh_server` (one per test, for those that kill it).
"""

from __future__ import annotations

import itertools
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from coffre.core.clock import SystemClock
from coffre.server.context import ServerContext
from server_support import add_tenant, free_port, make_context
from servers import Server, self_signed_cert

_names = itertools.count()


class CoffreServer(Server):
    def __init__(self, data: Path, port: int, cert: Path, key: Path, extra: list[str],
                 env: dict[str, str]) -> None:
        self.data, self.port, self.cert, self.key = data, port, cert, key
        self.extra_env = env
        argv = [sys.executable, "-m", "coffre", "server", "--data", str(data), "--listen",
                f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key), *extra]
        super().__init__(argv, data / "server.log")

    def _spawn(self) -> Any:
        import subprocess

        with open(self.log, "ab") as out:
            return subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **self.extra_env})

    @classmethod
    def start(cls, data: Path, extra: list[str] | None = None, env: dict[str, str] | None = None,
              db_url: str = "", objects_url: str = "", port: int | None = None) -> CoffreServer:
        """A new server folder (its database created) served on a free port."""
        data.mkdir(parents=True, exist_ok=True)
        tls = data / "tls"
        tls.mkdir(exist_ok=True)
        cert, key = self_signed_cert(tls)
        make_context(data, clock=SystemClock(), db_url=db_url, objects_url=objects_url).close()
        args = list(extra or [])
        if db_url:
            args += ["--db", db_url]
        if objects_url:
            args += ["--objects", objects_url]
        server = cls(data, port or free_port(), cert, key, args, env or {})
        server.db_url, server.objects_url = db_url, objects_url
        server.wait_ready()
        return server

    db_url = ""
    objects_url = ""

    def twin(self, data: Path) -> CoffreServer:
        """A second instance on the same database and objects (PostgreSQL + S3), its own port."""
        data.mkdir(parents=True, exist_ok=True)
        args = ["--db", self.db_url, "--objects", self.objects_url]
        server = CoffreServer(data, free_port(), self.cert, self.key, args, self.extra_env)
        server.db_url, server.objects_url = self.db_url, self.objects_url
        server.wait_ready()
        return server

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"{self.base}/{repo}"

    def env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": str(self.cert)}

    def ready(self) -> bool:
        http = self.client()
        try:
            return http.request("GET", f"{self.base}/v1/whoami", retries=False, timeout=2).status == 401
        finally:
            http.clear()

    def client(self) -> urllib3.PoolManager:
        """An HTTP client that trusts this server's certificate."""
        context = ssl.create_default_context(cafile=str(self.cert))
        return urllib3.PoolManager(ssl_context=context, retries=False)

    def context(self) -> ServerContext:
        """The server's own data, opened beside the running process (a provider's CLI does the same)."""
        from coffre.server.db import Database
        from coffre.server.settings import Settings
        from coffre.server.store import ObjectStore

        s = Settings(data_dir=self.data, db_url=self.db_url, objects_url=self.objects_url)
        return ServerContext(s, Database(s.database_url), ObjectStore(s.objects_location), SystemClock())

    def tenant(self, name: str | None = None, **quota: int | None) -> dict[str, str]:
        """A new tenant, with one token per role: {role: token}."""
        ctx = self.context()
        try:
            return add_tenant(ctx, name or f"pharmacie-{os.getpid()}-{next(_names)}", **quota)
        finally:
            ctx.db.close()


@pytest.fixture(scope="session")
def coffre_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoffreServer]:
    server = CoffreServer.start(tmp_path_factory.mktemp("coffre-server"))
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[CoffreServer]:
    server = CoffreServer.start(tmp_path / "coffre-server")
    yield server
    server.stop()
