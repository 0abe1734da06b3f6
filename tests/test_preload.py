"""A command reads its own program files ahead while it starts (cli/preload.py): each
successful command keeps the list of the files its modules came from, and the next run of it
asks the system to read them before the imports need them."""

from __future__ import annotations

import ast
import ctypes
import importlib.util
import mmap
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffre.cli import preload

from conftest import Coffre


def compiled(module: str) -> str:
    """The file a module is imported from in a `coffre` process (tests compile them all)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return importlib.util.cache_from_source(spec.origin)


def test_a_command_keeps_the_files_its_modules_came_from(repo: Coffre, cache_dir: Path) -> None:
    repo.ok("snapshots")
    listed = cache_dir / "startup" / "snapshots-local.txt"
    names = listed.read_text().split("\n")
    # The command line's modules and the command's own, in the order they were imported.
    assert names.index(compiled("coffre.cli.main")) < names.index(compiled("coffre.cli.cmd_browse"))
    assert compiled("coffre.repository.repo") in names
    assert compiled("coffre.cli.entry") not in names  # imported before the reads start: in memory
    assert all(os.path.isabs(n) and n.endswith(preload.SUFFIXES) and os.path.isfile(n) for n in names)
    assert stat.S_IMODE(listed.stat().st_mode) == 0o600
    assert stat.S_IMODE(listed.parent.stat().st_mode) == 0o700
    # A command that fails keeps nothing: it may have stopped before most of its imports.
    wrong = repo.pwfile.with_name("wrong")
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    res = repo("ls", "latest", env={"COFFRE_PASSWORD_FILE": str(wrong)}, repo=False)
    assert res.code != 0
    assert not (cache_dir / "startup" / "ls-local.txt").exists()


def test_the_reads_start_before_the_command_line_is_imported(repo: Coffre, cache_dir: Path) -> None:
    repo.ok("snapshots")  # the list exists
    code = (
        "import sys\n"
        "from coffre.cli import entry, preload\n"
        "seen = []\n"
        "start = preload.start\n"
        "def started(argv):\n"
        "    ahead = start(argv)\n"
        "    ahead.wait()\n"
        "    seen.append(('coffre.cli.main' in sys.modules, ahead.path, len(ahead.advised)))\n"
        "    return ahead\n"
        "preload.start = started\n"
        "sys.argv = ['coffre', *sys.argv[1:]]\n"
        "code = entry.main()\n"
        "print(seen)\n"
        "sys.exit(code)\n")
    env = {**repo.env, "COFFRE_REPOSITORY": str(repo.repo), "COFFRE_PASSWORD_FILE": str(repo.pwfile)}
    out = subprocess.run([sys.executable, "-c", code, "snapshots"], env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    ((main_loaded, path, _advised),) = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert not main_loaded
    assert path == str(cache_dir / "startup" / "snapshots-local.txt")


def cold_files(folder: Path, count: int) -> list[Path]:
    """Files of module-like names whose pages are not in memory (written, synced, dropped)."""
    folder.mkdir()
    files = []
    for i in range(count):
        path = folder / f"m{i}.cpython-311.pyc"
        path.write_bytes(os.urandom(256 * 1024))
        files.append(path)
    for path in files:
        evict(path)
    assert not any(map(in_memory, files))
    return files


def evict(path: Path) -> None:
    """The file's pages out of memory. The advice is only advice: a page the kernel still
    holds elsewhere (another CPU's batch of pages being added to its lists, as under the
    load of the whole suite) stays, so it is given again until none is left."""
    for _ in range(100):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if not any_in_memory(path):
            return
    raise AssertionError(f"{path} stays in memory after 100 POSIX_FADV_DONTNEED")


LIBC = preload._libc()  # mmap, mincore and munmap typed as the probe uses them


def in_memory(path: Path) -> bool:
    """Whether every page of the file is in the page cache."""
    return all(resident_pages(path))


def any_in_memory(path: Path) -> bool:
    return any(resident_pages(path))


def resident_pages(path: Path) -> list[bool]:
    """Which pages of the file are in the page cache, asked with mincore: mapping a file
    reads nothing of it, where a read to find out would start reading it."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert LIBC.mincore(address, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            LIBC.munmap(address, size)
    finally:
        os.close(fd)
    return [bool(v & 1) for v in vec]


