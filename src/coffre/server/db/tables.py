"""The metadata tables, one definition for SQLite and PostgreSQL (SQLAlchemy Core).

Times are integers, nanoseconds since the epoch by the server's own clock (never a client's).
Sizes are bytes. Every name a client gives is validated before it reaches a table."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row: the schema version this database holds (db/__init__.py refuses a newer one).
schema = Table(
    "schema", metadata,
    Column("version", Integer, nullable=False),
)

# A pharmacy (or any customer of the provider). `state`: active | read-only | disabled.
tenants = Table(
    "tenants", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),      # slug: [a-z0-9][a-z0-9-]*
    Column("display_name", String(200), nullable=False, default=""),
    Column("contact", String(320), nullable=False, default=""),    # provider's note: e-mail, phone
    Column("state", String(16), nullable=False, default="active"),
    Column("quota_soft", BigInteger, nullable=True),               # bytes; NULL = none
    Column("quota_hard", BigInteger, nullable=True),
    Column("stored_bytes", BigInteger, nullable=False, default=0),  # live objects
    Column("binned_bytes", BigInteger, nullable=False, default=0),  # in the recycle bin
    Column("created_ns", BigInteger, nullable=False),
)

# A tenant's repository: the REPO of https://HOST/REPO. Objects live in the object store
# under t<tenant id>/<repository name>/.
repositories = Table(
    "repositories", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(64), nullable=False),                    # [a-z0-9][a-z0-9._-]*
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

# Bearer tokens. The secret is never stored: only SHA-256(secret) (256 random bits need no
# slow hash). `role`: backup | prune | read | admin; admin tokens have no tenant.
tokens = Table(
    "tokens", metadata,
    Column("id", String(32), primary_key=True),                    # public id, shown in lists
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=True),
    Column("role", String(16), nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=True),
    Column("revoked_ns", BigInteger, nullable=True),
    Column("last_used_ns", BigInteger, nullable=True),
)

# Every acknowledged object. The object store may hold more (an upload cut after it was
# stored and before this row was committed): such orphans are invisible to clients and
# reported by the scrub. `binned_ns` set = in the recycle bin (still stored, not listed).
objects = Table(
    "objects", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    Column("token_id", String(32), nullable=False),                # who uploaded it
    Column("binned_ns", BigInteger, nullable=True),
    Column("binned_by", String(32), nullable=True),                # token that deleted it
    UniqueConstraint("repository_id", "kind", "name"),
)
Index("objects_binned", objects.c.binned_ns)

# Room reserved under a tenant's hard quota by uploads in progress (objects_api.py): taken
# before the bytes are stored, so concurrent uploads cannot store more than the quota allows;
# removed when the upload is recorded or refused. A reservation left by a crash expires.
quota_reservations = Table(
    "quota_reservations", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
)
Index("reservations_by_tenant", quota_reservations.c.tenant_id)

# Usage per tenant and day (UTC): what the provider bills from (metering.py).
usage_days = Table(
    "usage_days", metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id"), primary_key=True),
    Column("day", String(10), primary_key=True),                   # YYYY-MM-DD
    Column("stored_bytes", BigInteger, nullable=False, default=0),  # last sample of the day
    Column("binned_bytes", BigInteger, nullable=False, default=0),
    Column("sampled_ns", BigInteger, nullable=False, default=0),
    Column("uploads", BigInteger, nullable=False, default=0),
    Column("uploaded_bytes", BigInteger, nullable=False, default=0),
    Column("downloads", BigInteger, nullable=False, default=0),
    Column("downloaded_bytes", BigInteger, nullable=False, default=0),
)

# The hash-chained audit journal, one chain per tenant (tenant_id 0: the provider's own
# actions that name no tenant). entry_hash = SHA-256(prev_hash + canonical body) (audit.py).
audit_entries = Table(
    "audit_entries", metadata,
    Column("tenant_id", Integer, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("day", String(10), nullable=False),                     # daily segments
    Column("time_ns", BigInteger, nullable=False),
    Column("token_id", String(32), nullable=False, default=""),
    Column("client", String(64), nullable=False, default=""),
    Column("operation", String(32), nullable=False),
    Column("kind", String(16), nullable=False, default=""),
    Column("count", BigInteger, nullable=False, default=1),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),            # motive, names of admin changes
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)
Index("audit_by_day", audit_entries.c.tenant_id, audit_entries.c.day)

# The head of each chain (locked while appending: one writer per tenant at a time, also
# across several server instances on PostgreSQL).
audit_heads = Table(
    "audit_heads", metadata,
    Column("tenant_id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False, default=1),    # after retention trimmed
    Column("first_prev_hash", String(64), nullable=False, default="0" * 64),
)

# Heads copied periodically: a later edit of the chain no longer matches an anchor.
audit_anchors = Table(
    "audit_anchors", metadata,
    Column("tenant_id", Integer, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("entry_hash", String(64), nullable=False),
    Column("anchored_ns", BigInteger, nullable=False),
)

# Objects whose bytes no longer match their name, found by the scrub (scrub.py).
scrub_findings = Table(
    "scrub_findings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Integer, nullable=False),
    Column("repository_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("found_ns", BigInteger, nullable=False),
    Column("problem", String(32), nullable=False),                 # mismatch | missing | unreadable
    Column("resolved_ns", BigInteger, nullable=True),
)

# Small key-value state shared by instances: scrub cursor, replication cursors, last
# metering sample, last anchor (value is text; its owner module parses it).
state = Table(
    "state", metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

# Status records posted by agents (reports_api.py), validated and bounded.
status_reports = Table(
    "status_reports", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("token_id", String(32), nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    Column("site", String(200), nullable=False),                   # the agent's host name
    Column("job", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),                 # ok | warning | failed | running
    Column("started_ns", BigInteger, nullable=True),
    Column("finished_ns", BigInteger, nullable=True),
    Column("next_due_ns", BigInteger, nullable=True),
    Column("body", Text, nullable=False),                          # the validated record, JSON
)
Index("status_by_tenant", status_reports.c.tenant_id, status_reports.c.received_ns)

# The provider's alerts about sites (fleet.py): one row per tenant and problem.
fleet_alerts = Table(
    "fleet_alerts", metadata,
    Column("tenant_id", Integer, primary_key=True),
    Column("problem", String(32), primary_key=True),
    Column("since_ns", BigInteger, nullable=False),
    Column("notified_ns", BigInteger, nullable=True),
    Column("cleared_ns", BigInteger, nullable=True),
)

# Provider accounts of the web console (web/hosted/accounts.py), since schema 2. The password
# is an Argon2id hash; the TOTP secret is kept as given to the authenticator app (base32: the
# server must compute the codes), `totp_last_step` is the 30-second step of the last code
# accepted (a code is never accepted twice). `changed_ns`: the last change of password, TOTP
# or state (sessions opened before it end).
provider_accounts = Table(
    "provider_accounts", metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),                    # viewer | operator | admin
    Column("password_hash", String(255), nullable=False),
    Column("totp_secret", String(64), nullable=False),
    Column("totp_last_step", BigInteger, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    Column("changed_ns", BigInteger, nullable=False),
    Column("disabled_ns", BigInteger, nullable=True),
    Column("last_login_ns", BigInteger, nullable=True),
)

# Who acknowledged a fleet alert, since schema 2 (one row per alert of fleet_alerts; it
# applies while the alert keeps the same `since_ns`: a problem that comes back is new).
fleet_alert_acks = Table(
    "fleet_alert_acks", metadata,
    Column("tenant_id", Integer, primary_key=True),
    Column("problem", String(32), primary_key=True),
    Column("since_ns", BigInteger, nullable=False),
    Column("acknowledged_ns", BigInteger, nullable=False),
    Column("acknowledged_by", String(64), nullable=False),         # the account's name
)
