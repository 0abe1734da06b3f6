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

from coffre.cli.watching import watch_storage
from coffre.core.errors import CoffreError, LockedError, StorageFull, StoragePermissionDenied, UsageError
from coffre.core.i18n import _
from coffre.core.private import open_to_others
from coffre.core.secrets import MAX_SECRET
from coffre.format.snapshot import Snapshot
from coffre.repository.locks import Lock, live_locks
from coffre.repository.mark import key_history
from coffre.repository.repo import Repository
from coffre.storage.base import Backend
from coffre.storage.cached import CachedBackend
from coffre.storage.faults import KillSwitchBackend
from coffre.storage.pacing import Pacer, parse_limit
from coffre.storage.retry import ATTEMPTS, RetryBackend, retry_budget
from coffre.storage.url import is_url, open_backend


def add_repo_options(p: argparse.ArgumentParser) -> None:
    """--repo and --password-file under a "repository" heading; the options that only matter
    for remote storage under "remote storage"."""
    g = p.add_argument_group(_("repository"))
    g.add_argument("-r", "--repo", metavar="REPO",
                   help=_("the repository (or COFFRE_REPOSITORY): a path (local disk, mounted NAS "
                          "share, USB disk), s3://HOST/BUCKET/PREFIX (S3 over HTTPS), "
                          "s3+http://HOST:PORT/BUCKET/PREFIX (plain HTTP, LAN only), "
                          "sftp://USER@HOST/PATH (SSH), ftps://USER@HOST/PATH (FTP with TLS) or "
                          "ftp://USER@HOST/PATH (plain FTP, with --insecure-ftp)"))
    g.add_argument("--password-file", metavar="FILE",
                   help=_("read the password from this file (or COFFRE_PASSWORD_FILE; "
                          "COFFRE_PASSWORD_COMMAND runs a command that prints it)"))
    add_remote_options(p)


def add_remote_options(p: argparse.ArgumentParser) -> None:
    """The options of remote repositories, grouped so a local user can skip them."""
    g = p.add_argument_group(_("remote storage"))
    g.add_argument("--insecure-ftp", action="store_true",
                   help=_("allow a plain ftp:// repository (the FTP password crosses the network in clear)"))
    g.add_argument("--insecure-http", action="store_true",
                   help=_("allow a Coffre server at a plain http:// URL (the server token crosses the "
                          "network in clear): loopback or a trusted network only"))
    g.add_argument("--limit-upload", metavar="RATE",
                   help=_("upload limit to remote storage, e.g. 512KiB/s, 2MiB/s, or a schedule by "
                          "time of day such as '08:30-19:30=512KiB/s,*=unlimited' "
                          "(or COFFRE_LIMIT_UPLOAD)"))
    g.add_argument("--limit-download", metavar="RATE",
                   help=_("download limit from remote storage, same form (or COFFRE_LIMIT_DOWNLOAD)"))


def refuse_empty(option: str, *values: str | None, hint: str | None = None) -> None:
    """An empty value is an unset shell variable, never the current folder nor a fallback: a
    usage error naming the option, raised before anything is opened or written."""
    if any(v == "" for v in values):
        raise UsageError(_("{option} is empty (an unset variable?)").format(option=option),
                         hint or _("give a path; '.' is the current folder"))


def repo_location(args: argparse.Namespace) -> str:
    """--repo, else COFFRE_REPOSITORY. An explicit empty --repo is refused, never replaced by
    the variable (it would silently be another repository)."""
    refuse_empty("--repo", getattr(args, "repo", None),
                 hint=_("give the repository's path or URL, or leave --repo out to use COFFRE_REPOSITORY"))
    loc = getattr(args, "repo", None) or os.environ.get("COFFRE_REPOSITORY")
    if not loc:
        hint = _("use --repo PATH or set COFFRE_REPOSITORY")
        if os.environ.get("RESTIC_REPOSITORY"):
            hint += "; " + _("RESTIC_REPOSITORY is set, but Coffre does not read restic's variables")
        raise UsageError(_("no repository given"), hint)
    return str(loc)


def backend_for(location: str, args: argparse.Namespace | None = None) -> Backend:
    """The storage a location names (a path or a URL), with the command's bandwidth limits,
    retrying what may pass (COFFRE_STORAGE_RETRIES attempts per request, 10 by default) until
    the storage has been unreachable for COFFRE_STORAGE_RETRY_BUDGET seconds (4 minutes by
    default): then the whole command gives up. One per location and command, shared by its
    threads (the lock refresher too), so the budget covers them all."""
    attempts = os.environ.get("COFFRE_STORAGE_RETRIES", "")
    if attempts and not (attempts.isdigit() and int(attempts) >= 1):
        raise UsageError(_("COFFRE_STORAGE_RETRIES must be a number of attempts ≥ 1, not {value!r}").format(
            value=attempts))
    budget = retry_budget()
    backend = open_backend(location, allow_plain_ftp=bool(getattr(args, "insecure_ftp", False)),
                           allow_insecure_http=bool(getattr(args, "insecure_http", False)))
    if location.lower().startswith("ftp://"):
        _warn(_("plain FTP: the FTP password and login cross the network in clear (the backup "
                "itself stays encrypted); prefer ftps://"))
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
        option = getattr(args, f"limit_{name}", None)
        spec = option or os.environ.get(f"COFFRE_LIMIT_{name.upper()}")
        label = f"--limit-{name}" if option else f"COFFRE_LIMIT_{name.upper()}"
        out.append(Pacer(parse_limit(spec, label, warn=_warn)) if spec else None)
    pacers = (out[0], out[1])
    if args is not None:
        args._pacers = pacers
    return pacers


