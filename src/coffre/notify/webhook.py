"""One JSON POST to a webhook, signed with HMAC-SHA256 of the body in
`X-Coffre-Signature: sha256=HEX` when a secret file is given.

Only http and https URLs; redirects are not followed (a POST would turn into a GET). A timeout,
a refused connection, a 5xx, 408 or 429 answer are retryable; any other answer >= 300 is
permanent. Messages name the host only: a URL may hold a token. The agent's webhook channel and
the server's fleet alerts both post through `post`."""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from coffre.core.i18n import _
from coffre.notify import DeliveryError
from coffre.notify.text import clean


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def channel_name(url: str) -> str:
    """A stable name for the webhook at `url` that holds no secret: its host and a short hash
    of the whole URL (two hooks on one host stay apart)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"webhook:{clean(host, 80)}#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, *, secret_file: str | None, timeout: float, event: str,
         user_agent: str) -> None:
    """POST `body` (JSON) to `url`, or raise DeliveryError."""
    parts = urlsplit(url)
    where = clean(parts.hostname or "?", 80)
    if parts.scheme not in ("http", "https"):
        raise DeliveryError(_("the webhook address must start with http:// or https://"), permanent=True)
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": user_agent,
               "X-Coffre-Event": clean(event, 20)}
    if secret_file:
        try:
            with open(secret_file, "rb") as f:
                secret = f.read(64 * 1024).rstrip(b"\r\n")
        except OSError as exc:
            raise DeliveryError(_("cannot read the webhook secret file {path}: {reason}").format(
                path=clean(secret_file), reason=exc.strerror or type(exc).__name__),
                permanent=True) from None
        headers["X-Coffre-Signature"] = signature(secret, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        code = exc.code
        exc.close()
        raise DeliveryError(_("the webhook at {host} answered HTTP {code}").format(host=where, code=code),
                            permanent=not (code >= 500 or code in (408, 429))) from None
    except TimeoutError:
        raise DeliveryError(_("the webhook at {host} did not answer within {seconds} s").format(
            host=where, seconds=f"{timeout:g}")) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise DeliveryError(_("the webhook at {host} did not answer within {seconds} s").format(
                host=where, seconds=f"{timeout:g}")) from None
        reason = getattr(exc.reason, "strerror", None) or type(exc.reason).__name__
        raise DeliveryError(_("cannot reach the webhook at {host}: {reason}").format(
            host=where, reason=clean(reason, 120))) from None
    except (OSError, ValueError) as exc:
        raise DeliveryError(_("cannot reach the webhook at {host}: {reason}").format(
            host=where, reason=type(exc).__name__)) from None
