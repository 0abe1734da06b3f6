"""init, key list|add|remove|passwd, unlock."""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from coffre.cli.context import (
    add_repo_options,
    backend_for,
    open_repo,
    open_repo_at,
    password,
    read_secret_file,
    repo_location,
    source_password,
)
from coffre.cli.output import emit_json, say, table
from coffre.compress import DEFAULT_LEVEL
from coffre.core.clock import SystemClock, format_ns
from coffre.core.errors import CoffreError, ObjectNotFound, UsageError
from coffre.repository import keyring
from coffre.repository.locks import is_stale, list_locks
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

SHEET = """COFFRE — FICHE DE RÉCUPÉRATION / RECOVERY SHEET
================================================

Dépôt / repository : {location}
Identifiant / id   : {repo_id}
Créé le / created  : {created}

Clé de récupération / recovery key:

    {key}

FR  Cette clé ouvre le dépôt si le mot de passe est perdu. Imprimez cette fiche,
    rangez-la dans un coffre ou chez une personne de confiance, puis effacez ce
    fichier. Sans mot de passe ni clé de récupération, les sauvegardes sont
    illisibles : personne, pas même votre prestataire, ne peut les ouvrir.
    Pour l'utiliser : tapez la clé quand Coffre demande le mot de passe
    (ou placez-la dans un fichier donné à --password-file).

EN  This key opens the repository if the password is lost. Print this sheet, keep
    it in a safe place, then delete this file. Without the password or this key
    the backups cannot be read by anyone, your IT provider included.
    To use it: type it where Coffre asks for the password.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a repository")
    add_repo_options(p)
    p.add_argument("--recovery-sheet", metavar="FILE", help="write a printable recovery sheet")
    p.add_argument("--pack-size", type=int, default=16, metavar="MIB",
                   help="target size of pack files in MiB (1-256, default 16)")
    p.add_argument("--compression-level", type=int, default=DEFAULT_LEVEL, metavar="N",
                   help=f"zstd level for new data, 1-19 (default {DEFAULT_LEVEL}: fastest; "
                        "deltas always use 3 or more)")
    p.add_argument("--copy-chunking-from", metavar="REPO",
                   help="share this repository's chunking and content keys, so copies between the "
                        "two send only new data (its password: --from-password-file, "
                        "COFFRE_FROM_PASSWORD_FILE or a prompt)")
    p.add_argument("--from-password-file", help="password file of the --copy-chunking-from repository")
    p.set_defaults(func=cmd_init)

    k = sub.add_parser("key", help="manage the passwords and recovery keys that open the repository")
    ks = k.add_subparsers(dest="key_command", required=True)
    for name, func, helptext in (
        ("list", cmd_key_list, "list key slots"),
        ("add", cmd_key_add, "add a password"),
        ("remove", cmd_key_remove, "remove a key slot"),
        ("passwd", cmd_key_passwd, "change the password used to open the repository"),
    ):
        kp = ks.add_parser(name, help=helptext)
        add_repo_options(kp)
        if name in ("add", "passwd"):
            kp.add_argument("--new-password-file", help="read the new password from this file")
            kp.add_argument("--label", default="", help="a label for the new key slot")
        if name == "remove":
            kp.add_argument("key_id", help="key slot id (or unique prefix)")
        if name == "list":
            kp.add_argument("--json", action="store_true")
        kp.set_defaults(func=func)

    u = sub.add_parser("unlock", help="remove stale locks left by dead processes")
    add_repo_options(u)
    u.set_defaults(func=cmd_unlock)


def cmd_init(args: argparse.Namespace) -> int:
    backend = backend_for(repo_location(args), args)
    if backend.exists():
        raise CoffreError(f"{backend.location} already holds a Coffre repository; nothing was changed")
    if not 1 <= args.pack_size <= 256:
        raise UsageError("--pack-size must be between 1 and 256 MiB")
    if not 1 <= args.compression_level <= 19:
        raise UsageError("--compression-level must be between 1 and 19")
    source = None
    if args.copy_chunking_from:
        source = open_repo_at(args.copy_chunking_from, lambda: source_password(args), args)
    secret = password(args, confirm=True, prompt="New repository password: ")
    sheet = _open_sheet(args.recovery_sheet) if args.recovery_sheet else None
    try:
        repo, recovery = Repository.init(
            backend, secret, pack_size=args.pack_size * 1024 * 1024, compression_level=args.compression_level,
            chunker=source.config.chunker if source else None, master=source.master if source else None,
        )
    except BaseException:
        if sheet is not None:
            sheet.close()
            os.unlink(args.recovery_sheet)
        raise
    say(f"created Coffre repository {repo.config.id.hex()[:8]} at {backend.location}")
    if source is not None:
        say(f"it shares the chunking and keys of {source.backend.location}: copies between them send "
            "only new data, and that repository's key also opens the data of this one")
    say("")
    say("Recovery key (shown only now; it opens the repository if the password is lost):")
    say("")
    say(f"    {recovery}")
    say("")
    if sheet is not None:
        with sheet:
            sheet.write(SHEET.format(location=backend.location, repo_id=repo.config.id.hex(),
                                     created=repo.config.created, key=recovery))
        say(f"recovery sheet written to {args.recovery_sheet}: print it, store it safely, delete the file")
    else:
        say("Write it down or print it, and keep it away from the server.")
    return 0


def _open_sheet(path: str) -> TextIO:
    """Opened before the repository is made, so a bad path changes nothing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; choose a new file for the recovery sheet") from None
    except OSError as exc:
        raise UsageError(f"cannot create the recovery sheet {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


def _new_password(args: argparse.Namespace) -> str:
    if args.new_password_file:
        secret = read_secret_file(args.new_password_file, "new password file")
    else:
        from coffre.cli.context import prompt_secret

        secret = prompt_secret("New password: ", confirm=True)
    if not secret:
        raise UsageError("the new password is empty")
    return secret


def cmd_key_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slots = keyring.list_slots(repo.backend)
    if args.json:
        emit_json([{"id": s.id, "kind": s.kind, "label": s.label, "created": s.created,
                    "current": s.id == repo.key_slot_id}
                   for s in slots])
        return 0
    rows = [[("*" if s.id == repo.key_slot_id else " ") + s.id[:8], s.kind, s.label, s.created[:19]]
            for s in slots]
    say(table(rows, [" id", "kind", "label", "created"]))
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or "password", SystemClock())
    say(f"added key slot {slot[:8]}")
    return 0