def run(listing: Path) -> preload.Preload:
    ahead = preload.Preload(str(listing)).start()
    ahead.wait()
    return ahead


def test_the_listed_files_are_read_into_memory_and_nothing_else_is_opened(tmp_path: Path) -> None:
    files = cold_files(tmp_path / "modules", 4)
    fifo = tmp_path / "fifo.pyc"
    os.mkfifo(fifo)
    link = tmp_path / "link.pyc"
    link.symlink_to(files[0])
    other = tmp_path / "notes.txt"
    other.write_text("not a module")
    listing = tmp_path / "list.txt"
    names = [str(files[0]), "relative/m.pyc", str(fifo), str(link), str(other), "/dev/null",
             str(tmp_path / "gone.pyc"), *map(str, files[1:]), ""]
    listing.write_text("\n".join(names))
    ahead = run(listing)
    assert ahead.advised == [str(f) for f in files]  # the fifo did not hang it
    deadline = time.monotonic() + 30
    while not all(map(in_memory, files)):  # the system reads them in the background
        assert time.monotonic() < deadline, "the listed files were not read"
        time.sleep(0.01)


def test_looking_whether_a_file_is_in_memory_reads_nothing_of_it(tmp_path: Path) -> None:
    """A probing read of a missing page starts reading it, and on a fast disk can find it read
    before looking: the files then looked warm and nothing was read ahead (seen in CI)."""
    *files, last = cold_files(tmp_path / "modules", 9)
    assert not any(preload._in_memory(str(path)) for path in files)
    last.read_bytes()  # a read that waits for the disk, queued after any the probes started
    assert not any(map(any_in_memory, files))


def test_a_warm_machine_asks_for_nothing(tmp_path: Path) -> None:
    files = cold_files(tmp_path / "modules", 5)
    for path in files[-preload.CHECKED:]:  # the last ones imported are in memory: all are
        path.read_bytes()
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, files)))
    assert run(listing).advised == []
    evict(files[-1])
    assert run(listing).advised == [str(f) for f in files]


@pytest.mark.parametrize("content", [
    b"",
    b"\xff\xfe\x00garbage\n" * 10,
    b"/x.pyc\n" * (preload.MAX_LIST // 7 + 1),  # larger than a list Coffre writes
])
def test_a_damaged_list_costs_nothing_but_the_time_saved(tmp_path: Path, content: bytes) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(content)
    assert run(listing).advised == []
    assert run(tmp_path / "missing.txt").advised == []


def test_each_command_and_storage_has_its_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFRE_REPOSITORY", raising=False)
    assert preload.list_name(["restore", "latest", "--target", "/x"]) == "restore-local"
    assert preload.list_name(["--lang", "fr", "restore", "latest"]) == "restore-local"
    assert preload.list_name(["restore", "--repo", "s3://host/bucket", "latest"]) == "restore-s3"
    assert preload.list_name(["backup", "-r", "s3+http://host/b", "/srv"]) == "backup-s3+http"
    monkeypatch.setenv("COFFRE_REPOSITORY", "sftp://nas/backup")
    assert preload.list_name(["backup", "/srv"]) == "backup-sftp"
    monkeypatch.setenv("COFFRE_REPOSITORY", "../../etc://x")
    assert preload.list_name(["backup", "/srv"]) == "backup-other"
    assert preload.list_name(["--help"]) is None
    assert preload.list_name(["../../x"]) is None


def test_a_command_without_its_own_list_reads_those_of_the_others_on_its_storage(tmp_path: Path) -> None:
    """A first restore on the machine whose daily backups ran there: most modules are theirs."""
    a, b, c, s3 = cold_files(tmp_path / "modules", 4)
    startup = tmp_path / "startup"
    startup.mkdir()
    (startup / "backup-local.txt").write_text(f"{a}\n{b}")
    (startup / "init-local.txt").write_text(f"{b}\n{c}")
    (startup / "backup-s3.txt").write_text(f"{s3}")  # another storage: other modules
    ahead = run(startup / "restore-local.txt")
    assert ahead.advised == [str(a), str(b), str(c)]
    assert ahead.known is None  # the command's own list is written at its end
