"""The config file's redundancy: the copies of it kept in the key slots, and `repair config`,
which rebuilds the file from them.

A copy is trusted only once the repository is open: `Repository.open` checks it with the
config MAC, a key derived from the master secret. So the copy written back is always one that
the password or the recovery key authenticated.
"""

from __future__ import annotations

from coffre.core.errors import CoffreError, IntegrityError, ObjectNotFound
from coffre.core.i18n import _, ngettext
from coffre.ops.common import Reporter, quiet
from coffre.repository import keyring
from coffre.repository.repo import Repository, load_config
from coffre.storage.base import Handle


def ensure_config_copies(repo: Repository, report: Reporter = quiet) -> int:
    """Give every usable key slot that lacks it a copy of the (authenticated) config: slots
    written before Coffre kept copies, or whose copy is damaged. No secret is needed: the
    slot is saved again with its wrapped key unchanged. Best effort: a slot that cannot be
    updated (read-only storage...) is reported and left as it is. Returns how many were."""
    doc = repo.config_document()
    updated = 0
    if repo.key_slots and all(slot.config == doc for slot in repo.key_slots):
        return 0  # the slots just scanned by the opening all have it: no listing again
    try:
        slots = keyring.scan(repo.backend)[0]
    except CoffreError as exc:
        report(_("the key files could not be listed to add the copy of the config ({reason})").format(
            reason=exc.message))
        return 0
    for slot in slots:
        if slot.config == doc:
            continue
        try:
            new = keyring.resave_with_config(repo.backend, slot, doc)
        except CoffreError as exc:
            report(_("key file {id}: the copy of the config could not be added ({reason})").format(
                id=slot.id[:8], reason=exc.message))
            continue
        if slot.id == repo.key_slot_id:
            repo.key_slot_id = new
        updated += 1
    return updated


def config_file_problem(repo: Repository) -> str:
    """Why the config file, read now, is not the authenticated config of the open repository
    ("" if it is)."""
    stored = load_config(repo.backend)
    if stored.problem:
        return stored.problem
    if stored.config != repo.config or stored.mac != repo.config_mac():
        return _("the config file was altered (it is not the config the key files authenticate)")
    return ""


def repair_config(repo: Repository, report: Reporter = quiet) -> str:
    """Write the authenticated config back to the config file; run under an exclusive lock.
    The damaged file is removed, then the new one saved (objects are never overwritten): a
    crash in between leaves the copies in the key slots, so the repair can run again.
    Returns what was done; refuses when there is nothing to repair."""
    problem = config_file_problem(repo)
    if not problem:
        doc = repo.config_document()
        lacking = sum(1 for s in keyring.scan(repo.backend)[0] if s.config != doc)
        if not lacking:
            raise CoffreError(_("nothing to repair: the config file is intact and every key file keeps "
                                "a copy of it"))
        added = ensure_config_copies(repo, report)
        if added < lacking:
            raise CoffreError(ngettext("{n} key file could not be given a copy of the config",
                                       "{n} key files could not be given a copy of the config",
                                       lacking - added).format(n=lacking - added))
        return ngettext("the config file is intact; {n} key file now keeps a copy of it",
                        "the config file is intact; {n} key files now keep a copy of it", added).format(
                            n=added)
    try:
        repo.backend.remove(Handle("config", "config"))
    except ObjectNotFound:
        pass
    repo.backend.save(Handle("config", "config"), repo.config_file())
    if config_file_problem(repo):
        raise IntegrityError(_("the config file written does not read back as written"),
                             _("check the storage (disk errors?) and run 'coffre repair config' again"))
    ensure_config_copies(repo, report)
    return _("config file written again (repository {id})").format(id=repo.config.id.hex()[:8])


def check_keys_and_config(repo: Repository, errors: list[str], notes: list[str]) -> None:
    """What `coffre check` reports about the key files and the config file."""
    slots, damaged = keyring.scan(repo.backend)
    for bad in damaged:
        if not bad.damaged:
            notes.append(_("{problem}; it was left alone").format(problem=bad.describe()))
        else:
            errors.append(_("{problem}: if it held a password, that password no longer opens the repository; "
                            "'coffre key remove {id}' drops it").format(
                                problem=bad.describe(), id=bad.id[:8]))
    problem = config_file_problem(repo)
    if problem:
        errors.append(_("{problem}: 'coffre repair config' writes it again").format(
            problem=problem.split(";")[0].rstrip()))
    doc = repo.config_document()
    lacking = [s for s in slots if s.config != doc]
    if lacking:
        notes.append(ngettext("{n} key file keeps no copy of the config (written by an older Coffre); "
                              "'coffre repair config' adds it",
                              "{n} key files keep no copy of the config (written by an older Coffre); "
                              "'coffre repair config' adds it", len(lacking)).format(n=len(lacking)))
