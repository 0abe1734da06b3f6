"""Who may use a page, and what a hostile page elsewhere cannot make a browser do.

- **Sessions** live in the serving process (`Sessions`): a random 256-bit id in a cookie
  flagged `HttpOnly`, `SameSite=Strict`, `Path=<prefix>/`, and `Secure` (named `__Host-…`
  when served at the root) over TLS. A login always starts a new id (session fixation: an id
  planted before the login is worth nothing after it). A session ends after `idle_s` without
  a request, after `lifetime_s` whatever happens, at logout, or when the process stops.
- **CSRF**: every unsafe request (POST…) must carry the session's token in the form field
  `csrf` (or the `X-CSRF-Token` header, which htmx sends), compared in constant time; a
  browser's `Origin` (when sent) must be the page's own and `Sec-Fetch-Site` (when sent)
  `same-origin` or `none`. The login form has a pre-login session for its token.
- **Login throttling** (`Throttle`): after `free` failures from one address, each further
  attempt waits (30 s, doubling, at most 15 min); past `global_limit` failures a minute from
  all addresses together, every login waits a minute. An attempt counts as a failure from
  the moment it is let through (attempts sent together cannot all pass); a success resets
  its address.
- **Bodies** (`BodyLimit`): a request body (a form: a password, a motive) is at most
  `MAX_BODY` bytes, refused with 413 before anything reads it (Starlette would otherwise keep
  up to a GiB of form fields in memory, or spool uploaded files to disk, for anyone who can
  reach the login form).
- **Headers** (`SecurityHeaders`): a Content-Security-Policy allowing only the page's own
  scripts, styles and images (no inline script: htmx is configured not to inject styles),
  no framing, no sniffing, no referrer to other sites, no caching of pages.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "coffre_session"
MAX_BODY = 64 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    user: str | None = None  # None: the pre-login session of the login form
    role: str | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    data: dict[str, Any] = field(default_factory=dict)

    def flash(self, text: str, level: str = "info") -> None:
        """A message shown on the next page (post-redirect-get needs no script)."""
        self.flashes.append((level, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class Sessions:
    """The sessions of one app, in memory, for one process."""

    def __init__(self, *, idle_s: float = 900.0, lifetime_s: float = 12 * 3600.0, secure: bool = False,
                 path: str = "/", clock: Callable[[], float] = time.time, limit: int = 10_000) -> None:
        self.idle_s, self.lifetime_s, self.secure, self.path = idle_s, lifetime_s, secure, path or "/"
        self.clock, self.limit = clock, limit
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    @property
    def cookie_name(self) -> str:
        return "__Host-" + COOKIE if self.secure and self.path == "/" else COOKIE

    def _alive(self, s: Session, now: float) -> bool:
        return now - s.seen <= self.idle_s and now - s.created <= self.lifetime_s

    def get(self, request: Request) -> Session | None:
        sid = request.cookies.get(self.cookie_name)
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None or not hmac.compare_digest(s.id, sid):
                return None
            if not self._alive(s, now):
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def new(self, user: str | None = None, role: str | None = None,
            replacing: Session | None = None) -> Session:
        """A fresh session (a new id, a new CSRF token); `replacing` is dropped."""
        now = self.clock()
        s = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, seen=now,
                    user=user, role=role)
        with self._lock:
            if replacing is not None:
                self._by_id.pop(replacing.id, None)
                s.flashes = list(replacing.flashes)
            if len(self._by_id) >= self.limit:
                self._sweep(now)
            if len(self._by_id) >= self.limit:  # still full: the oldest pre-login ones go first
                for old in sorted(self._by_id.values(), key=lambda x: (x.user is not None, x.seen))[:100]:
                    del self._by_id[old.id]
            self._by_id[s.id] = s
        return s

    def end(self, s: Session) -> None:
        with self._lock:
            self._by_id.pop(s.id, None)

    def end_user(self, user: str) -> int:
        """Ends every session of `user` (a disabled account, a changed password)."""
        with self._lock:
            gone = [sid for sid, s in self._by_id.items() if s.user == user]
            for sid in gone:
                del self._by_id[sid]
        return len(gone)

    def _sweep(self, now: float) -> None:
        for sid in [sid for sid, s in self._by_id.items() if not self._alive(s, now)]:
            del self._by_id[sid]

    def set_cookie(self, response: Response, s: Session) -> None:
        response.set_cookie(self.cookie_name, s.id, httponly=True, samesite="strict", secure=self.secure,
                            path=self.path)

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie_name, path=self.path, secure=self.secure, httponly=True,
                               samesite="strict")


def session_of(request: Request) -> Session | None:
    """The session the app's middleware found for this request (None: not logged in)."""
    s = request.scope.get("coffre.session")
    return s if isinstance(s, Session) else None


