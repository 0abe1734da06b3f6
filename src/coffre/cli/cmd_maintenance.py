"""check, forget, prune (repair: cmd_repair.py)."""

from __future__ import annotations

import argparse
import re
import sqlite3

from coffre.cli.context import (
    add_repo_options,
    load_index,
    maintaining,
    open_repo,
    open_repo_at,
    reading,
    refuse_empty,
    refuse_if_others,
    secret_from,
)
from coffre.cli.output import emit_json, human_number, human_size, human_time, say, warn
from coffre.cli.progress import emit_summary, progress_for
from coffre.cli.watching import standing_alarms, tombstones_read_here, unread_damaged, watch_storage
from coffre.continuity import retention
from coffre.core.clock import iso_ns
from coffre.core.errors import EXIT_FATAL, CoffreError, StorageFull, StoragePermissionDenied, UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.sizes import parse_size
from coffre.format.snapshot import Snapshot
from coffre.ops.check import Checker, CheckResult, Share
from coffre.ops.common import quiet
from coffre.ops.compare import compare
from coffre.ops.forget import plan_forget, remove_snapshots
from coffre.ops.prune import Pruner, PruneStats, free_unused_packs
from coffre.policy.retention import Policy, parse_duration, reason_text
from coffre.policy.timeline import future_of, future_warning
from coffre.repository.cache import RepoCache
from coffre.repository.damage import DamageRegister
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.repository.walked import WalkedListings
from coffre.repository.watch import describe


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help=_("check the repository's structure, and optionally its data"))
    add_repo_options(p)
    p.add_argument("--read-data", action="store_true", help=_("read and authenticate all data"))
    p.add_argument("--read-data-subset", metavar="N%|n/m",
                   help=_("read a share of the data, each run continuing where the last stopped "
                          "(10%%), or slice n of m of the packs (2/7)"))
    p.add_argument("--against", metavar="REPO",
                   help=_("instead: compare with another repository holding copies (coffre copy): "
                          "same snapshots, same data"))
    p.add_argument("--against-password-file", metavar="FILE",
                   help=_("its password (or COFFRE_AGAINST_PASSWORD_FILE, COFFRE_AGAINST_PASSWORD_COMMAND)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    f = sub.add_parser("forget", help=_("remove snapshots: those named, or by a retention policy"))
    add_repo_options(f)
    f.add_argument("snapshot_ids", nargs="*", metavar="SNAPSHOT", help=_("snapshots to remove"))
    keep = f.add_argument_group(
        _("retention policy (the newest snapshot of each host and paths is always kept)"))
    for name, helptext in (
        ("last", _("keep the N newest snapshots")),
        ("hourly", _("keep the newest snapshot of each of the last N hours that have one")),
        ("daily", _("keep the newest snapshot of each of the last N days that have one")),
        ("weekly", _("keep the newest snapshot of each of the last N weeks that have one")),
        ("monthly", _("keep the newest snapshot of each of the last N months that have one")),
        ("yearly", _("keep the newest snapshot of each of the last N years that have one")),
    ):
        keep.add_argument(f"--keep-{name}", type=int, default=0, metavar="N", help=helptext)
    keep.add_argument("--keep-within", metavar="DURATION",
                      help=_("keep every snapshot this recent, counted from the newest one: "
                             "e.g. 7d, 2w, 6m, 1y"))
    keep.add_argument("--keep-tag", action="append", default=[], metavar="TAG",
                      help=_("keep every snapshot with this tag (repeatable)"))
    keep.add_argument("--max-size", metavar="SIZE",
                      help=_("also remove the oldest snapshots until the repository fits in SIZE, "
                             "with a unit: e.g. 500GiB, 1.5TB"))
    f.add_argument("--host", help=_("only consider snapshots of this host"))
    f.add_argument("--tag", action="append", default=[], help=_("only snapshots with this tag (repeatable)"))
    f.add_argument("--dry-run", action="store_true", help=_("show what would be removed, and why"))
    f.add_argument("--prune", action="store_true", help=_("reclaim the space afterwards"))
    add_repack_option(f)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_forget)

    pr = sub.add_parser("prune", help=_("reclaim the space of data no snapshot uses"))
    add_repo_options(pr)
    pr.add_argument("--dry-run", action="store_true", help=_("show what would be freed, change nothing"))
    add_repack_option(pr)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_prune)


