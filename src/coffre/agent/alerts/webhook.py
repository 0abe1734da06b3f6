"""The webhook channel, for the IT provider's tools: each notice POSTed as JSON
({event, audience, key, kind, job, target, since, subject, text, at}), signed with
HMAC-SHA256 of the body in `X-Coffre-Signature: sha256=HEX` when a secret file is configured.
The POST itself (no redirects, which answers are retryable, messages naming the host only) is
`coffre.notify.webhook`, the delivery layer the hosting server shares."""

from __future__ import annotations

import json

from coffre.agent.alerts.decide import Notice
from coffre.agent.model import Webhook
from coffre.notify import webhook
from coffre.notify.webhook import channel_name, signature

USER_AGENT = "coffre-agent"


def payload(notice: Notice) -> bytes:
    """The JSON body posted for `notice`."""
    return json.dumps({
        "event": notice.event, "audience": notice.audience, "key": notice.key, "kind": notice.kind,
        "job": notice.job, "target": notice.target, "since": notice.since, "subject": notice.subject,
        "text": notice.text, "at": notice.at,
    }, ensure_ascii=False, sort_keys=True).encode("utf-8")


class WebhookChannel:
    """Posts every notice to the pharmacist, and the escalations (the provider's reminders
    would repeat what the pharmacist's already say)."""

    def __init__(self, config: Webhook) -> None:
        self.config = config
        self.name = channel_name(config.url)

    def wants(self, notice: Notice) -> bool:
        return notice.audience == "pharmacist" or notice.event == "escalation"

    def send(self, notice: Notice) -> None:
        c = self.config
        webhook.post(c.url, payload(notice), secret_file=c.secret_file, timeout=c.timeout,
                     event=notice.event, user_agent=USER_AGENT)


__all__ = ["USER_AGENT", "WebhookChannel", "channel_name", "payload", "signature"]
