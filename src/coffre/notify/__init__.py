"""Telling people, for the agent and the hosting server alike: one e-mail through an SMTP server
(`smtp.py`), one signed JSON POST to a webhook (`webhook.py`), and the text hygiene every
notice goes through (`text.py`: one line, no control characters, no credentials).

What to say, to whom and when is the caller's business (the agent's `agent/alerts/`, the
server's `server/fleet.py`); this package only delivers, or raises `DeliveryError` saying
whether trying again later can help. It sits below `coffre.agent` and `coffre.server` and
imports nothing but `coffre.core`, so the zero-knowledge server may use it."""

from __future__ import annotations


class DeliveryError(Exception):
    """A notice could not be delivered. `message` is for a person and never holds a secret;
    `permanent` says that retrying soon will not help (a refused login, a bad address): the
    caller then retries only rarely, in case the configuration gets fixed."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


__all__ = ["DeliveryError"]
