"""What every command needs: the repository location, the password, an open repository."""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coffre.cli.watching import key_history, watch_storage
from coffre.core.errors import CoffreError, LockedError, StorageFull, StoragePermissionDenied, UsageError
from coffre.core.private import open_to_others
from coffre.format.snapshot import Snapshot
from coffre.repository.locks import Lock, live_locks
from coffre.repository.repo import Repository
from coffre.storage.base import Backend
from coffre.storage.cached import CachedBackend
from coffre.storage.faults import KillSwitchBackend
from coffre.storage.pacing import Pacer, parse_limit
from coffre.storage.retry import ATTEMPTS, RetryBackend, retry_budget
from coffre.storage.url import is_url, open_backend


def add_repo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--repo", help="repository: a path, s3://HOST/BUCKET/PREFIX or "
                   "s3+http://... (or COFFRE_REPOSITORY)")
    p.add_argument("--password-file", help="read the password from this file (or COFFRE_PASSWORD_FILE)")
    p.add_argument("--insecure-ftp", action="store_true",
                   help="allow a plain ftp:// repository (the FTP password crosses the network in clear)")
    p.add_argument("--limit-upload", metavar="LIMIT",
                   help="upload limit to remote storage: KiB/s, or a schedule such as "
                        "'08:30-19:30=512KiB,*=unlimited' (or COFFRE_LIMIT_UPLOAD)")
    p.add_argument("--limit-download", metavar="LIMIT",
                   help="download limit from remote storage, same form (or COFFRE_LIMIT_DOWNLOAD)")


def refuse_empty(option: str, *values: str | None,
                 hint: str = "give a path; '.' is the current folder") -> None:
    """An empty value is an unset shell variable, never the current folder nor a fallback: a
    usage error naming the option, raised before anything is opened or written."""
    if any(v == "" for v in values):
        raise UsageError(f"{option} is empty (an unset variable?)", hint)


def repo_location(args: argparse.Namespace) -> str:
    """--repo, else COFFRE_REPOSITORY. An explicit empty --repo is refused, never replaced by
    the variable (it would silently be another repository)."""
    refuse_empty("--repo", getattr(args, "repo", None),
                 hint="give the repository's path or URL, or leave --repo out to use COFFRE_REPOSITORY")
    loc = getattr(args, "repo", None) or os.environ.get("COFFRE_REPOSITORY")
    if not loc:
        raise UsageError("no repository given", "use --repo PATH or set COFFRE_REPOSITORY")
    return str(loc)


def backend_for(location: str, args: argparse.Namespace | None = None) -> Backend:
    """The storage a location names (a path or a URL), with the command's bandwidth limits,
    retrying what may pass (COFFRE_STORAGE_RETRIES attempts per request, 10 by default) until
    the storage has been unreachable for COFFRE_STORAGE_RETRY_BUDGET seconds (4 minutes by
    default): then the whole command gives up. One per location and command, shared by its
    threads (the lock refresher too), so the budget covers them all."""
    attempts = os.environ.get("COFFRE_STORAGE_RETRIES", "")
    if attempts and not (attempts.isdigit() and int(attempts) >= 1):
        raise UsageError(f"COFFRE_STORAGE_RETRIES must be a number of attempts ≥ 1, not {attempts!r}")
    budget = retry_budget()
    backend = open_backend(location, allow_plain_ftp=bool(getattr(args, "insecure_ftp", False)))
    if location.lower().startswith("ftp://"):
        _warn("plain FTP: the FTP password and login cross the network in clear (the backup "
              "itself stays encrypted); prefer ftps://")
    upload, download = _pacers(args)
    if hasattr(backend, "upload_pacer"):  # remote backends: local disks are not limited
        backend.upload_pacer = upload
        backend.download_pacer = download  # type: ignore[attr-defined]
    return RetryBackend(KillSwitchBackend.from_env(backend), attempts=int(attempts or ATTEMPTS), warn=_warn,
                        budget_s=budget)


