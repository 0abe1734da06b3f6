"""Databases as backup sources: consistent dumps of live PostgreSQL, MariaDB/MySQL and SQLite
databases, streamed into a snapshot without temporary files, and their way back (restore into
an empty database, or into a throwaway instance for a drill).

Each engine module knows its tools, its connection strings and its checks; `base` holds the
shapes they share and `command` runs the engines' own programs."""
