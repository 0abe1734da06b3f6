"""What the drills' throwaway database servers share: the account they run as, their folder,
their process.

A drill restores the backed-up database, which is code (functions, triggers, constraints),
and runs the engine's checks over it. Inside the engine, that code runs only as an ordinary
role (the engines' modules see to it). Outside, the server runs under its own unprivileged
system account, `coffre-drill`, created on first use when Coffre runs as root: never
`postgres`, `mysql`, root, nor Coffre's own user, who can read the repository's password.
Coffre not running as root cannot switch accounts: its servers then run as its own user,
and the database role is the only barrier (`isolation_note` says so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from coffre.core import posix
from coffre.core.errors import CoffreError
from coffre.core.human import human_duration
from coffre.core.i18n import _
from coffre.core.posix import Account
from coffre.sources.databases.command import as_account, file_tail, find_program

ACCOUNT = "coffre-drill"
USERADD = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
           "--shell", "/usr/sbin/nologin", "--comment", "Coffre drills' throwaway database servers"]
CREATE_TRIES = 50  # another program changing accounts holds /etc/passwd's lock for a moment
START_TIMEOUT = 600.0  # seconds for a server to accept connections (crash recovery included)
STOP_TIMEOUT = 60.0


def drill_account() -> Account | None:
    """The account the throwaway servers run as: `coffre-drill` when Coffre runs as root
    (created if missing), None when it does not (they then run as Coffre's own user)."""
    if not posix.is_root():
        return None
    with contextlib.suppress(KeyError):
        return _checked(posix.account(ACCOUNT))
    with _creating():
        for _try in range(CREATE_TRIES):
            with contextlib.suppress(KeyError):
                return _checked(posix.account(ACCOUNT))  # made by the drill that held the lock
            if _create_account():
                time.sleep(0.1)  # another program is changing the account files: try again
    raise CoffreError(_("the system account {account} could not be created; {advice}").format(
        account=ACCOUNT, advice=_create_it()))


@contextlib.contextmanager
def _creating() -> Iterator[None]:
    """One Coffre at a time creates the account: two useradd run together both succeed, the
    second rewriting the first one's entry with another id. (The lock is on /etc, which
    holds the account files and exists everywhere; nothing else takes it.)"""
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        posix.lock_exclusive(fd, "/etc")
        yield
    finally:
        os.close(fd)


# A drill reports an error's message only: what to do is part of it.
def _create_it() -> str:
    return _("create it with: {command}").format(command=f"useradd {' '.join(USERADD[:-2])} {ACCOUNT}")


def _create_account() -> bool:
    """Run useradd; whether it failed in a way worth trying again (another program holds the
    account files' lock)."""
    try:
        useradd = find_program("useradd", extra_dirs=("/usr/sbin", "/sbin"))
    except CoffreError:
        raise CoffreError(_("drills run their throwaway database servers as the system account {account}, "
                            "which does not exist, and useradd is not installed: install the passwd "
                            "package, or {advice}").format(account=ACCOUNT, advice=_create_it())) from None
    done = subprocess.run([useradd, *USERADD, ACCOUNT], capture_output=True, text=True, check=False)
    if done.returncode in (0, 9):  # 9: made meanwhile by someone else
        return False
    if done.returncode in (1, 10):  # /etc/passwd or /etc/group locked
        return True
    raise CoffreError(_("the system account {account} could not be created ({reason}); {advice}").format(
        account=ACCOUNT, reason=(done.stderr or done.stdout).strip()[-1000:], advice=_create_it()))


def _checked(account: Account) -> Account:
    if account.pw_uid == 0 or account.pw_gid == 0:
        raise CoffreError(_("the account {account} has root's user or group id: drills will not run "
                            "their servers as it; remove it (userdel {account}), Coffre then creates it "
                            "again as an ordinary system account").format(account=ACCOUNT))
    return account


def isolation_note() -> str | None:
    """What a user who runs drills without root should know, or None as root."""
    if posix.is_root():
        return None
    user = posix.current_user()
    return _("note: Coffre is not running as root, so the drill's database servers run as your "
             "own account ({user}), which can read the repository's password. The backed-up "
             "database's own code (its functions and triggers) is kept away from it only by "
             "running as an ordinary database role, never a superuser. Run drills as root to "
             "give the servers an account of their own ({account}).").format(user=user, account=ACCOUNT)


class DrillFolder:
    """A drill's temporary folder. It is Coffre's: as root, mode 0710 with the drill account's
    group, so the account reaches the folders made for it inside but can neither list, rename
    nor replace anything here (what Coffre writes here stays Coffre's). Not as root, 0700."""

    def __init__(self, prefix: str, work_dir: str | None, account: Account | None) -> None:
        self.top = tempfile.mkdtemp(prefix=prefix, dir=work_dir)
        self.account = account
        if account is not None:
            os.chown(self.top, 0, account.pw_gid)
            os.chmod(self.top, 0o710)  # noqa: S103 (the account's group may only pass through)

    def path(self, name: str) -> str:
        return os.path.join(self.top, name)

    def owned(self, name: str) -> str:
        """A new, empty folder of the account (0700) for the server to write in."""
        path = self.path(name)
        os.mkdir(path, 0o700)
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
        return path

    def file(self, name: str, text: str, mode: int = 0o600) -> str:
        """A new file of Coffre's here; `mode` 0o644 for one the server reads (its settings)."""
        path = self.path(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)  # whatever the umask
        return path

    def remove(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)


class Server:
    """A throwaway server process, run as the drill's account (no shell in between), its
    output in a log Coffre opened in the drill's folder."""

    def __init__(self, argv: list[str], folder: DrillFolder, what: str,
                 env: dict[str, str] | None = None) -> None:
        self.what = what
        self.log = folder.path("server.log")
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd,
                                         stderr=subprocess.STDOUT, env=env, **as_account(folder.account))
        except OSError as exc:
            raise CoffreError(_("cannot run {program}: {reason}").format(
                program=argv[0], reason=exc.strerror)) from None
        finally:
            os.close(fd)

    def wait_ready(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Until `ready()` (it asks the server), or the server stopped, or `timeout`."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise CoffreError(_("the drill's throwaway {server} stopped at start").format(
                    server=self.what)
                                  + file_tail(self.log))
            if time.monotonic() > deadline:
                raise CoffreError(_("the drill's throwaway {server} did not start in {duration}").format(
                    server=self.what, duration=human_duration(timeout)) + file_tail(self.log))
            time.sleep(0.1)  # polling a starting server

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it with `sig`, then kill it if it is still there after a while."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
