"""One plain-text UTF-8 mail through an SMTP server, over STARTTLS, implicit TLS or (for a relay
on this machine only) plain SMTP, logging in when a user name is configured. The password comes
from a file or a command run without a shell; it is never put in a message, an error or a log.

A refused login, an untrusted certificate or a refused address is a permanent error (the
configuration must change); a server that cannot be reached or does not answer in time is a
retryable one. The agent's e-mail channel and the server's fleet alerts both send through
`send`."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

from coffre.core.i18n import _
from coffre.core.net import is_loopback
from coffre.core.secrets import SecretUnreadable, read_secret
from coffre.notify import DeliveryError
from coffre.notify.text import clean


class SmtpSettings(Protocol):
    """How to reach the mail server (the agent's `model.Email` has this shape)."""

    @property
    def server(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def security(self) -> str: ...  # "starttls" | "tls" | "none" (loopback relays only)
    @property
    def username(self) -> str | None: ...
    @property
    def password_file(self) -> str | None: ...
    @property
    def password_command(self) -> str | None: ...
    @property
    def sender(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def ca_file(self) -> str | None: ...


def message(sender: str, recipients: Sequence[str], subject: str, text: str, at: float,
            ident: str, event: str) -> EmailMessage:
    """A plain-text mail. `ident` (hex) makes its Message-ID, so a mail sent again after a lost
    answer is recognisable as the same one; `event` goes in X-Coffre-Event."""
    sender = clean(sender, 254)
    domain = sender.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = clean(subject, 200)
    msg["Date"] = formatdate(at, localtime=False, usegmt=True)
    msg["Message-ID"] = f"<coffre.{clean(ident, 64)}@{clean(domain, 100)}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Coffre-Event"] = clean(event, 20)
    msg.set_content(text, subtype="plain", charset="utf-8")
    return msg


def send(c: SmtpSettings, msg: EmailMessage, recipients: Sequence[str]) -> None:
    """Deliver `msg` to `recipients`, or raise DeliveryError."""
    where = clean(f"{c.server}:{c.port}", 120)
    if c.username and c.security == "none" and not is_loopback(c.server):
        raise DeliveryError(_('refusing to send the mail password to {server} unencrypted: set '
                              'security to "starttls" or "tls"').format(server=where), permanent=True)
    secret = password(c) if c.username else None
    smtp: smtplib.SMTP | None = None
    try:
        context = ssl.create_default_context(cafile=c.ca_file)
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.server, c.port, timeout=c.timeout, context=context)
        else:
            smtp = smtplib.SMTP(c.server, c.port, timeout=c.timeout)
        smtp.ehlo()
        if c.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if c.username and secret is not None:
            smtp.login(c.username, secret)
        smtp.send_message(msg, from_addr=clean(c.sender, 254), to_addrs=list(recipients))
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(_("the mail server {server} refused the login ({code})").format(
            server=where, code=exc.smtp_code), permanent=True) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(_("the mail server {server} does not offer what the configuration asks "
                              "({reason})").format(server=where, reason=clean(exc, 120)),
                            permanent=True) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _m in exc.recipients.values()]
        raise DeliveryError(_("the mail server {server} refused the recipients ({code})").format(
            server=where, code=", ".join(str(x) for x in sorted(set(codes)))),
            permanent=all(x >= 500 for x in codes)) from None
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        raise DeliveryError(_("the mail server {server} refused the message ({code})").format(
            server=where, code=exc.smtp_code), permanent=exc.smtp_code >= 500) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(_("the certificate of the mail server {server} is not trusted: {reason}")
                            .format(server=where, reason=clean(exc.verify_message or exc, 120)),
                            permanent=True) from None
    except smtplib.SMTPServerDisconnected:
        raise DeliveryError(_("the mail server {server} closed the connection").format(
            server=where)) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(_("the mail server {server} answered with an error ({code})").format(
            server=where, code=exc.smtp_code), permanent=exc.smtp_code >= 500) from None
    except TimeoutError:
        raise DeliveryError(_("the mail server {server} did not answer within {seconds} s").format(
            server=where, seconds=f"{c.timeout:g}")) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DeliveryError(_("cannot reach the mail server {server}: {reason}").format(
            server=where, reason=clean(reason, 120))) from None
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def password(c: SmtpSettings) -> str:
    """The SMTP password, from its file or its command (core.secrets). Errors never quote the
    password nor the command (its arguments may hold something private)."""
    if not (c.password_file or c.password_command):
        raise DeliveryError(_("a mail user name is set but no password file or command"), permanent=True)
    try:
        return read_secret(c.password_file, c.password_command)
    except SecretUnreadable as exc:
        raise DeliveryError(_("the mail password cannot be read: {reason}").format(reason=clean(exc.message)),
                            permanent=True) from None
