"""Format 2's keyed gear table: its derivation, the cuts it gives through pyfastcdc, and the
run-time checks that guard writing it into pyfastcdc's objects."""

from __future__ import annotations

import hashlib
import hmac
import io
import random
import struct
import sys
from collections.abc import Callable

import pytest
from pyfastcdc.cy.fastcdc import FastCDC
from pyfastcdc.py.constants import GEAR, GEAR_LS
from pyfastcdc.py.fastcdc import FastCDC as PyFastCDC

from coffre.chunker import Chunker, ChunkerParams
from coffre.chunker import keyed as keyed_mod
from coffre.chunker.gear import MASK64, gear_table, reference_lengths
from coffre.chunker.keyed import ALLOC_SEED, GearTableError, keyed_fastcdc
from coffre.core.errors import CoffreError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SEED = 0x3C6E_F372_FE94_F82B
SMALL = ChunkerParams(256, 1024, 4096)
TINY = ChunkerParams(64, 256, 1024)


def sample(size: int) -> bytes:
    """Random bytes, then text with repeats, then a run of zeros: every kind of cut."""
    rng = random.Random(7)
    text = b"".join(b"%06d;DOLIPRANE 1000MG;%d;%s\n" % (i, rng.randrange(99), rng.randbytes(4).hex().encode())
                    for i in range(size // 64))
    data = rng.randbytes(size // 2) + text[: size // 2 - 20000] + bytes(20000)
    return data[:size]


def chunker_lengths(c: Chunker, data: bytes) -> list[int]:
    return [len(x) for x in c.chunks(io.BytesIO(data))]


def pure_pyfastcdc_lengths(data: bytes, table: tuple[int, ...], p: ChunkerParams) -> list[int]:
    """pyfastcdc's pure-Python FastCDC with its table swapped: another implementation."""
    cdc = PyFastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size)
    cdc.config.gear = table
    cdc.config.gear_ls = tuple((t << 1) & MASK64 for t in table)
    return [c.length for c in cdc.cut_buf(data)]


# --- the derivation is a format: pinned ---


def test_table_known_answer() -> None:
    table = gear_table(KEY)
    assert len(table) == 256 and all(0 <= t <= MASK64 for t in table)
    assert table[:4] == (0x057FF1B43679BB86, 0xB3DCA4F19D276CAD, 0xF22B42A2499279B2, 0x597C37EE1ACACA8B)
    assert table[255] == 0xC63B4EDED6A19CDA
    assert (hashlib.sha256(struct.pack("<256Q", *table)).hexdigest()
            == "aa57d75d3e48f7b8b2d24ce4b9935625d414086d822379797f656b0e5a269eb8")


def test_table_is_hkdf_sha256_as_documented() -> None:
    """RFC 5869 written out with hmac: extract with a zero salt, expand 64 blocks."""
    prk = hmac.new(bytes(32), KEY, "sha256").digest()
    out, block = b"", b""
    for i in range(1, 65):
        block = hmac.new(prk, block + b"coffre chunker gear table v2" + bytes([i]), "sha256").digest()
        out += block
    assert gear_table(KEY) == struct.unpack("<256Q", out)
    assert gear_table(OTHER_KEY) != gear_table(KEY)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33)])
def test_table_needs_a_32_byte_key(key: bytes) -> None:
    with pytest.raises(ValueError):
        gear_table(key)


# --- cuts ---


def test_reference_is_pyfastcdc_cut_function() -> None:
    """The reference, given pyfastcdc's own seeded table, cuts exactly as pyfastcdc."""
    data = sample(1 << 20)
    seeded = tuple(g ^ SEED for g in GEAR)
    for p in (SMALL, TINY):
        ours = reference_lengths(data, seeded, p.min_size, p.avg_size, p.max_size)
        theirs = [c.length for c in FastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size,
                                            seed=SEED).cut_buf(data)]
        assert ours == theirs and len(ours) > 100