def add_repack_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-repack-size", metavar="SIZE",
                   help=_("copy at most this much data to rewrite partly used packs, e.g. 2GiB; "
                          "0 to only delete unused packs (prune also stays within the free space)"))


def _max_repack(args: argparse.Namespace) -> int | None:
    text = getattr(args, "max_repack_size", None)
    if text is None:
        return None
    return parse_size(text, "--max-repack-size")


def parse_subset(text: str) -> tuple[float, tuple[int, int] | None]:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip())
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise UsageError(_("--read-data-subset: the percentage must be more than 0 and at most 100"))
        return pct, None
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m and 1 <= int(m.group(1)) <= int(m.group(2)):
        return 0.0, (int(m.group(1)), int(m.group(2)))
    raise UsageError(_("--read-data-subset takes a percentage (10%) or a slice (n/m, e.g. 2/7)"))


def cmd_check(args: argparse.Namespace) -> int:
    refuse_empty("--against", args.against, hint="give the other repository's path or URL")
    if args.against:
        return check_against(args)
    subset = None
    pct = 0.0
    if args.read_data_subset is not None:  # an empty value is an error, not "no subset"
        pct, subset = parse_subset(args.read_data_subset)
    repo = open_repo(args)
    # This machine's cache of the repository, opened once: where the last share stopped, the
    # listings earlier checks decoded, the damage register.
    cache = RepoCache(repo.config.id)
    try:
        share = Share(pct, _share_cursor(cache)) if pct else None
        # Listings are remembered for a local repository only (a remote one's folder-listing
        # packs would be downloaded to be hashed); --read-data decodes every one.
        walked = None
        if not args.read_data and not repo.backend.remote:
            try:
                walked = WalkedListings(cache, repo.crypter)
            except sqlite3.Error:
                pass  # a cache that cannot hold them: every listing is decoded
        with reading(repo, "check"), progress_for(args, _("check")) as progress:
            res = Checker(repo, report=quiet if args.json else warn, progress=progress, walked=walked,
                          read_before=tombstones_read_here(repo)).run(
                read_data=args.read_data, subset=subset, share=share)
        if share is not None:
            _keep_share_cursor(cache, res.share_end)
        remember_damage(cache, res)
        unread_damaged(repo, res.forget_records_damaged)
    finally:
        cache.close()
    # What the storage deleted or put back (said as warnings when the repository was opened)
    # is an error until 'coffre acknowledge' accepts it.
    res.errors += [_("{alarm} ('coffre acknowledge' accepts it)").format(alarm=describe(a))
                   for a in standing_alarms(repo)]
    if args.json:
        emit_summary({"ok": res.ok, "errors": res.errors, "notes": res.notes,
                   "damaged_packs": res.damaged_packs, "affected": res.affected,
                   "packs_read": res.packs_read, "packs_total": res.packs_total,
                   "bytes_read": res.bytes_read,
                   "forget_records_read": res.forget_records_read,
                   "forget_records_known": res.forget_records_known,
                   "share_end": res.share_end if share is not None else None,
                   "snapshots": res.snapshots})
    else:
        for n in res.notes:
            say(_("note: {note}").format(note=n))
        for e in res.errors:
            say(_("error: {error}").format(error=e))
        for pack, why in sorted(res.damaged_packs.items()):
            say(_("damaged pack {pack}: {why}").format(pack=pack, why=why))
        for sid, paths in sorted(res.affected.items()):
            say(ngettext("snapshot {id} depends on damaged data for {n} path:",
                         "snapshot {id} depends on damaged data for {n} paths:", len(paths)).format(
                id=sid[:8], n=human_number(len(paths))))
            for p in paths[:50]:
                say(f"    {p}")
            if len(paths) > 50:
                say("    " + _("... and {n} more").format(n=len(paths) - 50))
        if share is not None:
            say(ngettext("read {read} pack of {total}, {size} ({share} of the data, continuing "
                         "where the last check stopped)",
                         "read {read} packs of {total}, {size} ({share} of the data, continuing "
                         "where the last check stopped)", res.packs_read).format(
                read=human_number(res.packs_read), total=human_number(res.packs_total),
                size=human_size(res.bytes_read), share=f"{share.percent:g}%"))
        elif subset:
            say(ngettext("read {read} pack of {total} (slice {k}/{m})",
                         "read {read} packs of {total} (slice {k}/{m})", res.packs_read).format(
                read=human_number(res.packs_read), total=human_number(res.packs_total),
                k=subset[0], m=subset[1]))
        elif args.read_data:
            say(ngettext("read {n} pack", "read all {n} packs", res.packs_read).format(
                n=human_number(res.packs_read)))
        else:
            say(ngettext("checked the hashes of {n} pack", "checked the hashes of {n} packs",
                         res.packs_total).format(n=human_number(res.packs_total)))
        if res.damaged_blobs:
            say(_("the next backup stores the damaged files again from the live files where they "
                  "still exist, and 'coffre prune' then lets the damaged packs go; a snapshot whose "
                  "files are lost for good can be removed with 'coffre forget ID'"))
        say(_("no errors were found") if res.ok else _("the repository has errors"))
    return 0 if res.ok else 1


