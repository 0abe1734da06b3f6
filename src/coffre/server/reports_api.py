"""(being written: see /work/server-contract.md)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from coffre.server.context import ServerContext


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return []