@pytest.mark.parametrize("params", [SMALL, TINY])
def test_keyed_cuts_equal_reference(params: ChunkerParams) -> None:
    data = sample(3 << 20)
    table = gear_table(KEY)
    got = chunker_lengths(Chunker(params, SEED, gear_key=KEY), data)
    assert sum(got) == len(data) and len(got) > 500
    assert got == reference_lengths(data, table, params.min_size, params.avg_size, params.max_size)
    assert got == pure_pyfastcdc_lengths(data, table, params)
    # The table really is not the seeded one.
    assert got != chunker_lengths(Chunker(params, SEED), data)


def test_keyed_cuts_at_default_sizes() -> None:
    data = random.Random(3).randbytes(8 << 20)
    p = ChunkerParams()
    c = Chunker(p, SEED, gear_key=KEY)
    got = chunker_lengths(c, data)
    assert chunker_lengths(c, data) == got  # one instance serves every stream
    assert got == [x.length for x in keyed_fastcdc(gear_table(KEY), p.min_size, p.avg_size,
                                                   p.max_size).cut_buf(data)]
    # Only the first chunks: the reference is slow in pure Python.
    view, offset = memoryview(data), 0
    for n in got[:3]:
        assert reference_lengths(view[offset : offset + p.max_size + 1].tobytes(), gear_table(KEY),
                                 p.min_size, p.avg_size, p.max_size)[0] == n
        offset += n


def test_two_keys_cut_differently() -> None:
    data = sample(1 << 20)
    a = chunker_lengths(Chunker(SMALL, SEED, gear_key=KEY), data)
    b = chunker_lengths(Chunker(SMALL, SEED, gear_key=OTHER_KEY), data)
    assert a != b
    assert b == reference_lengths(data, gear_table(OTHER_KEY), SMALL.min_size, SMALL.avg_size, SMALL.max_size)


def test_seed_does_not_matter_with_a_key() -> None:
    data = sample(1 << 20)
    assert (chunker_lengths(Chunker(SMALL, SEED, gear_key=KEY), data)
            == chunker_lengths(Chunker(SMALL, 1, gear_key=KEY), data))


PINNED_V1_LENGTHS = "64da0833b5c91e8425cac4b75c05da88164645b7d8777c09afb59df0834f5bb4"


@pytest.mark.parametrize("params", [SMALL, ChunkerParams()])
def test_without_key_cuts_are_format_1(params: ChunkerParams) -> None:
    data = random.Random(5).randbytes(4 << 20) + sample(2 << 20)
    got = chunker_lengths(Chunker(params, SEED), data)
    pyf = FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size, seed=SEED)
    assert got == [c.length for c in pyf.cut_buf(data)]
    assert chunker_lengths(Chunker(params, SEED ^ 1), data) != got


def test_without_key_cuts_are_pinned() -> None:
    """Format 1 boundaries, as every existing repository has them: a pyfastcdc change that
    moved them would break deduplication against old snapshots."""
    data = random.Random(11).randbytes(2 << 20) + sample(1 << 20)
    got = chunker_lengths(Chunker(SMALL, SEED), data)
    assert len(got) == 2507
    assert (hashlib.sha256(struct.pack(f"<{len(got)}I", *got)).hexdigest()
            == PINNED_V1_LENGTHS)


# --- the checks before writing into pyfastcdc ---


def bases() -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(GEAR), tuple(GEAR_LS)


def seeded_lengths(cdc: object, data: bytes) -> list[int]:
    return [c.length for c in cdc.cut_buf(data)]  # type: ignore[attr-defined]


def test_layout_is_found_on_a_genuine_instance() -> None:
    cdc = FastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED)
    holder, holder_ls, _ = keyed_mod._locate(cdc, ALLOC_SEED, 256, 1024, 4096, *bases())
    assert holder and holder_ls and holder != holder_ls


