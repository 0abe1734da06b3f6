"""The e-mail channel: one plain-text UTF-8 mail per notice, the pharmacist's to `to`, the
provider's to `provider`. Sending (STARTTLS, implicit TLS or a loopback relay, the login, the
password from a file or a command, which errors are permanent) is `coffre.notify.smtp`, the
delivery layer the hosting server shares."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage

from coffre.agent.alerts.decide import Notice
from coffre.agent.model import Email
from coffre.notify import smtp
from coffre.notify.text import clean


class EmailChannel:
    """Mails the pharmacist's notices to `to`, the provider's to `provider`."""

    name = "email"

    def __init__(self, config: Email) -> None:
        self.config = config

    def recipients(self, notice: Notice) -> tuple[str, ...]:
        addresses = self.config.provider if notice.audience == "provider" else self.config.to
        return tuple(clean(a, 254) for a in addresses if clean(a, 254))

    def wants(self, notice: Notice) -> bool:
        return bool(self.recipients(notice))

    def message(self, notice: Notice) -> EmailMessage:
        """The mail for `notice` (its Message-ID is derived from the notice, so a mail sent again
        after a lost answer is recognisable as the same one)."""
        ident = hashlib.sha256(f"{notice.key}|{notice.event}|{notice.audience}|{notice.at!r}".encode()
                               ).hexdigest()[:32]
        return smtp.message(self.config.sender, self.recipients(notice), notice.subject, notice.text,
                            notice.at, ident, notice.event)

    def send(self, notice: Notice) -> None:
        smtp.send(self.config, self.message(notice), self.recipients(notice))
