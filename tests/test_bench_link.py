"""The remote bench's emulated line (bench/proxy.py Link): what a restore over a pharmacy's
internet access is measured through must pace and delay as it says."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from test_bench_smoke import BENCH, bench_module

proxy = bench_module("proxy")


class FakeTime:
    """A clock that only sleeping moves (or, with frozen=True, nothing moves: each sleep is
    only recorded)."""

    def __init__(self, frozen: bool = False) -> None:
        self.now, self.frozen, self.slept = 0.0, frozen, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if not self.frozen:
            self.now += seconds


def test_a_transfer_takes_its_size_over_the_rate() -> None:
    t = FakeTime()
    link = proxy.Link(8, 2, 40, clock=t.clock, sleep=t.sleep)  # 1 MB/s down, 0.25 MB/s up
    link.carry("down", 3_000_000)
    assert t.now == pytest.approx(3.0)
    link.carry("up", 500_000)
    assert t.now == pytest.approx(5.0)


def test_transfers_in_flight_share_the_rate() -> None:
    """A second transfer given before the first has crossed waits for it (the clock does not
    move here: each sleep is how long that piece waits from the same instant)."""
    t = FakeTime(frozen=True)
    link = proxy.Link(8, 8, 0, clock=t.clock, sleep=t.sleep)
    link.carry("down", 1_000_000)
    first = max(t.slept)
    link.carry("down", 1_000_000)
    assert first == pytest.approx(1.0)
    assert max(t.slept) == pytest.approx(2.0)
    link.carry("up", 1_000_000)  # the other direction has its own budget
    assert t.slept[-1] == pytest.approx(1.0)


def test_the_round_trip_is_waited_once_per_handshake_and_half_each_way() -> None:
    t = FakeTime()
    link = proxy.Link(100, 100, 30, clock=t.clock, sleep=t.sleep)
    link.handshake()
    link.one_way()
    assert t.slept == pytest.approx([0.030, 0.015])


@pytest.mark.parametrize("text", ["100/20", "fast/20/30", "0/20/30", "100/20/-1", "nan/20/30", "100/inf/30"])
def test_a_wrong_line_is_refused_with_its_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"DOWN/UP/RTT|rates above 0"):
        proxy.Link.parse(text)


def test_the_bench_refuses_a_wrong_line_before_it_starts() -> None:
    out = subprocess.run([sys.executable, str(BENCH.with_name("remote.py")), "--link", "100/20"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "DOWN/UP/RTT" in out.stderr


@pytest.fixture
def upstream() -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1 answering each GET with 100,000 bytes."""

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 100_000)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_proxy_delays_and_paces_what_it_forwards(upstream: int) -> None:
    t = FakeTime()
    link = proxy.Link(8, 8, 20, clock=t.clock, sleep=t.sleep)
    p = proxy.CountingProxy(upstream, link)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p.port}/pack", timeout=30) as answer:
            body = answer.read()
    finally:
        p.stop()
    assert body == b"x" * 100_000  # forwarded whole
    assert t.slept[:3] == pytest.approx([0.020, 0.010, 0.010])  # handshake, request, answer
    assert t.now == pytest.approx(0.040 + 0.1)  # then 100 kB at 1 MB/s
    assert p.counts.snapshot() == ({"GET": 1}, 0, 100_000)