def _share_cursor(cache: RepoCache) -> str:
    """Where the last rotating check of this repository on this machine stopped (the name of
    the last pack it read), kept in the local cache; "" to start from the first pack. Any
    string is a place in the order of the names, so a damaged value needs no checking."""
    return cache.get_state("check_share_after", "")


def _keep_share_cursor(cache: RepoCache, last: str) -> None:
    """Only once the check has run: an interrupted check reads the same packs next time."""
    cache.set_state("check_share_after", last)


def remember_damage(cache: RepoCache, res: CheckResult) -> None:
    """Keep what check found in this machine's damage register, for the next backup."""
    if res.examined or res.damaged_blobs:
        DamageRegister(cache).update(res.examined, res.damaged_blobs)


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        keep_last=args.keep_last, keep_hourly=args.keep_hourly, keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly, keep_monthly=args.keep_monthly, keep_yearly=args.keep_yearly,
        keep_within_ns=parse_duration(args.keep_within) if args.keep_within else 0,
        keep_tags=tuple(args.keep_tag),
    )


def cmd_forget(args: argparse.Namespace) -> int:
    try:
        policy = _policy(args)
        policy.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    max_size = parse_size(args.max_size, "--max-size") if args.max_size is not None else 0
    if args.max_size is not None and max_size <= 0:
        raise UsageError(_("--max-size must be greater than zero"))
    if args.snapshot_ids and (not policy.empty() or max_size):
        raise UsageError(_("give either snapshot ids or keep rules, not both"))
    if policy.empty() and not max_size and not args.snapshot_ids:
        raise UsageError(_("no keep rule given; refusing to remove every snapshot"),
                         _("add --keep-daily 7, --keep-within 30d, --max-size 500GiB, ..."))
    repo = open_repo(args)
    if args.snapshot_ids:
        return _forget_named(args, repo)
    with maintaining(repo, "forget"):
        repo.load_index()
        snaps: list[Snapshot] = []
        others: list[Snapshot] = []
        for s in repo.snapshots():
            chosen = (not args.host or s.hostname == args.host) and all(t in s.tags for t in args.tag)
            (snaps if chosen else others).append(s)
        now = repo.clock.now_ns()
        future = future_of(snaps, now)
        if future:
            warn(future_warning(future, now, total=len(snaps)))
        decisions = plan_forget(repo, snaps, policy, now, max_size, others)
        by_id = {s.id: s for s in snaps}
        gone = [d.snapshot.id for d in decisions if not d.keep]
        if not args.json:
            marks = {True: _("keep"), False: _("remove")}
            width = max(len(m) for m in marks.values())
            for d in decisions:
                s = by_id[d.snapshot.id]
                reasons = "; ".join(reason_text(r) for r in d.reasons)
                say(f"{marks[d.keep]:<{width}} {s.id[:8]} {human_time(s.time_ns)} {s.hostname:<12} {reasons}")
            kept_count = len(decisions) - len(gone)
            kept = ngettext("{n} kept", "{n} kept", kept_count).format(n=kept_count)
            if args.dry_run:
                say(ngettext("{kept}, {n} would be removed (dry run)",
                             "{kept}, {n} would be removed (dry run)", len(gone)).format(
                    kept=kept, n=len(gone)))
            else:
                say(ngettext("{kept}, {n} removed", "{kept}, {n} removed", len(gone)).format(
                    kept=kept, n=len(gone)))
        if not args.dry_run:
            remove_snapshots(repo, gone, warn)
    if gone and not args.dry_run:
        watch_storage(repo, changed=True, forgotten=gone)
    report: dict[str, object] = {"dry_run": args.dry_run, "decisions": [
        {"id": d.snapshot.id, "keep": d.keep, "reasons": d.reasons} for d in decisions]}
    if args.prune and not args.dry_run:
        report["prune"] = _prune(args, dry_run=False, repo=repo).__dict__
    if args.json:
        emit_summary(report)
    return 0


