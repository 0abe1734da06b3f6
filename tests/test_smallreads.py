"""Small new files read, named and compressed by helper processes (ops/smallreads.py, and
ops/smallhelper.py for what a helper runs): what they store restores to the same bytes, what
they cannot read exactly goes back to the backup, a helper that dies or answers nonsense costs
nothing but its help, and a helper starts without the encryption library."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from coffre.chunker import DEFAULT_MIN
from coffre.compress import CODEC_NONE, CODEC_ZSTD, compress, decompress
from coffre.crypto.blobid import blob_id
from coffre.ops import smallreads
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.smallhelper import read_batch
from coffre.ops.smallreads import Helpers
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre

KEY = bytes(range(32))


def _tree(root: Path) -> dict[str, str]:
    """Small files of every kind the helpers meet (text, random bytes, empty, the same content
    twice), a file above the chunker's minimum and a symbolic link; path -> digest."""
    rng = random.Random(5)
    (root / "a" / "b").mkdir(parents=True)
    for i in range(150):
        (root / "a" / f"notice-{i}.txt").write_text(f"Posologie {i}: un comprimé matin et soir.\n" * (i + 1))
        (root / "a" / "b" / f"scan-{i}.bin").write_bytes(rng.randbytes(rng.randrange(1, 20_000)))
    (root / "a" / "vide").write_bytes(b"")
    (root / "a" / "copie.txt").write_text("Posologie 3: un comprimé matin et soir.\n" * 4)
    (root / "grand.bin").write_bytes(rng.randbytes(DEFAULT_MIN * 3))
    (root / "lien").symlink_to("a/vide")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _backup(tmp_path: Path, src: Path) -> Backup:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, PASSWORD)[0]
    repo.load_index()
    with Lock(repo, exclusive=False, command="backup") as lock:
        backup = Backup(repo, lock, BackupOptions(paths=[str(src)], workers=2))
        result = backup.run()
    assert result.problems.errors == [] and result.problems.warnings == []
    return backup


def _restored(tmp_path: Path, src: Path) -> dict[str, str]:
    c = Coffre(tmp_path / "repo", tmp_path / "pw", tmp_path / "cache")
    c.pwfile.write_text(PASSWORD)
    c.ok("check", "--read-data")
    c.ok("restore", "latest", "--target", str(tmp_path / "out"), "--verify")
    out = tmp_path / "out" / src.relative_to("/")
    assert os.readlink(out / "lien") == "a/vide"
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.rglob("*") if p.is_file() and not p.is_symlink()}


def test_small_new_files_are_read_by_helper_processes_and_restore(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smallreads, "HELPERS_AFTER", 0)
    src = tmp_path / "src"
    digests = _tree(src)

    backup = _backup(tmp_path, src)

    assert backup.helpers is not None
    assert backup.helpers.files == len(digests) - 1  # all but the large file
    assert not backup.helpers.alive  # ended with the backup
    assert _restored(tmp_path, src) == digests


