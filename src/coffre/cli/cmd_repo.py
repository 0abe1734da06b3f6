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
from coffre.cli.logfile import say_unlogged
from coffre.cli.output import emit_json, human_time, say, table, warn
from coffre.cli.watching import remember_removed, watch_storage
from coffre.compress import DEFAULT_LEVEL
from coffre.core.clock import SystemClock
from coffre.core.errors import CoffreError, ObjectNotFound, UsageError
from coffre.core.i18n import N_, _, ngettext
from coffre.ops.repair_config import ensure_config_copies
from coffre.repository import keyring, unlockahead
from coffre.repository.locks import STALE_S, UNREADABLE, is_stale, list_locks
from coffre.repository.mark import key_history
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
    p = sub.add_parser("init", help=_("create a repository"))
    add_repo_options(p)
    p.add_argument("--recovery-sheet", metavar="FILE", help=_("write a printable recovery sheet"))
    p.add_argument("--pack-size", type=int, default=16, metavar="MIB",
                   help=_("target size of pack files in MiB (1-256, default 16)"))
    p.add_argument("--compression-level", type=int, default=DEFAULT_LEVEL, metavar="N",
                   help=_("zstd level for new data, 1-19 (default {level}: fastest; deltas always use 3 "
                          "or more)").format(level=DEFAULT_LEVEL))
    p.add_argument("--copy-chunking-from", metavar="REPO",
                   help=_("share this repository's chunking and content keys, so copies between the "
                          "two send only new data (its password: --from-password-file, "
                          "COFFRE_FROM_PASSWORD_FILE or a prompt)"))
    p.add_argument("--from-password-file", metavar="FILE",
                   help=_("password file of the --copy-chunking-from repository"))
    p.set_defaults(func=cmd_init)

    k = sub.add_parser("key", help=_("manage the passwords and recovery keys that open the repository"))
    ks = k.add_subparsers(dest="key_command", required=True, metavar=_("COMMAND"), title=_("commands"))
    for name, func, helptext in (
        ("list", cmd_key_list, N_("list key slots")),
        ("add", cmd_key_add, N_("add a password")),
        ("remove", cmd_key_remove, N_("remove a key slot")),
        ("passwd", cmd_key_passwd, N_("change the password used to open the repository")),
    ):
        kp = ks.add_parser(name, help=_(helptext))
        add_repo_options(kp)
        if name in ("add", "passwd"):
            kp.add_argument("--new-password-file", metavar="FILE",
                            help=_("read the new password from this file"))
            kp.add_argument("--label", default="", help=_("a label for the new key slot"))
        if name == "remove":
            kp.add_argument("key_id", help=_("key slot id (or unique prefix)"))
        if name == "list":
            kp.add_argument("--json", action="store_true")
        kp.set_defaults(func=func)

    u = sub.add_parser("unlock", help=_("remove stale locks left by dead processes"))
    add_repo_options(u)
    u.add_argument("--remove-all", action="store_true",
                   help=_("also remove live and unreadable locks: only when you are sure that no other "
                          "Coffre command uses this repository"))
    u.set_defaults(func=cmd_unlock)


def cmd_init(args: argparse.Namespace) -> int:
    location = repo_location(args)
    backend = backend_for(location, args)
    if backend.exists():
        raise CoffreError(_("{where} already holds a Coffre repository; nothing was changed").format(
            where=backend.location))
    if _damaged_repository(backend):
        raise CoffreError(_("{where} holds a Coffre repository whose config file is damaged; "
                            "nothing was changed").format(where=backend.location),
                          _("write it again with 'coffre repair config'"))
    if not 1 <= args.pack_size <= 256:
        raise UsageError(_("--pack-size must be between 1 and 256 MiB"))
    if not 1 <= args.compression_level <= 19:
        raise UsageError(_("--compression-level must be between 1 and 19"))
    source = None
    refuse_empty("--copy-chunking-from", args.copy_chunking_from,
                 hint=_("give the path or URL of the repository whose chunking to share"))
    if args.copy_chunking_from:
        source = open_repo_at(args.copy_chunking_from, lambda: source_password(args), args)
        if source.content_secret is None:
            raise CoffreError(
                _("{where} uses format {version}, where a copy sharing its chunking would share its "
                  "whole key (every password of one would open the other); nothing was changed").format(
                    where=source.backend.location, version=source.version),
                _("move that repository to format 2 first (docs/migration.md: 'coffre init' a new "
                  "repository, then 'coffre copy' every snapshot into it), or create this one "
                  "without --copy-chunking-from ('coffre copy' then cuts the data again)"))
    secret = password(args, confirm=True, prompt=_("New repository password: "))
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
    # This machine's mark starts here, with the slot it opened; so does the record that lets
    # the next command derive the password's key while it starts (the first backup too).
    watch_storage(repo, changed=True, keys_changed=True)
    unlockahead.remember(location, repo.opened_slot)
    say(_("created Coffre repository {id} at {where}").format(
        id=repo.config.id.hex()[:8], where=backend.location))
    if source is not None:
        say(_("it shares the chunking of {where}: copies between them send only new data; each keeps "
              "its own encryption key and passwords (a password of one does not open the other)").format(
            where=source.backend.location))
    # The recovery key is shown even under --quiet, and never written into a --log-file.
    say_unlogged("", "")
    say_unlogged(_("Recovery key (shown only now; it opens the repository if the password is lost):"), "")
    say_unlogged("", "")
    say_unlogged(f"    {recovery}", _("(the recovery key was shown on the terminal; it is not logged)"))
    say_unlogged("", "")
    if sheet is not None:
        with sheet:
            sheet.write(SHEET.format(location=backend.location, repo_id=repo.config.id.hex(),
                                     created=repo.config.created, key=recovery))
        say_unlogged(_("recovery sheet written to {path}: print it, store it safely, delete the file").format(
            path=args.recovery_sheet), "")
    else:
        say_unlogged(_("Write it down or print it, and keep it away from the server."), "")
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
        raise UsageError(_("{path} already exists; choose a new file for the recovery sheet").format(
            path=path)) from None
    except OSError as exc:
        raise UsageError(_("cannot create the recovery sheet {path}: {reason}").format(
            path=path, reason=exc.strerror)) from None
    return os.fdopen(fd, "w", encoding="utf-8")