def _forget_named(args: argparse.Namespace, repo: Repository) -> int:
    """Remove the snapshots named by id prefix. Matched on the stored names, so a damaged
    snapshot that cannot be decrypted any more can still be removed."""
    with maintaining(repo, "forget"):
        names = repo.list_names("snapshots")
        chosen = []
        for ref in args.snapshot_ids:
            matches = [n for n in names if n.startswith(ref.lower())] if len(ref) >= 4 else []
            if len(matches) != 1:
                raise CoffreError(_("no single snapshot matches {ref!r}; nothing was removed").format(
                    ref=ref),
                                  _("give at least 4 characters of an id from 'coffre snapshots'"))
            chosen.append(matches[0])
        for sid in chosen if not args.json else []:
            say((_("would remove {id}: named on the command line") if args.dry_run
                 else _("remove {id}: named on the command line")).format(id=sid[:8]))
        if not args.dry_run:
            remove_snapshots(repo, chosen, warn)
    if not args.dry_run:
        watch_storage(repo, changed=True, forgotten=chosen)
    report: dict[str, object] = {"dry_run": args.dry_run, "decisions": [
        {"id": sid, "keep": False, "reasons": ["named on the command line"]} for sid in chosen]}
    if args.prune and not args.dry_run:
        report["prune"] = _prune(args, dry_run=False, repo=repo).__dict__
    if args.json:
        emit_summary(report)
    return 0


