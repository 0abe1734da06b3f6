"""The variables of the console's tenant pages (tenant_pages.py), one frozen dataclass per
page, besides the common ones (web/contexts.py). Instants are Unix seconds (the templates'
`when`, `recent`, `day` filters), sizes bytes (`size`). Every text here that came from a
tenant or an agent (display name, contact, labels, motives in the journal's detail) is
untrusted: templates only ever show it through autoescape.

Zero knowledge: nothing here could name a file or hold a backup's content — the server has
none. Objects appear only in the recycle bin's listing, by their hash and size."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup


@dataclass(frozen=True)
class TenantHead:
    """What every tenant page shows at its top: who, its state and light, the tabs."""

    name: str            # the short name (validated: a-z, 0-9, '-')
    path: str            # "/tenants/NAME" (segment-quoted), for urls.to(path ~ "/tokens")
    display_name: str    # untrusted
    contact: str         # untrusted
    state: str           # active | read-only | disabled
    state_label: str     # the state in words
    light: str           # green | orange | red (fleet.assess)
    light_word: str      # « OK », « À VÉRIFIER », « EN ÉCHEC »
    tab: str             # the page shown: tenant | usage | tokens | bin | audit


@dataclass(frozen=True)
class RepositoryRow:
    """One repository of the tenant: its live and binned objects."""

    name: str
    created: float
    objects: int
    bytes: int
    binned_objects: int
    binned_bytes: int


@dataclass(frozen=True)
class QuotaView:
    """The quotas and what counts against them (stored + binned)."""

    soft: int | None
    hard: int | None
    stored: int
    binned: int
    used: int
    state: str           # ok | soft | hard (admin.quota_state)
    share: int | None    # used in percent of the hard quota
    soft_text: str       # the soft quota as it can be typed back ("40GiB"; "" for none)
    hard_text: str


@dataclass(frozen=True)
class TenantPage:
    """/tenants/NAME: the tenant, its light and reasons, state, repositories and quota."""

    title: str
    tenant: TenantHead
    reasons: tuple[str, ...]            # why the light is not green, in words
    last_report: float | None           # the last status record of its agents
    created: float
    states: tuple[tuple[str, str], ...]  # (state, label) choices
    repositories: tuple[RepositoryRow, ...]
    quota: QuotaView
    bin_objects: int
    bin_bytes: int
    active_tokens: int


@dataclass(frozen=True)
class MonthRow:
    """One calendar month (UTC) as `coffre server usage` bills it."""

    month: str           # YYYY-MM
    label: str           # « novembre 2026 »
    complete: bool       # False: the month in progress (counted so far)
    gb_month: str        # 6 decimals, as in the CSV
    peak_bytes: int
    end_bytes: int
    binned_gb_month: str
    uploads: int
    uploaded_bytes: int
    downloads: int
    downloaded_bytes: int


@dataclass(frozen=True)
class UsagePage:
    """/tenants/NAME/usage: stored bytes per day (plot), the months, the CSV export."""

    title: str
    tenant: TenantHead
    plot: Markup                 # SVG from plots.py ("" when no day was sampled yet)
    samples: int                 # sampled days plotted
    since: float | None          # the first day plotted
    quota_reached: float | None  # at the trend's pace, when the hard quota is reached
    months: tuple[MonthRow, ...]  # newest first


@dataclass(frozen=True)
class TokenView:
    """A token of the tenant (never its secret: only its public id)."""

    id: str
    role: str
    role_label: str
    label: str           # untrusted
    state: str           # active | revoked | expired
    state_label: str
    created: float
    last_used: float | None
    expires: float | None
    revoked: float | None


@dataclass(frozen=True)
class NewToken:
    """A token just created: its secret shown on this page only, then forgotten."""

    id: str
    role: str
    secret: str


@dataclass(frozen=True)
class TokensPage:
    """/tenants/NAME/tokens: the tokens, creating one, revoking one."""

    title: str
    tenant: TenantHead
    tokens: tuple[TokenView, ...]
    roles: tuple[tuple[str, str], ...]  # (role, what it may) for the creation form
    new_token: NewToken | None


@dataclass(frozen=True)
class BinRepository:
    """A repository's part of the recycle bin."""

    repository: str
    objects: int
    bytes: int
    oldest: float
    newest: float
    purge: float         # when the server purges its oldest object


@dataclass(frozen=True)
class BinObject:
    """One binned object: its kind, hash and size (never anything else: there is nothing)."""

    repository: str
    kind: str
    name: str            # the SHA-256 the client named it by
    size: int
    binned: float
    binned_by: str       # the token id that deleted it
    purge: float


@dataclass(frozen=True)
class BinPage:
    """/tenants/NAME/bin: what is binned, restoring it, purging it (admins)."""

    title: str
    tenant: TenantHead
    recycle_days: int
    held: bool                       # not active: the server does not purge its bin
    repositories: tuple[BinRepository, ...]
    objects: tuple[BinObject, ...]   # the oldest deletions first, at most a page
    more: int                        # binned objects not listed
    total_objects: int
    total_bytes: int
    repository_names: tuple[str, ...]  # every repository of the tenant (the restore form)


@dataclass(frozen=True)
class PurgeConfirmPage:
    """The purge's confirmation step: what would go, for good."""

    title: str
    tenant: TenantHead
    objects: int
    bytes: int
    motive: str          # as typed (untrusted), carried to the confirming form
    older_than: str      # days, as typed ("" for all)


@dataclass(frozen=True)
class AuditRow:
    """One entry of the tenant's audit chain."""

    seq: int
    time: float
    operation: str
    outcome: str
    token_id: str
    client: str          # an address, or console:ACCOUNT@ADDRESS
    kind: str
    count: int
    bytes: int
    detail: str          # JSON (motive, what changed), untrusted


@dataclass(frozen=True)
class Verification:
    """The last on-demand verification of the chain (kept while the console runs)."""

    ran: float
    by: str              # the account that asked
    ok: bool
    entries: int         # entries checked
    head_seq: int
    problems: tuple[str, ...]  # each problem in words (the language of whoever ran it)


@dataclass(frozen=True)
class AuditPage:
    """/tenants/NAME/audit: the latest entries, the chain's verification, the exports."""

    title: str
    tenant: TenantHead
    entries: tuple[AuditRow, ...]   # newest first
    older: int | None               # `before` of the next (older) page
    newest: bool                    # this page starts at the chain's head
    head_seq: int
    first_seq: int                  # the first entry kept (retention)
    verification: Verification | None
    export_from: str                # YYYY-MM-DD (UTC), the export form's defaults
    export_to: str
    months: tuple[str, ...]         # YYYY-MM, newest first: the usage CSV's choices
