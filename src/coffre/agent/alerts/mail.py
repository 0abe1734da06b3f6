"""The e-mail channel: one plain-text UTF-8 mail per notice through an SMTP server, over
STARTTLS, implicit TLS or (for a relay on this machine only) plain SMTP, logging in when a user
name is configured. The password comes from a file or a command run without a shell; it is
never put in a message, an error or a log.

A refused login, an untrusted certificate or a refused address is a permanent error (the
configuration must change); a server that cannot be reached or does not answer in time is a
retryable one."""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from email.utils import formatdate

from coffre.agent.alerts.channel import DeliveryError
from coffre.agent.alerts.decide import Notice
from coffre.agent.alerts.texts import clean
from coffre.agent.model import Email
from coffre.core.i18n import _


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
        c = self.config
        sender = clean(c.sender, 254)
        domain = sender.rpartition("@")[2] or "localhost"
        ident = hashlib.sha256(f"{notice.key}|{notice.event}|{notice.audience}|{notice.at!r}".encode()
                               ).hexdigest()[:32]
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(self.recipients(notice))
        msg["Subject"] = clean(notice.subject, 200)
        msg["Date"] = formatdate(notice.at, localtime=False, usegmt=True)
        msg["Message-ID"] = f"<coffre.{ident}@{clean(domain, 100)}>"
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Coffre-Event"] = clean(notice.event, 20)
        msg.set_content(notice.text, subtype="plain", charset="utf-8")
        return msg

    def send(self, notice: Notice) -> None:
        c = self.config
        where = clean(f"{c.server}:{c.port}", 120)
        msg = self.message(notice)
        if c.username and c.security == "none" and not _loopback(c.server):
            raise DeliveryError(_('refusing to send the mail password to {server} unencrypted: set '
                                  'security to "starttls" or "tls"').format(server=where), permanent=True)
        password = _password(c) if c.username else None
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
            if c.username and password is not None:
                smtp.login(c.username, password)
            smtp.send_message(msg, from_addr=clean(c.sender, 254), to_addrs=list(self.recipients(notice)))
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _password(c: Email) -> str:
    """The SMTP password, from its file or its command. Errors never quote the password nor the
    command (its arguments may hold something private)."""
    if c.password_file:
        try:
            with open(c.password_file, "rb") as f:
                raw = f.read(64 * 1024)
        except OSError as exc:
            raise DeliveryError(_("cannot read the mail password file {path}: {reason}").format(
                path=clean(c.password_file), reason=exc.strerror or type(exc).__name__),
                permanent=True) from None
    elif c.password_command:
        try:
            argv = shlex.split(c.password_command)
        except ValueError as exc:
            raise DeliveryError(_("the mail password command cannot be read as a command: {reason}").format(
                reason=exc), permanent=True) from None
        if not argv:
            raise DeliveryError(_("the mail password command is empty"), permanent=True)
        try:
            out = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(_("the mail password command could not run: {reason}").format(
                reason=type(exc).__name__), permanent=True) from None
        if out.returncode != 0:
            raise DeliveryError(_("the mail password command failed with exit status {code}").format(
                code=out.returncode), permanent=True)
        raw = out.stdout
    else:
        raise DeliveryError(_("a mail user name is set but no password file or command"), permanent=True)
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DeliveryError(_("the mail password is not UTF-8 text"), permanent=True) from None
