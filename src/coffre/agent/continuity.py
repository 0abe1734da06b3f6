"""Continuous capture run by the agent (`[continuity.NAME]`): one thread per entry ships what
waits in its spool (continuity/shipper.py) and, on a standby machine, feeds its standby
(PostgreSQL, SQLite or MariaDB: agent/standbys.py), every `every` seconds, and records each
pass in the status store. The captures the agent runs itself (`sqlite`, `mysql`:
agent/captures.py) have a thread each beside it; their errors go into the entry's status.

- In this process, unlike the jobs' steps: a pass comes every second, and a child process
  would derive the repository's key (Argon2id) each time. The repository is opened once and
  kept; an entry whose repository could not be opened tries again at the next pass when the
  storage did not answer, after `REOPEN_AFTER` when the password did not open it.
- A pass never raises: a storage error is recorded (the spool keeps everything, the next pass
  tries again), and the health rules turn a backlog older than `max_backlog` into an alert.
- Between passes the thread waits on an Event: an idle capture costs a few `scandir` of its
  spool per pass; a standby pass, a listing of the repository's segments (only new headers
  are read; the ones kept are read afresh daily, so pruned objects are forgotten) and a
  shared lock. The status row is written when something changed, else every `STATUS_EVERY`.
- A gap shipped stays open until what restores past it exists: a backup of its database whose
  log replay starts past it (the `stream_from` position a base backup records; looked for
  every `HEAL_EVERY` while a gap is open), or a whole copy shipped after it that starts a new
  generation of the same database (SQLite's capture does so after a break).
- Files kept current (`files_target`, on a standby machine): at most every `files_every`,
  the newest snapshot (of `files_host`, holding `files_paths`) is restored into the folder as
  `coffre restore --sync [--delete]` does (ops/restore.py's Restorer, the same options and
  refusals) when it is not the one last applied; the id applied is kept in the status store.
  A sync with errors is not applied: the next look syncs it again, writing only what differs.
- `stop()` (SIGTERM, a reload) ends each thread after its current batch of pieces (a sync in
  progress is not interrupted: it is left to end by itself after JOIN_TIMEOUT).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from coffre.agent import model, standbys
from coffre.agent.captures import Capture, captures_of
from coffre.agent.health import STATUS_EVERY
from coffre.agent.records import ContinuityStatus, FilesStatus, Gap, StandbyStatus
from coffre.agent.status import StatusStore
from coffre.continuity import pg_push, shipper
from coffre.continuity.spool import Spool
from coffre.core.errors import (
    CoffreError,
    NoRepositoryError,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
)
from coffre.core.i18n import _, ngettext
from coffre.format.segment import SegmentHeader
from coffre.repository.repo import Repository

if TYPE_CHECKING:
    from coffre.storage.base import Backend

Log = Callable[[str], None]
Opener = Callable[[model.Repository], Repository]

BATCH = 8  # pieces shipped between two looks at the stop flag and two status writes
REOPEN_AFTER = 300.0  # a repository the password did not open is tried again after this long
HEAL_EVERY = 600.0  # while a gap is open, the base backups are looked at this often
MARKERS_EVERY = 3600.0  # wal push's idempotence records are trimmed this often
FORGET_HEADERS_EVERY = 86400.0  # the standby's known headers are read afresh (pruned objects go)
KEEP_GAPS = 100  # open gaps remembered per entry (the alert names the first ones)
KEEP_ERRORS = 10  # a sync's errors kept in the status (the first ones)
JOIN_TIMEOUT = 60.0  # seconds a stopping agent waits for a pass in flight


# -- the repository, opened in this process --------------------------------------------------


def storage_for(repo: model.Repository) -> Backend:
    """The storage of a configured repository, as `coffre` opens it for a step: its hosting
    server's token, its S3 profile, its bandwidth limits, remote metadata kept in this
    machine's cache. No retry wrapper: the next pass is the retry."""
    from coffre.storage.pacing import Pacer, parse_limit
    from coffre.storage.url import is_url, open_backend, parse_s3

    url = repo.url
    backend: Backend
    scheme = url.split("://", 1)[0].lower() if is_url(url) else ""
    if repo.token_file and scheme in ("https", "http"):
        from coffre.storage.server import TOKEN_FILE_ENV, ServerBackend, server_token
        from coffre.storage.url import parse_server

        if scheme == "http" and not repo.insecure_http:
            raise CoffreError(_("plain HTTP sends the server token in clear over the network"))
        backend = ServerBackend(parse_server(url), token=server_token({TOKEN_FILE_ENV: repo.token_file}))
    elif repo.aws_profile and scheme.startswith("s3"):
        from coffre.storage.s3 import S3Backend

        try:
            backend = S3Backend(parse_s3(url), profile=repo.aws_profile)
        except Exception as exc:  # ProfileNotFound, credentials botocore cannot read
            raise CoffreError(_("the S3 profile {profile} cannot be used: {reason}").format(
                profile=repo.aws_profile, reason=getattr(exc, "message", exc))) from None
    else:
        backend = open_backend(url, allow_plain_ftp=repo.insecure_ftp, allow_insecure_http=repo.insecure_http)
    for direction, spec in (("upload", repo.limit_upload), ("download", repo.limit_download)):
        if spec and hasattr(backend, f"{direction}_pacer"):
            setattr(backend, f"{direction}_pacer", Pacer(parse_limit(spec, f"limit_{direction}")))
    if is_url(url):
        from coffre.repository.cache import repo_cache_dir
        from coffre.repository.repo import load_config
        from coffre.storage.cached import CachedBackend

        backend = CachedBackend(backend, repo_cache_dir(load_config(backend).config.id) / "objects")
    return backend