def _warn(message: str) -> None:
    print(_("warning: {message}").format(message=message), file=sys.stderr)


def read_secret_file(path: str, what: str | None = None) -> str:
    """A secret from a file (`what` names it: "the password file" by default); errors never
    quote its content."""
    what = what or _("the password file")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read(MAX_SECRET)
    except OSError as exc:
        raise CoffreError(_("cannot read {what} {path}: {reason}").format(
            what=what, path=path, reason=exc.strerror)) from None
    if stat.S_ISREG(st.st_mode) and open_to_others(st):
        # As ssh does for keys, but a warning: refusing would stop the night's backup.
        _warn(_("{what} {path} can be read by other users of this machine (mode {mode}): "
                "chmod 600 {quoted}").format(what=what, path=path, mode=f"{stat.S_IMODE(st.st_mode):04o}",
                                             quoted=shlex.quote(path)))
    return _decode_secret(raw, f"{what} {path}")


def _decode_secret(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CoffreError(_("{where} is not UTF-8 text").format(where=where)) from None


def _from_command(cmd: str, name: str) -> str:
    """The output of the command in the variable `name`. No message quotes the command: its
    arguments may hold something private."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:  # an unbalanced quote, a trailing backslash
        raise UsageError(_("{name} cannot be read as a command: {reason}").format(name=name, reason=exc),
                         _("check its quotes; the command is run without a shell")) from None
    if not argv:
        raise UsageError(_("{name} holds no command").format(name=name))
    try:
        out = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoffreError(_("{name} could not run: {reason}").format(
            name=name, reason=type(exc).__name__)) from None
    if out.returncode != 0:
        raise CoffreError(_("{name} failed with exit status {code}").format(name=name, code=out.returncode))
    return _decode_secret(out.stdout, _("the output of {name}").format(name=name))


def password(args: argparse.Namespace, confirm: bool = False, prompt: str | None = None) -> str:
    """From --password-file, COFFRE_PASSWORD_FILE, COFFRE_PASSWORD_COMMAND or a prompt."""
    return secret_from(getattr(args, "password_file", None), "COFFRE_PASSWORD", confirm,
                       prompt or _("Password: "))


def source_password(args: argparse.Namespace) -> str:
    """The password of a second, source repository (copy, init --copy-chunking-from): from
    --from-password-file, COFFRE_FROM_PASSWORD_FILE, COFFRE_FROM_PASSWORD_COMMAND or a prompt."""
    return secret_from(getattr(args, "from_password_file", None), "COFFRE_FROM_PASSWORD", False,
                       _("Password of the source repository: "))


def secret_from(path: str | None, env: str, confirm: bool, prompt: str) -> str:
    """From the option's file, else {env}_FILE, else {env}_COMMAND, else a prompt. An explicit
    empty option is refused (an empty variable counts as unset, as usual for variables)."""
    option = "--" + env.removeprefix("COFFRE_").lower().replace("_", "-") + "-file"
    refuse_empty(option, path, hint=_("give the password file, or leave {option} out").format(option=option))
    refuse_password_in_environment(env)
    path = path or os.environ.get(f"{env}_FILE")
    if path:
        secret = read_secret_file(path)
    elif os.environ.get(f"{env}_COMMAND"):
        secret = _from_command(os.environ[f"{env}_COMMAND"], f"{env}_COMMAND")
    else:
        secret = prompt_secret(prompt, confirm, restic_note() if env == "COFFRE_PASSWORD" else None)
    if not secret:
        raise UsageError(_("the password is empty"))
    return secret


def refuse_password_in_environment(env: str) -> None:
    """A password in the environment (`COFFRE_PASSWORD`, as restic's RESTIC_PASSWORD) is
    refused, never silently ignored: every program Coffre starts (pg_dump, ssh, the command of
    --stdin-from-command) would inherit it, and /proc/PID/environ shows it to whoever can read
    the process's files. An empty variable counts as unset."""
    if os.environ.get(env):
        raise UsageError(
            _("{env} is set, but Coffre does not take a password from the environment: every "
              "program it starts would inherit it, and it can be read in /proc").format(env=env),
            _("put the password in a file only you can read and name it in {env}_FILE, or give a "
              "command that prints it in {env}_COMMAND; then unset {env}").format(env=env))


def restic_note() -> str | None:
    """What to say when restic's password variables are set and no Coffre one is: Coffre does
    not read them (the first thing a restic user tries)."""
    found = [v for v in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
             if os.environ.get(v)]
    if not found:
        return None
    return _("{variables} is set, but Coffre does not read restic's variables: use "
             "COFFRE_PASSWORD_FILE or COFFRE_PASSWORD_COMMAND").format(variables=", ".join(found))


def prompt_secret(prompt: str, confirm: bool, note: str | None = None) -> str:
    """Ask on the terminal (`note` said first); a usage error without one."""
    if not sys.stdin.isatty():
        hint = _("use --password-file, COFFRE_PASSWORD_FILE or COFFRE_PASSWORD_COMMAND")
        raise UsageError(_("a password is needed and there is no terminal to ask it on"),
                         hint + (f"; {note}" if note else ""))
    if note:
        _warn(note)
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass(_("Repeat it: ")) != first:
        raise UsageError(_("the two passwords differ; nothing was done"))
    return first


def open_repo(args: argparse.Namespace, watch: bool = True) -> Repository:
    return open_repo_at(repo_location(args), lambda: password(args), args, watch,
                        ahead=in_file(args, "password_file", "COFFRE_PASSWORD"))


def in_file(args: argparse.Namespace, option: str, env: str) -> bool:
    """Whether a password comes from a file (the option's or {env}_FILE): read at once, it
    asks nobody anything."""
    return bool(getattr(args, option, None) or os.environ.get(f"{env}_FILE"))


def open_repo_at(
    location: str, secret: Callable[[], str], args: argparse.Namespace | None = None, watch: bool = True,
    ahead: bool = False,
) -> Repository:
    """The repository at a location; the password is asked only once it is known to be one.
    With `watch`, the storage is then compared with this machine's mark (cli/watching.py).
    With `ahead` (the password is in a file), it is read first, and the key of the slot that
    opened this location last is derived while the storage is reached (repository/unlockahead.py)."""
    from coffre.repository import unlockahead

    if ahead:
        secret = _read_now(secret)
        try:
            unlockahead.start(location, secret())
        except CoffreError:
            pass  # reported where the password is needed, after "not a repository"
    backend = backend_for(location, args)
    from coffre.repository.cache import repo_cache_dir
    from coffre.repository.repo import load_config

    # Not a repository, or a newer format: said before any password is asked.
    config = load_config(backend)
    if is_url(location):
        # Remote metadata is kept locally so a daily backup does not download it again.
        backend = CachedBackend(backend, repo_cache_dir(config.config.id) / "objects")
    repo = Repository.open(backend, secret(), config=config, history=key_history)
    unlockahead.remember(location, repo.opened_slot)
    if repo.config_problem:
        _warn(_("{problem}; run 'coffre repair config'").format(problem=repo.config_problem))
    for damaged in repo.damaged_keys:
        _warn(_("{what}; 'coffre key remove {id}' drops it").format(
            what=damaged.describe(), id=damaged.id[:8]))
    for foreign in repo.foreign_keys:
        _warn(_("key file {id} opens with this password but holds another key than this "
                "repository's (it fails the config's authentication): it was not written by this "
                "repository's Coffre, and was skipped; 'coffre key remove {id}' drops it").format(
                    id=foreign[:8]))
    if watch:
        watch_storage(repo)
    return repo


def _read_now(secret: Callable[[], str]) -> Callable[[], str]:
    """`secret` asked for once, now: its value, or the error it gave, kept for when needed."""
    try:
        value = secret()
    except CoffreError as exc:
        error = exc

        def fail() -> str:
            raise error

        return fail
    return lambda: value


def load_index(repo: Repository) -> None:
    """Load the index; a damaged index file is reported, and the data it listed is then
    treated as missing (a backup stores it again) instead of stopping everything."""
    damaged: list[str] = []
    repo.load_index(errors=damaged)
    for d in damaged:
        _warn(_("{what} (skipped; 'coffre repair index' rebuilds it)").format(what=d))


def snapshots(repo: Repository) -> list[Snapshot]:
    damaged: list[str] = []
    snaps = repo.snapshots(errors=damaged)
    for d in damaged:
        _warn(_("{what} (skipped)").format(what=d))
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
            _warn(_("the repository cannot be written ({reason}); reading it without a lock").format(
                reason=exc.message))
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
            _warn(_("{reason}: going on without a lock, as no other Coffre command uses the "
                    "repository").format(reason=exc.message))
            yield None
        else:
            yield lock
    finally:
        lock.release()


def refuse_if_others(repo: Repository, why: str, mine: Lock | None = None) -> None:
    for lk in live_locks(repo):
        if mine is None or lk.lock_id != mine.lock_id:
            raise LockedError(_("{why}, and {lock} is using the repository").format(
                why=why, lock=lk.describe()),
                              _("wait for it to end (a backup on a full medium fails by itself), then "
                                "run this again"))