def flipped(table: tuple[int, ...], i: int) -> tuple[int, ...]:
    return (*table[:i], table[i] ^ 1 << 40, *table[i + 1 :])


@pytest.mark.parametrize(
    "change",
    ["seed", "avg", "min", "max", "gear first", "gear last", "gear_ls middle"],
)
def test_layout_mismatch_is_refused(change: str) -> None:
    cdc = FastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED)
    seed, sizes = ALLOC_SEED, [256, 1024, 4096]
    gear, gear_ls = bases()
    if change == "seed":
        seed ^= 1 << 20
    elif change in ("min", "avg", "max"):
        sizes[["min", "avg", "max"].index(change)] *= 2
    elif change == "gear first":
        gear = flipped(gear, 0)
    elif change == "gear last":
        gear = flipped(gear, 255)
    else:
        gear_ls = flipped(gear_ls, 128)
    with pytest.raises(GearTableError):
        keyed_mod._locate(cdc, seed, *sizes, gear, gear_ls)


def test_wrong_masks_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cdc = FastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED)
    monkeypatch.setattr(keyed_mod, "masks", lambda avg: (0x0000590003530000, 0x0000019000353000 ^ 1))
    with pytest.raises(GearTableError, match="masks"):
        keyed_mod._locate(cdc, ALLOC_SEED, 256, 1024, 4096, *bases())


def test_config_must_be_found_once_and_fit() -> None:
    sizes = struct.pack("=3I", 1024, 256, 4096)
    head = bytes(16)
    assert keyed_mod._masks_offset(head + sizes + bytes(68), 256, 1024, 4096) == 32
    for raw in (head + sizes + bytes(4) + sizes + bytes(68), head + bytes(96), head + sizes + bytes(60)):
        with pytest.raises(GearTableError):
            keyed_mod._masks_offset(raw, 256, 1024, 4096)
    # The object header (refcount, type) is never taken for the config.
    with pytest.raises(GearTableError):
        keyed_mod._masks_offset(sizes + bytes(100), 256, 1024, 4096)


@pytest.mark.parametrize(
    "pointers",
    [
        (4096, 8192, 4096, 8192 + 8),  # config.gear_ls is not gear_holder_ls
        (4096, 8192, 4096 + 2048, 8192),  # config.gear is not gear_holder
        (0, 8192, 0, 8192),  # NULL
        (4096, 0, 4096, 0),
        (4100, 8192, 4100, 8192),  # misaligned
        (4096, 8196, 4096, 8196),
        (4096, 5000, 4096, 5000),  # overlapping
        (8192, 8192, 8192, 8192),
    ],
)
def test_table_pointers_must_be_sane(pointers: tuple[int, int, int, int]) -> None:
    keyed_mod._check_pointers(4096, 8192, 4096, 8192)
    with pytest.raises(GearTableError):
        keyed_mod._check_pointers(*pointers)


