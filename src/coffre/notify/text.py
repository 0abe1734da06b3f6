"""Text hygiene for everything a notice carries that came from a configuration, a report or an
error message: `clean` (one line, no control characters: safe in a mail header) and `redact`
(no credentials in URLs, no token in query strings). A notice never carries a secret."""

from __future__ import annotations

import re
import unicodedata

_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#@]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|key|signature|sig|auth|"
    r"credential)[A-Za-z0-9_.-]*)=)[^&;#\s]*")


def clean(text: object, limit: int = 200) -> str:
    """`text` as one line without control characters (safe in a mail header), without
    secrets, at most `limit` characters."""
    s = redact(str(text))
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def redact(text: str) -> str:
    """`text` without the credentials of URLs (user:password@) nor the values of query
    parameters that look like tokens, keys or passwords."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1", text))
