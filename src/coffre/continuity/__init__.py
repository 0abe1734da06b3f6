"""Continuity: a database's log captured as it is written, so that a restore can reach any
moment (point-in-time recovery) and a second machine can follow the primary (warm standby).

Terms:
- a **stream** is one log that replays in order: a PostgreSQL cluster (its system
  identifier), a SQLite database's generation, a MariaDB server;
- a **segment** is one stored piece of it (format/segment.py), with its **position**
  ([start, end) in the stream) and the engine's own name for it;
- the **spool** is a bounded local folder where capture leaves pieces for the shipper, so a
  slow or absent repository never blocks the database nor fills its disk;
- a **gap** is a piece known lost (the spool was full): recorded, reported, never skipped.

Guarantees: a piece is acknowledged to the database only once it is durable in the spool;
it leaves the spool only once it is durable in the repository; a restore replays only an
unbroken chain from a base backup, and names the first missing piece otherwise.
"""
