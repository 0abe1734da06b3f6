"""Running the server: uvicorn over the ASGI app, with TLS, bounded connections, time limits
on slow clients, one log line per request, and a clean stop on SIGTERM.

Why Starlette under uvicorn (h11): the protocol is a handful of routes that stream bodies;
Starlette gives routing, streaming responses and a lifespan without a data-model layer;
uvicorn serves them with TLS from the standard `ssl` module, a concurrency limit and
keep-alive timeouts, and is the most used ASGI server (docs/server.md has the figures).

What uvicorn lacks is added here: a deadline for a request's headers (a client that opens
connections and trickles header bytes — slowloris — is cut after HEADER_TIMEOUT_S), a
minimum TLS version, and a SIGTERM that ends the process with status 0 once the requests in
flight are answered (uvicorn re-raises the signal after its graceful shutdown).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from types import FrameType
from typing import Any

import h11
import uvicorn
from starlette.routing import BaseRoute
from uvicorn.protocols.http.h11_impl import H11Protocol

from coffre.core.clock import Clock
from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.core.net import is_loopback
from coffre.server.app import create_app
from coffre.server.context import ServerContext
from coffre.server.settings import Settings

log = logging.getLogger("coffre.server")

HEADER_TIMEOUT_S = 15.0      # a request's headers must all arrive within this
KEEP_ALIVE_S = 20.0          # an idle connection is closed after this
GRACEFUL_STOP_S = 30.0       # on SIGTERM, requests in flight get this long to end
MAX_CONNECTIONS = 500        # connections and requests at once; beyond, 503


class Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers: counted from
    the connection (or the first byte of a next request) until the headers are complete."""

    header_timeout = HEADER_TIMEOUT_S
    _header_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if self._header_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        idle = self.cycle is None or self.cycle.response_complete
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing() and idle:
            peer = self.client[0] if self.client else "-"
            log.warning("%s: connection closed, request headers not complete after %.0f s",
                        peer, self.header_timeout)
            self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, whose SIGTERM/SIGINT end `run` normally after the graceful stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("signal %s: stopping once the requests in flight are answered",
                     signal.Signals(sig).name)
        super().handle_exit(sig, frame)


def check_transport(settings: Settings) -> tuple[str, str] | None:
    """(certificate, key) to serve TLS with, or None for plain HTTP, which is refused on an
    address other than loopback unless insecure_http (behind a TLS reverse proxy)."""
    cert = settings.certificate
    if cert is not None and not settings.insecure_http:
        for f in cert:
            if not f.is_file():
                raise UsageError(_("the TLS file {path} does not exist").format(path=f),
                                 _("give --tls-cert and --tls-key, or create a certificate with "
                                   "'coffre server init'"))
        return str(cert[0]), str(cert[1])
    if not settings.insecure_http and not is_loopback(settings.host):
        raise UsageError(
            _("no TLS certificate: the server would take tokens in clear on {host}").format(
                host=settings.host),
            _("give --tls-cert and --tls-key (or create one with 'coffre server init'); behind a "
              "reverse proxy that does TLS, add --insecure-http"))
    return None


def _tls_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def uvicorn_config(ctx: ServerContext, *, max_connections: int = MAX_CONNECTIONS,
                   header_timeout: float = HEADER_TIMEOUT_S, extra: Sequence[BaseRoute] = (),
                   **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration serving `ctx` as its settings say (tests change limits);
    `extra`: routes besides /v1 (app.create_app)."""
    settings = ctx.settings
    tls = check_transport(settings)
    protocol = type("Protocol", (Protocol,), {"header_timeout": header_timeout})
    options: dict[str, Any] = {
        "host": settings.host.strip("[]"),
        "port": settings.port,
        "http": protocol,
        "lifespan": "on",
        "loop": "asyncio",
        "ws": "none",
        "interface": "asgi3",
        "limit_concurrency": max_connections,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_STOP_S,
        "proxy_headers": False,  # X-Forwarded-For is judged by http.client_address
        "server_header": False,
        "date_header": True,
        "access_log": False,     # app.RequestLog writes one line per request
        "log_config": None,
    }
    if tls is not None:
        options |= {"ssl_certfile": tls[0], "ssl_keyfile": tls[1], "ssl_context_factory": _tls_factory}
    options |= overrides
    return uvicorn.Config(create_app(ctx, extra), **options)


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("coffre", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False


def serve(settings: Settings, clock: Clock | None = None, max_connections: int = MAX_CONNECTIONS,
          extra: Callable[[ServerContext], Sequence[BaseRoute]] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean stop. `extra(ctx)`: routes besides /v1
    (the command line passes the web console's)."""
    check_transport(settings)
    ctx = ServerContext.open(settings, clock)
    try:
        config = uvicorn_config(ctx, max_connections=max_connections,
                                extra=extra(ctx) if extra is not None else ())
        scheme = "https" if config.is_ssl else "http"
        log.info("serving %s://%s:%d (data %s)", scheme, settings.host, settings.port, settings.data_dir)
        server = Server(config)
        server.run()
        if not server.started:
            raise UsageError(_("the server could not listen on {host}:{port}").format(
                host=settings.host, port=settings.port),
                _("is another program using that port? choose another with --listen"))
    finally:
        ctx.close()
    log.info("stopped")
    return 0