class CsrfRefused(Exception):
    pass


async def check_csrf(request: Request, s: Session | None) -> None:
    """Raises CsrfRefused unless the unsafe request carries `s`'s token and, when the browser
    says where it comes from, comes from this origin. Reads the form (cached by Starlette)."""
    if request.method in SAFE_METHODS:
        return
    if s is None:
        raise CsrfRefused("no session")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfRefused("cross-site")
    origin = request.headers.get("origin")
    if origin == "null" and site != "same-origin":  # "null": a sandboxed frame, a data: page...
        raise CsrfRefused("origin")
    if origin is not None and origin != "null" and origin != own_origin(request):
        raise CsrfRefused("origin")
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf")
        token = value if isinstance(value, str) else None
    if not token or not hmac.compare_digest(token.encode(), s.csrf.encode()):
        raise CsrfRefused("token")


def own_origin(request: Request) -> str:
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    return f"{scheme}://{host}"


class Throttle:
    """Login attempts: how long an address must wait before its next one."""

    def __init__(self, *, free: int = 5, first_wait_s: float = 30.0, max_wait_s: float = 900.0,
                 global_limit: int = 50, clock: Callable[[], float] = time.time) -> None:
        self.free, self.first_wait_s, self.max_wait_s = free, first_wait_s, max_wait_s
        self.global_limit, self.clock = global_limit, clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, last failure)
        self._recent: list[float] = []  # failures from anyone in the last minute

    def attempt(self, address: str) -> float:
        """Seconds `address` must wait (0: it may try now, and this attempt is counted as a
        failure until `succeeded` says otherwise). Checking and counting at once means that
        attempts sent together, before any of them is refused, cannot all get through."""
        now = self.clock()
        with self._lock:
            wait = self._wait_locked(address, now)
            if wait <= 0:
                self._failed_locked(address, now)
            return wait

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""
        with self._lock:
            return self._wait_locked(address, self.clock())

    def _wait_locked(self, address: str, now: float) -> float:
        self._recent = [t for t in self._recent if now - t < 60.0]
        wait = 0.0
        if len(self._recent) >= self.global_limit:
            wait = 60.0 - (now - self._recent[0])
        count, last = self._failures.get(address, (0, 0.0))
        if count >= self.free:
            penalty = min(self.max_wait_s, self.first_wait_s * 2 ** (count - self.free))
            wait = max(wait, last + penalty - now)
        return max(0.0, wait)

    def failed(self, address: str) -> None:
        with self._lock:
            self._failed_locked(address, self.clock())

    def _failed_locked(self, address: str, now: float) -> None:
        count, _last = self._failures.get(address, (0, 0.0))
        self._failures[address] = (count + 1, now)
        self._recent.append(now)
        if len(self._failures) > 100_000:
            self._failures.clear()  # bounded memory under a spray of addresses

    def succeeded(self, address: str) -> None:
        """A success: the address starts afresh, and its counted attempt was no failure."""
        with self._lock:
            _count, last = self._failures.pop(address, (0, 0.0))
            if last in self._recent:
                self._recent.remove(last)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"


class BodyLimit:
    """Refuses (413) a request whose body is larger than `limit` bytes, whether it says so in
    its Content-Length or not (it is then read up to the limit, and answered without reading
    the rest). The pages' forms are small; nothing is uploaded."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        if declared is None and b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"request body too large\n"})


class SecurityHeaders:
    """Adds the security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app, self.hsts = app, hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _v in headers}
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                         (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                         (b"cross-origin-opener-policy", b"same-origin")]
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers + [(k, v) for k, v in extra if k not in names]}
            await send(message)

        await self.app(scope, receive, with_headers)


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(host_header: str) -> str:
    """'127.0.0.1:8650' -> '127.0.0.1', '[::1]:8650' -> '::1', 'Localhost.' -> 'localhost'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


class HostCheck:
    """Answers 421 to a request whose Host is not one of `allowed` (names without port). On
    loopback this stops DNS rebinding: a web site the pharmacist visits pointing its own name
    at 127.0.0.1 would otherwise reach the page from the pharmacist's browser as same-origin
    (its Host is the site's name, which is refused here)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] = LOOPBACK_NAMES) -> None:
        self.app, self.allowed = app, frozenset(a.lower() for a in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                await send({"type": "http.response.start", "status": 421,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"unknown host name\n"})
                return
        await self.app(scope, receive, send)
