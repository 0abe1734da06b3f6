"""A counting HTTP reverse proxy between a backup tool and its S3 server, for the remote bench:
requests by method, bytes sent (request bodies: what crosses a pharmacy's uplink) and bytes
received. The Host header is passed unchanged, so S3 signatures stay valid. Given a `Link`, it
also makes the loopback behave like a pharmacy's internet access (a round-trip time and a rate
each way)."""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class Counts:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.sent = 0
        self.received = 0
        self.lock = threading.Lock()
        self.trace: list[tuple[str, str, str, int]] | None = None  # (method, path, range, bytes back)

    def snapshot(self) -> tuple[dict[str, int], int, int]:
        with self.lock:
            return dict(self.requests), self.sent, self.received


class Link:
    """A network link between a tool and its storage, shared by all the tool's connections: the
    round-trip time, and the rate of each direction ("down": answers, "up": request bodies).

    A new connection first waits a round trip (TCP's handshake); a request reaches the storage
    half a round trip after it is sent, its answer comes back half a round trip later; bodies are
    paced in PIECE-byte pieces through their direction's budget, so transfers in flight share
    the rate as on a real line. TCP's slow start and losses are not modelled: a real line is
    slower than this, for every tool alike. `clock` and `sleep` are time.monotonic and
    time.sleep, or a test's."""

    PIECE = 64 * 1024

    def __init__(self, down_mbit: float, up_mbit: float, rtt_ms: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not all(map(math.isfinite, (down_mbit, up_mbit, rtt_ms))) or min(down_mbit, up_mbit) <= 0 \
                or rtt_ms < 0:
            raise ValueError("a link needs rates above 0 and a round-trip time of 0 or more")
        self.down_mbit, self.up_mbit, self.rtt_ms = down_mbit, up_mbit, rtt_ms
        self._rate = {"down": down_mbit * 1e6 / 8, "up": up_mbit * 1e6 / 8}  # bytes a second
        self._free = {"down": 0.0, "up": 0.0}  # when each direction has sent what it was given
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> Link:
        """DOWN/UP/RTT: Mbit/s down, Mbit/s up, round trip in ms (e.g. 100/20/30)."""
        try:
            down, up, rtt = (float(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--link {text!r}: give DOWN/UP/RTT, e.g. 100/20/30 "
                             "(Mbit/s down, Mbit/s up, round trip in ms)") from None
        return cls(down, up, rtt)

    def describe(self) -> str:
        return (f"{self.down_mbit:g} Mbit/s down, {self.up_mbit:g} Mbit/s up, "
                f"{self.rtt_ms:g} ms round trip")

    def handshake(self) -> None:
        self._sleep(self.rtt_ms / 1000)

    def one_way(self) -> None:
        self._sleep(self.rtt_ms / 2000)

    def carry(self, direction: str, nbytes: int) -> None:
        """Return once `nbytes` have crossed the link in `direction`."""
        rate = self._rate[direction]
        while nbytes > 0:
            piece = min(nbytes, self.PIECE)
            nbytes -= piece
            with self._lock:
                start = max(self._clock(), self._free[direction])
                self._free[direction] = done = start + piece / rate
            wait = done - self._clock()
            if wait > 0:
                self._sleep(wait)


class CountingProxy:
    def __init__(self, upstream_port: int, link: Link | None = None) -> None:
        counts = self.counts = Counts()
        self.link = link
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # The answer goes out as two writes (head, then body): without this, Nagle's
                # algorithm holds the body until the client's delayed ACK, ~40 ms a request,
                # a cost of the proxy that no real server adds.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if link is not None:
                    link.handshake()

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
                return conn

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if link is not None:
                    link.carry("up", len(body))
                    link.one_way()
                for attempt in (0, 1):
                    conn = self._upstream()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        answer = conn.getresponse()
                        data = answer.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                        local.conn = None
                        if attempt:
                            raise
                if link is not None:
                    link.one_way()
                    link.carry("down", len(data) if self.command != "HEAD" else 0)
                with counts.lock:
                    counts.requests[self.command] += 1
                    counts.sent += len(body)
                    counts.received += len(data)
                    if counts.trace is not None:
                        asked = self.headers.get("Range", "")
                        counts.trace.append((self.command, self.path, asked, len(data)))
                self.send_response(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client killed mid-request (the interrupted-backup step) is expected

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
