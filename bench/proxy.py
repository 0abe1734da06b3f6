"""A counting HTTP reverse proxy between a backup tool and its S3 server, for the remote bench:
requests by method, bytes sent (request bodies: what crosses a pharmacy's uplink) and bytes
received. The Host header is passed unchanged, so S3 signatures stay valid."""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
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


class CountingProxy:
    def __init__(self, upstream_port: int) -> None:
        counts = self.counts = Counts()
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

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
                return conn

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
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
