"""psycopg for the PostgreSQL modules, imported at its first use (core/lazy.py): its 77 modules
cost every `coffre` command about 80 ms at start (more on a cold page cache), and only the
PostgreSQL paths need them. Those modules take psycopg, its `sql` and `pq` modules and the
conninfo functions from here; type checkers see the real ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coffre.core.lazy import deferred_function, deferred_module

if TYPE_CHECKING:
    import psycopg as psycopg
    from psycopg import pq as pq
    from psycopg import sql as sql
    from psycopg.conninfo import conninfo_to_dict as conninfo_to_dict
    from psycopg.conninfo import make_conninfo as make_conninfo
else:
    psycopg = deferred_module("psycopg")
    pq = deferred_module("psycopg.pq")
    sql = deferred_module("psycopg.sql")
    conninfo_to_dict = deferred_function("psycopg.conninfo", "conninfo_to_dict")
    make_conninfo = deferred_function("psycopg.conninfo", "make_conninfo")

__all__ = ["conninfo_to_dict", "make_conninfo", "pq", "psycopg", "sql"]
