"""What a command prints, also appended to a log file (`--log-file`, COFFRE_LOG_FILE), and
`--quiet`.

The standard streams are wrapped before the arguments are parsed (so a usage error is logged
too): every complete line written to them is appended to the log with a timestamp, the
process id and the command (`2026-11-30 23:41:05 +0100 coffre[4242] backup: snapshot 1a2b3c4d
saved`). A line redrawn in place (a progress line ending in a carriage return, or one that
erases a line or moves the cursor up) and terminal control sequences are not logged; binary
output (`coffre dump`) goes through `.buffer` and is not logged either. Secrets are never
written: the recovery key `init` shows goes through `say_unlogged`.

Under `--quiet` the wrapped standard output shows nothing on the terminal (the log still gets
it): warnings and errors go to standard error, which stays.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, TextIO

from coffre.core.errors import UsageError
from coffre.core.i18n import _

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Erasing a line or moving the cursor up: a live display redrawing itself (rich), not a message.
_REDRAW = re.compile(r"\x1b\[[0-9]*[AK]")
_EOL = re.compile(r"[\r\n]")


MAX_LOG_BYTES = 10 * 1024 * 1024  # then the file is rotated: FILE.1 ... FILE.5, the oldest dropped
LOG_BACKUPS = 5


class Log:
    """An open log file, written a whole line at a time (appends of concurrent runs do not mix
    within a line). Past `max_bytes` it is rotated (FILE -> FILE.1 -> ... -> FILE.5), so a
    long-running agent's log never fills the disk."""

    def __init__(self, path: str, command: str, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.fd = self._open()
        self.command = command
        self.max_bytes = max_bytes

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(_("cannot open the log file {path}: {reason}").format(
                path=self.path, reason=exc.strerror),
                             _("give a file in a folder that exists and that you can write")) from None

    def _rotate_if_full(self) -> None:
        try:
            if os.fstat(self.fd).st_size < self.max_bytes or not os.path.isfile(self.path):
                return
            for i in range(LOG_BACKUPS - 1, 0, -1):
                if os.path.exists(f"{self.path}.{i}"):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
            fd = self._open()
        except (OSError, UsageError):
            return  # a log that cannot rotate goes on growing rather than stop the command
        os.close(self.fd)
        self.fd = fd

    def line(self, text: str) -> None:
        text = _CONTROL.sub("", text).rstrip()
        if not text:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        data = f"{stamp} coffre[{os.getpid()}] {self.command}: {text}\n".encode("utf-8", "backslashreplace")
        self._rotate_if_full()
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk must not stop a backup because of its log

    def close(self) -> None:
        os.close(self.fd)


class Stream:
    """A text stream standing in for sys.stdout or sys.stderr: shows what it is given (unless
    `show` is off) and logs it line by line."""

    def __init__(self, real: TextIO, log: Log | None, show: bool = True) -> None:
        self.real = real
        self.log = log
        self.show = show
        self._pending = ""

    def write(self, text: str) -> int:
        if self.show:
            self.real.write(text)
        if self.log is not None:
            self._pending += text
            while (end := _EOL.search(self._pending)) is not None:
                line, sep, self._pending = self._pending[:end.start()], end.group(), self._pending[end.end():]
                if sep == "\n" and not _REDRAW.search(line):
                    self.log.line(line)
                # A line ended by "\r" is redrawn in place: a progress line, not logged.
        return len(text)

    def flush(self) -> None:
        if self.show:
            self.real.flush()

    def finish(self) -> None:
        if self.log is not None and self._pending:
            self.log.line(self._pending)
            self._pending = ""

    def isatty(self) -> bool:
        return self.show and self.real.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # buffer, fileno, encoding...


class Output:
    """The wrapped streams of one command; `close()` puts the real ones back."""

    def __init__(self, log_path: str | None, command: str, quiet: bool) -> None:
        self.log = Log(log_path, command) if log_path else None
        self.out = Stream(sys.stdout, self.log, show=not quiet)
        self.err = Stream(sys.stderr, self.log)
        sys.stdout, sys.stderr = self.out, self.err

    def note(self, text: str) -> None:
        """A line for the log only."""
        if self.log is not None:
            self.log.line(text)

    def close(self) -> None:
        for s in (self.out, self.err):
            s.finish()
            try:
                s.flush()
            except OSError:  # a reader that went away (`coffre dump ... | head`)
                pass
        sys.stdout, sys.stderr = self.out.real, self.err.real
        if self.log is not None:
            self.log.close()


def say_unlogged(text: str, placeholder: str) -> None:
    """Print a secret (the recovery key) on the real standard output, even under --quiet, and
    only `placeholder` into the log."""
    out = sys.stdout
    if isinstance(out, Stream):
        out.real.write(text + "\n")
        out.real.flush()
        if out.log is not None:
            out.log.line(placeholder)
    else:
        print(text, flush=True)
