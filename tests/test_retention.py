"""Tests for coffre.policy.retention: keep rules, parsing, and the size budget."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
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
from coffre.policy.timeline import choose_latest, future_warning, is_future

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


def removed(decisions: list[Decision]) -> set[str]:
    return {d.snapshot.id for d in decisions if not d.keep}


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
    decisions = run([snap("nyd", ns(2027, 1, 1, 12))], Policy(keep_weekly=1), now=ns(2027, 1, 2))
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


def test_keep_within_counts_back_from_the_newest_snapshot_not_from_now() -> None:
    week = 7 * NS_PER_DAY
    newest = NOW - 3 * NS_PER_DAY
    snaps = [
        snap("newest", newest),
        snap("boundary", newest - week),
        snap("stale", newest - week - 1),
    ]
    decisions = run(snaps, Policy(keep_within_ns=week))
    assert kept(decisions) == {"newest", "boundary"}
    assert by_id(decisions)["newest"].reasons == ["within 7d of the newest"]
    assert by_id(decisions)["stale"].reasons == ["no rule keeps it"]


def test_keep_within_after_35_days_without_a_backup_keeps_the_last_ones() -> None:
    # Issue 11, item 6: counted from now, a 30-day window after 35 days of failed backups
    # held nothing, and every snapshot was deleted.
    last = NOW - 35 * NS_PER_DAY
    snaps = [snap(f"d{i}", last - i * NS_PER_DAY) for i in range(40)]
    decisions = run(snaps, Policy(keep_within_ns=30 * NS_PER_DAY))
    assert kept(decisions) == {f"d{i}" for i in range(31)}
    assert by_id(decisions)["d0"].keep


def test_keep_within_anchors_on_each_groups_own_newest() -> None:
    snaps = [
        snap("a-new", NOW - NS_PER_DAY, host="a"),
        snap("a-old", NOW - 10 * NS_PER_DAY, host="a"),
        snap("b-new", NOW - 100 * NS_PER_DAY, host="b"),
        snap("b-old", NOW - 105 * NS_PER_DAY, host="b"),
        snap("b-older", NOW - 120 * NS_PER_DAY, host="b"),
    ]
    decisions = run(snaps, Policy(keep_within_ns=7 * NS_PER_DAY))
    assert kept(decisions) == {"a-new", "b-new", "b-old"}


def test_keep_tags_keeps_any_snapshot_with_a_listed_tag() -> None:
    snaps = [
        snap("newest", ns(2026, 11, 29)),
        snap("audit", ns(2020, 1, 1), tags=("audit", "manual")),
        snap("legal", ns(2019, 1, 1), tags=("legal",)),
        snap("plain", ns(2018, 1, 1), tags=("other",)),
    ]
    decisions = run(snaps, Policy(keep_tags=("audit", "legal")))
    assert kept(decisions) == {"newest", "audit", "legal"}
    assert by_id(decisions)["audit"].reasons == ["tagged audit"]
    assert not by_id(decisions)["plain"].keep


def test_no_rule_removes_the_newest_of_a_host_and_path_set() -> None:
    snaps = [
        snap("a-new", ns(2026, 11, 29), host="a"),
        snap("a-old", ns(2026, 11, 28), host="a"),
        snap("a-etc", ns(2026, 10, 1), host="a", paths=("/etc",)),
        snap("b", ns(2025, 1, 1), host="b"),
    ]
    decisions = run(snaps, Policy(keep_tags=("nothing-has-it",)))
    assert kept(decisions) == {"a-new", "a-etc", "b"}
    for sid in ("a-new", "a-etc", "b"):
        assert by_id(decisions)[sid].reasons == ["newest of its host and paths (no policy removes it)"]
        assert by_id(decisions)[sid].pinned
    assert by_id(decisions)["a-old"].reasons == ["no rule keeps it"]
    # A rule that keeps it anyway gives its own reason.
    assert by_id(run(snaps, Policy(keep_last=1)))["a-new"].reasons == ["last snapshot"]


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
        "within 7d of the newest",
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
    assert by_id(decisions)["a"].reasons == ["newest of its host and paths (no policy removes it)"]
    assert by_id(decisions)["b"].reasons == ["no keep rule: kept until the size budget"]


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
        ("", "not a size"),
        ("MiB", "not a size"),
        ("-1G", "not a size"),
        ("1,5G", "not a size"),
        ("12XB", "unknown unit"),
        ("1PB", "unknown unit"),
        ("1 2", "not a size"),
        ("10000", "10000 what"),
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
    assert by_id(result)["newest"].reasons == [
        "newest of its host and paths (no policy removes it)",
        "kept over the size budget (repository 500 bytes, budget 100)",
    ]
    assert not by_id(result)["old"].keep


def test_size_budget_never_removes_the_newest_of_any_host_and_path_set() -> None:
    snaps = [
        snap("a-new", ns(2026, 11, 29), host="a"),
        snap("a-old", ns(2026, 11, 20), host="a"),
        snap("b-only", ns(2026, 1, 1), host="b"),
    ]
    decisions = run(snaps, Policy(keep_last=2))
    result = apply_size_budget(decisions, sizes_from({"a-new": 10, "a-old": 10, "b-only": 10}), 1)
    assert kept(result) == {"a-new", "b-only"}
    assert by_id(result)["a-new"].reasons == [
        "last snapshot",
        "newest of its host and paths (no policy removes it)",
        "kept over the size budget (repository 20 bytes, budget 1)",
    ]


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
AFTER_ALL = ns(2030, 1, 2)  # a clock after every generated snapshot


@settings(max_examples=200)
@given(snaps_strategy, st.integers(min_value=1, max_value=6))
def test_property_keep_last_keeps_the_n_newest_of_each_group(snaps: list[SnapInfo], n: int) -> None:
    decisions = run(snaps, Policy(keep_last=n), now=AFTER_ALL)
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
    decisions = run(snaps, Policy(keep_daily=n), now=AFTER_ALL)
    per_group: dict[tuple[str, tuple[str, ...]], list[SnapInfo]] = {}
    for d in decisions:
        if d.keep:
            s = d.snapshot
            per_group.setdefault((s.hostname, tuple(sorted(s.paths))), []).append(s)
    for members in per_group.values():
        days = [datetime.fromtimestamp(s.time_ns // 10**9, tz=UTC).date() for s in members]
        assert len(days) == len(set(days)) <= n


def group_of(s: SnapInfo) -> tuple[str, tuple[str, ...]]:
    return s.hostname, tuple(sorted(s.paths))


@settings(max_examples=200)
@given(
    st.lists(snap_strategy, min_size=1, max_size=20, unique_by=lambda s: s.id),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=20, max_size=20),
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=ns(2000, 1, 1), max_value=ns(2031, 1, 1)),
)
def test_property_size_budget_never_drops_a_pinned_snapshot(
    snaps: list[SnapInfo], weights: list[int], budget: int, now: int
) -> None:
    sizes = sizes_from({s.id: weight for s, weight in zip(snaps, weights, strict=False)})
    decisions = apply_policy(snaps, Policy(), now, tz=UTC, allow_empty=True)
    result = apply_size_budget(decisions, sizes, budget)
    pinned = {d.snapshot.id for d in decisions if d.pinned}
    # Pinned: every snapshot dated in the future, and the newest of the others in each group.
    expected: set[str] = {s.id for s in snaps if is_future(s.time_ns, now)}
    for key in {group_of(s) for s in snaps}:
        real = [s for s in snaps if group_of(s) == key and not is_future(s.time_ns, now)]
        if real:
            expected.add(max(real, key=lambda s: (s.time_ns, s.id)).id)
    assert pinned == expected
    assert pinned <= kept(result)
    kept_ids = [d.snapshot.id for d in result if d.keep]
    # Either the kept set fits, or only the pinned snapshots are left.
    assert sizes(kept_ids) <= budget or set(kept_ids) == pinned
    # Removals are always the oldest: every dropped snapshot is older than every kept one
    # the budget could have removed.
    dropped = [d.snapshot for d in result if not d.keep]
    removable = [d.snapshot for d in result if d.keep and not d.pinned]
    if dropped and removable:
        assert max((s.time_ns, s.id) for s in dropped) < min((s.time_ns, s.id) for s in removable)


# --------------------------------------------------- wrong clocks (issue 11, item 8)

DAY = NS_PER_DAY
AHEAD = NOW + 400 * DAY  # what a machine whose clock is 400 days ahead writes


def test_keep_last_with_a_snapshot_400_days_ahead_keeps_the_real_newest() -> None:
    snaps = [
        snap("old", NOW - 2 * DAY),
        snap("ahead", NOW - DAY + 400 * DAY),  # made yesterday by a clock 400 days ahead
        snap("newest", NOW - NS_PER_HOUR),
    ]
    decisions = run(snaps, Policy(keep_last=1))
    assert kept(decisions) == {"ahead", "newest"}
    assert by_id(decisions)["newest"].reasons == ["last snapshot"]
    assert by_id(decisions)["ahead"].reasons == ["dated in the future (no policy removes it)"]
    assert by_id(decisions)["old"].reasons == ["no rule keeps it"]


def test_snapshots_dated_in_the_future_are_neither_counted_nor_anchored_on() -> None:
    snaps = [snap(f"d{i}", NOW - i * DAY) for i in range(10)]
    snaps += [snap("f1", AHEAD), snap("f2", AHEAD + DAY)]
    daily = run(snaps, Policy(keep_daily=3))
    assert kept(daily) == {"d0", "d1", "d2", "f1", "f2"}
    within = run(snaps, Policy(keep_within_ns=2 * DAY))
    assert kept(within) == {"d0", "d1", "d2", "f1", "f2"}
    monthly = run(snaps, Policy(keep_monthly=1))
    assert kept(monthly) == {"d0", "f1", "f2"}


def test_the_future_starts_one_hour_after_now() -> None:
    snaps = [snap("old", NOW - DAY), snap("soon", NOW + 59 * NS_PER_MINUTE)]
    assert kept(run(snaps, Policy(keep_last=1))) == {"soon"}  # a clock a little ahead: real
    snaps = [snap("old", NOW - DAY), snap("later", NOW + NS_PER_HOUR + 1)]
    assert kept(run(snaps, Policy(keep_last=1))) == {"old", "later"}


def test_size_budget_never_removes_the_newest_real_nor_the_future_dated() -> None:
    snaps = [
        snap("old", NOW - 20 * DAY),
        snap("mid", NOW - 10 * DAY),
        snap("ahead", AHEAD),
        snap("newest", NOW - DAY),
    ]
    sizes = sizes_from({"old": 100, "mid": 100, "ahead": 300, "newest": 100})
    result = apply_size_budget(all_kept(snaps), sizes, budget=250)
    assert kept(result) == {"ahead", "newest"}
    assert by_id(result)["ahead"].reasons == [
        "dated in the future (no policy removes it)",
        "kept over the size budget (repository 400 bytes, budget 250)",
    ]
    assert by_id(result)["newest"].reasons == [
        "newest of its host and paths (no policy removes it)",
        "kept over the size budget (repository 400 bytes, budget 250)",
    ]


def test_a_clock_behind_removes_nothing_real() -> None:
    # Snapshots made over the last 60 days; this computer's clock then says a year ago.
    snaps = [snap(f"d{i}", NOW - i * DAY) for i in range(60)]
    behind = NOW - 365 * DAY
    for policy in (Policy(keep_last=1), Policy(keep_daily=3), Policy(keep_within_ns=DAY),
                   Policy(keep_tags=("x",))):
        decisions = run(snaps, policy, now=behind)
        assert kept(decisions) == {s.id for s in snaps}, policy
        assert all(d.reasons == ["dated in the future (no policy removes it)"] for d in decisions)
    budget = apply_size_budget(all_kept_at(snaps, behind), sizes_from(dict.fromkeys(
        (s.id for s in snaps), 10)), budget=10)
    assert kept(budget) == {s.id for s in snaps}


def test_a_clock_behind_with_backups_made_meanwhile_keeps_the_true_history() -> None:
    # The clock went 400 days back two days ago; backups went on, dated 400 days ago.
    history = [snap(f"h{i}", NOW - (2 + i) * DAY) for i in range(10)]
    meanwhile = [snap(f"m{i}", NOW - 400 * DAY - i * DAY) for i in range(2)]
    decisions = run(history + meanwhile, Policy(keep_last=1), now=NOW - 400 * DAY)
    assert kept(decisions) == {s.id for s in history} | {"m0"}


def all_kept_at(snaps: list[SnapInfo], now: int) -> list[Decision]:
    return apply_policy(snaps, Policy(), now, tz=UTC, allow_empty=True)


policy_strategy = st.builds(
    Policy,
    keep_last=st.integers(min_value=0, max_value=3),
    keep_daily=st.integers(min_value=0, max_value=3),
    keep_monthly=st.integers(min_value=0, max_value=2),
    keep_within_ns=st.sampled_from([0, NS_PER_DAY, 30 * NS_PER_DAY, 365 * NS_PER_DAY]),
    keep_tags=st.just(("x",)),  # never empty, never matched
)
clock_strategy = st.integers(min_value=ns(1999, 1, 1), max_value=ns(2031, 1, 1))


@settings(max_examples=300)
@given(snaps_strategy, policy_strategy, clock_strategy, clock_strategy)
@example([snap("new", NOW), snap("old", NOW - DAY)], Policy(keep_last=1), NOW - 400 * DAY, NOW)
def test_property_a_clock_behind_never_removes_what_the_right_clock_keeps(
    snaps: list[SnapInfo], policy: Policy, a: int, b: int
) -> None:
    behind, right = min(a, b), max(a, b)
    gone = removed(run(snaps, policy, now=behind))
    assert gone <= removed(run(snaps, policy, now=right))
    # And what a clock behind takes for the future is never removed.
    assert not {s.id for s in snaps if is_future(s.time_ns, behind)} & gone


@settings(max_examples=200)
@given(snaps_strategy, policy_strategy, st.integers(min_value=0, max_value=10**18))
@example([snap("a", AFTER_ALL - DAY // 2), snap("b", AFTER_ALL - 2 * DAY)],
         Policy(keep_within_ns=DAY), DAY)
def test_property_a_clock_ahead_changes_nothing(
    snaps: list[SnapInfo], policy: Policy, ahead: int
) -> None:
    # Anchored on the snapshots, the rules give the same answer at any "now" after them.
    assert [(d.keep, d.reasons) for d in run(snaps, policy, now=AFTER_ALL)] == [
        (d.keep, d.reasons) for d in run(snaps, policy, now=AFTER_ALL + ahead)
    ]


@settings(max_examples=200)
@given(snaps_strategy, policy_strategy, clock_strategy)
def test_property_no_policy_removes_the_newest_real_or_a_future_dated_one(
    snaps: list[SnapInfo], policy: Policy, now: int
) -> None:
    decisions = run(snaps, policy, now=now)
    for d in decisions:
        s = d.snapshot
        if is_future(s.time_ns, now):
            assert d.keep and d.pinned
    for key in {group_of(s) for s in snaps}:
        real = [s for s in snaps if group_of(s) == key and not is_future(s.time_ns, now)]
        if real:
            assert by_id(decisions)[max(real, key=lambda s: (s.time_ns, s.id)).id].keep


# -------------------------------------------------------------------- latest


def test_latest_is_the_newest_snapshot_not_dated_in_the_future() -> None:
    snaps = [snap("old", NOW - DAY), snap("ahead", AHEAD), snap("newest", NOW - NS_PER_HOUR),
             snap("soon", NOW + 30 * NS_PER_MINUTE)]
    choice = choose_latest(snaps, NOW)
    assert choice.chosen.id == "soon"  # within the tolerance
    assert [s.id for s in choice.future] == ["ahead"]
    assert not choice.every_future
    text = future_warning(choice.future, NOW, choice.chosen, total=len(snaps))
    assert "ahead" in text and "'latest' is soon" in text and "coffre forget ahead" in text


def test_when_every_snapshot_is_dated_in_the_future_latest_is_the_newest() -> None:
    snaps = [snap("a", AHEAD), snap("b", AHEAD + DAY)]
    choice = choose_latest(snaps, NOW)
    assert choice.chosen.id == "b" and choice.every_future
    text = future_warning(choice.future, NOW, choice.chosen, total=len(snaps))
    assert "clock is probably behind" in text and "'latest' is the newest of them, b" in text
