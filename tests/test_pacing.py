"""Bandwidth limits: rates and opening-hours schedules, a pacer that holds the rate (on an
injected clock), and every remote backend passing each byte it sends or receives through it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from coffre.core.errors import UsageError
from coffre.storage.base import Backend, Handle
from coffre.storage.pacing import Pacer, parse_limit
from coffre.storage.url import open_backend
from test_storage import fresh_s3_url

KIB = 1024


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 30, hour, minute)


def test_rates_and_schedules() -> None:
    assert parse_limit("512").rate_at(at(3)) == 512 * KIB
    assert parse_limit("2MiB").rate_at(at(3)) == 2 * KIB * KIB
    assert parse_limit("unlimited").rate_at(at(3)) is None
    opening = parse_limit("08:30-19:30=512KiB,*=unlimited")
    assert opening.rate_at(at(8, 29)) is None
    assert opening.rate_at(at(8, 30)) == 512 * KIB
    assert opening.rate_at(at(19, 29)) == 512 * KIB
    assert opening.rate_at(at(19, 30)) is None
    night = parse_limit("22:00-06:00=unlimited,*=100")
    assert night.rate_at(at(23)) is None and night.rate_at(at(5, 59)) is None
    assert night.rate_at(at(12)) == 100 * KIB
    first_wins = parse_limit("12:00-14:00=2MiB,08:00-20:00=256KiB")
    assert first_wins.rate_at(at(13)) == 2 * KIB * KIB and first_wins.rate_at(at(9)) == 256 * KIB
    assert first_wins.rate_at(at(21)) is None  # no '*': unlimited outside the ranges


@pytest.mark.parametrize("bad", ["fast", "512 bananas", "8h-19h=512", "08:30-19:30", "25:00-26:00=1",
                                 "08:30-19:30=", "-5"])
def test_bad_limits_are_refused_clearly(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_limit(bad)
    assert "limit" in info.value.message


class VirtualTime:
    def __init__(self, wall: datetime) -> None:
        self.t = 1000.0
        self.slept = 0.0
        self.wall = wall

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.t += seconds

    def pacer(self, spec: str) -> Pacer:
        return Pacer(parse_limit(spec), now=lambda: self.wall, monotonic=self.monotonic, sleep=self.sleep)


def test_the_pacer_holds_the_rate_in_force() -> None:
    clock = VirtualTime(at(10))
    pacer = clock.pacer("08:30-19:30=512KiB,*=unlimited")
    pacer.take(1024 * KIB)
    assert clock.slept == pytest.approx(2.0, abs=0.01)
    clock.wall = at(20)  # closing time: no limit
    before = clock.slept
    pacer.take(100 * 1024 * KIB)
    assert clock.slept == before
    clock.wall = at(9)
    clock.t += 60  # idle for a minute: half a second of burst, not a minute's worth
    before = clock.slept
    pacer.take(1024 * KIB)
    assert clock.slept - before == pytest.approx(1.5, abs=0.01)


@pytest.fixture(params=["s3", "sftp", "ftps"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        b = open_backend(fresh_s3_url(request.getfixturevalue("seaweedfs")))
    elif request.param == "sftp":
        request.getfixturevalue("ssh_env")
        b = open_backend(request.getfixturevalue("sshd").url(str(tmp_path / "nas")))
    else:
        request.getfixturevalue("ftp_env")
        b = open_backend(request.getfixturevalue("ftps_server").url(f"/paced-{tmp_path.name}"))
    b.create()
    yield b
    b.close()


def test_remote_backends_pace_every_byte(remote: Backend) -> None:
    up, down = VirtualTime(at(10)), VirtualTime(at(10))
    remote.upload_pacer = up.pacer("512")  # type: ignore[attr-defined]
    remote.download_pacer = down.pacer("256")  # type: ignore[attr-defined]
    data = bytes(range(256)) * 4096  # 1 MiB
    h = Handle("data", "ab" + "9" * 62)
    remote.save(h, data)
    assert up.slept == pytest.approx(2.0, abs=0.15)
    assert remote.load(h) == data
    assert down.slept == pytest.approx(4.0, abs=0.3)


def test_a_bad_limit_on_the_command_line(repo: object, tree: Path) -> None:
    res = repo("backup", str(tree), "--limit-upload", "vite")  # type: ignore[operator]
    assert res.code == 2 and "--limit-upload vite: not a rate" in res.err
