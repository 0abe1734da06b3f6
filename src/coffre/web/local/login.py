"""Who may open the pharmacy's page: a person who knows the repository's password (the one of
any repository or removable disk set of the configuration: it opens the backups anyway), or,
when `[web].password_hash_file` is set, only the page's own password, kept as an Argon2id hash
(`coffre agent web-password` writes it; `write_password_hash` here).

The repository passwords are read when someone logs in, from the same password files and
commands the jobs use (nothing is kept in memory between logins); the comparison is made in
constant time over SHA-256 digests, so neither the length nor the content leaks through timing.
A password that cannot be read (a missing file, a failing command) refuses the login; the
reason is logged for the provider, never shown on the page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from coffre.agent.model import Config
from coffre.core.files import write_atomic
from coffre.core.secrets import SecretUnreadable, read_secret
from coffre.web.guard import Identity

log = logging.getLogger("coffre.web")

USER = "pharmacie"
ROLE = "pharmacist"
MIN_LENGTH = 8  # the page's own password


def password_sources(config: Config) -> Iterator[tuple[str, str | None, str | None]]:
    """(name, password_file, password_command) of each repository and media set, each
    distinct source once."""
    seen: set[tuple[str | None, str | None]] = set()
    sources = [(n, r.password_file, r.password_command) for n, r in config.repositories.items()]
    sources += [(n, m.password_file, m.password_command) for n, m in config.media_sets.items()]
    for name, file, command in sources:
        if (file, command) != (None, None) and (file, command) not in seen:
            seen.add((file, command))
            yield name, file, command


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def matches_repository_password(config: Config, given: str) -> bool:
    """Whether `given` is the password of one of the configuration's repositories or media
    sets (every source is read and compared: the time taken says nothing of which matched)."""
    wanted = _digest(given)
    found = False
    for name, file, command in password_sources(config):
        try:
            secret = read_secret(file, command)
        except SecretUnreadable as exc:
            log.warning("the page's login cannot read the password of %s: %s", name, exc)
            continue
        if secret and hmac.compare_digest(_digest(secret), wanted):
            found = True
    return found


def hash_password(password: str) -> str:
    """The Argon2id hash of `password` (argon2-cffi's recommended parameters)."""
    from argon2 import PasswordHasher

    return str(PasswordHasher().hash(password))


def matches_hash(stored: str, given: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return bool(PasswordHasher().verify(stored.strip(), given))
    except (Argon2Error, InvalidHashError, ValueError):
        return False


def write_password_hash(path: str, password: str) -> None:
    """Writes the hash of `password` to `path` atomically, 0600 (core.files.write_atomic): a
    crash leaves the old file or the new one, never half."""
    target = Path(path).absolute()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(target, (hash_password(password) + "\n").encode("utf-8"), 0o600)


def authenticate_with(config: Callable[[], Config]) -> Callable[[dict[str, str], str], Identity | None]:
    """The page's `Authenticate`: the configuration in force at each attempt (a new hash file
    or a changed repository password counts at once)."""

    def authenticate(form: dict[str, str], address: str) -> Identity | None:
        given = form.get("password", "")
        if not given:
            return None
        current = config()
        hash_file = current.web.password_hash_file
        if hash_file:
            try:
                with open(hash_file, encoding="utf-8") as f:
                    stored = f.read(4096)
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("the page's password hash file %s cannot be read: %s", hash_file, exc)
                return None
            ok = matches_hash(stored, given)
        else:
            ok = matches_repository_password(current, given)
        return Identity(USER, ROLE) if ok else None

    return authenticate
