"""(to be written: see local/__init__.py)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from coffre.web.local.app import LocalKit


def routes(kit: LocalKit) -> list[BaseRoute]:
    return []