def test_write_is_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short write of the table, or one that also changed the object, is refused."""
    import ctypes

    real = ctypes.memmove
    def short_write(which: int) -> Callable[[int, bytes, int], None]:
        calls = []

        def write(dst: int, src: bytes, n: int) -> None:
            calls.append(dst)
            real(dst, src, n - 8 if len(calls) == which else n)

        return write

    for which in (1, 2):  # gear_holder, gear_holder_ls
        monkeypatch.setattr(ctypes, "memmove", short_write(which))
        with pytest.raises(GearTableError, match="read back"):
            keyed_mod._install(FastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED),
                               gear_table(KEY), 256, 1024, 4096)
    cdc = FastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED)

    def write_and_change_avg_size(dst: int, src: bytes, n: int) -> None:
        real(dst, src, n)
        real(id(cdc) + 16, struct.pack("=I", 2048), 4)

    monkeypatch.setattr(ctypes, "memmove", write_and_change_avg_size)
    with pytest.raises(GearTableError, match="read back"):
        keyed_mod._install(cdc, gear_table(KEY), 256, 1024, 4096)


def test_refused_install_writes_nothing() -> None:
    """An instance made with another seed than the one checked for: refused, and it still
    cuts exactly as pyfastcdc with its own seed (nothing half-written)."""
    data = sample(1 << 20)
    other = ALLOC_SEED ^ 0xFF
    cdc = FastCDC(1024, min_size=256, max_size=4096, seed=other)
    before = seeded_lengths(cdc, data)
    with pytest.raises(GearTableError, match="GEAR \\^ seed"):
        keyed_mod._install(cdc, gear_table(KEY), 256, 1024, 4096)
    assert seeded_lengths(cdc, data) == before
    assert before == seeded_lengths(FastCDC(1024, min_size=256, max_size=4096, seed=other), data)


def test_unseeded_instance_is_refused() -> None:
    """Without a seed, config.gear points at pyfastcdc's shared table: never written."""
    data = sample(1 << 20)
    plain = FastCDC(1024, min_size=256, max_size=4096)
    with pytest.raises(GearTableError, match="own table"):
        keyed_mod._install(plain, gear_table(KEY), 256, 1024, 4096)
    assert seeded_lengths(FastCDC(1024, min_size=256, max_size=4096), data) == seeded_lengths(
        PyFastCDC(1024, min_size=256, max_size=4096), data
    )


def test_pure_python_instance_is_refused() -> None:
    with pytest.raises(GearTableError, match="compiled"):
        keyed_mod._install(PyFastCDC(1024, min_size=256, max_size=4096, seed=ALLOC_SEED),
                           gear_table(KEY), 256, 1024, 4096)


def test_changed_pyfastcdc_table_refuses_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a pyfastcdc whose built-in table differs from the one checked would look."""
    gear, gear_ls = bases()
    monkeypatch.setattr(keyed_mod, "_base_tables", lambda: (flipped(gear, 77), gear_ls))
    with pytest.raises(GearTableError) as e:
        Chunker(SMALL, SEED, gear_key=KEY)
    assert isinstance(e.value, CoffreError) and e.value.hint and "0.3.1" in e.value.hint
    Chunker(SMALL, SEED)  # format 1 does not depend on it


def test_missing_extension_refuses_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyfastcdc.cy.fastcdc", None)  # import raises ImportError
    with pytest.raises(GearTableError, match="compiled extension"):
        Chunker(SMALL, SEED, gear_key=KEY)


def test_probe_cut_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed table must also cut a known buffer as the reference does."""
    real = keyed_mod.reference_lengths
    monkeypatch.setattr(keyed_mod, "reference_lengths", lambda data, *a: real(data, *a)[1:])
    with pytest.raises(GearTableError, match="does not cut"):
        keyed_fastcdc(gear_table(KEY), 256, 1024, 4096)


def test_table_shape_is_checked() -> None:
    with pytest.raises(ValueError):
        keyed_fastcdc(gear_table(KEY)[:255], 256, 1024, 4096)
    with pytest.raises(ValueError):
        keyed_fastcdc((1 << 64, *gear_table(KEY)[1:]), 256, 1024, 4096)


def test_speed_benchmark_runs() -> None:
    """bench/gear_speed.py cannot rot; its keyed variants agree on the chunks (no timing)."""
    import re
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gear_speed.py"
    out = subprocess.run([sys.executable, str(script), "--mib", "4", "--runs", "1", "--pure-mib", "1"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = dict(re.findall(r"^\s+([\w-]+)\s+\d+ MB/s .*?; (\d+) chunks\)", out.stdout, re.M))
    assert {"seeded", "keyed-a", "chunker-seeded", "chunker-keyed"} <= counts.keys()
    assert counts["keyed-a"] == counts["chunker-keyed"] == counts.get("c-ext-b", counts["keyed-a"])
    assert counts["seeded"] == counts["chunker-seeded"]
    assert "pure-c" in out.stdout
