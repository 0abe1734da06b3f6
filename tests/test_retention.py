"""Tests for coffre.policy.retention: keep rules, parsing, and the size budget."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.policy.retention import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_MINUTE,
    Decision,
    Policy,
    SnapInfo,
    apply_policy,
    apply_size_budget,
    format_duration,
    parse_duration,
    parse_size,
)

HOST = "pharmacie"
PATHS = ("/srv/data",)


def ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """UTC wall time to nanoseconds since the epoch."""
    moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def snap(
    sid: str,
    time_ns: int,
    host: str = HOST,
    paths: tuple[str, ...] = PATHS,
    tags: tuple[str, ...] = (),
) -> SnapInfo:
    return SnapInfo(id=sid, time_ns=time_ns, hostname=host, paths=paths, tags=tags)


def kept(decisions: list[Decision]) -> set[str]:
    return {d.snapshot.id for d in decisions if d.keep}


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.snapshot.id: d for d in decisions}


NOW = ns(2026, 11, 30, 12)


def run(snaps: list[SnapInfo], policy: Policy, now: int = NOW) -> list[Decision]:
    return apply_policy(snaps, policy, now, tz=UTC)


# ------------------------------------------------------------------ keep rules


def test_keep_last_keeps_the_n_newest_whatever_the_input_order() -> None:
    snaps = [snap(f"s{i}", ns(2026, 11, 1 + i)) for i in range(5)]
    shuffled = [snaps[2], snaps[4], snaps[0], snaps[3], snaps[1]]
    decisions = run(shuffled, Policy(keep_last=2))
    assert kept(decisions) == {"s4", "s3"}
    assert by_id(decisions)["s4"].reasons == ["last snapshot"]
    assert by_id(decisions)["s0"].reasons == ["no rule keeps it"]


def test_output_follows_input_order() -> None:
    snaps = [snap("b", ns(2026, 1, 2)), snap("a", ns(2026, 1, 3)), snap("c", ns(2026, 1, 1))]
    decisions = run(snaps, Policy(keep_last=1))
    assert [d.snapshot.id for d in decisions] == ["b", "a", "c"]
    assert [d.keep for d in decisions] == [False, True, False]


def test_keep_hourly_keeps_newest_of_each_hour() -> None:
    snaps = [
        snap("h10a", ns(2026, 11, 28, 10, 5)),
        snap("h10b", ns(2026, 11, 28, 10, 50)),
        snap("h11a", ns(2026, 11, 28, 11, 10)),
        snap("h11b", ns(2026, 11, 28, 11, 40)),
        snap("h09", ns(2026, 11, 28, 9, 0)),
    ]
    decisions = run(snaps, Policy(keep_hourly=2))
    assert kept(decisions) == {"h11b", "h10b"}
    assert by_id(decisions)["h11b"].reasons == ["hourly 2026-11-28 11:00"]


def test_keep_daily_uses_n_distinct_days_newest_first() -> None:
    snaps = [
        snap("d28-morning", ns(2026, 11, 28, 8)),
        snap("d28-evening", ns(2026, 11, 28, 20)),
        snap("d27", ns(2026, 11, 27, 20)),
        snap("d25", ns(2026, 11, 25, 20)),
        snap("d24", ns(2026, 11, 24, 20)),
    ]
    decisions = run(snaps, Policy(keep_daily=3))
    # Gaps do not consume buckets: day 26 has no snapshot, so 25 is the third day.
    assert kept(decisions) == {"d28-evening", "d27", "d25"}
    assert by_id(decisions)["d28-evening"].reasons == ["daily 2026-11-28"]
    assert by_id(decisions)["d28-morning"].reasons == ["no rule keeps it"]


def test_keep_weekly_uses_iso_weeks() -> None:
    # 2026-11-23 is a Monday (ISO week 48); 2026-11-22 is a Sunday (week 47).
    snaps = [
        snap("w48-mon", ns(2026, 11, 23, 9)),
        snap("w48-sat", ns(2026, 11, 28, 9)),
        snap("w47-sun", ns(2026, 11, 22, 23)),
        snap("w47-tue", ns(2026, 11, 17, 9)),
        snap("w46", ns(2026, 11, 10, 9)),
    ]
    decisions = run(snaps, Policy(keep_weekly=2))
    assert kept(decisions) == {"w48-sat", "w47-sun"}
    assert by_id(decisions)["w48-sat"].reasons == ["weekly 2026-W48"]
    assert by_id(decisions)["w47-sun"].reasons == ["weekly 2026-W47"]


def test_keep_weekly_iso_year_differs_from_calendar_year() -> None:
    # 2027-01-01 is a Friday and belongs to ISO week 2026-W53.
    decisions = run([snap("nyd", ns(2027, 1, 1, 12))], Policy(keep_weekly=1))
    assert by_id(decisions)["nyd"].reasons == ["weekly 2026-W53"]


def test_keep_monthly_and_yearly() -> None:
    snaps = [
        snap("2026-11", ns(2026, 11, 2)),
        snap("2026-10-late", ns(2026, 10, 30)),
        snap("2026-10-early", ns(2026, 10, 1)),
        snap("2025-12", ns(2025, 12, 31)),
        snap("2025-01", ns(2025, 1, 1)),
        snap("2024-06", ns(2024, 6, 1)),
    ]
    monthly = run(snaps, Policy(keep_monthly=2))
    assert kept(monthly) == {"2026-11", "2026-10-late"}
    assert by_id(monthly)["2026-10-late"].reasons == ["monthly 2026-10"]

    yearly = run(snaps, Policy(keep_yearly=2))
    assert kept(yearly) == {"2026-11", "2025-12"}
    assert by_id(yearly)["2025-12"].reasons == ["yearly 2025"]


def test_buckets_are_cut_in_the_given_time_zone() -> None:
    # 23:30 and 22:00 UTC on the 28th; in UTC+2 they are 01:30 and 00:00 on the 29th.
    snaps = [snap("late", ns(2026, 11, 28, 23, 30)), snap("earlier", ns(2026, 11, 28, 22))]
    utc = apply_policy(snaps, Policy(keep_daily=1), NOW, tz=UTC)
    plus2 = apply_policy(snaps, Policy(keep_daily=1), NOW, tz=timezone(timedelta(hours=2)))
    assert by_id(utc)["late"].reasons == ["daily 2026-11-28"]
    assert by_id(plus2)["late"].reasons == ["daily 2026-11-29"]
    # Across a day boundary in one zone but not the other, the count changes.
    around = [snap("after", ns(2026, 11, 28, 22, 30)), snap("before", ns(2026, 11, 28, 21, 30))]
    assert kept(apply_policy(around, Policy(keep_daily=2), NOW, tz=UTC)) == {"after"}
    assert kept(
        apply_policy(around, Policy(keep_daily=2), NOW, tz=timezone(timedelta(hours=2)))
    ) == {"after", "before"}


def test_keep_within_keeps_everything_newer_than_now_minus_duration() -> None:
    week = 7 * NS_PER_DAY
    snaps = [
        snap("fresh", NOW - NS_PER_HOUR),
        snap("boundary", NOW - week),
        snap("stale", NOW - week - 1),
    ]
    decisions = run(snaps, Policy(keep_within_ns=week))
    assert kept(decisions) == {"fresh", "boundary"}
    assert by_id(decisions)["fresh"].reasons == ["within 7d"]


def test_keep_tags_keeps_any_snapshot_with_a_listed_tag() -> None:
    snaps = [
        snap("newest", ns(2026, 11, 29)),
        snap("audit", ns(2020, 1, 1), tags=("audit", "manual")),
        snap("legal", ns(2019, 1, 1), tags=("legal",)),
        snap("plain", ns(2018, 1, 1), tags=("other",)),
    ]
    decisions = run(snaps, Policy(keep_tags=("audit", "legal")))
    assert kept(decisions) == {"audit", "legal"}
    assert by_id(decisions)["audit"].reasons == ["tagged audit"]
    assert not by_id(decisions)["newest"].keep


def test_groups_by_host_and_paths_each_handled_separately() -> None:
    snaps = [
        snap("a-new", ns(2026, 11, 29), host="a"),
        snap("a-old", ns(2026, 11, 28), host="a"),
        snap("b-new", ns(2026, 11, 20), host="b"),
        snap("b-old", ns(2026, 11, 19), host="b"),
        snap("a-etc", ns(2026, 11, 10), host="a", paths=("/etc",)),
        snap("a-etc-old", ns(2026, 11, 9), host="a", paths=("/etc",)),
    ]
    decisions = run(snaps, Policy(keep_last=1))
    assert kept(decisions) == {"a-new", "b-new", "a-etc"}


def test_path_order_does_not_split_a_group() -> None:
    snaps = [
        snap("new", ns(2026, 11, 29), paths=("/a", "/b")),
        snap("old", ns(2026, 11, 28), paths=("/b", "/a")),
    ]
    assert kept(run(snaps, Policy(keep_last=1))) == {"new"}


def test_a_snapshot_kept_by_several_rules_lists_every_reason() -> None:
    newest = snap("n", NOW - NS_PER_HOUR, tags=("audit",))
    snaps = [newest, snap("o", ns(2026, 1, 1))]
    policy = Policy(
        keep_last=1,
        keep_daily=1,
        keep_weekly=1,
        keep_monthly=1,
        keep_yearly=1,
        keep_within_ns=7 * NS_PER_DAY,
        keep_tags=("audit",),
    )
    decision = by_id(run(snaps, policy))["n"]
    assert decision.keep
    assert decision.reasons == [
        "last snapshot",
        "daily 2026-11-30",
        "weekly 2026-W49",
        "monthly 2026-11",
        "yearly 2026",
        "within 7d",
        "tagged audit",
    ]


def test_rules_combine_as_a_union() -> None:
    snaps = [
        snap("today", ns(2026, 11, 30, 10)),
        snap("today-early", ns(2026, 11, 30, 1)),
        snap("lastmonth", ns(2026, 10, 5)),
        snap("old-tagged", ns(2020, 5, 5), tags=("keep",)),
        snap("old", ns(2020, 5, 4)),
    ]
    decisions = run(snaps, Policy(keep_last=1, keep_monthly=2, keep_tags=("keep",)))
    assert kept(decisions) == {"today", "lastmonth", "old-tagged"}


def test_empty_policy_raises() -> None:
    with pytest.raises(ValueError, match="no keep rule given"):
        run([snap("a", ns(2026, 1, 1))], Policy())
    assert Policy().empty()
    assert not Policy(keep_tags=("x",)).empty()
    assert not Policy(keep_within_ns=1).empty()


def test_empty_policy_allowed_keeps_everything_for_the_budget() -> None:
    snaps = [snap("a", ns(2026, 1, 1)), snap("b", ns(2025, 1, 1))]
    decisions = apply_policy(snaps, Policy(), NOW, tz=UTC, allow_empty=True)
    assert kept(decisions) == {"a", "b"}
    assert all(d.reasons == ["no keep rule: kept until the size budget"] for d in decisions)


def test_negative_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="keep_daily must not be negative"):
        run([snap("a", ns(2026, 1, 1))], Policy(keep_daily=-1))


def test_default_time_zone_is_system_local() -> None:
    # Without tz the call must still work (system local zone) and keep one per day.
    snaps = [snap("a", ns(2026, 6, 1, 12)), snap("b", ns(2026, 5, 1, 12))]
    assert kept(apply_policy(snaps, Policy(keep_daily=1), NOW)) == {"a"}


# --------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 7 * NS_PER_DAY),
        ("2w", 14 * NS_PER_DAY),
        ("1y6m", (365 + 180) * NS_PER_DAY),
        ("36h", 36 * NS_PER_HOUR),
        ("30min", 30 * NS_PER_MINUTE),
        ("1m", 30 * NS_PER_DAY),
        ("2d12h", 60 * NS_PER_HOUR),
        (" 1Y ", 365 * NS_PER_DAY),
    ],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("7", "cannot read duration"),
        ("d", "cannot read duration"),
        ("7x", "cannot read duration"),
        ("-7d", "cannot read duration"),
        ("1.5d", "cannot read duration"),
        ("7d junk", "cannot read duration"),
        ("1d1d", "twice"),
        ("0d", "greater than zero"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(7 * NS_PER_DAY) == "7d"
    assert format_duration(parse_duration("1y6m")) == "1y6m"
    assert format_duration(parse_duration("2d12h30min")) == "2d12h30min"
    assert format_duration(90 * 1_000_000_000) == "1min30s"


@given(st.integers(min_value=1, max_value=10**6))
def test_format_then_parse_round_trips_whole_minutes(minutes: int) -> None:
    value = minutes * NS_PER_MINUTE
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10000", 10000),
        ("10000B", 10000),
        ("500MiB", 500 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("2gib", 2 * 1024**3),
        ("1.5GB", 1_500_000_000),
        ("1T", 1024**4),
        ("1t", 1024**4),
        ("3K", 3072),
        ("3KB", 3000),
        ("1TB", 10**12),
        ("1TiB", 1024**4),
        ("1.5K", 1536),
        (" 4 MiB ", 4 * 1024**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot read size"),
        ("MiB", "cannot read size"),
        ("-1G", "cannot read size"),
        ("1,5G", "cannot read size"),
        ("12XB", "unknown size unit"),
        ("1PB", "unknown size unit"),
        ("1 2", "cannot read size"),
    ],
)
def test_parse_size_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


# ----------------------------------------------------------------- size budget


def sizes_from(per_snapshot: dict[str, int]) -> Callable[[list[str]], int]:
    """A repository where every snapshot owns its bytes (no sharing)."""

    def sizes(ids: list[str]) -> int:
        return sum(per_snapshot[i] for i in ids)

    return sizes


def all_kept(snaps: list[SnapInfo]) -> list[Decision]:
    return apply_policy(snaps, Policy(), NOW, tz=UTC, allow_empty=True)


def test_size_budget_removes_oldest_first_across_groups() -> None:
    snaps = [
        snap("a3", ns(2026, 11, 29), host="a"),
        snap("b2", ns(2026, 11, 20), host="b"),
        snap("a1", ns(2026, 11, 10), host="a"),
        snap("b0", ns(2026, 11, 1), host="b"),
    ]
    sizes = sizes_from({"a3": 100, "b2": 100, "a1": 100, "b0": 100})
    result = apply_size_budget(all_kept(snaps), sizes, budget=250)
    assert kept(result) == {"a3", "b2"}
    assert by_id(result)["b0"].reasons == [
        "over the size budget (repository would be 400 bytes, budget 250)"
    ]
    assert by_id(result)["a1"].reasons == [
        "over the size budget (repository would be 300 bytes, budget 250)"
    ]
    assert [d.snapshot.id for d in result] == ["a3", "b2", "a1", "b0"]


def test_size_budget_leaves_fitting_repository_alone() -> None:
    snaps = [snap("a", ns(2026, 11, 29)), snap("b", ns(2026, 11, 1))]
    before = all_kept(snaps)
    result = apply_size_budget(before, sizes_from({"a": 10, "b": 10}), budget=20)
    assert kept(result) == {"a", "b"}
    assert [d.reasons for d in result] == [d.reasons for d in before]


def test_size_budget_never_removes_the_newest_even_alone_over_budget() -> None:
    snaps = [snap("old", ns(2026, 1, 1)), snap("newest", ns(2026, 11, 29))]
    result = apply_size_budget(all_kept(snaps), sizes_from({"old": 5, "newest": 500}), budget=100)
    assert kept(result) == {"newest"}
    assert by_id(result)["newest"].reasons[-1] == (
        "newest snapshot (never removed by the size budget)"
    )
    assert not by_id(result)["old"].keep


def test_size_budget_keeps_rule_removals_and_does_not_mutate_input() -> None:
    snaps = [
        snap("new", ns(2026, 11, 29)),
        snap("mid", ns(2026, 11, 20)),
        snap("old", ns(2026, 11, 1)),
    ]
    decisions = run(snaps, Policy(keep_last=2))
    assert kept(decisions) == {"new", "mid"}
    calls: list[list[str]] = []

    def sizes(ids: list[str]) -> int:
        calls.append(sorted(ids))
        return 10 * len(ids)

    result = apply_size_budget(decisions, sizes, budget=10)
    assert kept(result) == {"new"}
    assert by_id(result)["old"].reasons == ["no rule keeps it"]
    assert all("old" not in ids for ids in calls)
    # Input left untouched.
    assert kept(decisions) == {"new", "mid"}
    assert by_id(decisions)["mid"].reasons == ["last snapshot"]


def test_size_budget_uses_real_sizes_with_shared_blobs() -> None:
    # Blobs shared between snapshots: removing one snapshot frees only its own blobs.
    blobs = {"new": {"x", "y"}, "mid": {"x", "y", "z"}, "old": {"w"}}
    blob_size = {"x": 40, "y": 40, "z": 30, "w": 50}

    def sizes(ids: list[str]) -> int:
        used = set().union(*(blobs[i] for i in ids)) if ids else set()
        return sum(blob_size[b] for b in used)

    snaps = [
        snap("new", ns(2026, 11, 29)),
        snap("mid", ns(2026, 11, 20)),
        snap("old", ns(2026, 1, 1)),
    ]
    result = apply_size_budget(all_kept(snaps), sizes, budget=110)
    assert kept(result) == {"new", "mid"}
    assert by_id(result)["old"].reasons == [
        "over the size budget (repository would be 160 bytes, budget 110)"
    ]


@pytest.mark.parametrize("budget", [0, -1])
def test_size_budget_must_be_positive(budget: int) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        apply_size_budget(all_kept([snap("a", ns(2026, 1, 1))]), lambda ids: 1, budget)


# ------------------------------------------------------------------ properties

snap_strategy = st.builds(
    SnapInfo,
    id=st.text(alphabet="0123456789abcdef", min_size=8, max_size=8),
    time_ns=st.integers(min_value=ns(2000, 1, 1), max_value=ns(2030, 1, 1)),
    hostname=st.sampled_from(["a", "b", "c"]),
    paths=st.sampled_from([("/data",), ("/etc",), ("/data", "/etc")]),
    tags=st.just(()),
)
snaps_strategy = st.lists(snap_strategy, max_size=30, unique_by=lambda s: s.id)


@settings(max_examples=200)
@given(snaps_strategy, st.integers(min_value=1, max_value=6))
def test_property_keep_last_keeps_the_n_newest_of_each_group(snaps: list[SnapInfo], n: int) -> None:
    decisions = run(snaps, Policy(keep_last=n))
    groups: dict[tuple[str, tuple[str, ...]], list[SnapInfo]] = {}
    for s in snaps:
        groups.setdefault((s.hostname, tuple(sorted(s.paths))), []).append(s)
    expected: set[str] = set()
    for members in groups.values():
        members.sort(key=lambda s: (s.time_ns, s.id), reverse=True)
        expected |= {s.id for s in members[:n]}
    assert kept(decisions) == expected
    assert [d.snapshot for d in decisions] == snaps


@settings(max_examples=200)
@given(snaps_strategy, st.integers(min_value=1, max_value=4))
def test_property_daily_keeps_one_per_day_and_at_most_n_days(snaps: list[SnapInfo], n: int) -> None:
    decisions = run(snaps, Policy(keep_daily=n))
    per_group: dict[tuple[str, tuple[str, ...]], list[SnapInfo]] = {}
    for d in decisions:
        if d.keep:
            s = d.snapshot
            per_group.setdefault((s.hostname, tuple(sorted(s.paths))), []).append(s)
    for members in per_group.values():
        days = [datetime.fromtimestamp(s.time_ns // 10**9, tz=UTC).date() for s in members]
        assert len(days) == len(set(days)) <= n


@settings(max_examples=200)
@given(
    st.lists(snap_strategy, min_size=1, max_size=20, unique_by=lambda s: s.id),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=20, max_size=20),
    st.integers(min_value=1, max_value=5000),
)
def test_property_size_budget_never_drops_the_newest(
    snaps: list[SnapInfo], weights: list[int], budget: int
) -> None:
    sizes = sizes_from({s.id: weight for s, weight in zip(snaps, weights, strict=False)})
    result = apply_size_budget(all_kept(snaps), sizes, budget)
    newest = max(snaps, key=lambda s: (s.time_ns, s.id))
    assert by_id(result)[newest.id].keep
    kept_ids = [d.snapshot.id for d in result if d.keep]
    # Either the kept set fits, or only the newest is left.
    assert sizes(kept_ids) <= budget or kept_ids == [newest.id]
    # Removals are always the oldest: every dropped snapshot is older than every kept one.
    dropped = [d.snapshot for d in result if not d.keep]
    kept_snaps = [d.snapshot for d in result if d.keep]
    if dropped:
        assert max((s.time_ns, s.id) for s in dropped) < min((s.time_ns, s.id) for s in kept_snaps)