def open_repository(repo: model.Repository) -> Repository:
    """A configured repository opened with its password file or command."""
    from coffre.core.secrets import read_secret
    from coffre.repository.mark import key_history
    from coffre.repository.repo import load_config

    backend = storage_for(repo)
    config = load_config(backend)  # "not a repository" (a share not mounted) before the password
    return Repository.open(backend, read_secret(repo.password_file, repo.password_command),
                           config=config, history=key_history)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CoffreError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


# -- one entry -------------------------------------------------------------------------------


def standby_status(state: standbys.Followed, previous: StandbyStatus | None, now: float,
                   error: str | None = None) -> StandbyStatus:
    """What the status store keeps of a standby's state file after a pass at `now`: since
    when it has stopped at its gap, since when pieces have waited for it."""
    before = previous or StandbyStatus()
    gap_since = (before.gap_since if before.gap == state.gap and before.gap_since is not None else now) \
        if state.gap else None
    behind_since = (before.behind_since if before.behind_since is not None else now) \
        if state.behind_pieces else None
    return StandbyStatus(
        newest_ns=state.newest_ns, behind_pieces=state.behind_pieces, behind_bytes=state.behind_bytes,
        behind_since=behind_since, staged=state.staged, gap=state.gap, gap_since=gap_since,
        promoted=state.promoted, last_pass=now if error is None else before.last_pass, error=error,
        error_since=None if error is None else (before.error_since if before.error else now))


