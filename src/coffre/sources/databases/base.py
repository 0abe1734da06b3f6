"""What every database engine offers: a dump, a restore target, a throwaway instance."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from coffre.core.i18n import N_, _, ngettext

T = TypeVar("T")


@dataclass
class Captured:
    """What a dump reports once its stream was read to the end."""

    size: int  # the database's size in bytes, as the engine reports it
    tables: dict[str, int]  # table -> rows in the dump's snapshot
    server: str  # the engine's version
    format: str  # how it was captured
    # Bytes that belong before the stream: SQLite's first page is final only at the end.
    head: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # captured, but the user should know


class Database(ABC):
    """A live database to back up."""

    engine: str
    name: str
    suffix: str
    fixed = False  # the stream is made of fixed-size pages (cut it into fixed blocks)

    @abstractmethod
    def describe(self) -> str:
        """The database in messages: never a password."""

    @abstractmethod
    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        """Stream a consistent dump to `consume`, which reads it to the end; then report what
        was captured. Raises CoffreError, with the engine's own message, if the dump failed:
        whatever `consume` stored must then not be committed."""

    def stored_at(self) -> list[str]:
        """The files and folders of this machine that hold the live database, as absolute
        paths (known once `dump` ran; empty when the engine does not say): a files backup
        leaves them out, as the dump is the consistent copy."""
        return []

    def recorded_name(self) -> str:
        """The name the snapshot records (UTF-8 text): a path that is not UTF-8 (Latin-1 on
        an old system) with its odd bytes written as \\xe9, which `--database` then takes."""
        return os.fsencode(self.name).decode("utf-8", "backslashreplace")

    def file_name(self) -> str:
        """The dump's file name in the snapshot."""
        base = os.path.basename(self.name.rstrip("/")) or "database"
        base = base.removesuffix(self.suffix) if base != self.suffix else base
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base).lstrip(".")
        return f"{self.engine}-{safe or 'database'}{self.suffix}"


@dataclass
class Check:
    """One line of a drill report."""

    name: str
    ok: bool
    detail: str = ""


class Target(ABC):
    """A database to restore into."""

    @property
    def replace_hint(self) -> str:
        """What to do about a target that is not empty."""
        return _("restore into a new or empty database, or add --force to replace its tables")

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether it holds no table yet (a database that does not exist counts as empty)."""

    @abstractmethod
    def restore(self, chunks: Iterable[bytes], force: bool, extra: dict[str, str]) -> None:
        """Load a dump made by this engine's Database.dump. `force`: replace what is there."""

    @abstractmethod
    def drill_checks(self, recorded: dict[str, int]) -> list[Check]:
        """After a restore into a throwaway instance: what the drill reports. `recorded`:
        each table's rows at backup time."""

    def too_privileged(self) -> str | None:
        """Whether the account restoring holds rights over the whole server: a dump is the
        backed-up database's own code (functions, triggers, constraints), which then runs
        with them. The reason, or None."""
        return None


class CountedTarget(Target):
    """A database whose engine checks what was restored and counts its rows, which are
    compared with those recorded at backup time."""

    @abstractmethod
    def row_counts(self) -> dict[str, int]: ...

    @abstractmethod
    def integrity(self) -> Check:
        """The engine's own integrity check of everything restored."""

    def drill_checks(self, recorded: dict[str, int]) -> list[Check]:
        return [self.integrity(), compare_counts(recorded, self.row_counts())]


def compare_counts(recorded: dict[str, int], restored: dict[str, int]) -> Check:
    problems = []
    for table in sorted(set(recorded) | set(restored)):
        want, got = recorded.get(table), restored.get(table)
        if want != got:
            problems.append(_("{table}: {expected} at backup time, {found} restored").format(
                table=table, expected=_rows(want), found=_rows(got)))
    total = sum(recorded.values())
    if problems:
        return Check(N_("row counts"), False, "; ".join(problems[:20]))
    return Check(N_("row counts"), True, _("{tables}, {rows}, as at backup time").format(
        tables=ngettext("{n} table", "{n} tables", len(recorded)).format(n=len(recorded)),
        rows=ngettext("{n} row", "{n} rows", total).format(n=total)))


def _rows(n: int | None) -> str:
    return _("absent") if n is None else ngettext("{n} row", "{n} rows", n).format(n=n)


def batched(chunks: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Join small chunks into writes of about `size` bytes."""
    buf = bytearray()
    for c in chunks:
        buf += c
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
