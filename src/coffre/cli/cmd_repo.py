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
    refuse_empty,
    repo_location,
    source_password,
)
from coffre.cli.output import emit_json, say, table, warn
from coffre.cli.watching import key_history, remember_removed, watch_storage
from coffre.compress import DEFAULT_LEVEL
from coffre.core.clock import SystemClock, format_ns
from coffre.core.errors import CoffreError, ObjectNotFound, UsageError
from coffre.ops.repair_config import ensure_config_copies
from coffre.repository import keyring
from coffre.repository.locks import STALE_S, UNREADABLE, is_stale, list_locks
from coffre.repository.repo import Repository, load_config
from coffre.storage.base import Backend, Handle

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
    u.add_argument("--remove-all", action="store_true",
                   help="also remove live and unreadable locks: only when you are sure that no other "
                        "Coffre command uses this repository")
    u.set_defaults(func=cmd_unlock)


def cmd_init(args: argparse.Namespace) -> int:
    backend = backend_for(repo_location(args), args)
    if backend.exists():
        raise CoffreError(f"{backend.location} already holds a Coffre repository; nothing was changed")
    if _damaged_repository(backend):
        raise CoffreError(f"{backend.location} holds a Coffre repository whose config file is damaged; "
                          "nothing was changed", "write it again with 'coffre repair config'")
    if not 1 <= args.pack_size <= 256:
        raise UsageError("--pack-size must be between 1 and 256 MiB")
    if not 1 <= args.compression_level <= 19:
        raise UsageError("--compression-level must be between 1 and 19")
    source = None
    refuse_empty("--copy-chunking-from", args.copy_chunking_from,
                 hint="give the path or URL of the repository whose chunking to share")
    if args.copy_chunking_from:
        source = open_repo_at(args.copy_chunking_from, lambda: source_password(args), args)
        if source.content_secret is None:
            raise CoffreError(
                f"{source.backend.location} uses format {source.version}, where a copy sharing its "
                "chunking would share its whole key (every password of one would open the other); "
                "nothing was changed",
                "move that repository to format 2 first (docs/migration.md: 'coffre init' a new "
                "repository, then 'coffre copy' every snapshot into it), or create this one "
                "without --copy-chunking-from ('coffre copy' then cuts the data again)")
    secret = password(args, confirm=True, prompt="New repository password: ")
    sheet = _open_sheet(args.recovery_sheet) if args.recovery_sheet else None
    try:
        repo, recovery = Repository.init(
            backend, secret, pack_size=args.pack_size * 1024 * 1024, compression_level=args.compression_level,
            chunker=source.config.chunker if source else None,
            content=source.content_secret if source else None,
        )
    except BaseException:
        if sheet is not None:
            sheet.close()
            os.unlink(args.recovery_sheet)
        raise
    # This machine's mark starts here, with the slot it opened.
    watch_storage(repo, changed=True, keys_changed=True)
    say(f"created Coffre repository {repo.config.id.hex()[:8]} at {backend.location}")
    if source is not None:
        say(f"it shares the chunking of {source.backend.location}: copies between them send only new "
            "data; each keeps its own encryption key and passwords (a password of one does not open "
            "the other)")
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


def _damaged_repository(backend: Backend) -> bool:
    """Whether key files with a copy of the config are there while the config file is not."""
    try:
        load_config(backend)
    except CoffreError:
        return False
    return True


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
    slots, bad = keyring.scan(repo.backend)
    doc = repo.config_document()
    removed = key_history(repo.config.id).removed

    def state(s: keyring.KeySlot) -> str:
        if keyring.fingerprint(s.wrapped) in removed:
            return "removed on this machine, put back: refused"
        return "ok" if s.config == doc else "no copy of the config"

    rows: list[dict[str, object]] = [
        {"id": s.id, "kind": s.kind, "label": s.label, "created": s.created,
         "current": s.id == repo.key_slot_id, "state": state(s)}
        for s in slots
    ]
    rows += [{"id": d.id, "kind": "?", "label": "", "created": "", "current": False,
              "state": "damaged" if d.damaged else "unusable", "reason": d.reason} for d in bad]
    if args.json:
        emit_json(rows)
        return 0
    say(table([[("*" if r["current"] else " ") + str(r["id"])[:8], str(r["kind"]), str(r["label"]),
                 str(r["created"])[:19], str(r["state"])] for r in rows],
              [" id", "kind", "label", "created", "state"]))
    for d in bad:
        say(f"{d.describe()}; 'coffre key remove {d.id[:8]}' drops it")
    if any(r["state"] == "no copy of the config" for r in rows):
        say("slots without a copy of the config were written by an older Coffre; "
            "'coffre repair config' adds it")
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or "password", SystemClock(), repo.config_document())
    say(f"added key slot {slot[:8]}")
    ensure_config_copies(repo, warn)
    return 0