def _pacers(args: argparse.Namespace | None) -> tuple[Pacer | None, Pacer | None]:
    """One Pacer per direction for the whole command (a copy's two repositories share the
    connection, so they share the limit)."""
    cached = getattr(args, "_pacers", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    out = []
    for name in ("upload", "download"):
        spec = getattr(args, f"limit_{name}", None) or os.environ.get(f"COFFRE_LIMIT_{name.upper()}")
        out.append(Pacer(parse_limit(spec)) if spec else None)
    pacers = (out[0], out[1])
    if args is not None:
        args._pacers = pacers
    return pacers


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_secret_file(path: str, what: str = "password file") -> str:
    """A secret from a file; errors never quote its content."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read(64 * 1024)
    except OSError as exc:
        raise CoffreError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if stat.S_ISREG(st.st_mode) and open_to_others(st):
        # As ssh does for keys, but a warning: refusing would stop the night's backup.
        _warn(f"the {what} {path} can be read by other users of this machine"
              f" (mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {shlex.quote(path)}")
    return _decode_secret(raw, f"the {what} {path}")


def _decode_secret(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CoffreError(f"{where} is not UTF-8 text") from None


def _from_command(cmd: str, name: str) -> str:
    """The output of the command in the variable `name`. No message quotes the command: its
    arguments may hold something private."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:  # an unbalanced quote, a trailing backslash
        raise UsageError(f"{name} cannot be read as a command: {exc}",
                         "check its quotes; the command is run without a shell") from None
    if not argv:
        raise UsageError(f"{name} holds no command")
    try:
        out = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoffreError(f"{name} could not run: {type(exc).__name__}") from None
    if out.returncode != 0:
        raise CoffreError(f"{name} failed with exit status {out.returncode}")
    return _decode_secret(out.stdout, f"the output of {name}")


def password(args: argparse.Namespace, confirm: bool = False, prompt: str = "Password: ") -> str:
    """From --password-file, COFFRE_PASSWORD_FILE, COFFRE_PASSWORD_COMMAND or a prompt."""
    return secret_from(getattr(args, "password_file", None), "COFFRE_PASSWORD", confirm, prompt)


def source_password(args: argparse.Namespace) -> str:
    """The password of a second, source repository (copy, init --copy-chunking-from): from
    --from-password-file, COFFRE_FROM_PASSWORD_FILE, COFFRE_FROM_PASSWORD_COMMAND or a prompt."""
    return secret_from(getattr(args, "from_password_file", None), "COFFRE_FROM_PASSWORD", False,
                       "Password of the source repository: ")


def secret_from(path: str | None, env: str, confirm: bool, prompt: str) -> str:
    """From the option's file, else {env}_FILE, else {env}_COMMAND, else a prompt. An explicit
    empty option is refused (an empty variable counts as unset, as usual for variables)."""
    option = "--" + env.removeprefix("COFFRE_").lower().replace("_", "-") + "-file"
    refuse_empty(option, path, hint=f"give the password file, or leave {option} out")
    path = path or os.environ.get(f"{env}_FILE")
    if path:
        secret = read_secret_file(path)
    elif os.environ.get(f"{env}_COMMAND"):
        secret = _from_command(os.environ[f"{env}_COMMAND"], f"{env}_COMMAND")
    else:
        secret = prompt_secret(prompt, confirm)
    if not secret:
        raise UsageError("the password is empty")
    return secret


def prompt_secret(prompt: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            "a password is needed and there is no terminal to ask it on",
            "use --password-file, COFFRE_PASSWORD_FILE or COFFRE_PASSWORD_COMMAND",
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise UsageError("the two passwords differ; nothing was done")
    return first


def open_repo(args: argparse.Namespace, watch: bool = True) -> Repository:
    return open_repo_at(repo_location(args), lambda: password(args), args, watch)


def open_repo_at(
    location: str, secret: Callable[[], str], args: argparse.Namespace | None = None, watch: bool = True,
) -> Repository:
    """The repository at a location; the password is asked only once it is known to be one.
    With `watch`, the storage is then compared with this machine's mark (cli/watching.py)."""
    backend = backend_for(location, args)
    from coffre.repository.cache import repo_cache_dir
    from coffre.repository.repo import load_config

    # Not a repository, or a newer format: said before any password is asked.
    config = load_config(backend)
    if is_url(location):
        # Remote metadata is kept locally so a daily backup does not download it again.
        backend = CachedBackend(backend, repo_cache_dir(config.config.id) / "objects")
    repo = Repository.open(backend, secret(), config=config, history=key_history)
    if repo.config_problem:
        _warn(f"{repo.config_problem}; run 'coffre repair config'")
    for damaged in repo.damaged_keys:
        _warn(f"{damaged.describe()}; 'coffre key remove {damaged.id[:8]}' drops it")
    for foreign in repo.foreign_keys:
        _warn(f"key file {foreign[:8]} opens with this password but holds another key than this "
              "repository's (it fails the config's authentication): it was not written by this "
              f"repository's Coffre, and was skipped; 'coffre key remove {foreign[:8]}' drops it")
    if watch:
        watch_storage(repo)
    return repo


def load_index(repo: Repository) -> None:
    """Load the index; a damaged index file is reported, and the data it listed is then
    treated as missing (a backup stores it again) instead of stopping everything."""
    damaged: list[str] = []
    repo.load_index(errors=damaged)
    for d in damaged:
        print(f"warning: {d} (skipped; 'coffre repair index' rebuilds it)", file=sys.stderr)


def snapshots(repo: Repository) -> list[Snapshot]:
    damaged: list[str] = []
    snaps = repo.snapshots(errors=damaged)
    for d in damaged:
        print(f"warning: {d} (skipped)", file=sys.stderr)
    return snaps


@contextmanager
def locked(repo: Repository, exclusive: bool, command: str) -> Iterator[Lock]:
    lock = Lock(repo, exclusive, command)
    try:
        lock.acquire()  # inside: an interruption once the lock is stored still removes it
        yield lock
    finally:
        lock.release()


@contextmanager
def reading(repo: Repository, command: str) -> Iterator[None]:
    """A shared lock for a command that only reads. On a medium that cannot be written (a
    write-protected USB disk, a full disk) it reads without one: nothing can prune such a
    medium meanwhile except a forget/prune freeing a full one, and every read is
    authenticated, so the worst case is a clear failure, never wrong data."""
    lock = Lock(repo, False, command)
    try:
        try:
            lock.acquire()
        except (StoragePermissionDenied, StorageFull) as exc:
            _warn(f"the repository cannot be written ({exc.message}); reading it without a lock")
        yield None
    finally:
        lock.release()


@contextmanager
def maintaining(repo: Repository, command: str) -> Iterator[Lock | None]:
    """An exclusive lock for forget; on a full medium, where even a lock cannot be written,
    the command goes on without one if no other Coffre command holds a lock (so a full
    disk can always be freed)."""
    lock = Lock(repo, True, command)
    try:
        try:
            lock.acquire()
        except StorageFull as exc:
            refuse_if_others(repo, exc.message)
            _warn(f"{exc.message}: going on without a lock, as no other Coffre command uses the repository")
            yield None
        else:
            yield lock
    finally:
        lock.release()


def refuse_if_others(repo: Repository, why: str, mine: Lock | None = None) -> None:
    for lk in live_locks(repo):
        if mine is None or lk.lock_id != mine.lock_id:
            raise LockedError(f"{why}, and {lk.describe()} is using the repository",
                              "wait for it to end (a backup on a full medium fails by itself), then "
                              "run this again")
