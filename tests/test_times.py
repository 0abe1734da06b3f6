"""Any time a file system holds round-trips: files dated before 1677 or after 2262 (the
int64-nanosecond range), out to what time_t holds, back up, list, verify and restore exactly,
and trees of ordinary folders keep the bytes every earlier version wrote."""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.core.clock import format_ns, iso_ns
from coffre.core.errors import FormatError
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, decode_tree, encode_tree
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import Coffre, Mount

NS = 1_000_000_000
CYCLE_S = 146_097 * 86_400  # 400 Gregorian years, to the second
FIXTURE = Path(__file__).parent / "fixtures" / "repo-v1"


def _jan1(year: int) -> int:
    """Seconds at year-01-01T00:00:00Z, for any year (whole 400-year cycles from 2000)."""
    cycles, rest = divmod(year - 2000, 400)
    return calendar.timegm((2000 + rest, 1, 1, 0, 0, 0)) + cycles * CYCLE_S


# name -> (seconds, what `ls -l` shows in UTC). The last two are the widest a tmpfs takes
# (time_t, one second short of each end: the kernel clamps there).
DATED = {
    "an-1000": (_jan1(1000), "1000-01-01 00:00:00"),
    "an-1500": (_jan1(1500), "1500-01-01 00:00:00"),
    "an-1800": (_jan1(1800), "1800-01-01 00:00:00"),
    "an-2400": (_jan1(2400), "2400-01-01 00:00:00"),
    "an-3000": (_jan1(3000), "3000-01-01 00:00:00"),
    "an-9999": (_jan1(9999), "9999-01-01 00:00:00"),
    "an-30000": (_jan1(30000), "+30000-01-01 00:00:00 UTC"),
    "avant-jc": (_jan1(-500), "-0500-01-01 00:00:00 UTC"),
    "fin-time_t": (2**63 - 2, "+292277026596-12-04 15:30:06 UTC"),
    "debut-time_t": (-(2**63) + 1, "-292277022657-01-27 08:29:53 UTC"),
}
FRACTION = 123_456_789  # every time keeps its nanoseconds


@pytest.fixture
def tmpfs(mount: Mount) -> Path:
    """A tmpfs: it holds any time_t with nanoseconds, where ext4 clamps to 1901..2446."""
    return mount("tmpfs", "-t", "tmpfs", "-o", "size=32m", "tmpfs")


def _dated_tree(root: Path) -> dict[str, int]:
    """A folder of files dated DATED, plus an ordinary one; name -> mtime in ns."""
    folder = root / "src" / "scanner"
    folder.mkdir(parents=True)
    ordinary = calendar.timegm((2025, 6, 1, 8, 0, 0)) * NS
    times = {name: secs * NS + FRACTION for name, (secs, _) in DATED.items()}
    times["ordinaire.txt"] = ordinary
    for name, ns in times.items():
        (folder / name).write_text(f"ordonnance {name}\n")
        os.utime(folder / name, ns=(ns, ns))
        # The file system must hold the time, or this test would test nothing.
        assert os.stat(folder / name).st_mtime_ns == ns, name
    for d in (folder, root / "src"):
        os.utime(d, ns=(ordinary, ordinary))
    return times


