"""What every alert channel is: something that sends one notice or raises `DeliveryError`,
saying whether trying again later can help (a server down) or not (a password refused), and
the shape of a problem as the alerts read it (`ProblemLike`, which `health.Problem` fits).
`DeliveryError` lives in `coffre.notify`, the delivery layer the server shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from coffre.notify import DeliveryError

if TYPE_CHECKING:
    from coffre.agent.alerts.decide import Notice


class ProblemLike(Protocol):
    """A problem the health rules found (`coffre.agent.health.Problem` has this shape)."""

    @property
    def kind(self) -> str: ...
    @property
    def job(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def since(self) -> float: ...
    @property
    def detail(self) -> Mapping[str, object]: ...
    @property
    def key(self) -> str: ...


class Channel(Protocol):
    """One way of telling people. `name` is stable across restarts and holds no secret (it is
    stored with each delivery attempt)."""

    @property
    def name(self) -> str: ...

    def wants(self, notice: Notice) -> bool:
        """Whether this channel delivers this notice (an e-mail channel without a provider
        address does not take the provider's notices)."""
        ...

    def send(self, notice: Notice) -> None:
        """Deliver it, or raise DeliveryError."""
        ...


__all__ = ["Channel", "DeliveryError", "ProblemLike"]
