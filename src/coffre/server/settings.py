"""How one server instance is configured: where metadata and objects live, where it listens,
its limits. Built from the command line (cli/server_common.py) or by tests directly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA = "/var/lib/coffre-server"
DEFAULT_PORT = 8443


@dataclass(frozen=True)
class Settings:
    data_dir: Path                       # the embedded default's home: server.sqlite, objects/, tls/
    db_url: str = ""                     # "" = sqlite:///<data_dir>/server.sqlite
    objects_url: str = ""                # "" = <data_dir>/objects; or s3://HOST/BUCKET/PREFIX
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None         # None = <data_dir>/tls/cert.pem when it exists
    tls_key: Path | None = None
    insecure_http: bool = False          # plain HTTP: loopback tests, or behind a TLS proxy
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For is believed
    recycle_days: int = 30
    max_object_bytes: int = 300 * 1024 * 1024   # a 256 MiB pack and its envelope fit
    max_inflight_bytes: int = 1024 * 1024 * 1024  # upload bodies held in memory at once
    min_upload_rate: int = 16 * 1024     # bytes/s: a slower body is cut (slowloris)
    body_grace_s: float = 30.0           # before min_upload_rate applies
    scrub_rate: int = 20 * 1024 * 1024   # bytes/s re-hashed by the background scrub
    scrub_interval_s: float = 7 * 86400  # a full pass at least this often
    audit_retention_days: int = 3650
    workers: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'server.sqlite').absolute()}"

    @property
    def objects_location(self) -> str:
        return self.objects_url or str(self.data_dir / "objects")

    @property
    def certificate(self) -> tuple[Path, Path] | None:
        """(certificate, key) to serve TLS with, or None."""
        if self.tls_cert and self.tls_key:
            return self.tls_cert, self.tls_key
        cert, key = self.data_dir / "tls" / "cert.pem", self.data_dir / "tls" / "key.pem"
        return (cert, key) if cert.exists() and key.exists() else None


def data_dir_default() -> Path:
    return Path(os.environ.get("COFFRE_SERVER_DATA") or DEFAULT_DATA)