def test_files_dated_anywhere_in_time_t_back_up_list_verify_and_restore(
    repo: Coffre, tmpfs: Path
) -> None:
    times = _dated_tree(tmpfs)
    src, folder = tmpfs / "src", tmpfs / "src" / "scanner"
    first = repo.ok("backup", str(src), "--json").json()
    assert first["errors"] == [] and first["warnings"] == []

    # Nothing changed: no new tree, no new blob; the files dated in the past (the files cache
    # stores their times exactly, beyond SQLite's int64 too) are not even read again.
    second = repo.ok("backup", str(src), "--json").json()
    # Only the folders above the source may have changed (another process touched /tmp):
    # their new trees are then the only blobs added.
    listed = [{n["path"]: n for n in json.loads(repo.ok("ls", "--json", snap).out)["nodes"]}
              for snap in (first["snapshot"], second["snapshot"])]
    assert listed[0].keys() == listed[1].keys()
    changed = [p for p in listed[0] if listed[0][p] != listed[1][p]]
    assert all(Path(p) in src.parents for p in changed), changed
    assert second["summary"]["blobs_added"] <= len(changed)
    past = [name for name, ns in times.items() if ns < time.time_ns()]
    future = [name for name in times if name not in past]
    assert len(past) == 6 and len(future) == 5
    # Only the future-dated ones are read again; read or not, all are unchanged.
    assert second["summary"]["bytes_read"] == sum((folder / name).stat().st_size for name in future)
    assert second["summary"]["files_unmodified"] == len(times) and second["summary"]["files_changed"] == 0

    utc = {"TZ": "UTC"}
    long = repo.ok("ls", "-l", "latest", str(folder), env=utc).out
    for name, (_, shown) in DATED.items():
        assert re.search(rf" {re.escape(shown)} {re.escape(str(folder / name))}$", long, re.M), name
    nodes = {Path(n["path"]).name: n for n in json.loads(repo.ok("ls", "--json", "latest").out)["nodes"]}
    for name, (_, shown) in DATED.items():
        iso = shown.removesuffix(" UTC").replace(" ", "T") + ".123456789Z"
        assert nodes[name]["mtime"] == iso, name

    assert json.loads(repo.ok("verify", "latest", "--json").out)["differences"] == []

    target = tmpfs / "restored"
    repo.ok("restore", "latest", "--target", str(target), "--verify")
    back = target / str(folder).lstrip("/")
    for name, ns in times.items():
        assert os.stat(back / name).st_mtime_ns == ns, name
        assert (back / name).read_text() == f"ordonnance {name}\n"

    # verify compares such times to the nanosecond, and diff sees the change.
    ns = times["an-30000"] + 1
    os.utime(folder / "an-30000", ns=(ns, ns))
    res = repo("verify", "latest", "--json")
    assert res.code == 1
    assert json.loads(res.out)["differences"] == [f"{folder / 'an-30000'}: modification time differs"]
    repo.ok("backup", str(src))
    changes = json.loads(repo.ok("diff", first["snapshot"], "latest", "--json").out)["changes"]
    assert [c["path"] for c in changes] == [str(folder / "an-30000")]


# An ordinary tree as every version so far encoded it: int64 times stay plain integers, and
# so do the uint64 ones (2262 to 2554) that earlier versions wrote but could not read back.
ORDINARY = [
    Node(name=b"ventes.csv", type="file", mode=0o644, uid=1000, gid=1000, user="pharma",
         group="pharma", mtime_ns=1_700_000_000_123_456_789, atime_ns=1_700_000_100_000_000_000,
         ctime_ns=1_700_000_200_987_654_321, size=42, inode=1234567, device=2049, nlink=1,
         content=[bytes(range(32))]),
    Node(name=b"archives", type="dir", mode=0o755, mtime_ns=-(2**63), atime_ns=-(2**63),
         ctime_ns=0, subtree=bytes(32), inode=99, device=2049, nlink=2),
    Node(name=b"lien", type="symlink", mode=0o777, mtime_ns=2**63 - 1, atime_ns=-1, ctime_ns=1,
         target=b"ventes.csv"),
    Node(name=b"scanner-2400", type="file", mode=0o600, mtime_ns=13_569_465_600_000_000_000,
         atime_ns=2**64 - 1, ctime_ns=2**63, size=0),
]
ORDINARY_BYTES = bytes.fromhex(
    "82a17601a56e6f646573948fa16ec4086172636869766573a174a3646972a16dcd01eda17500a16700a2756ea0"
    "a2676ea0a26d74d38000000000000000a26174d38000000000000000a2637400a17300a16963a164cd0801a16c"
    "02a27374c42000000000000000000000000000000000000000000000000000000000000000008fa16ec4046c69"
    "656ea174a773796d6c696e6ba16dcd01ffa17500a16700a2756ea0a2676ea0a26d74cf7fffffffffffffffa261"
    "74ffa2637401a17300a16900a16400a16c01a27467c40a76656e7465732e6373768fa16ec40c7363616e6e6572"
    "2d32343030a174a466696c65a16dcd0180a17500a16700a2756ea0a2676ea0a26d74cfbc506d11afe20000a261"
    "74cfffffffffffffffffa26374cf8000000000000000a17300a16900a16400a16c01a163908fa16ec40a76656e"
    "7465732e637376a174a466696c65a16dcd01a4a175cd03e8a167cd03e8a2756ea6706861726d61a2676ea67068"
    "61726d61a26d74cf17979cfe3d85cd15a26174cf17979d157ea0e800a26374cf17979d2d01f638b1a1732aa169"
    "ce0012d687a164cd0801a16c01a16391c420000102030405060708090a0b0c0d0e0f101112131415161718191a"
    "1b1c1d1e1f"
)


def test_ordinary_trees_keep_their_bytes_and_old_far_future_trees_read_back() -> None:
    assert encode_tree(ORDINARY) == ORDINARY_BYTES
    assert decode_tree(ORDINARY_BYTES) == sorted(ORDINARY, key=lambda n: n.name)


