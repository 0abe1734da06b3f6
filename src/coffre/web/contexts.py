"""One documented dataclass per page: the variables its template receives besides the common
ones (`urls`, `lang`, `tz`, `now`, `csrf`, `user`, `role`, `flashes`, `request_path`:
render.Pages). A template reads nothing else (StrictUndefined makes a missing one fail).

The pharmacy page's contexts are in `web/local/contexts.py`, the console's in
`web/hosted/contexts.py`; the shared ones are here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MessagePage:
    """A page that only says something (refused, expired, not found)."""

    title: str
    message: str


@dataclass(frozen=True)
class LoginPage:
    """The login form."""

    title: str  # whose page: « Pharmacie — Coffre », « Console de l'hébergeur »
    fields: tuple[str, ...]  # among "user", "password", "code" (TOTP)
    error: str | None  # why the last attempt was refused
    next: str | None  # the page asked for before the login (a path of this app)
