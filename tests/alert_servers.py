"""Real servers that receive alerts, on 127.0.0.1 and free ports, for the alert tests and the
agent's end-to-end test: an SMTP sink (aiosmtpd) that demands STARTTLS (or speaks implicit
TLS) and AUTH with one user and password, and an HTTP receiver (http.server in a thread) for
webhooks and heartbeat pings, which can answer an error or never answer at all."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from servers import self_signed_cert

SMTP_USER = "pharmacie@example.org"
SMTP_PASSWORD = "smtp-secret-never-in-a-mail"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None  # the user name the client logged in with

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.sink.lock:
            self.sink.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw, msg, login))
        return "250 OK"


class _Controller(Controller):
    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # Implicit TLS: aiosmtpd warns that AUTH is not tied to STARTTLS, but there the
            # whole connection is TLS.
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpSink:
    """An SMTP server that accepts mail only after STARTTLS (or over implicit TLS when
    `implicit_tls`) and a login as SMTP_USER with `password`. `mechanisms` limits the AUTH
    mechanisms offered. `ca_file` is the certificate a client must trust."""

    def __init__(self, directory: Path, password: str = SMTP_PASSWORD, implicit_tls: bool = False,
                 mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")) -> None:
        self.password = password
        self.received: list[Received] = []
        self.logins: list[tuple[str, bool]] = []  # (mechanism, accepted)
        self.lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed_cert(directory)
        self.ca_file = str(cert)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.port = free_port()
        self.implicit_tls = implicit_tls
        excluded = [m for m in ("LOGIN", "PLAIN") if m not in mechanisms]
        kwargs: dict[str, Any] = {"auth_required": True, "authenticator": self._authenticate,
                                  "auth_exclude_mechanism": excluded}
        if implicit_tls:
            # aiosmtpd only counts STARTTLS as TLS for AUTH; here the whole connection is.
            kwargs.update(ssl_context=context, auth_require_tls=False)
        else:
            kwargs.update(tls_context=context, require_starttls=True)
        self.controller = _Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and data.login.decode() == SMTP_USER
              and data.password.decode() == self.password)
        with self.lock:
            self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False, auth_data=data)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """An HTTP server recording every request. `status` is the answer's code; with `hang`,
    it never answers until stopped (a webhook that times out)."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status, self.hang = status, hang
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append(Request(self.command, self.path, dict(self.headers), body))
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HttpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)