def _prune(args: argparse.Namespace, dry_run: bool, repo: Repository | None = None) -> PruneStats:
    """Run prune; its summary is printed unless --json asks for a document.

    A full medium must always be recoverable: when even the lock cannot be written, or the
    new index does not fit, the packs no snapshot uses are deleted first (only while no other
    Coffre command holds a lock), then prune runs again, repacking only what fits."""
    repo = repo or open_repo(args)
    report = quiet if args.json else warn
    max_repack = _max_repack(args)
    cache = RepoCache(repo.config.id)
    register = DamageRegister(cache)
    lock = Lock(repo, True, "prune")
    try:
        try:
            lock.acquire()
        except (StorageFull, StoragePermissionDenied) as exc:
            if dry_run:  # a dry run only reads: it may go on without a lock
                warn(_("the repository cannot be written ({reason}); reading it without a lock").format(
                    reason=exc.message))
            elif isinstance(exc, StoragePermissionDenied):
                raise
            else:
                refuse_if_others(repo, exc.message)
                free_unused_packs(repo, None, report)
                lock.acquire()

        try:  # the listings earlier checks decoded: the marking takes them as they are
            walked: WalkedListings | None = WalkedListings(cache, repo.crypter)
        except sqlite3.Error:
            walked = None  # a cache that cannot hold them: every listing is decoded

        def attempt() -> Pruner:
            pruner = Pruner(repo, lock, report=report, damaged=register.pairs(), max_repack=max_repack,
                            progress=progress, more_removable=retention.removable, walked=walked)
            pruner.run(dry_run=dry_run)
            return pruner

        with progress_for(args, _("prune")) as progress:
            try:
                pruner = attempt()
            except StorageFull as exc:
                if dry_run:
                    raise
                refuse_if_others(repo, exc.message, mine=lock)
                free_unused_packs(repo, lock, report)
                pruner = attempt()
        register.forget_packs(pruner.damage_resolved)
    finally:
        lock.release()
        cache.close()
    if not dry_run:
        watch_storage(repo, changed=True)  # index files were rewritten: note which are gone
    st = pruner.stats
    if args.json:
        return st
    counts = dict(
        freed=human_size(st.bytes_freed),
        unused=ngettext("{n} unused pack", "{n} unused packs", st.packs_removed).format(
            n=human_number(st.packs_removed)),
        repacked=ngettext("{n} repacked", "{n} repacked", st.packs_repacked).format(
            n=human_number(st.packs_repacked)),
        copied=human_size(st.bytes_repacked),
        leftover=ngettext("{n} left over by an interrupted run", "{n} left over by interrupted runs",
                          st.packs_unindexed).format(n=human_number(st.packs_unindexed)))
    if dry_run:
        say(_("would free {freed}: {unused}, {repacked} ({copied} copied), {leftover}").format(**counts))
    else:
        say(_("freed {freed}: {unused}, {repacked} ({copied} copied), {leftover}").format(**counts))
        say(ngettext("deleted {n} pack", "deleted {n} packs", st.packs_deleted).format(
            n=human_number(st.packs_deleted)))
        if st.segments_removed:
            say(ngettext("deleted {n} log piece no kept backup can replay ({size})",
                         "deleted {n} log pieces no kept backup can replay ({size})",
                         st.segments_removed).format(n=human_number(st.segments_removed),
                                                     size=human_size(st.segments_bytes)))
    for n in st.notes:
        say(_("note: {note}").format(note=n))
    return st


def cmd_prune(args: argparse.Namespace) -> int:
    st = _prune(args, args.dry_run)
    if args.json:
        emit_summary(st.__dict__)
    return 0


def check_against(args: argparse.Namespace) -> int:
    here = open_repo(args)
    there = open_repo_at(args.against, lambda: secret_from(
        args.against_password_file, "COFFRE_AGAINST_PASSWORD", False,
        _("Password of the other repository: ")),
        args)
    with reading(here, "check"), reading(there, "check"):
        load_index(here)
        load_index(there)
        res = compare(here, there)
    if args.json:
        emit_json({"ok": res.ok, "shared_keys": res.shared_keys,
                   "same": [[a.id, b.id] for a, b in res.same],
                   "differing": [{"snapshot": a.id, "copy": b.id, "why": why} for a, b, why in res.differing],
                   "only_here": [s.id for s in res.only_here], "only_there": [s.id for s in res.only_there]})
    else:
        for snap in res.only_here:
            say(_("missing from {where}: snapshot {id} of {time}").format(
                where=there.backend.location, id=snap.id[:8], time=iso_ns(snap.time_ns)))
        for a, b, why in res.differing:
            say(_("snapshot {id} and its copy {copy}: {why}").format(id=a.id[:8], copy=b.id[:8], why=why))
        if res.only_there:
            say(ngettext("{n} snapshot is only in {where} (older history?)",
                         "{n} snapshots are only in {where} (older history?)", len(res.only_there)).format(
                n=len(res.only_there), where=there.backend.location))
        same = ngettext("{n} snapshot identical in both", "{n} snapshots identical in both",
                        len(res.same)).format(n=len(res.same))
        say(same if res.ok else _("{same}; the repositories differ").format(same=same))
    return 0 if res.ok else EXIT_FATAL
