"""Where the server keeps tenants' objects: one storage backend per repository, under
t<tenant id>/<repository>/ of the object store (a local folder, or an S3 bucket and prefix).

The backends are the client's own (`coffre.storage`): format-blind, atomic, never
overwriting. The server adds what a shared service needs on top (objects_api.py)."""

from __future__ import annotations

import threading

from coffre.storage.base import Backend
from coffre.storage.url import is_url, open_backend


class ObjectStore:
    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self._backends: dict[tuple[int, str], Backend] = {}
        self._lock = threading.Lock()

    def prefix(self, tenant_id: int, repository: str) -> str:
        return f"t{tenant_id}/{repository}"

    def backend(self, tenant_id: int, repository: str) -> Backend:
        """The backend of one repository (cached; backends are thread-safe)."""
        key = (tenant_id, repository)
        with self._lock:
            found = self._backends.get(key)
            if found is None:
                where = f"{self.location}/{self.prefix(tenant_id, repository)}"
                found = self._backends[key] = open_backend(where)
            return found

    @property
    def remote(self) -> bool:
        return is_url(self.location)

    def close(self) -> None:
        with self._lock:
            for b in self._backends.values():
                b.close()
            self._backends.clear()
