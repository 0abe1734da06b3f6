"""Who may do what: privileges are bits, roles are named sets of them.

- backup: create the repository, add objects, read and list them, add and remove its own
  lock objects. It can never delete or overwrite anything else: a stolen pharmacy token
  cannot destroy history.
- prune: also delete, and a deletion moves the object to the tenant's recycle bin, which
  only the provider purges (or the server, after --recycle-days).
- read: read and list, and its own lock objects (a restore takes a shared lock).
- admin: the provider's operations on any tenant; access to a tenant's objects needs a motive
  (recorded in the audit journal).

Overwriting is refused for everyone, admin included.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Privilege(enum.IntFlag):
    READ = enum.auto()      # load, stat and list a repository's objects
    WRITE = enum.auto()     # add objects, create a repository
    LOCKS = enum.auto()     # add lock objects, remove the lock objects this token added
    DELETE = enum.auto()    # delete any object (into the recycle bin)
    REPORT = enum.auto()    # post the agent's status records
    ADMIN = enum.auto()     # tenants, tokens, quotas, recycle bin, audit, usage


ROLES: dict[str, Privilege] = {
    "backup": Privilege.READ | Privilege.WRITE | Privilege.LOCKS | Privilege.REPORT,
    "prune": Privilege.READ | Privilege.WRITE | Privilege.LOCKS | Privilege.DELETE | Privilege.REPORT,
    "read": Privilege.READ | Privilege.LOCKS | Privilege.REPORT,
    "admin": Privilege.READ | Privilege.LOCKS | Privilege.DELETE | Privilege.ADMIN,
}


@dataclass(frozen=True)
class Principal:
    """The caller of one request, settled by tokens.authenticate before anything else."""

    token_id: str
    role: str
    tenant_id: int | None       # None for admin tokens
    tenant_name: str | None
    tenant_state: str | None    # active | read-only | disabled

    @property
    def privileges(self) -> Privilege:
        return ROLES[self.role]

    def may(self, privilege: Privilege) -> bool:
        return privilege in self.privileges
