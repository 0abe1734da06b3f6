"""A worker reading a batch of small files opens each once, ahead of reading it, within a window
(sources/prefetch.OpenAhead): the open files stay bounded whatever the batch, a file that cannot
be opened is handed over as its error, and a fifo put in a file's place does not hang."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from coffre.sources.prefetch import OpenAhead


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_files_are_opened_ahead_within_the_window_and_read_through_that_descriptor(tmp_path: Path) -> None:
    files = []
    for i in range(20):
        path = tmp_path / f"f{i:02}"
        path.write_bytes(b"%d" % i)
        files.append((bytes(path), 2))
    ahead = OpenAhead(files, window=4)
    before = open_fds()
    for i in range(20):
        fd = ahead.take(i)
        assert isinstance(fd, int)
        # This one and at most 3 after it are open: never the whole batch.
        assert open_fds() - before <= 4
        assert os.read(fd, 10) == b"%d" % i
        os.close(fd)
    assert open_fds() == before


def test_a_file_that_cannot_be_opened_is_handed_over_as_its_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").symlink_to(tmp_path / "a")  # replaced by a link since it was listed
    ahead = OpenAhead([(bytes(tmp_path / "gone"), 1), (bytes(tmp_path / "b"), 1),
                       (bytes(tmp_path / "a"), 1)], window=8)
    gone, link = ahead.take(0), ahead.take(1)
    assert isinstance(gone, OSError) and gone.errno == errno.ENOENT
    assert isinstance(link, OSError) and link.errno == errno.ELOOP  # never followed
    fd = ahead.take(2)
    assert isinstance(fd, int)
    os.close(fd)


def test_a_fifo_in_a_files_place_is_opened_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    ahead = OpenAhead([(bytes(tmp_path / "fifo"), 4096)], window=8)
    fd = ahead.take(0)  # blocked forever before O_NONBLOCK; the backup then sees not a file
    assert isinstance(fd, int)
    os.close(fd)


def test_what_a_batch_stopped_early_left_open_is_closed(tmp_path: Path) -> None:
    files = []
    for i in range(6):
        (tmp_path / str(i)).write_bytes(b"x")
        files.append((bytes(tmp_path / str(i)), 1))
    before = open_fds()
    ahead = OpenAhead(files, window=6)
    first = ahead.take(0)
    assert isinstance(first, int)
    os.close(first)
    assert open_fds() - before == 5
    ahead.close()
    assert open_fds() == before
