"""Heartbeat pings in the healthchecks.io style: the URL at a job's success, URL + "/start"
when it starts, URL + "/fail" when it fails. A service that stops hearing them raises the
alarm itself, which is how an agent that died (or a server that is off) gets noticed.

`ping` never raises: a ping that cannot be sent is returned as an error for the caller to log,
and never fails a backup."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from coffre.agent.model import Heartbeat
from coffre.core.i18n import _
from coffre.notify.text import clean

KINDS = ("start", "success", "fail")


@dataclass(frozen=True)
class PingResult:
    ok: bool
    error: str | None = None  # for a person; names the host only


def ping_url(url: str, kind: str) -> str:
    """The URL to ping for `kind`: the suffix goes on the path, before any query."""
    if kind not in KINDS:
        raise ValueError(kind)
    if kind == "success":
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + kind))


def ping(hb: Heartbeat, kind: str, body: str = "") -> PingResult:
    """Ping for `kind` ("start", "success" or "fail"): a POST carrying `body` (a short log tail)
    when there is one, else a GET."""
    parts = urlsplit(hb.url)
    host = clean(parts.hostname or "?", 80)
    try:
        url = ping_url(hb.url, kind)
        if parts.scheme not in ("http", "https"):
            return PingResult(False, _("the heartbeat address must start with http:// or https://"))
        data = body.encode("utf-8")[:100_000] if body else None
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET",  # noqa: S310
                                         headers={"User-Agent": "coffre-agent"})  # (scheme checked above)
        with urllib.request.urlopen(request, timeout=hb.timeout) as response:  # noqa: S310
            response.read(64 * 1024)
        return PingResult(True)
    except urllib.error.HTTPError as exc:
        exc.close()
        return PingResult(False, _("the heartbeat at {host} answered HTTP {code}").format(
            host=host, code=exc.code))
    except Exception as exc:  # never out of a ping: the backup matters more than its report
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return PingResult(False, _("the heartbeat at {host} did not answer within {seconds} s").format(
                host=host, seconds=f"{hb.timeout:g}"))
        text = getattr(reason, "strerror", None) or type(reason).__name__
        return PingResult(False, _("cannot reach the heartbeat at {host}: {reason}").format(
            host=host, reason=clean(text, 120)))
