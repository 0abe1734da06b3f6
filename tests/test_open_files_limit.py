"""A restore within the system's limit of open files.

Linux gives a process 1,024 open files unless it raises that limit, and an administrator may
lower the ceiling further (containers, `ulimit -Hn`). A restore opens a pack's small files
before writing them, thousands at once: on such a machine most of them failed with "Too many
open files". Now a restore raises its limit where it may, and otherwise writes a pack's files
a few at a time."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from coffre.core import posix

from conftest import Coffre, _default_sigint, age_tree, tree_digest

# The real command line, in a process whose limit of open files is SOFT, HARD.
LIMITED = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
    "sys.argv = ['coffre', *sys.argv[1:]]; from coffre.cli.entry import main; sys.exit(main())"
)
PROBE = (
    "import resource; from coffre.core import posix; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
    "print(posix.open_files_limit({wanted}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
)


def ceiling() -> int:
    """A hard limit a child process may set: this one's, or 4,096 if it is higher (a process
    may lower its hard limit, never raise it without privileges). The suite may itself run
    under a low limit (ulimit -n 1024), as it did once to check nothing else runs short."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)


def small_files(root: Path, count: int) -> Path:
    """`count` small files in a few folders: far more than the limit below, in one pack."""
    rnd = random.Random(count)
    for i in range(count):
        folder = root / f"ordonnances-{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"scan-{i:04d}.txt").write_bytes(rnd.randbytes(rnd.randrange(10, 400)))
    age_tree(root)
    return root


def limited(coffre: Coffre, soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", LIMITED.format(soft=soft, hard=hard), *coffre.argv(*args)[3:]]
    return subprocess.run(argv, capture_output=True, text=True, env=coffre.env, timeout=600,
                          check=False, preexec_fn=_default_sigint)


@pytest.mark.parametrize("raisable", [False, True], ids=["fixed", "raisable"])
def test_a_restore_of_thousands_of_small_files_stays_within_the_open_files_limit(
    repo: Coffre, tmp_path: Path, raisable: bool,
) -> None:
    soft, hard = 256, ceiling() if raisable else 256
    src = small_files(tmp_path / "officine", 1500)
    repo.ok("backup", str(src))
    target = tmp_path / "restored"
    done = limited(repo, soft, hard, "restore", "latest", "--target", str(target))
    assert done.returncode == 0, done.stderr
    assert "Too many open files" not in done.stderr
    assert tree_digest(target / str(src).lstrip("/")) == tree_digest(src)


def test_the_limit_is_raised_as_far_as_the_ceiling_allows() -> None:
    def probe(soft: int, hard: int, wanted: int) -> list[int]:
        out = subprocess.run([sys.executable, "-c", PROBE.format(soft=soft, hard=hard, wanted=wanted)],
                             capture_output=True, text=True, check=True).stdout
        return [int(n) for n in out.split()]

    assert ceiling() >= 1000
    assert probe(256, ceiling(), 1000) == [1000, 1000]  # raised to what is asked
    assert probe(256, 512, 1000) == [512, 512]  # up to the ceiling
    assert probe(600, 800, 500) == [600, 600]  # never lowered
    assert posix.open_files_limit(1) >= 1
