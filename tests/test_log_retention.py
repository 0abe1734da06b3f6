"""Which log pieces prune may delete (policy/log_retention.py)."""

from __future__ import annotations

from coffre.policy.log_retention import Piece, removable


def piece(name: str, stream: str, start: int, end: int, kind: str = "log", time_ns: int = 0) -> Piece:
    return Piece(name, stream, kind, start, end, time_ns)


def test_from_the_oldest_kept_base_on_everything_stays() -> None:
    pieces = [piece("a", "pg:1", 0, 16), piece("b", "pg:1", 16, 32), piece("c", "pg:1", 32, 48),
              piece("h", "pg:1", 0, 0, "history"), piece("g", "pg:1", 0, 16, "gap")]
    assert {p.object for p in removable(pieces, {"pg:1": 20}, None)} == {"a", "g"}
    assert removable(pieces, {"pg:1": 0}, None) == []
    # A stream no kept base backup names, and that has no base of its own: kept.
    assert removable(pieces, {"pg:2": 40}, 10**18) == []
    # A kept base backup that does not say where it starts keeps its engine's streams.
    assert removable(pieces, {"pg:1": 40}, None, unknown_floor={"pg"}) == []


def test_streams_with_their_own_bases_follow_the_oldest_kept_snapshot() -> None:
    pieces = [piece("b1", "sqlite:x", 0, 0, "base", time_ns=100),
              piece("l1", "sqlite:x", 0, 10, time_ns=150),
              piece("b2", "sqlite:x", 10, 10, "base", time_ns=200),
              piece("l2", "sqlite:x", 10, 20, time_ns=250),
              piece("b3", "sqlite:x", 20, 20, "base", time_ns=300)]
    # The oldest kept snapshot is at 250: base b2 is the newest before it; b1 and l1 go.
    assert {p.object for p in removable(pieces, {}, 250)} == {"b1", "l1"}
    assert removable(pieces, {}, 50) == []  # no base that old: nothing can be judged useless
