"""The one URL builder: every link, form action and static file of a page goes through it, so
that a page served under a prefix (a reverse proxy's `/coffre/`, the server's `/console/`)
never links outside it. A URL is never built from the Host a request came in on."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from urllib.parse import quote, urlencode

STATIC_PACKAGE = "coffre.web"


def normal_prefix(prefix: str) -> str:
    """'' or '/a/b' (leading slash, no trailing one)."""
    prefix = prefix.strip().strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(prefix)
    return "/" + prefix if prefix else ""


@cache
def static_digest(name: str) -> str:
    """The first 10 hex digits of a static file's SHA-256 (its URL changes with its bytes)."""
    data = resources.files(STATIC_PACKAGE).joinpath("static", name).read_bytes()
    return hashlib.sha256(data).hexdigest()[:10]


def hashed_name(name: str) -> str:
    """'app.css' -> 'app.0123456789.css' (cached as immutable by the static route)."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{static_digest(name)}.{ext}" if dot else f"{name}.{static_digest(name)}"


class Urls:
    """Builds every URL of one app from its prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = normal_prefix(prefix)

    def to(self, path: str, /, **query: object) -> str:
        """`path` ('/', '/jobs/daily', segments already quoted with `segment`) under the
        prefix, with an optional query string (None values left out)."""
        if not path.startswith("/"):
            raise ValueError(path)
        url = self.prefix + path if path != "/" or not self.prefix else self.prefix + "/"
        pairs = [(k, str(v)) for k, v in query.items() if v is not None]
        return url + ("?" + urlencode(pairs) if pairs else "")

    def static(self, name: str) -> str:
        return self.to("/static/" + hashed_name(name))


def segment(text: str) -> str:
    """One path segment from untrusted text (a job name, a tenant): '/' and all else quoted."""
    return quote(text, safe="")
