"""A tree that changes under a running backup: an entry whose type changes between the walk
and the read (a file replaced by a folder, a folder by a file) is reported and skipped with
exit 3, never a crash. Real processes: the backup stops itself (SIGSTOP) at a pack write
while it reads a large file (test-only COFFRE_TEST_CRASH_AT=N:stop), the test changes the
tree, then lets it go on."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

from coffre.chunker import ChunkerParams
from coffre.core.errors import EXIT_PARTIAL
from coffre.ops.backup import BATCHED_FILE_MAX
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from test_lease import wait_stopped

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids


def test_entries_changing_type_during_the_backup_are_skipped_not_crashed(
        coffre: Coffre, tmp_path: Path, restored: Path) -> None:
    Repository.init(LocalBackend(coffre.repo), PASSWORD, pack_size=1024 * 1024,
                    chunker=ChunkerParams(64 * 1024, 128 * 1024, 256 * 1024))
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(3)
    big = src / "a-big.bin"
    big.write_bytes(rnd.randbytes(6_000_000))  # read first; its packs are written meanwhile
    # Read after it, by the same thread: the walk reads files from BATCHED_FILE_MAX up.
    (src / "b-doc.pdf").write_bytes(rnd.randbytes(BATCHED_FILE_MAX + 200_000))
    (src / "c-folder").mkdir()
    (src / "c-folder" / "inside.txt").write_text("bonjour\n")
    age_tree(src)
    proc = coffre.popen("backup", str(src), env={"COFFRE_TEST_CRASH_AT": "3:stop"})
    wait_stopped(proc.pid)  # the walk has listed src; a-big.bin is being read
    (src / "b-doc.pdf").unlink()
    (src / "b-doc.pdf").mkdir()
    (src / "b-doc.pdf" / "scan.jpg").write_bytes(b"x" * 1000)
    shutil.rmtree(src / "c-folder")
    (src / "c-folder").write_text("now a file\n")
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    text = err.decode()
    assert proc.returncode == EXIT_PARTIAL, text
    assert "Traceback" not in text
    assert f"{src / 'b-doc.pdf'}: replaced by something that is not a file during the backup" in text
    assert f"{src / 'c-folder'}:" in text
    assert len(snapshot_ids(coffre)) == 1
    coffre.ok("restore", "latest", "--target", str(restored))
    assert (restored / str(big).lstrip("/")).read_bytes() == big.read_bytes()
    # The next backup takes them as they are now.
    coffre.ok("backup", str(src))
    assert coffre.ok("dump", "latest", str(src / "c-folder")).out == "now a file\n"
