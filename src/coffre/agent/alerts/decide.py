"""When to tell whom: a pure function of (what is open, what the health rules see now, now).

A new problem gives one notice to the pharmacist. While it lasts, a reminder every
`reminder_every`. Once it has been open `escalate_after` (counted from the pharmacist's first
notice, so they get a chance to act), the IT provider is told once, then reminded at the same
pace. When the problem is gone, a "back to normal" notice goes to whoever was told. Nothing is
said when there is nothing wrong (a first success is silent), and seeing the same problem at
every check changes nothing: a problem is identified by its key (kind:job:target).

A clock that jumps backwards re-anchors the reminder clocks at the new "now": reminders are
delayed, never repeated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from coffre.agent.alerts.channel import ProblemLike

EVENTS = ("problem", "reminder", "escalation", "resolved")
AUDIENCES = ("pharmacist", "provider")


@dataclass(frozen=True)
class OpenProblem:
    """A problem the alerts have told someone about and not yet seen resolved."""

    key: str
    kind: str
    job: str
    target: str
    since: float  # when the problem started (the health rules' view)
    detail: Mapping[str, object]
    opened: float  # when the pharmacist was first told
    last_notice: float  # the pharmacist's last notice (first one or reminder)
    escalated: float | None = None  # when the provider was first told
    provider_last: float | None = None  # the provider's last notice


@dataclass(frozen=True)
class Notice:
    """One message to one audience. `subject` and `text` are filled by the outbox (texts.py)
    before a channel sends it."""

    event: str  # one of EVENTS
    audience: str  # one of AUDIENCES
    key: str
    kind: str
    job: str
    target: str
    since: float
    at: float
    detail: Mapping[str, object] = field(default_factory=dict)
    subject: str = ""
    text: str = ""


def decide(state: Mapping[str, OpenProblem], current: Sequence[ProblemLike], now: float,
           reminder_every: float, escalate_after: float | None
           ) -> tuple[list[Notice], dict[str, OpenProblem]]:
    """The notices to send now and the new open-problem state. `reminder_every` <= 0 means no
    reminders; `escalate_after` None means no provider to escalate to."""
    seen: dict[str, ProblemLike] = {}
    for p in current:
        seen.setdefault(p.key, p)
    notices: list[Notice] = []
    new_state: dict[str, OpenProblem] = {}

    for key in sorted(state):
        if key not in seen:
            old = state[key]
            notices.append(_notice("resolved", "pharmacist", old, now))
            if old.escalated is not None:
                notices.append(_notice("resolved", "provider", old, now))

    for key in sorted(seen):
        p = seen[key]
        old_or_none = state.get(key)
        if old_or_none is None:
            o = OpenProblem(key=key, kind=p.kind, job=p.job, target=p.target, since=p.since,
                            detail=dict(p.detail), opened=now, last_notice=now)
            notices.append(_notice("problem", "pharmacist", o, now))
            new_state[key] = o
            continue
        o = _rewound(replace(old_or_none, since=p.since, detail=dict(p.detail)), now)
        if reminder_every > 0 and now - o.last_notice >= reminder_every:
            notices.append(_notice("reminder", "pharmacist", o, now))
            o = replace(o, last_notice=now)
        if escalate_after is not None:
            if o.escalated is None:
                if now - o.opened >= escalate_after:
                    notices.append(_notice("escalation", "provider", o, now))
                    o = replace(o, escalated=now, provider_last=now)
            elif reminder_every > 0 and now - (o.provider_last or o.escalated) >= reminder_every:
                notices.append(_notice("reminder", "provider", o, now))
                o = replace(o, provider_last=now)
        new_state[key] = o
    return notices, new_state


def _rewound(o: OpenProblem, now: float) -> OpenProblem:
    """The clocks of `o` moved back to `now` if they are in its future (the clock jumped
    backwards): otherwise the next reminder would wait for the old time to come back."""
    def back(t: float | None) -> float | None:
        return None if t is None else min(t, now)

    return replace(o, opened=min(o.opened, now), last_notice=min(o.last_notice, now),
                   escalated=back(o.escalated), provider_last=back(o.provider_last))


def _notice(event: str, audience: str, o: OpenProblem, now: float) -> Notice:
    return Notice(event=event, audience=audience, key=o.key, kind=o.kind, job=o.job, target=o.target,
                  since=o.since, at=now, detail=o.detail)