def _new_password(args: argparse.Namespace) -> str:
    if args.new_password_file:
        secret = read_secret_file(args.new_password_file, _("the new password file"))
    else:
        from coffre.cli.context import prompt_secret

        secret = prompt_secret(_("New password: "), confirm=True)
    if not secret:
        raise UsageError(_("the new password is empty"))
    return secret


def cmd_key_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slots, bad = keyring.scan(repo.backend)
    doc = repo.config_document()
    removed = key_history(repo.config.id).removed

    def state(s: keyring.KeySlot) -> str:  # JSON values: translated where shown
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
    say(table([[("*" if r["current"] else " ") + str(r["id"])[:8], _(str(r["kind"])), str(r["label"]),
                 str(r["created"])[:19], _(str(r["state"]))] for r in rows],
              [" " + _("id"), _("kind"), _("label"), _("created"), _("state")]))
    for d in bad:
        say(_("{what}; 'coffre key remove {id}' drops it").format(what=d.describe(), id=d.id[:8]))
    if any(r["state"] == "no copy of the config" for r in rows):
        say(_("slots without a copy of the config were written by an older Coffre; "
              "'coffre repair config' adds it"))
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or "password", SystemClock(), repo.config_document())
    say(_("added key slot {id}").format(id=slot.id[:8]))
    ensure_config_copies(repo, warn)
    return 0


def _find_slot(repo: Repository, prefix: str) -> keyring.KeySlot | keyring.UnusableSlot:
    """A slot by id prefix, usable or not (so a damaged key file can be removed)."""
    slots, bad = keyring.scan(repo.backend)
    every: list[keyring.KeySlot | keyring.UnusableSlot] = [*slots, *bad]
    matches = [s for s in every if s.id.startswith(prefix.lower())]
    if not prefix or len(matches) != 1:
        raise CoffreError(_("no single key slot matches {prefix!r}").format(prefix=prefix),
                          _("see 'coffre key list'"))
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


NOT_REVOKED = N_(
    "note: {what} no longer opens this repository, but it is not revoked: whoever used it "
    "could keep the master key it opened, which decrypts every snapshot, past and future. "
    "To shut such a person out, make a new repository and copy the snapshots into it "
    "('coffre init', then 'coffre copy'; docs/design.md, section 8)"
)
# The kinds and states of key slots, as stored and in --json; translated where shown.
WORDS = (N_("password"), N_("recovery"), N_("ok"), N_("no copy of the config"),
         N_("removed on this machine, put back: refused"), N_("damaged"), N_("unusable"))


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slot = _find_slot(repo, args.key_id)
    if slot.id == repo.key_slot_id:
        raise CoffreError(_("refusing to remove the key slot used to open the repository now"),
                          _("open with another password or the recovery key to remove this one"))
    _remove_slot(repo, slot)  # never the slot used now: one that opens the repository remains
    if isinstance(slot, keyring.KeySlot):
        say(_("removed key slot {id} ({kind})").format(id=slot.id[:8], kind=_(slot.kind)))
        what = (_("the password of that slot") if slot.kind == "password"
                else _("the recovery key of that slot"))
        warn(_(NOT_REVOKED).format(what=what))
    else:
        say(_("removed key file {id} ({state})").format(
            id=slot.id[:8], state=_("damaged") if slot.damaged else _("unusable")))
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    new = _new_password(args)
    old = _find_slot(repo, repo.key_slot_id)
    assert isinstance(old, keyring.KeySlot)  # it opened the repository
    slot = keyring.add_slot(repo.backend, repo.master, repo.config.id, "password", new.encode(),
                            args.label or old.label or "password", SystemClock(), repo.config_document())
    if old.kind == "password":
        repo.key_slot_id = slot.id
        _remove_slot(repo, old)
    watch_storage(repo, changed=True, keys_changed=True)  # the new slot is the one this machine tries first
    unlockahead.remember(repo_location(args), slot)  # the new password's, derived ahead next time
    say(_("password changed (new key slot {id})").format(id=slot.id[:8]))
    if old.kind == "password":
        warn(_(NOT_REVOKED).format(what=_("the old password")))
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
                done = _("removed {lock} (stale)") if stale else _("removed {lock}")
                say(done.format(lock=lk.describe()))
            except ObjectNotFound:
                pass
        elif lk.command == UNREADABLE:
            kept += 1
            say(_("kept {lock}, written {written}: it expires at {expires} (or use --remove-all)").format(
                lock=lk.describe(), written=human_time(lk.refreshed_ns),
                expires=human_time(lk.refreshed_ns + STALE_S * 10**9)))
        else:
            kept += 1
            say(_("kept live {lock}, refreshed {when}").format(
                lock=lk.describe(), when=human_time(lk.refreshed_ns)))
    done = ngettext("removed {n} lock", "removed {n} locks", removed).format(n=removed)
    if kept:
        done = ngettext("{removed}, kept {n} live one", "{removed}, kept {n} live ones", kept).format(
            removed=done, n=kept)
    say(done)
    return 0