def test_a_small_backup_starts_no_helper(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    assert _backup(tmp_path, src).helpers is None  # fewer than HELPERS_AFTER small files


@pytest.mark.parametrize(("small_new", "walked", "counted", "start"), [
    (2000, 2000, 0, True),  # enough met, whatever is ahead (no scanner: nothing counted)
    (1999, 1999, 0, False),
    (200, 250, 4082, True),  # a first backup of the small pharmacy set: ~3,000 more ahead
    (199, 250, 4082, False),  # too few met to tell
    (200, 250, 300, False),  # a small tree: 40 more ahead, the helpers would not pay
    (200, 250, 2750, True),  # 2,000 ahead at the share met so far
    (200, 250, 2749, False),
    (200, 10_000, 50_000, False),  # a daily backup: 200 new among 10,000 walked, 800 ahead
])
def test_the_helpers_start_once_enough_small_new_files_are_met_or_ahead(
        small_new: int, walked: int, counted: int, start: bool) -> None:
    """They cost ~0.1 CPU-second to start and pay from ~1,700 files on: HELPERS_AFTER met, or
    HELPERS_EARLY met with as many more expected among the files the scanner counted ahead."""
    assert smallreads.worth_starting(small_new, walked, counted) is start


# Reads its settings and the length of its first batch, then:
_HELPER = "import struct, sys; i = sys.stdin.buffer; i.read(struct.unpack('<I', i.read(4))[0]); i.read(4); "


@pytest.mark.parametrize("helper", [
    _HELPER + "sys.exit(1)",  # dies in the middle of its first batch
    # a frame of 5 bytes that is no msgpack message (an array of 3, then a stray byte)
    _HELPER + "sys.stdout.buffer.write(bytes([5, 0, 0, 0, 0x93, 1, 2, 3, 0xc0])); sys.stdout.flush(); "
    "i.read()",
    # a message nested too deep to decode (the decoder's recursion error once hung the backup)
    _HELPER + "d = bytes([0x91]) * 100000 + bytes([0xc0]); "
    "sys.stdout.buffer.write(len(d).to_bytes(4, 'little') + d); sys.stdout.flush(); i.read()",
], ids=["dies", "answers-nonsense", "answers-too-deep"])
def test_a_helper_that_fails_leaves_its_files_to_the_backup(tmp_path: Path, helper: str) -> None:
    src = tmp_path / "src"
    digests = _tree(src)
    # In a process of its own, with a deadline: a backup that waits forever for a helper
    # must fail this test, not hang the suite.
    script = tmp_path / "backup.py"
    script.write_text(f"""
import sys
sys.path[:0] = {[str(Path(__file__).parent)]!r}
from coffre.ops import smallreads
smallreads.HELPERS_AFTER = 0
smallreads.helper_command = lambda: [sys.executable, "-c", {helper!r}]
from test_smallreads import _backup
from pathlib import Path
helpers = _backup(Path({str(tmp_path)!r}), Path({str(src)!r})).helpers
print(helpers.files, helpers.dropped)
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          check=False)

    assert done.returncode == 0, done.stderr
    # Each helper dropped at its first batch, which the backup read instead.
    assert done.stdout.split() == ["0", "2"]
    assert _restored(tmp_path, src) == digests


def test_no_module_from_the_folder_the_backup_started_in_runs_in_its_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers (given the id key) and the scanner start with -P: `python -m` would
    otherwise import a module planted where the backup was started (/tmp, as root)."""
    monkeypatch.setattr(smallreads, "HELPERS_AFTER", 0)
    planted = tmp_path / "planted"
    planted.mkdir()
    for name in ("msgspec", "json", "blake3"):
        (planted / f"{name}.py").write_text(f"open({str(tmp_path / name)!r}, 'w').close()\n")
    monkeypatch.chdir(planted)
    src = tmp_path / "src"
    _tree(src)

    backup = _backup(tmp_path, src)

    assert backup.helpers is not None and backup.helpers.files > 0
    assert not [name for name in ("msgspec", "json", "blake3") if (tmp_path / name).exists()]


def test_the_helper_hands_back_what_it_cannot_read_in_one_go(tmp_path: Path) -> None:
    small, empty, large = tmp_path / "petit.txt", tmp_path / "vide", tmp_path / "grand.bin"
    small.write_text("Ordonnance du 3 mars\n" * 50)
    empty.write_bytes(b"")
    large.write_bytes(os.urandom(DEFAULT_MIN))
    fifo = tmp_path / "tube"
    os.mkfifo(fifo)
    files = [(bytes(small), 10), (b"/nonexistent/fichier", 5), (bytes(fifo), 0), (bytes(large), 100),
             (bytes(empty), 0), (bytes(tmp_path), 0)]

    answers = read_batch(files, KEY, 1, DEFAULT_MIN, window=1)

    content = small.read_bytes()
    blob, codec, payload, size, changed = answers[0]  # type: ignore[misc]
    assert blob == blob_id(KEY, content) and size == len(content) and changed is False
    assert codec == CODEC_ZSTD and decompress(codec, payload, size) == content  # type: ignore[arg-type]
    # Missing, a fifo, at or above the chunker's minimum whatever its listed size, a folder:
    # the backup reads them itself (and reports what it finds).
    assert answers[1:4] == [None, None, None] and answers[5] is None
    assert answers[4] == [b"", CODEC_NONE, b"", 0, False]


def test_a_helper_loads_neither_the_encryption_library_nor_the_backup() -> None:
    """A helper knows the key that names blobs and no other: it does not even load the code
    that encrypts. Its start, paid by every backup that uses helpers, stays that of zstd,
    BLAKE3 and msgpack (~0.05 CPU-second, against ~0.12 with the backup's modules)."""
    probe = ("import sys, runpy; sys.argv = ['smallhelper']; "
             "runpy.run_module('coffre.ops.smallhelper', run_name='__main__'); "
             "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-P", "-c", probe], input=b"", capture_output=True,
                          check=True, timeout=60)
    loaded = set(done.stdout.decode().split())
    assert {"zstandard", "blake3", "msgpack", "coffre.compress", "coffre.crypto.blobid"} <= loaded
    heavy = {"cryptography", "argon2", "msgspec", "subprocess", "coffre.crypto.aead",
             "coffre.ops.smallreads", "coffre.ops.backup", "coffre.repository.repo"}
    assert not heavy & loaded, heavy & loaded


def test_answers_a_helper_may_not_give_are_refused() -> None:
    helpers = Helpers(0, KEY, 1, DEFAULT_MIN, 1)  # no process: only the checks
    good = [blob_id(KEY, b"x" * 100), CODEC_NONE, b"x" * 100, 100, False]
    assert helpers._checked([good, None], 2) == [tuple(good), None]
    assert helpers._checked([good], 2) is None  # one answer short
    text = b"Posologie: un comprime matin et soir. " * 20
    codec, packed = compress(text)
    assert helpers._checked([[blob_id(KEY, text), codec, packed, len(text), False]], 1) is not None
    assert helpers._checked([[blob_id(KEY, text), codec, packed, len(text) + 1, False]], 1) is None
    assert helpers._checked("nonsense", 1) is None
    for wrong in ([good[0][:31], *good[1:]],  # an id of the wrong length
                  [*good[:1], 7, *good[2:]],  # no such codec
                  [*good[:1], True, *good[2:]],
                  [*good[:2], b"x" * 99, *good[3:]],  # stored as is, yet not its size
                  [*good[:1], CODEC_ZSTD, b"x" * 100, 100, False],  # "compressed" to no less
                  [*good[:3], DEFAULT_MIN, False],  # not a small file
                  [*good[:4], 0],  # changed is not a yes or no
                  good[:4]):
        assert helpers._checked([wrong], 1) is None, wrong
    assert helpers.read([(b"/x", 1)]) is None  # no helper: the backup reads it


def test_helpers_let_go_leave_while_the_backup_ends_and_close_reaps_them(tmp_path: Path) -> None:
    notice = tmp_path / "notice.txt"
    notice.write_text("Posologie: un comprimé matin et soir.\n")
    batch = [(os.fsencode(notice), notice.stat().st_size)]
    helpers = Helpers(2, KEY, 1, DEFAULT_MIN, 1)
    procs = list(helpers._all)
    assert len(procs) == 2 and helpers.read(batch) is not None

    helpers.let_go()  # returns at once: nobody waits for the interpreters to end

    assert not helpers.alive and helpers.read(batch) is None  # a late batch: the backup reads it
    for proc in procs:  # their input closed, they leave on their own
        assert proc.wait(timeout=60) == 0
    helpers.close()
    assert helpers._leaving == []


def test_a_backup_with_helpers_leaves_no_helper_process(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smallreads, "HELPERS_AFTER", 0)
    src = tmp_path / "src"
    _tree(src)
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)  # the helpers' and the scanner's
    backup = _backup(tmp_path, src)

    helpers = [proc for proc in started if "coffre.ops.smallhelper" in proc.args]
    assert backup.helpers is not None and len(helpers) == 2
    assert all(proc.returncode is not None for proc in started)  # each ended and was waited for
    assert all(proc.returncode == 0 for proc in helpers)
