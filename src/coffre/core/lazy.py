"""Modules loaded at their first use: the `coffre server` actions need SQLAlchemy, botocore and
the server's modules, and the PostgreSQL paths psycopg, which every other `coffre` command
would otherwise pay for at start (about 200 ms and 80 ms) just because the parser knows those
actions."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


def lazy_module(name: str) -> ModuleType:
    """`name`, imported when one of its attributes is first read (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class _Deferred(ModuleType):
    """A stand-in for a module, which imports it when one of its attributes is first read."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def deferred_module(name: str) -> ModuleType:
    """A stand-in for `name` (a submodule too: unlike lazy_module, nothing of its package is
    imported before an attribute is read). Used for psycopg: its 77 modules cost every command
    about 80 ms at start (more on a cold page cache), and only the PostgreSQL paths need it
    (sources/databases/pglib.py)."""
    return sys.modules.get(name) or _Deferred(name)


def deferred_function(module: str, name: str) -> Callable[..., Any]:
    """A function of `module`, imported at its first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    return call
