"""Retention: which snapshots a keep policy (and an optional size budget) keeps.

Pure: no I/O and no clock reads. "Now" is a parameter, the time zone used to cut
hours, days, weeks, months and years is a parameter, and the repository size of a
candidate kept set comes from a callable the caller provides.

The rules follow restic's ``forget``: snapshots are grouped by host and path set,
each group is handled on its own, and a snapshot is kept when any rule keeps it.

Time is anchored on the snapshots, not on the clock: ``keep_within`` counts back from the
newest snapshot of the group, so a policy keeps the same snapshots however long backups
have been failing. Two kinds of snapshot are *pinned*, kept whatever the rules and the size
budget say (only removing them by id does): the newest snapshot of each group, and the
snapshots dated in the future (``timeline``), which the rules neither count nor anchor on.
"Now" only serves to tell which snapshots are dated in the future: a clock that is behind
pins more of them, and never makes a rule remove what the right clock would keep.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any

from coffre.core.human import human_size
from coffre.core.i18n import N_, _
from coffre.core.sizes import parse_size as parse_size
from coffre.policy.timeline import is_future

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR



class Reason(str):
    """Why a snapshot is kept or removed. Its value is the English text (what `--json` and
    the tests read, stable whatever the reader's language); `text()` says it to the reader:
    translated, with sizes in human units. `display` is a msgid whose placeholders `params`
    fill; the params named in `sizes` are byte counts."""

    display: str
    params: dict[str, Any]
    sizes: tuple[str, ...]

    def __new__(cls, english: str, display: str | None = None, sizes: tuple[str, ...] = (),
                **params: Any) -> Reason:
        reason = super().__new__(cls, english)
        reason.display = english if display is None else display
        reason.params, reason.sizes = params, sizes
        return reason

    def text(self) -> str:
        values = {k: human_size(v) if k in self.sizes else v for k, v in self.params.items()}
        return _(self.display).format(**values)


def reason_text(reason: str) -> str:
    """A decision's reason as the reader reads it (see Reason); other text as it is."""
    return reason.text() if isinstance(reason, Reason) else reason


REASON_LAST = Reason(N_("last snapshot"))
REASON_NONE = Reason(N_("no rule keeps it"))
REASON_NO_RULE = Reason(N_("no keep rule: kept until the size budget"))
REASON_NEWEST = Reason(N_("newest of its host and paths (no policy removes it)"))
REASON_FUTURE = Reason(N_("dated in the future (no policy removes it)"))
# The bucket rules' reasons, e.g. "daily 2026-11-28".
_BUCKET_REASONS = {
    "hourly": N_("hourly {period}"),
    "daily": N_("daily {period}"),
    "weekly": N_("weekly {period}"),
    "monthly": N_("monthly {period}"),
    "yearly": N_("yearly {period}"),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SnapInfo:
    """What retention needs to know about one snapshot."""

    id: str
    time_ns: int
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass
class Policy:
    """Keep rules; a snapshot is kept when at least one rule keeps it."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within_ns: int = 0
    keep_tags: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """The numeric rules by name (the bucket rules and keep_last)."""
        return {
            "keep_last": self.keep_last,
            "keep_hourly": self.keep_hourly,
            "keep_daily": self.keep_daily,
            "keep_weekly": self.keep_weekly,
            "keep_monthly": self.keep_monthly,
            "keep_yearly": self.keep_yearly,
            "keep_within_ns": self.keep_within_ns,
        }

    def empty(self) -> bool:
        """True when no rule is given (everything zero, no tags)."""
        return all(v == 0 for v in self.counts().values()) and not self.keep_tags

    def validate(self) -> None:
        """Raise ValueError on negative counts or a bare string given as keep_tags."""
        for name, value in self.counts().items():
            if value < 0:
                raise ValueError(_("{name} must not be negative (got {value})").format(
                    name=name, value=value))
        if isinstance(self.keep_tags, str):
            raise ValueError("keep_tags must be a tuple of tags, not a single string")  # a programming error


@dataclass
class Decision:
    """The verdict for one snapshot and every reason behind it. A pinned snapshot (the
    newest of its group, or one dated in the future) is kept by every policy."""

    snapshot: SnapInfo
    keep: bool
    reasons: list[str] = field(default_factory=list)
    pinned: bool = False


# --------------------------------------------------------------------- durations

_DURATION_UNITS: dict[str, int] = {
    "y": 365 * NS_PER_DAY,
    "m": 30 * NS_PER_DAY,
    "w": 7 * NS_PER_DAY,
    "d": NS_PER_DAY,
    "h": NS_PER_HOUR,
    "min": NS_PER_MINUTE,
}
_DURATION_TOKEN = re.compile(r"(\d+)(min|y|m|w|d|h)")
_DURATION_HELP = N_("use a number and a unit: y (365 days), m (30 days), w, d, h, min — e.g. 7d, 1y6m")


def parse_duration(text: str) -> int:
    """Parse a duration such as ``7d``, ``2w``, ``1y6m`` or ``36h`` into nanoseconds.

    Units (restic-compatible; ``m`` is a month, not a minute):

    * ``y``   — year, 365 days
    * ``m``   — month, 30 days
    * ``w``   — week, 7 days
    * ``d``   — day, 24 hours
    * ``h``   — hour
    * ``min`` — minute

    Units may be combined (``1y6m``, ``2d12h``), each at most once. Whitespace around
    the text is ignored; the units are case-insensitive. The result must be greater
    than zero. Raises ValueError with an explanation on anything else.
    """
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError(_("empty duration; {help}").format(help=_(_DURATION_HELP)))
    total = 0
    seen: set[str] = set()
    position = 0
    for match in _DURATION_TOKEN.finditer(cleaned):
        if match.start() != position:
            break
        number, unit = match.groups()
        if unit in seen:
            raise ValueError(_("duration {text} gives the unit {unit} twice").format(
                text=repr(text), unit=repr(unit)))
        seen.add(unit)
        total += int(number) * _DURATION_UNITS[unit]
        position = match.end()
    if position != len(cleaned):
        raise ValueError(_("cannot read duration {text}; {help}").format(
            text=repr(text), help=_(_DURATION_HELP)))
    if total <= 0:
        raise ValueError(_("duration {text} is zero; it must be greater than zero").format(text=repr(text)))
    return total


def format_duration(ns: int) -> str:
    """Render nanoseconds in parse_duration's units (weeks shown as days), e.g. ``1y6m``."""
    if ns <= 0:
        return "0s"
    parts: list[str] = []
    rest = ns
    for unit in ("y", "m", "d", "h", "min"):
        count, rest = divmod(rest, _DURATION_UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if rest:
        seconds = Fraction(rest, NS_PER_SECOND)
        parts.append(f"{seconds.numerator}s" if seconds.denominator == 1 else f"{rest}ns")
    return "".join(parts)


# ------------------------------------------------------------------------- sizes

# One grammar for every size a person types: parse_size is coffre.core.sizes's (imported
# above, and exported from here); a unit is required.


# ----------------------------------------------------------------------- buckets

BucketFn = Callable[[datetime], str]


def _local_time(time_ns: int, tz: tzinfo | None) -> datetime:
    """The snapshot time in ``tz`` (the system local zone when None), exact to the µs."""
    utc = _EPOCH + timedelta(microseconds=time_ns // 1000)
    return utc.astimezone(tz)


def _iso_week(moment: datetime) -> str:
    year, week, _day = moment.isocalendar()
    return f"{year}-W{week:02d}"


# (rule name, Policy attribute, bucket label of a local time), in reporting order.
_BUCKET_RULES: tuple[tuple[str, str, BucketFn], ...] = (
    ("hourly", "keep_hourly", lambda t: t.strftime("%Y-%m-%d %H:00")),
    ("daily", "keep_daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", "keep_weekly", _iso_week),
    ("monthly", "keep_monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", "keep_yearly", lambda t: f"{t.year:04d}"),
)


# -------------------------------------------------------------------- the policy

GroupKey = tuple[str, tuple[str, ...]]


def _group_key(snap: SnapInfo) -> GroupKey:
    """Host and path set; path order does not matter."""
    return (snap.hostname, tuple(sorted(snap.paths)))


def _groups(snaps: list[SnapInfo]) -> list[list[int]]:
    """Indexes into ``snaps`` per (host, path set) group, each newest first."""
    groups: dict[GroupKey, list[int]] = {}
    for index, snap in enumerate(snaps):
        groups.setdefault(_group_key(snap), []).append(index)
    return [
        sorted(members, key=lambda i: (snaps[i].time_ns, snaps[i].id), reverse=True)
        for members in groups.values()
    ]


def _last_reasons(group: list[SnapInfo], count: int) -> dict[int, list[str]]:
    return {i: [REASON_LAST] for i in range(min(count, len(group)))}


def _bucket_reasons(
    group: list[SnapInfo], name: str, count: int, label: BucketFn, tz: tzinfo | None
) -> dict[int, list[str]]:
    """Keep the newest snapshot of each distinct bucket until ``count`` buckets are used."""
    reasons: dict[int, list[str]] = {}
    used: set[str] = set()
    for index, snap in enumerate(group):
        if len(used) >= count:
            break
        bucket = label(_local_time(snap.time_ns, tz))
        if bucket not in used:
            used.add(bucket)
            reasons[index] = [Reason(f"{name} {bucket}", _BUCKET_REASONS[name], period=bucket)]
    return reasons


def _within_reasons(group: list[SnapInfo], within_ns: int) -> dict[int, list[str]]:
    """Counted back from the group's newest snapshot (restic's anchor), not from now: after
    weeks without a backup, the window still holds the last ones."""
    if not group:
        return {}
    cutoff = group[0].time_ns - within_ns
    duration = format_duration(within_ns)
    reason = Reason(f"within {duration} of the newest", N_("within {duration} of the newest"),
                    duration=duration)
    return {i: [reason] for i, snap in enumerate(group) if snap.time_ns >= cutoff}


def _tag_reasons(group: list[SnapInfo], keep_tags: tuple[str, ...]) -> dict[int, list[str]]:
    reasons: dict[int, list[str]] = {}
    for index, snap in enumerate(group):
        matched = [tag for tag in keep_tags if tag in snap.tags]
        if matched:
            tags = ", ".join(matched)
            reasons[index] = [Reason(f"tagged {tags}", N_("tagged {tags}"), tags=tags)]
    return reasons


def _rule_results(
    group: list[SnapInfo], policy: Policy, tz: tzinfo | None
) -> list[dict[int, list[str]]]:
    """Each active rule's reasons, keyed by position in the newest-first group."""
    results: list[dict[int, list[str]]] = []
    if policy.keep_last:
        results.append(_last_reasons(group, policy.keep_last))
    for name, attribute, label in _BUCKET_RULES:
        count: int = getattr(policy, attribute)
        if count:
            results.append(_bucket_reasons(group, name, count, label, tz))
    if policy.keep_within_ns:
        results.append(_within_reasons(group, policy.keep_within_ns))
    if policy.keep_tags:
        results.append(_tag_reasons(group, policy.keep_tags))
    return results


def _decide_group(
    group: list[SnapInfo], policy: Policy | None, now_ns: int, tz: tzinfo | None
) -> list[Decision]:
    """Decisions for one newest-first group, in the group's order. The rules see only the
    snapshots not dated in the future; no policy (None) keeps them all for the size budget."""
    real = [snap for snap in group if not is_future(snap.time_ns, now_ns)]
    merged: dict[int, list[str]] = {}
    for result in _rule_results(real, policy, tz) if policy is not None else []:
        for index, reasons in result.items():
            merged.setdefault(index, []).extend(reasons)
    decisions = [Decision(snap, True, [REASON_FUTURE], pinned=True)
                 for snap in group[: len(group) - len(real)]]
    for index, snap in enumerate(real):
        if index == 0:
            decisions.append(Decision(snap, True, merged.get(0, [REASON_NEWEST]), pinned=True))
        elif policy is None:
            decisions.append(Decision(snap, True, [REASON_NO_RULE]))
        else:
            decisions.append(Decision(snap, index in merged, merged.get(index, [REASON_NONE])))
    return decisions


def apply_policy(
    snaps: list[SnapInfo],
    policy: Policy,
    now_ns: int,
    tz: tzinfo | None = None,
    *,
    allow_empty: bool = False,
) -> list[Decision]:
    """Decide, for every snapshot, whether the policy keeps it and why.

    Snapshots are grouped by (hostname, path set) and each group is handled on its
    own, newest first. Snapshots dated more than the tolerance after ``now_ns`` are
    kept and pinned, and the rules neither count them nor anchor on them; the newest of
    the others is kept and pinned too. Hour/day/ISO-week/month/year buckets are cut in
    ``tz`` (the system local zone when None). The result is in the order of ``snaps``.

    An empty policy raises ValueError("no keep rule given") so that nobody deletes
    everything by accident — unless ``allow_empty`` is set (for use with a size
    budget), in which case every snapshot is kept.
    """
    policy.validate()
    if policy.empty() and not allow_empty:
        raise ValueError(_("no keep rule given"))
    rules = None if policy.empty() else policy
    decided: dict[int, Decision] = {}
    for indexes in _groups(snaps):
        group = [snaps[i] for i in indexes]
        decided.update(zip(indexes, _decide_group(group, rules, now_ns, tz), strict=True))
    return [decided[i] for i in range(len(snaps))]


# ------------------------------------------------------------------- size budget


def _copy(decision: Decision) -> Decision:
    return Decision(decision.snapshot, decision.keep, list(decision.reasons), decision.pinned)


def _kept_ids(decisions: list[Decision]) -> list[str]:
    return [d.snapshot.id for d in decisions if d.keep]


def apply_size_budget(
    decisions: list[Decision], sizes: Callable[[list[str]], int], budget: int
) -> list[Decision]:
    """Drop the oldest kept snapshots (across all groups) until the repository fits.

    ``sizes(kept_ids)`` gives the repository size if only those snapshots were kept.
    While that exceeds ``budget``, the oldest kept snapshot that is not pinned is marked
    keep=False with the reason "over the size budget (repository would be N bytes, budget
    M)". Pinned snapshots (the newest of each host and path set, those dated in the future)
    are never removed: if the repository still exceeds the budget, each of them says so.
    Snapshots dated in the future stay out of the removal order altogether: if our clock
    is behind, they are the most recent backups, and removing them oldest first would
    delete real backups because of a wrong clock. Snapshots the keep rules removed stay
    removed. Returns new Decision objects in the input order; the input is not modified.
    """
    if budget <= 0:
        raise ValueError(f"the size budget must be greater than zero (got {budget})")
    result = [_copy(d) for d in decisions]
    oldest_first = sorted(
        (d for d in result if d.keep and not d.pinned),
        key=lambda d: (d.snapshot.time_ns, d.snapshot.id),
    )
    size = sizes(_kept_ids(result))
    for candidate in oldest_first:
        if size <= budget:
            return result
        candidate.keep = False
        candidate.reasons = [Reason(
            f"over the size budget (repository would be {size} bytes, budget {budget})",
            N_("over the size budget (repository would be {size}, budget {budget})"),
            sizes=("size", "budget"), size=size, budget=budget)]
        size = sizes(_kept_ids(result))
    if size > budget:
        for decision in result:
            if decision.pinned and decision.keep:
                if not {REASON_NEWEST, REASON_FUTURE} & set(decision.reasons):
                    decision.reasons.append(REASON_NEWEST)
                decision.reasons.append(Reason(
                    f"kept over the size budget (repository {size} bytes, budget {budget})",
                    N_("kept over the size budget (repository {size}, budget {budget})"),
                    sizes=("size", "budget"), size=size, budget=budget))
    return result
