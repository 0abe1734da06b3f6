"""(being written: see /work/server-contract.md)"""

from __future__ import annotations

from coffre.server.context import ServerContext

PERIOD_S = 3600.0


def periodic(ctx: ServerContext, now_ns: int) -> None:
    """Nothing yet."""
