"""The provider's alerts about the fleet: the alerts file, who is told what and when, and the
delivery through `coffre.notify` (the agent's own SMTP and signed-webhook machinery).

The alerts file (`coffre server --alerts FILE`, or COFFRE_SERVER_ALERTS) is TOML:

    [alerts]
    delay = "6h"              # a site red this long: the provider is told
    reminder_every = "1d"     # then reminded this often while it lasts (false: never)
    language = "fr"           # of the notices (fr or en)
    timezone = "Europe/Paris" # of the times they give

    [alerts.email]
    server = "smtp.prestataire.example"
    port = 587
    security = "starttls"     # starttls | tls | none (a relay on this machine only)
    username = "coffre@prestataire.example"
    password_file = "/etc/coffre-server/smtp-password"   # or password_command
    sender = "coffre@prestataire.example"
    to = ["astreinte@prestataire.example"]

    [[alerts.webhooks]]
    url = "https://supervision.prestataire.example/coffre"
    secret_file = "/etc/coffre-server/webhook.key"       # HMAC-SHA256 in X-Coffre-Signature

Every problem is reported at once, each as `FILE: alerts.KEY: what is wrong`; an unknown key
is one. The file is read again at each round, so an edit needs no restart (a broken file is
logged and nothing is sent until it is mended; the fleet is still tracked).

When (one notice per tenant and round, about all its red reasons): "problem" once a red
reason has lasted `delay` (counted from when it began, by the server's clock); "reminder"
every `reminder_every` while the tenant stays red; "resolved" when all its red reasons are
gone (only to a provider who was told), "partly" when some are and others remain. A notice
counts as sent once one channel delivered it; if none did, the next round tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from coffre.core.errors import UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.net import is_loopback
from coffre.notify import DeliveryError, smtp, webhook
from coffre.notify.text import clean
from coffre.server import fleet, fleet_texts
from coffre.server.context import ServerContext
from coffre.server.db import tables

log = logging.getLogger("coffre.server")

SETTINGS_KEY = "fleet_alerts"  # Settings.extra: the alerts file's path
ENV = "COFFRE_SERVER_ALERTS"
USER_AGENT = "coffre-server"
MAX_BYTES = 1 << 20
NS = 1_000_000_000


@dataclass(frozen=True)
class Email:
    """The provider's mail (fits `coffre.notify.smtp.SmtpSettings`)."""

    server: str
    to: tuple[str, ...]
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    sender: str = "coffre-server@localhost"
    timeout: float = 30.0
    ca_file: str | None = None


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_file: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertSettings:
    delay: float = 6 * 3600.0
    reminder_every: float | None = 86400.0
    language: str = "fr"
    timezone: str = "Europe/Paris"
    email: Email | None = None
    webhooks: tuple[Webhook, ...] = ()
    host: str = field(default_factory=socket.gethostname)  # named in the notices


# --------------------------------------------------------------------------- the file

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(min|s|h|d|w)", re.IGNORECASE)


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(_("must be longer than zero"))
        return float(value)
    if not isinstance(value, str):
        raise ValueError(_("expected a duration such as \"10min\", \"2h\" or \"7d\""))
    total, position, text = 0.0, 0, value.strip()
    for m in _TOKEN.finditer(text):
        if m.start() != position:
            break
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        position = m.end()
    if not text or position != len(text) or total <= 0:
        raise ValueError(_("expected a duration such as \"10min\", \"2h\" or \"7d\""))
    return total


def _duration_or_off(value: object) -> float | None:
    return None if value is False else _duration(value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(_("expected a non-empty text in quotes"))
    return value


def _path(value: object) -> str:
    path = _text(value)
    if not path.startswith("/"):
        raise ValueError(_("{path} is not an absolute path (starting with /)").format(path=repr(path)))
    return path


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(_("must be between {lo} and {hi}").format(lo=1, hi=65535))
    return value


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(_("expected one of {choices}").format(choices=", ".join(choices)))
        assert isinstance(value, str)
        return value
    return convert


def _timezone(value: object) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_("unknown time zone {name}, e.g. \"Europe/Paris\"").format(
            name=repr(name))) from None
    return name