def test_times_beyond_messagepack_integers_are_seconds_and_nanoseconds() -> None:
    node = Node(name=b"scanner", type="file", mode=0o600, mtime_ns=-(2**63) - 1, atime_ns=2**64,
                ctime_ns=(2**63 - 1) * NS + 999_999_999)
    wire = node.to_wire()
    assert (wire["mt"], wire["at"], wire["ct"]) == (
        [-9_223_372_037, 145_224_191], [18_446_744_073, 709_551_616], [2**63 - 1, 999_999_999]
    )
    data = encode_tree([node])
    assert data == bytes.fromhex(
        "82a17601a56e6f646573918fa16ec4077363616e6e6572a174a466696c65a16dcd0180a17500a16700a275"
        "6ea0a2676ea0a26d7492d3fffffffdda3e82fbce08a7f1ffa2617492cf000000044b82fa09ce2a4ae600a2"
        "637492cf7fffffffffffffffce3b9ac9ffa17300a16900a16400a16c01a16390"
    )
    assert decode_tree(data) == [node]
    # The decoder stays strict about both forms.
    for bad in ([1], [1, 2, 3], [1, NS], [1, -1], [2**63, 0], [True, 0], "2400", 2**64,
                -(2**63) - 1, 1.5, None):
        wire["mt"] = bad
        with pytest.raises(FormatError, match="mtime"):
            Node.from_wire(wire)


ANY_TIME = st.integers(-(2**63) * NS, (2**63 - 1) * NS + NS - 1)  # every time_t, to the ns


@given(mt=ANY_TIME, at=ANY_TIME, ct=ANY_TIME)
def test_every_time_t_round_trips_through_a_tree(mt: int, at: int, ct: int) -> None:
    node = Node(name=b"f", type="file", mtime_ns=mt, atime_ns=at, ctime_ns=ct)
    assert decode_tree(encode_tree([node])) == [node]
    plain = -(2**63) <= mt < 2**64  # what a MessagePack integer holds stays one
    assert isinstance(node.to_wire()["mt"], int) == plain


def test_a_snapshot_is_never_written_with_a_time_it_could_not_be_read_with() -> None:
    snap = Snapshot(time_ns=2**63 - 1, hostname="officine", username="", paths=["/srv"],
                    tree=bytes(32))
    assert Snapshot.from_bytes(snap.to_bytes(), "x").time_ns == 2**63 - 1
    for ns in (2**63, -(2**63) - 1):
        snap.time_ns = ns
        with pytest.raises(FormatError, match="clock") as err:
            snap.to_bytes()
        assert err.value.hint


@pytest.mark.parametrize("secs", [
    -(2**63), -(2**62), _jan1(1) - 1, _jan1(1), _jan1(10000), 2**62, 2**63 - 1,
])
def test_time_rendering_never_fails(secs: int) -> None:
    iso = iso_ns(secs * NS + 999_999_999)
    assert re.fullmatch(r"([+-]\d{5,}|-\d{4}|\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d\.999999999Z", iso), iso
    # People's rendering is local time where the calendar allows it, else UTC and says so.
    assert re.fullmatch(r"[+-]?\d{4,}-\d\d-\d\d \d\d:\d\d:\d\d( UTC)?", format_ns(secs * NS))


def test_times_beyond_the_calendar_of_datetime_render_exactly() -> None:
    assert iso_ns(_jan1(10000) * NS) == "+10000-01-01T00:00:00.000000000Z"
    assert iso_ns((_jan1(1) - 1) * NS + 5) == "0000-12-31T23:59:59.000000005Z"
    assert iso_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_ns(_jan1(-500) * NS) == "-0500-01-01 00:00:00 UTC"


def test_trees_of_the_v1_fixture_reencode_to_the_same_bytes(tmp_path: Path) -> None:
    """Trees of unchanged folders keep their ids: real trees written by Coffre 0.1.0."""
    shutil.copytree(FIXTURE / "repo", tmp_path / "repo")
    repo = Repository.open(LocalBackend(tmp_path / "repo"), (FIXTURE / "password").read_text().strip())
    repo.load_index()
    (snap,) = repo.snapshots()
    stack, seen = [snap.tree], 0
    while stack:
        data = repo.load_blob(stack.pop())
        nodes = decode_tree(data)
        assert encode_tree(nodes) == data
        stack += [n.subtree for n in nodes if n.subtree is not None]
        seen += 1
    assert seen >= 4
