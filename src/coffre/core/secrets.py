"""Secrets read from where a configuration names them: a file, or a command run without a
shell that prints it (a password manager, a vault client). The first line's end is
stripped. A message never quotes the secret, nor the command (its arguments may hold
something private)."""

from __future__ import annotations

import shlex
import subprocess

from coffre.core.errors import CoffreError
from coffre.core.i18n import _

MAX_SECRET = 64 * 1024
COMMAND_TIMEOUT_S = 60.0


class SecretUnreadable(CoffreError):
    """The file or the command gave nothing usable; the message says why."""


def read_secret(password_file: str | None, password_command: str | None,
                timeout: float = COMMAND_TIMEOUT_S) -> str:
    """The secret from `password_file`, else from `password_command`'s output."""
    if password_file:
        try:
            with open(password_file, "rb") as f:
                raw = f.read(MAX_SECRET)
        except OSError as exc:
            raise SecretUnreadable(_("cannot read {path}: {reason}").format(
                path=password_file, reason=exc.strerror or type(exc).__name__)) from None
    elif password_command:
        try:
            argv = shlex.split(password_command)
        except ValueError:
            argv = []
        if not argv:
            raise SecretUnreadable(_("the password command cannot be read as a command"))
        try:
            done = subprocess.run(argv, capture_output=True, check=False, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SecretUnreadable(_("the password command could not run: {reason}").format(
                reason=type(exc).__name__)) from None
        if done.returncode != 0:
            raise SecretUnreadable(_("the password command failed with exit status {code}").format(
                code=done.returncode))
        raw = done.stdout[:MAX_SECRET]
    else:
        raise SecretUnreadable(_("no password file or command is configured"))
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretUnreadable(_("the password is not UTF-8 text")) from None