def _addresses(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(_("expected a list of e-mail addresses, e.g. [\"astreinte@example.fr\"]"))
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+", item):
            raise ValueError(_("{address} is not an e-mail address").format(address=repr(item)))
    return tuple(value)


def _http_url(value: object) -> str:
    url = _text(value).strip()
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(_("expected an http:// or https:// address"))
    return url


_KEYS: dict[str, dict[str, Callable[[object], Any]]] = {
    "alerts": {"delay": _duration, "reminder_every": _duration_or_off,
               "language": _choice(*fleet_texts.LANGUAGES), "timezone": _timezone},
    "email": {"server": _text, "port": _port, "security": _choice("starttls", "tls", "none"),
              "username": _text, "password_file": _path, "password_command": _text, "sender": _text,
              "to": _addresses, "timeout": _duration, "ca_file": _path},
    "webhook": {"url": _http_url, "secret_file": _path, "timeout": _duration},
}
_REQUIRED = {"alerts": (), "email": ("server", "to"), "webhook": ("url",)}


def load(path: str) -> AlertSettings:
    """The alerts file at `path`; UsageError listing every problem otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(_("cannot read the alerts file {path}: {reason}").format(
            path=path, reason=exc.strerror or type(exc).__name__)) from None
    try:
        if len(data) > MAX_BYTES:
            raise ValueError(_("larger than 1 MiB"))
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        reason = str(exc) if not isinstance(exc, UnicodeDecodeError) else _("not UTF-8 text")
        raise UsageError(_("the alerts file {path} cannot be read: {reason}").format(
            path=path, reason=reason)) from None
    problems: list[str] = []
    settings = _settings(raw, problems)
    if problems:
        head = ngettext("the alerts file {path} has {n} problem:", "the alerts file {path} has {n} problems:",
                        len(problems)).format(path=path, n=len(problems))
        raise UsageError("\n".join([head, *(f"{path}: {p}" for p in problems)]),
                         _("docs/server.md shows an alerts file"))
    return settings


def _fields(table: object, section: str, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        problems.append(_("{key}: expected a table").format(key=where))
        return {}
    keys = _KEYS[section]
    nested = {"alerts": ("email", "webhooks")}.get(section, ())
    out: dict[str, Any] = {}
    for name, value in table.items():
        if name in nested:
            continue
        if name not in keys:
            problems.append(f"{where}.{name}: " + _("unknown key"))
            continue
        try:
            out[name] = keys[name](value)
        except ValueError as exc:
            problems.append(f"{where}.{name}: {exc}")
    for name in _REQUIRED[section]:
        if name not in table:
            problems.append(f"{where}.{name}: " + _("missing (required)"))
    return out


def _settings(raw: Mapping[str, Any], problems: list[str]) -> AlertSettings:
    for name in raw:
        if name != "alerts":
            problems.append(f"{name}: " + _("unknown section (the file holds [alerts])"))
    table = raw.get("alerts", {})
    values = _fields(table, "alerts", "alerts", problems)
    email = None
    if isinstance(table, dict) and "email" in table:
        inner = table["email"]
        fields = _fields(inner, "email", "alerts.email", problems)
        if isinstance(inner, dict):
            if "password_file" in inner and "password_command" in inner:
                problems.append("alerts.email.password_command: "
                                + _("give password_file or password_command, not both"))
            has_password = "password_file" in inner or "password_command" in inner
            if "username" in inner and not has_password:
                problems.append("alerts.email.username: "
                                + _("a login needs its password: add password_file (or password_command)"))
            elif has_password and "username" not in inner:
                problems.append("alerts.email: " + _("a password without a login: add username"))
            if fields.get("security") == "none" and not is_loopback(fields.get("server")):
                problems.append("alerts.email.security: " + _(
                    "\"none\" sends mail in clear: only for a relay on this machine (localhost); use "
                    "starttls or tls"))
        if "server" in fields and "to" in fields:
            email = Email(**fields)
    hooks: list[Webhook] = []
    raw_hooks = table.get("webhooks", []) if isinstance(table, dict) else []
    if not isinstance(raw_hooks, list):
        problems.append("alerts.webhooks: " + _("expected [[alerts.webhooks]] tables"))
        raw_hooks = []
    for i, hook in enumerate(raw_hooks):
        fields = _fields(hook, "webhook", f"alerts.webhooks[{i}]", problems)
        if "url" in fields:
            hooks.append(Webhook(**fields))
    return AlertSettings(email=email, webhooks=tuple(hooks), **values)


# --------------------------------------------------------------------------- the round


@dataclass(frozen=True)
class DeliveryResult:
    channel: str
    tenant: str
    event: str
    ok: bool
    error: str | None = None
    permanent: bool = False


@dataclass(frozen=True)
class Notice:
    tenant_id: int
    tenant: str
    event: str                    # problem | reminder | resolved | partly
    told: tuple[str, ...]         # red reason codes it is about (marked notified once sent)
    solved: tuple[str, ...]       # codes that cleared (marked told once sent)
    since_ns: int | None
    at_ns: int
    subject: str
    text: str
    light: str


@dataclass(frozen=True)
class _Row:
    tenant_id: int
    problem: str
    since_ns: int
    notified_ns: int | None
    cleared_ns: int | None


def run(ctx: ServerContext, now_ns: int, settings: AlertSettings | None) -> list[DeliveryResult]:
    """Track the red reasons in fleet_alerts, then send what is due (when `settings` has a
    channel). The delivery attempts made."""
    with ctx.db.read() as conn:
        rows = fleet.assess(conn, now_ns)
    by_id = {r.tenant_id: r for r in rows}
    state = _track(ctx, fleet.red_reasons(rows), set(by_id), now_ns)
    if settings is None or (settings.email is None and not settings.webhooks):
        return []
    results: list[DeliveryResult] = []
    for n in _plan(state, by_id, now_ns, settings):
        sent = deliver(settings, n)
        results.extend(sent)
        for r in sent:
            if r.ok:
                log.info(_("fleet alert sent ({channel}): {event} {tenant}").format(
                    channel=r.channel, event=r.event, tenant=r.tenant))
            else:
                log.warning(_("fleet alert not delivered ({channel}): {event} {tenant}: {reason}").format(
                    channel=r.channel, event=r.event, tenant=r.tenant, reason=r.error))
        if any(r.ok for r in sent):
            _mark(ctx, n, now_ns)
    return results


def _track(ctx: ServerContext, current: Mapping[tuple[int, str], int], assessed: set[int],
           now_ns: int) -> list[_Row]:
    """fleet_alerts brought in line with `current` ((tenant, code) -> since): new reasons
    opened, gone ones cleared, tenants no longer assessed (disabled, removed) forgotten."""
    a = tables.fleet_alerts
    with ctx.db.begin() as conn:
        existing = {(r.tenant_id, r.problem): r for r in conn.execute(ctx.db.for_update(sa.select(a)))}
        for (tenant_id, problem), r in existing.items():
            where = (a.c.tenant_id == tenant_id, a.c.problem == problem)
            if tenant_id not in assessed:
                conn.execute(a.delete().where(*where))
            elif (tenant_id, problem) in current:
                if r.cleared_ns is not None:  # back again: reopened (told stays told)
                    since = r.since_ns if r.notified_ns is not None else current[(tenant_id, problem)]
                    conn.execute(a.update().where(*where).values(cleared_ns=None, since_ns=since))
                elif r.notified_ns is not None and r.notified_ns > now_ns:  # the clock went back
                    conn.execute(a.update().where(*where).values(notified_ns=now_ns))
            elif r.cleared_ns is None:
                conn.execute(a.update().where(*where).values(cleared_ns=now_ns))
        for (tenant_id, problem), since in current.items():
            if (tenant_id, problem) not in existing:
                conn.execute(a.insert().values(tenant_id=tenant_id, problem=problem, since_ns=since,
                                               notified_ns=None, cleared_ns=None))
        return [_Row(r.tenant_id, r.problem, r.since_ns, r.notified_ns, r.cleared_ns)
                for r in conn.execute(sa.select(a).order_by(a.c.tenant_id, a.c.problem))]


def _plan(state: list[_Row], by_id: Mapping[int, fleet.TenantRisk], now_ns: int,
          settings: AlertSettings) -> list[Notice]:
    delay = int(settings.delay * NS)
    remind = None if settings.reminder_every is None else int(settings.reminder_every * NS)
    tenants: dict[int, list[_Row]] = {}
    for r in state:
        tenants.setdefault(r.tenant_id, []).append(r)
    out = []
    for tenant_id, rows in sorted(tenants.items()):
        risk = by_id.get(tenant_id)
        if risk is None:
            continue
        open_ = [r for r in rows if r.cleared_ns is None]
        new = [r for r in open_ if r.notified_ns is None and now_ns - r.since_ns >= delay]
        told = [r for r in open_ if r.notified_ns is not None]
        due = [r for r in told if remind is not None and now_ns - (r.notified_ns or 0) >= remind]
        solved = [r for r in rows if r.cleared_ns is not None and r.notified_ns is not None]
        if new:
            event, about = "problem", told + new
        elif due:
            event, about = "reminder", told
        elif solved:
            event, about = ("partly" if told else "resolved"), told
        else:
            continue
        codes = {r.problem for r in about}
        reasons = [x for x in risk.reasons if x.code in codes]
        since = min((r.since_ns for r in about), default=None)
        name = f"{risk.display_name} ({risk.tenant})" if risk.display_name else risk.tenant
        subject, text = fleet_texts.notice(event, risk, name, risk.contact, reasons,
                                           [r.problem for r in solved], since, settings.language,
                                           settings.timezone, settings.host)
        out.append(Notice(tenant_id, risk.tenant, event, tuple(sorted(codes)),
                          tuple(r.problem for r in solved), since, now_ns, subject, text, risk.light))
    return out


def _mark(ctx: ServerContext, n: Notice, now_ns: int) -> None:
    a = tables.fleet_alerts
    with ctx.db.begin() as conn:
        for code in n.told:
            conn.execute(a.update().where(a.c.tenant_id == n.tenant_id, a.c.problem == code,
                                          a.c.cleared_ns.is_(None)).values(notified_ns=now_ns))
        for code in n.solved:
            conn.execute(a.update().where(a.c.tenant_id == n.tenant_id, a.c.problem == code,
                                          a.c.cleared_ns.is_not(None)).values(notified_ns=None))


def payload(n: Notice) -> bytes:
    """The JSON body posted to the provider's webhooks."""
    return json.dumps({
        "event": n.event, "audience": "provider", "tenant": n.tenant, "light": n.light,
        "problems": list(n.told), "solved": list(n.solved),
        "since": None if n.since_ns is None else n.since_ns / NS, "at": n.at_ns / NS,
        "subject": n.subject, "text": n.text,
    }, ensure_ascii=False, sort_keys=True).encode("utf-8")


def deliver(settings: AlertSettings, n: Notice) -> list[DeliveryResult]:
    """Send `n` on every channel; one result per channel (never raises)."""
    out = []
    channels: list[tuple[str, Callable[[], None]]] = []
    if settings.email is not None:
        mail = settings.email
        ident = hashlib.sha256(f"{n.tenant}|{n.event}|{n.at_ns}".encode()).hexdigest()[:32]
        msg = smtp.message(mail.sender, mail.to, n.subject, n.text, n.at_ns / NS, ident, n.event)
        channels.append(("email", lambda: smtp.send(mail, msg, mail.to)))
    for hook in settings.webhooks:
        def post(hook: Webhook = hook) -> None:
            webhook.post(hook.url, payload(n), secret_file=hook.secret_file, timeout=hook.timeout,
                         event=n.event, user_agent=USER_AGENT)
        channels.append((webhook.channel_name(hook.url), post))
    for name, send in channels:
        try:
            send()
            out.append(DeliveryResult(name, n.tenant, n.event, True))
        except DeliveryError as exc:
            out.append(DeliveryResult(name, n.tenant, n.event, False, exc.message, exc.permanent))
        except Exception as exc:  # a channel's bug must not stop the others
            out.append(DeliveryResult(name, n.tenant, n.event, False, clean(type(exc).__name__)))
    return out
