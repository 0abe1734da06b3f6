"""Serving a page app on a thread of a process that has its own main loop (the agent's
scheduler): uvicorn on its own event loop, started and stopped with the process. Binding to
anything but loopback requires TLS (a certificate and its key), checked before listening."""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.core.net import is_loopback

log = logging.getLogger("coffre.web")


def check_listen(host: str, tls: tuple[str, str] | None) -> None:
    if not is_loopback(host) and tls is None:
        raise UsageError(_("the page may listen on {host} only with TLS").format(host=host),
                         _("give a certificate and its key (tls_cert, tls_key), or listen on 127.0.0.1"))


class ThreadedServer:
    """uvicorn serving `app` on a daemon thread."""

    def __init__(self, app: Any, host: str, port: int, tls: tuple[str, str] | None = None) -> None:
        check_listen(host, tls)
        options: dict[str, Any] = {"host": host.strip("[]"), "port": port, "lifespan": "off", "ws": "none",
                                   "log_config": None, "access_log": False, "server_header": False,
                                   "timeout_keep_alive": 5, "limit_concurrency": 64,
                                   # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: on
                                   # loopback that is every client, which could then pick the
                                   # address the login throttle counts
                                   "proxy_headers": False}
        if tls is not None:
            options |= {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        for s in servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        done = threading.Event()

        def wait() -> None:
            while not self.server.started and self.thread.is_alive():
                done.wait(0.02)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if not self.server.started:
            raise UsageError(_("the page could not listen on {host}:{port}").format(
                host=self.server.config.host, port=self.server.config.port),
                _("is another program using that port? choose another listen address"))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