def _find_slot(repo: Repository, prefix: str) -> keyring.KeySlot:
    matches = [s for s in keyring.list_slots(repo.backend) if s.id.startswith(prefix.lower())]
    if len(matches) != 1:
        raise CoffreError(f"no single key slot matches {prefix!r}", "see 'coffre key list'")
    return matches[0]


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slot = _find_slot(repo, args.key_id)
    if slot.id == repo.key_slot_id:
        raise CoffreError("refusing to remove the key slot used to open the repository now",
                          "open with another password or the recovery key to remove this one")
    remaining = [s for s in keyring.list_slots(repo.backend) if s.id != slot.id]
    if not remaining:
        raise CoffreError("refusing to remove the last key slot: the repository would be unreadable")
    repo.backend.remove(Handle("keys", slot.id))
    say(f"removed key slot {slot.id[:8]} ({slot.kind})")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    old = _find_slot(repo, repo.key_slot_id)
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or old.label or "password", SystemClock())
    if old.kind == "password":
        repo.backend.remove(Handle("keys", old.id))
    say(f"password changed (new key slot {slot[:8]})")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    now = SystemClock().now_ns()
    removed = 0
    for lk in list_locks(repo):
        if is_stale(lk, now):
            try:
                repo.backend.remove(Handle("locks", lk.name))
                removed += 1
            except ObjectNotFound:
                pass
        else:
            say(f"kept live {lk.describe()}, refreshed {format_ns(lk.refreshed_ns)}")
    say(f"removed {removed} stale lock(s)")
    return 0
