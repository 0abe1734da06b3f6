"""Snapshots dated in the future: the tolerance, which snapshot is ``latest``, and the warning.

Pure: "now" is a parameter. A snapshot dated more than ``FUTURE_TOLERANCE_NS`` after now is
"from the future": some clock was wrong, either the one of the machine that made it (ahead)
or ours (behind), and nothing here can tell which. So such a snapshot never displaces real
ones silently (``latest`` is the newest snapshot not from the future) and no policy removes
it (see ``retention``); a person removes it by id once told about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from coffre.core.human import human_time
from coffre.core.i18n import _

# More than the few minutes hosts sharing a repository may differ by (docs/design.md §6), and
# than the one- or two-hour offset of a machine that keeps local time in its hardware clock;
# far less than the days, months or years of a dead clock battery or a mistyped date.
FUTURE_TOLERANCE_NS = 3600 * 1_000_000_000

_NAMED = 5  # snapshots named in a warning; the others are counted


class Dated(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def time_ns(self) -> int: ...


T = TypeVar("T", bound=Dated)


def is_future(time_ns: int, now_ns: int) -> bool:
    """True for a time more than the tolerance after ``now_ns``."""
    return time_ns > now_ns + FUTURE_TOLERANCE_NS


def _order(snap: Dated) -> tuple[int, str]:
    return snap.time_ns, snap.id


def future_of(snaps: Sequence[T], now_ns: int) -> list[T]:
    """The snapshots dated in the future, oldest first."""
    return sorted((s for s in snaps if is_future(s.time_ns, now_ns)), key=_order)


@dataclass(frozen=True)
class Latest(Generic[T]):
    """The ``latest`` snapshot, and the snapshots dated in the future it passed over."""

    chosen: T
    future: list[T] = field(default_factory=list)
    every_future: bool = False  # every candidate is: our clock is probably the wrong one


def choose_latest(snaps: Sequence[T], now_ns: int) -> Latest[T]:
    """The newest snapshot not dated in the future; when every one is, the newest of all.
    ``snaps`` must not be empty."""
    if not snaps:
        raise ValueError("no snapshot to choose from")
    future = future_of(snaps, now_ns)
    real = [s for s in snaps if not is_future(s.time_ns, now_ns)]
    return Latest(max(real or snaps, key=_order), future, every_future=not real)


def _describe(snap: Dated) -> str:
    return _("{id} ({time})").format(id=snap.id[:8], time=human_time(snap.time_ns))


def future_warning(future: Sequence[Dated], now_ns: int, latest: Dated | None = None,
                   total: int | None = None) -> str:
    """One warning naming the snapshots dated in the future and saying how to remove one.
    With ``latest``: what 'latest' was taken to be. ``total``: how many snapshots were
    considered (to say when every one is in the future: then our clock is the suspect, and
    removing them is not the advice)."""
    one = len(future) == 1
    clock = human_time(now_ns)
    if one:
        lines = [_("warning: snapshot {id} is dated {time}, more than 1 hour after this computer's clock "
                   "({clock}).").format(id=future[0].id[:8], time=human_time(future[0].time_ns), clock=clock)]
    else:
        named = ", ".join(_describe(s) for s in future[:_NAMED])
        if len(future) > _NAMED:
            named = _("{named} and {n} more").format(named=named, n=len(future) - _NAMED)
        lines = [_("warning: {n} snapshots are dated more than 1 hour after this computer's clock ({clock}): "
                   "{named}.").format(n=len(future), clock=clock, named=named)]
    if total is not None and total == len(future):
        lines.append(_("Every snapshot is: this computer's clock is probably behind; set it right "
                       "before the next backup or forget."))
        if latest is not None:
            lines.append(_("'latest' is the newest of them, {snapshot}.").format(snapshot=_describe(latest)))
        lines.append(_("Keep rules and --max-size remove none of them.") if not one
                     else _("Keep rules and --max-size do not remove it."))
        return "\n  ".join(lines)
    lines.append(_("Either the clock of the computer that made it was ahead, or this one is behind.") if one
                 else _("Either the clock of the computer that made them was ahead, or this one is behind."))
    if latest is not None:
        lines.append(_("'latest' is {snapshot}, the newest snapshot not dated in the future.").format(
            snapshot=_describe(latest)))
    example = future[-1].id[:8]
    if one:
        lines.append(_("Keep rules and --max-size never remove it; if its date is wrong, remove it by id: "
                       "coffre forget {id}").format(id=example))
    else:
        lines.append(_("Keep rules and --max-size never remove them; if a date is wrong, remove that "
                       "snapshot by id: coffre forget ID (e.g. {id})").format(id=example))
    return "\n  ".join(lines)
