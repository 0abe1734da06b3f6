"""Where the server keeps tenants' objects: one storage backend per repository, under
t<tenant id>/<repository>/ of the object store (a local folder, or an S3 bucket and prefix).

The backends are the client's own (`coffre.storage`): format-blind, atomic, never
overwriting. The server adds what a shared service needs on top (objects_api.py). On S3,
every repository's backend shares one client and its connection pool: a client per
repository cost about 8 MiB each (1.8 GiB of memory for 200 pharmacies)."""

from __future__ import annotations

import threading
from typing import Any

from coffre.storage.base import Backend
from coffre.storage.url import is_url, open_backend

SHARED_POOL = 64  # S3 connections of one server instance, all tenants together


class ObjectStore:
    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self._backends: dict[tuple[int, str], Backend] = {}
        self._lock = threading.Lock()
        self._s3_client: Any = None

    def prefix(self, tenant_id: int, repository: str) -> str:
        return f"t{tenant_id}/{repository}"

    def backend(self, tenant_id: int, repository: str) -> Backend:
        """The backend of one repository (cached; backends are thread-safe)."""
        key = (tenant_id, repository)
        with self._lock:
            found = self._backends.get(key)
            if found is None:
                where = f"{self.location}/{self.prefix(tenant_id, repository)}"
                found = self._backends[key] = self._open(where)
            return found

    def _open(self, where: str) -> Backend:
        if not where.lower().startswith(("s3://", "s3+http://", "s3+https://")):
            return open_backend(where)
        from coffre.storage.s3 import S3Backend
        from coffre.storage.url import parse_s3

        if self._s3_client is None:
            self._s3_client = S3Backend(parse_s3(self.location), pool_connections=SHARED_POOL).client
        return S3Backend(parse_s3(where), client=self._s3_client)

    @property
    def remote(self) -> bool:
        return is_url(self.location)

    def close(self) -> None:
        with self._lock:
            for b in self._backends.values():
                b.close()
            self._backends.clear()
