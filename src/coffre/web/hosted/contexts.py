"""The console's pages and what each template receives (besides the common variables of
render.Pages). Instants are Unix seconds (float) or None; sizes are bytes. Every text that
came from a tenant or an agent (names, site and job names in reasons) is rendered escaped.

The tenant pages' contexts are in tenant_contexts.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetRow:
    """One tenant on the fleet page."""

    tenant: str                     # its short name
    display_name: str
    url: str                        # its page
    state: str                      # active | read-only | disabled
    light: str                      # red | orange | green | off (disabled)
    light_text: str                 # « EN ÉCHEC », « À VÉRIFIER », « OK »
    reasons: tuple[str, ...]        # why it is not green, in words, worst first
    since: float | None             # when its worst trouble began
    last_good: float | None         # the last report of a backup that succeeded
    last_report: float | None
    overdue_s: float | None         # how long past its next due time (None: not late)
    stored: int                     # live bytes
    binned: int                     # recycle-bin bytes (they count against the quota)
    quota_hard: int | None
    quota_soft: int | None
    quota_share: float | None       # used / hard (or soft) quota, 0..1+ (None: no quota)
    scrub: str                      # ok | damaged (the scrub found objects that do not match)
    scrub_count: int
    replication: str                # ok | differs (the second site differs)
    replication_count: int
    copies: str                     # ok | differs (an agent's copy differs from its primary)


@dataclass(frozen=True)
class FleetAlert:
    """A red reason the provider is (or was) alerted about (table fleet_alerts)."""

    tenant: str
    display_name: str
    url: str
    problem: str                    # failing, late, quota_full, scrub, copies
    problem_text: str               # the problem in words
    since: float
    notified: float | None          # when the provider was told (None: not yet)
    cleared: float | None           # when it went away (None: still there)
    acknowledged_by: str | None     # the console account that acknowledged it
    acknowledged: float | None
    can_acknowledge: bool           # open, not acknowledged, and the reader may act
    ack_url: str                    # POST: acknowledge it


@dataclass(frozen=True)
class FleetPage:
    """`/`: every tenant with its light, sorted by risk; filters and search as GET parameters."""

    title: str
    rows: tuple[FleetRow, ...]      # those the filters keep
    total: int                      # every tenant
    counts: dict[str, int]          # light -> tenants
    light: str                      # the light filter ("" all)
    state: str                      # the state filter ("" all)
    q: str                          # the search ("" none)
    query: str                      # the page's query string (to come back to after an action)
    alerts: tuple[FleetAlert, ...]  # open ones first, then the cleared ones of the last 30 days
    can_act: bool                   # the reader may acknowledge
    last_scrub: float | None        # the end of the server's last complete scrub pass


@dataclass(frozen=True)
class BillingRow:
    """One tenant's month (metering.UsageRow, as `coffre server usage` shows it)."""

    tenant: str
    display_name: str
    state: str
    gb_month: str                   # "3.450000": decimal GB-month, as billed
    peak_stored: int
    stored_end: int
    binned_gb_month: str
    binned_end: int
    uploads: int
    uploaded_bytes: int
    downloads: int
    downloaded_bytes: int
    quota_soft: int | None
    quota_hard: int | None


@dataclass(frozen=True)
class BillingPage:
    """`/billing?month=YYYY-MM`: the month's usage per tenant and its CSV."""

    title: str
    month: str
    month_name: str                 # « novembre 2026 »
    complete: bool                  # False: the month is in progress (counted up to today)
    days_counted: int
    days_in_month: int
    rows: tuple[BillingRow, ...]
    total_gb_month: str
    total_uploaded: int
    total_downloaded: int
    previous: str                   # YYYY-MM
    next: str | None                # None: the month after is in the future
    csv_url: str


@dataclass(frozen=True)
class AccountRow:
    name: str
    role: str
    role_text: str
    created: float
    last_login: float | None
    disabled: float | None
    disable_url: str                # POST: disable (with a motive)
    enable_url: str
    totp_url: str                   # POST: a new TOTP secret
    me: bool                        # the reader's own account (not disabled nor reset here)


@dataclass(frozen=True)
class AccountsPage:
    """`/accounts` (admins): the console's accounts; add one, disable one."""

    title: str
    accounts: tuple[AccountRow, ...]
    roles: tuple[tuple[str, str], ...]   # (role, in words)
    enrolled: str | None            # the account just added or reset: its TOTP shown once
    secret: str | None
    uri: str | None                 # otpauth://totp/... (an app may read it as a link)
