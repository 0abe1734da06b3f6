"""(to be written: see hosted/__init__.py)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from coffre.web.hosted.app import ConsoleKit


def routes(kit: ConsoleKit) -> list[BaseRoute]:
    return []
