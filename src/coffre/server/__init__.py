"""The hosting server: a zero-knowledge, multi-tenant home for pharmacies' off-site backups.

It stores opaque objects and never holds a key: this package never imports `crypto`,
`format`, `repository`, `ops`, `sources` or `agent` (an import-linter contract). What it
can see of a tenant is what any storage sees: object kinds, names (the SHA-256 of the
bytes, except `config`), sizes and times, plus the status records agents choose to post.
Because every object except `config` is named by its SHA-256, the server verifies each
upload against its name before acknowledging it, and never overwrites.

Modules: `settings` (how one instance is configured), `db/` (tenants, tokens, objects,
usage, audit in SQLite or PostgreSQL), `roles` and `tokens` (who may do what),
`objects_api` and `app` (the HTTP protocol, docs/server.md), `quota`, `bin` (recycle bin),
`audit` (hash-chained journal), `metering`, `scrub`, `replication`, `fleet`.
"""