class Entry:
    """One `[continuity.NAME]`: its passes, its open repository, and its recorded status."""

    def __init__(self, entry: model.Continuity, repository: model.Repository, store: StatusStore, log: Log,
                 clock: Callable[[], float] = time.time, opener: Opener = open_repository) -> None:
        self.entry, self.repository = entry, repository
        self.store, self.log, self.clock, self.opener = store, log, clock, opener
        self.captures: list[Capture] = captures_of(entry, log, clock)
        self.repo: Repository | None = None
        self.known: dict[str, SegmentHeader] = {}  # segment headers the standby passes read
        self._open_after = 0.0
        self._open_error: str | None = None
        self._written: ContinuityStatus | None = None
        self._written_at = 0.0
        self._healed_at = 0.0
        self._markers_at = 0.0
        self._files_at: float | None = None  # the last look for a newer snapshot
        self._failure: str | None = None
        now = clock()
        self._known_since = now
        known = store.continuity().get(entry.name)
        self.status = (replace(known, repository=entry.repository) if known is not None
                       else ContinuityStatus(entry.name, entry.repository, first_seen=now))
        if known is not None:
            self._written = self.status

    @property
    def name(self) -> str:
        return self.entry.name

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set."""
        while not stop.is_set():
            self.pass_once(stop)
            if stop.wait(self.entry.every):
                return

    def pass_once(self, stop: threading.Event | None = None) -> ContinuityStatus:
        """One pass: ship, then feed the standby, then record. Never raises."""
        try:
            if self.entry.spool:
                self._capture(stop)
            if self.entry.standby and not (stop is not None and stop.is_set()):
                self._standby()
            if self.entry.files_target and not (stop is not None and stop.is_set()):
                self._files()
        except Exception as exc:  # a bug here must not end the thread: said (once), the next pass runs
            if _reason(exc) != self._failure:
                self.log(_("continuous capture {name}: the pass failed: {reason}").format(
                    name=self.name, reason=_reason(exc)))
            self._failure = _reason(exc)
        else:
            self._failure = None
        failing = [c for c in self.captures if c.error is not None]
        self.status = replace(self.status, source_error=failing[0].error if failing else None,
                              source_error_since=min((c.error_since or self.clock() for c in failing),
                                                     default=None))
        self._save(force=False)
        return self.status

    # -- the repository ------------------------------------------------------------------------

    def _open(self) -> Repository:
        if self.repo is not None:
            return self.repo
        now = self.clock()
        if now < self._open_after and self._open_error is not None:
            raise CoffreError(self._open_error)
        try:
            self.repo = self.opener(self.repository)
        except (StorageError, NoRepositoryError) as exc:
            # Not there (a share not mounted), not answering: cheap to try at the next pass.
            self._open_error = None
            raise CoffreError(_("the repository {name} cannot be reached: {reason}").format(
                name=self.repository.name, reason=exc.message)) from None
        except Exception as exc:  # a password that does not open it, an unreadable secret...
            # Deriving the key again each second would cost a core: tried again later.
            self._open_after = now + REOPEN_AFTER
            self._open_error = _("the repository {name} cannot be opened: {reason}").format(
                name=self.repository.name, reason=_reason(exc))
            raise CoffreError(self._open_error) from None
        self._open_error = None
        self.known = {}
        return self.repo

    # -- the spool -----------------------------------------------------------------------------

    def _capture(self, stop: threading.Event | None) -> None:
        assert self.entry.spool is not None
        spool = Spool(self.entry.spool)
        error: str | None = None
        try:
            repo = self._open()
            while True:
                done = shipper.ship(repo, spool, report=self._said, most=BATCH)
                self._shipped(done)
                if done.pieces < BATCH or (stop is not None and stop.is_set()):
                    break
                self._save(force=False)  # a long backlog: the status follows it
            self._heal(repo)
            self._trim_markers(spool)
        except Exception as exc:  # recorded; the spool keeps what was not sent
            error = _reason(exc)
        try:
            waiting = spool.waiting()
            pieces, size, oldest = waiting.pieces, waiting.bytes, waiting.oldest_ns
        except OSError as exc:
            error = error or _("the spool {folder} cannot be read: {reason}").format(
                folder=spool.path, reason=exc.strerror or exc)
            pieces, size, oldest = self.status.waiting, self.status.waiting_bytes, self.status.oldest_ns
        now = self.clock()
        st = self.status
        if error and not st.error:
            self.log(_("continuous capture {name}: {reason}; the spool keeps the pieces").format(
                name=self.name, reason=error))
        elif st.error and not error:
            self.log(_("continuous capture {name}: shipping again").format(name=self.name))
        self.status = replace(st, last_pass=now, last_ok=now if error is None else st.last_ok,
                              waiting=pieces, waiting_bytes=size, oldest_ns=oldest, error=error,
                              error_since=None if error is None else (st.error_since if st.error else now))

    def _said(self, message: str) -> None:
        self.log(_("continuous capture {name}: {message}").format(name=self.name, message=message))

    def _shipped(self, done: shipper.Shipped) -> None:
        if not done.pieces:
            return
        now = self.clock()
        st = self.status
        gaps = list(st.gaps)
        for header in done.gap_headers:
            self.log(_("continuous capture {name}: gap recorded for {piece}: point-in-time recovery across "
                       "it is impossible until a new base backup").format(name=self.name, piece=header.name))
            gaps.append(Gap(header.name, header.stream, header.time_ns, now, header.end))
        left = [g for g in gaps if not any(_base_covers(b, g) for b in done.base_headers)]
        if len(left) < len(gaps):
            self.log(_("continuous capture {name}: a new whole copy of the database covers the gaps "
                       "recorded; point-in-time recovery works again from it").format(name=self.name))
        self.status = replace(st, pieces=st.pieces + done.pieces, bytes=st.bytes + done.bytes,
                              last_shipped=now, gaps=tuple(left[-KEEP_GAPS:]),
                              gaps_total=st.gaps_total + len(done.gap_headers))

    def _heal(self, repo: Repository) -> None:
        """Close the gaps a PostgreSQL cluster base backup started after them covers."""
        now = self.clock()
        if not self.status.gaps or now - self._healed_at < HEAL_EVERY:
            return
        self._healed_at = now
        from coffre.continuity.pg_recovery import ENGINE

        snaps = repo.snapshots(errors=[])

        def covered(gap: Gap) -> bool:
            """A database backup of the gap's stream whose log replay starts past the gap (the
            position it records for retention); a cluster base backup that records none,
            started after the gap was captured."""
            for snap in snaps:
                for d in snap.databases:
                    start = d.extra.get("stream_from", "")
                    if d.extra.get("stream") == gap.stream and start.isdigit():
                        if int(start) >= gap.end:
                            return True
                    elif d.engine == ENGINE and "stream" not in d.extra and snap.time_ns > gap.time_ns:
                        return True
            return False

        left = tuple(g for g in self.status.gaps if not covered(g))
        if len(left) != len(self.status.gaps):
            self.log(_("continuous capture {name}: a newer base backup covers the gaps recorded; "
                       "point-in-time recovery works again from it").format(name=self.name))
            self.status = replace(self.status, gaps=left)

    def _trim_markers(self, spool: Spool) -> None:
        now = self.clock()
        if now - self._markers_at >= MARKERS_EVERY:
            self._markers_at = now
            pg_push.forget_markers(spool, int((now - pg_push.MARKER_DAYS * 86400) * 1e9))

    # -- the standby ---------------------------------------------------------------------------

    def _standby(self) -> None:
        from coffre.repository.locks import Lock

        before = self.status.standby
        state: standbys.Followed | None = None
        error: str | None = None
        try:
            state = standbys.read(self.entry)
            if not state.promoted:
                repo = self._open()
                if self.clock() - self._known_since >= FORGET_HEADERS_EVERY:
                    self.known, self._known_since = {}, self.clock()
                lock = Lock(repo, False, "standby follow")  # as the CLI's `reading`: prune waits
                try:
                    try:
                        lock.acquire()
                    except (StoragePermissionDenied, StorageFull):
                        pass  # a medium that cannot be written is read without a lock
                    state = standbys.follow(self.entry, repo, self._said, self.known)
                finally:
                    lock.release()
        except Exception as exc:  # recorded; the next pass tries again
            error = _reason(exc)
            try:
                state = standbys.read(self.entry)
            except CoffreError:
                state = None
        now = self.clock()
        what = standbys.describe(self.entry)
        if error and not (before and before.error):
            self.log(_("standby {name}: {what}: {reason}; trying again").format(
                name=self.name, what=what, reason=error))
        elif before and before.error and not error:
            self.log(_("standby {name}: {what} follows again").format(name=self.name, what=what))
        if state is None:
            previous = before or StandbyStatus()
            self.status = replace(self.status, standby=replace(
                previous, error=error, error_since=previous.error_since if previous.error else now))
        else:
            self.status = replace(self.status, standby=standby_status(state, before, now, error))

    # -- the files kept current ------------------------------------------------------------------

    def _files(self) -> None:
        """At most every `files_every`: the newest snapshot (of `files_host`, holding
        `files_paths`), restored into `files_target` as `coffre restore --sync [--delete]` does
        when it is not the one last applied. A sync with errors is not "applied": the next look
        syncs it again (writing only what still differs)."""
        from coffre.ops.common import find_snapshot
        from coffre.ops.restore import Restorer, path_pattern, restore_options
        from coffre.repository.locks import Lock

        entry = self.entry
        assert entry.files_target is not None
        now = self.clock()
        if self._files_at is not None and now - self._files_at < entry.files_every:
            return
        self._files_at = now
        before = self.status.files or FilesStatus()
        files = before
        error: str | None = None
        try:
            repo = self._open()
            lock = Lock(repo, False, "restore --sync")  # as the CLI's `reading`: prune waits
            try:
                try:
                    lock.acquire()
                except (StoragePermissionDenied, StorageFull):
                    pass  # a medium that cannot be written is read without a lock
                _fresh_index(repo)
                paths = list(entry.files_paths)
                snap = find_snapshot(repo, "latest", host=entry.files_host, paths=paths or None, files=True)
                waiting = snap.id != before.applied
                files = replace(files, newest=snap.id, newest_ns=snap.time_ns, pending_since=(
                    (before.pending_since if before.pending_since is not None else now) if waiting else None))
                if waiting:
                    options = restore_options(entry.files_target, includes=[path_pattern(p) for p in paths],
                                              sync=True, delete=entry.files_delete)
                    restorer = Restorer(repo, options)
                    problems = restorer.run(snap)
                    st = restorer.stats
                    files = replace(files, written=st.files, unchanged=st.unchanged, deleted=st.deleted,
                                    failed=st.files_failed, errors=tuple(problems.errors[:KEEP_ERRORS]))
                    if problems.errors:
                        error = ngettext(
                            "the sync of snapshot {id} into {target} met {n} error: {first}",
                            "the sync of snapshot {id} into {target} met {n} errors; the first: {first}",
                            len(problems.errors)).format(id=snap.id[:8], target=entry.files_target,
                                                         n=len(problems.errors), first=problems.errors[0])
                    else:
                        files = replace(files, applied=snap.id, applied_ns=snap.time_ns,
                                        applied_at=self.clock(), pending_since=None)
                        self.log(_("standby files {name}: snapshot {id} applied to {target}: {written} "
                                   "written, {unchanged} unchanged, {deleted} deleted").format(
                            name=self.name, id=snap.id[:8], target=entry.files_target, written=st.files,
                            unchanged=st.unchanged, deleted=st.deleted))
            finally:
                lock.release()
        except Exception as exc:  # recorded; the next look tries again
            error = _reason(exc)
        now = self.clock()
        if error and not before.error:
            self.log(_("standby files {name}: {reason}; trying again in {every} s").format(
                name=self.name, reason=error, every=f"{entry.files_every:g}"))
        elif before.error and not error:
            self.log(_("standby files {name}: synced again").format(name=self.name))
        self.status = replace(self.status, files=replace(
            files, last_check=now if error is None else before.last_check, error=error,
            error_since=None if error is None else (before.error_since if before.error else now)))

    # -- the record ----------------------------------------------------------------------------

    def _save(self, force: bool) -> None:
        """Write the status when it changed beyond its pass times, else every `STATUS_EVERY`
        (or sooner for short limits), so that the store is not written every second."""
        now = self.clock()
        heartbeat = max(self.entry.every, min(STATUS_EVERY, self.entry.max_backlog / 4,
                                              self.entry.max_lag / 4))
        if not force and self._written is not None and now - self._written_at < heartbeat \
                and _moving(self._written) == _moving(self.status):
            return
        try:
            self.store.record_continuity(self.status, now)
        except Exception as exc:  # the store is busy or full: said, tried again at the next pass
            self.log(_("continuous capture {name}: the status could not be recorded: {reason}").format(
                name=self.name, reason=_reason(exc)))
            return
        self._written, self._written_at = self.status, now


def _base_covers(base: SegmentHeader, gap: Gap) -> bool:
    """A base piece (a whole copy starting a generation: SQLite) covers a gap of its own stream
    when it sits past the gap, and a gap of an older generation of the same database
    (`ENGINE:DATABASE:GENERATION` streams) when it was captured after it."""
    if base.stream == gap.stream:
        return base.start >= gap.end
    mine, theirs = base.stream.split(":"), gap.stream.split(":")
    return len(mine) == len(theirs) == 3 and mine[:2] == theirs[:2] and base.time_ns > gap.time_ns


def _moving(st: ContinuityStatus) -> ContinuityStatus:
    """The status without the times every pass changes."""
    standby = None if st.standby is None else replace(st.standby, last_pass=None)
    files = None if st.files is None else replace(st.files, last_check=None)
    return replace(st, last_pass=None, last_ok=None, standby=standby, files=files)


def _fresh_index(repo: Repository) -> None:
    """The repository's index, with what was added since the last look; read afresh when an
    index file loaded before is gone (a prune rewrote it: packs it listed may be gone too)."""
    from coffre.repository.index import MasterIndex

    if repo.index.loaded_files - set(repo.list_names("index")):
        repo.index = MasterIndex()
    repo.load_index(errors=[])


# -- the threads ---------------------------------------------------------------------------


class ContinuityService:
    """The agent's continuity threads: `apply(config)` starts, restarts (changed entries) and
    stops (removed ones) them; `stop()` ends them all."""

    def __init__(self, store: StatusStore, log: Log, clock: Callable[[], float] = time.time,
                 opener: Opener = open_repository) -> None:
        self.store, self.log, self.clock, self.opener = store, log, clock, opener
        self._running: dict[str, tuple[tuple[model.Continuity, model.Repository], Entry,
                                       list[threading.Thread], threading.Event]] = {}

    def names(self) -> list[str]:
        return [n for n, (_c, _e, threads, _s) in self._running.items() if any(t.is_alive() for t in threads)]

    def apply(self, config: model.Config) -> None:
        wanted = {name: (entry, config.repositories[entry.repository])
                  for name, entry in config.continuity.items() if entry.repository in config.repositories}
        for name in [n for n, run in self._running.items() if wanted.get(n) != run[0]]:
            self._stop(name)
        for name, (entry, repository) in wanted.items():
            if name in self._running:
                continue
            try:
                loop = Entry(entry, repository, self.store, self.log, self.clock, self.opener)
            except Exception as exc:  # the status store cannot be read: the backups run all the same
                self.log(_("continuous capture {name}: not started: {reason}").format(
                    name=name, reason=_reason(exc)))
                continue
            stop = threading.Event()
            threads = [threading.Thread(target=self._run, args=(loop, stop), name=f"continuity-{name}",
                                        daemon=True)]
            threads += [threading.Thread(target=c.run, args=(stop,), daemon=True,
                                         name=f"continuity-{name}-{c.kind}") for c in loop.captures]
            self._running[name] = ((entry, repository), loop, threads, stop)
            for thread in threads:
                thread.start()
            what = [w for w in (*(c.doing for c in loop.captures),
                                entry.spool and _("ships {spool}").format(spool=entry.spool),
                                entry.standby and _("feeds {standby}").format(
                                    standby=standbys.describe(entry)),
                                entry.files_target and _("keeps the files of {target} current").format(
                                    target=entry.files_target)) if w]
            self.log(_("continuous capture {name}: started, {what} every {every} s").format(
                name=name, what=_(" and ").join(what), every=f"{entry.every:g}"))

    def _run(self, loop: Entry, stop: threading.Event) -> None:
        try:
            loop.run(stop)
        finally:
            loop._save(force=True)

    def _stop(self, name: str) -> None:
        _key, _loop, threads, stop = self._running.pop(name)
        stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            self.log(_("continuous capture {name}: a pass is still running; left to end by itself").format(
                name=name))

    def stop(self) -> None:
        for _key, _loop, _thread, stop in self._running.values():
            stop.set()  # all at once, then each waited for
        for name in list(self._running):
            self._stop(name)


__all__ = ["ContinuityService", "Entry", "open_repository", "standby_status", "storage_for"]
