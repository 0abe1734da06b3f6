"""What every `coffre server` action shares: where the server's data lives, opening it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from coffre.core.i18n import _
from coffre.server.settings import DEFAULT_DATA, Settings, data_dir_default


def add_location_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar=_("DIR"), default=argparse.SUPPRESS,
                   help=_("the server's folder: database, objects, certificate (or COFFRE_SERVER_DATA; "
                          "default {path})").format(path=DEFAULT_DATA))
    p.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                   help=_("the metadata database, postgresql://... for several instances (or "
                          "COFFRE_SERVER_DB; default: server.sqlite in the server's folder)"))
    p.add_argument("--objects", metavar=_("LOCATION"), default=argparse.SUPPRESS,
                   help=_("where objects are stored: a folder or s3://HOST/BUCKET/PREFIX (or "
                          "COFFRE_SERVER_OBJECTS; default: objects/ in the server's folder)"))


def settings_from_args(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings from --data/--db/--objects (or their variables) and what the action adds."""
    data = getattr(args, "data", None)
    values: dict[str, object] = {
        "data_dir": Path(data) if data else data_dir_default(),
        "db_url": getattr(args, "db", None) or os.environ.get("COFFRE_SERVER_DB", ""),
        "objects_url": getattr(args, "objects", None) or os.environ.get("COFFRE_SERVER_OBJECTS", ""),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