def _find_slot(repo: Repository, prefix: str) -> keyring.KeySlot | keyring.UnusableSlot:
    """A slot by id prefix, usable or not (so a damaged key file can be removed)."""
    slots, bad = keyring.scan(repo.backend)
    every: list[keyring.KeySlot | keyring.UnusableSlot] = [*slots, *bad]
    matches = [s for s in every if s.id.startswith(prefix.lower())]
    if not prefix or len(matches) != 1:
        raise CoffreError(f"no single key slot matches {prefix!r}", "see 'coffre key list'")
    return matches[0]


def _remove_slot(repo: Repository, slot: keyring.KeySlot | keyring.UnusableSlot) -> None:
    """Remove a slot, and the other files holding the same wrapped key (a copy left by an
    interrupted update of the slot): the key it holds must stop opening the repository."""
    names = [slot.id]
    if isinstance(slot, keyring.KeySlot):
        names += [s.id for s in keyring.scan(repo.backend)[0]
                  if s.wrapped == slot.wrapped and s.id not in (slot.id, repo.key_slot_id)]
    for name in names:
        try:
            repo.backend.remove(Handle("keys", name))
        except ObjectNotFound:
            pass  # removed meanwhile
    if isinstance(slot, keyring.KeySlot):
        remember_removed(repo, slot)  # put back by the storage, it must not open it again here


NOT_REVOKED = (
    "note: {what} no longer opens this repository, but it is not revoked: whoever used it "
    "could keep the master key it opened, which decrypts every snapshot, past and future. "
    "To shut such a person out, make a new repository and copy the snapshots into it "
    "('coffre init', then 'coffre copy'; docs/design.md, section 8)"
)


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slot = _find_slot(repo, args.key_id)
    if slot.id == repo.key_slot_id:
        raise CoffreError("refusing to remove the key slot used to open the repository now",
                          "open with another password or the recovery key to remove this one")
    _remove_slot(repo, slot)  # never the slot used now: one that opens the repository remains
    if isinstance(slot, keyring.KeySlot):
        say(f"removed key slot {slot.id[:8]} ({slot.kind})")
        warn(NOT_REVOKED.format(what=f"the {slot.kind} of that slot"))
    else:
        say(f"removed key file {slot.id[:8]} ({'damaged' if slot.damaged else 'unusable'})")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    old = _find_slot(repo, repo.key_slot_id)
    assert isinstance(old, keyring.KeySlot)  # it opened the repository
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or old.label or "password", SystemClock(), repo.config_document())
    if old.kind == "password":
        repo.key_slot_id = slot
        _remove_slot(repo, old)
    watch_storage(repo, changed=True, keys_changed=True)  # the new slot is the one this machine tries first
    say(f"password changed (new key slot {slot[:8]})")
    if old.kind == "password":
        warn(NOT_REVOKED.format(what="the old password"))
    ensure_config_copies(repo, warn)
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    now = SystemClock().now_ns()
    removed = 0
    kept = 0
    for lk in list_locks(repo):
        stale = is_stale(lk, now)
        if stale or args.remove_all:
            try:
                repo.backend.remove(Handle("locks", lk.name))
                removed += 1
                say(f"removed {lk.describe()}" + (" (stale)" if stale else ""))
            except ObjectNotFound:
                pass
        elif lk.command == UNREADABLE:
            kept += 1
            say(f"kept {lk.describe()}, written {format_ns(lk.refreshed_ns)}: it expires at "
                f"{format_ns(lk.refreshed_ns + STALE_S * 10**9)} (or use --remove-all)")
        else:
            kept += 1
            say(f"kept live {lk.describe()}, refreshed {format_ns(lk.refreshed_ns)}")
    say(f"removed {removed} lock(s)" + (f", kept {kept} live one(s)" if kept else ""))
    return 0
