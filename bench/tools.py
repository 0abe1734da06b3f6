"""The backup tools the benchmark compares, each driven through its own command line with the
same steps: init, backup, restore of the latest snapshot, full data check."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Tool(ABC):
    """One tool with a fresh repository under `home`."""

    name: str
    home: Path

    @property
    def repo(self) -> Path:
        return self.home / "repo"

    @property
    def cache_dir(self) -> Path:
        """Where the tool keeps its local cache (coffre and restic are told so by env())."""
        return self.home / "cache"

    @abstractmethod
    def env(self) -> dict[str, str]: ...

    @abstractmethod
    def init_argv(self) -> list[str]: ...

    @abstractmethod
    def backup_argv(self, source: Path, n: int) -> list[str]: ...

    @abstractmethod
    def restore_argv(self, target: Path) -> tuple[list[str], Path]:
        """The command, and the directory it must run in."""

    @abstractmethod
    def check_argv(self) -> list[str]: ...

    def restored_root(self, target: Path, source: Path) -> Path:
        return target / str(source).lstrip("/")

    def password_file(self) -> Path:
        path = self.home / "password"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)  # as a real one: Coffre warns at every command about one others can read
            path.write_text("benchmark password\n")
        return path


def compile_coffre() -> None:
    """Coffre's modules compiled beside their source, once per benchmark, as pip compiles an
    installed Coffre: without it each step's first command compiles what it imports."""
    if Coffre.bytecode:
        _compile_package("coffre")


@functools.cache
def _compile_package(name: str) -> None:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations
    subprocess.run([sys.executable, "-m", "compileall", "-q", spec.submodule_search_locations[0]],
                   check=True, stdout=subprocess.DEVNULL)


def bytecode_env(home: Path) -> dict[str, str]:
    """The environment of a `coffre` command: compiled modules used (and written if missing), or
    with --no-bytecode none found nor written (an empty cache folder of its own)."""
    if Coffre.bytecode:
        return {"PYTHONDONTWRITEBYTECODE": ""}
    return {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(home / "no-bytecode")}


class Coffre(Tool):
    # An installed Coffre runs from compiled bytecode (pip and Debian's packaging write it), as
    # borg does from Debian's package; so do the standard library and Coffre's dependencies
    # here (compiled when installed). compile_coffre() compiles Coffre's own modules beside
    # their source, as the test suite does, since this machine sets PYTHONDONTWRITEBYTECODE.
    # False (--no-bytecode) makes every command compile every module it imports from source.
    bytecode = True

    def env(self) -> dict[str, str]:
        env = {
            "COFFRE_REPOSITORY": str(self.repo),
            "COFFRE_PASSWORD_FILE": str(self.password_file()),
            "COFFRE_CACHE_DIR": str(self.cache_dir),
            "COFFRE_STATE_DIR": str(self.home / "state"),  # throwaway repositories: not /var/lib
        }
        return env | bytecode_env(self.home)

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "coffre", *args]

    def init_argv(self) -> list[str]:
        return self._cmd("init")

    def backup_argv(self, source: Path, n: int) -> list[str]:
        return self._cmd("backup", "--host", "bench", str(source))

    def restore_argv(self, target: Path) -> tuple[list[str], Path]:
        return self._cmd("restore", "latest", "--target", str(target)), self.home

    def check_argv(self) -> list[str]:
        return self._cmd("check", "--read-data")


class Restic(Tool):
    def env(self) -> dict[str, str]:
        return {
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD_FILE": str(self.password_file()),
            "RESTIC_CACHE_DIR": str(self.cache_dir),
        }

    def init_argv(self) -> list[str]:
        return ["restic", "init", "-q"]

    def backup_argv(self, source: Path, n: int) -> list[str]:
        return ["restic", "backup", "-q", "--host", "bench", str(source)]

    def restore_argv(self, target: Path) -> tuple[list[str], Path]:
        return ["restic", "restore", "-q", "latest", "--target", str(target)], self.home

    def check_argv(self) -> list[str]:
        return ["restic", "check", "-q", "--read-data"]


class Borg(Tool):
    compression = "lz4"

    def env(self) -> dict[str, str]:
        return {
            "BORG_REPO": str(self.repo),
            "BORG_PASSCOMMAND": f"cat {self.password_file()}",
            "BORG_BASE_DIR": str(self.home / "base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def init_argv(self) -> list[str]:
        return ["borg", "init", "-e", "repokey"]

    def backup_argv(self, source: Path, n: int) -> list[str]:
        return ["borg", "create", "--compression", self.compression, f"::a{n}", str(source)]

    def restore_argv(self, target: Path) -> tuple[list[str], Path]:
        target.mkdir(parents=True, exist_ok=True)
        latest = subprocess.run(["borg", "list", "--last", "1", "--short"], env={**os.environ, **self.env()},
                                capture_output=True, text=True, check=True).stdout.strip()
        return ["borg", "extract", f"::{latest}"], target

    def check_argv(self) -> list[str]:
        return ["borg", "check", "--verify-data"]


class BorgZstd(Borg):
    compression = "zstd,3"


TOOLS: dict[str, type[Tool]] = {"coffre": Coffre, "restic": Restic, "borg": Borg, "borg-zstd": BorgZstd}
PACKAGES = {"restic": "restic", "borg": "borgbackup", "borg-zstd": "borgbackup"}


def ensure_installed(names: list[str]) -> None:
    """Install restic / borg from Debian's packages when missing (as root)."""
    missing = sorted({PACKAGES[n] for n in names if n in PACKAGES and not shutil.which(n.split("-")[0])})
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"missing: {', '.join(missing)}; install them (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=True)


def in_turn(tools: list[str] | tuple[str, ...], run: int) -> list[str]:
    """The order the tools run in, run number `run` (from 0): each starts in turn. Whatever
    the previous steps leave on the machine (dirty pages being written, a slow file system
    after a deletion) then falls on every tool alike, not always on the first."""
    shift = run % len(tools) if tools else 0
    return [*tools[shift:], *tools[:shift]]
