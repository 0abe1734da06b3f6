"""Errors meant for a person: a message, a hint, and the process exit code.

Exit codes follow restic's numbering where it fits (documented in README.md):
0 ok, 1 fatal, 3 done but some sources unreadable, 10 no repository, 11 lock,
12 wrong password, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12
EXIT_INTERRUPTED = 130


class CoffreError(Exception):
    """An error the user can understand. Never carries secrets. `message` and `hint` are in
    the reader's language: made with `_()` (core/i18n.py) where the error is raised."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(CoffreError):
    exit_code = EXIT_USAGE


class NoRepositoryError(CoffreError):
    exit_code = EXIT_NO_REPOSITORY


class LockedError(CoffreError):
    exit_code = EXIT_LOCKED


class WrongPasswordError(CoffreError):
    exit_code = EXIT_WRONG_PASSWORD


class FormatError(CoffreError):
    """Something read from storage is malformed, fails authentication or is out of bounds."""


class IntegrityError(FormatError):
    """Stored bytes do not match their name, length or authentication tag."""


class UnsupportedVersionError(CoffreError):
    pass


class NotFoundInRepository(CoffreError):
    pass


# Storage-level errors: backends translate foreign exceptions into these.
class StorageError(CoffreError):
    """Base of what a storage backend raises; the original exception is kept as __cause__."""


class ObjectNotFound(StorageError):
    pass


class ObjectExists(StorageError):
    pass


class StoragePermissionDenied(StorageError):
    pass


class StorageFull(StorageError):
    pass


class QuotaExceeded(StorageFull):
    """A Coffre server refused an upload: the tenant's hard quota would be exceeded. The
    message names the quota; nothing half-done is committed (the command stops like on a full
    disk)."""


class TransientStorageError(StorageError):
    pass


class ConnectFailed(TransientStorageError):
    """No connection could be made at all: refused, unknown host, no route, a TLS handshake
    that failed. A storage that has not answered once during the command is set up wrong (a
    mistyped host or port, a server that is not running): storage/retry.py fails at once with
    StorageSetupError. One that answered before is restarting: retried like any blip."""


class StorageSetupError(StorageError):
    """The storage cannot be used as given (see ConnectFailed): never retried."""


class StorageUnreachable(TransientStorageError):
    """The storage answered nothing for so long that the command gave up (storage/retry.py);
    once the retry budget is spent, every further request of the command fails at once."""
