"""Reading a job's repository for the restore pages, in this process and read-only.

Which repository: the job's primary (`agent.jobs.resolve`: a repository, or the disk of its
media set that is plugged in now), opened with its password exactly as the agent's steps get
it (`password_file`, or `password_command` run without a shell), never from a page.

Read-only: nothing here takes a lock or writes to the repository (not even a shared lock:
browsing must work on a write-protected disk and must never hold a prune back). A prune that
runs meanwhile can only make a read fail (every read is authenticated), never show wrong
data; the next listing notices the change and reloads the index.

Fast with 1,000 snapshots: an opened repository (key derived once, index loaded, snapshots
decoded) is kept per job while pages use it (`idle_s`), its snapshot and index listings are
compared with the storage at most every `recheck_s` seconds (only new snapshot files are read),
and folders (trees, which never change: their id is their content's hash) are kept in a
bounded cache shared by every snapshot, so the versions of a file across 1,000 snapshots read
each distinct folder once.

Every name read from a snapshot is untrusted: it is only ever shown through autoescape, and a
path given back by a page is checked against the snapshot (each part an existing entry, no
'.', '..' nor '/') before anything is read or restored.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coffre.agent.config import restore_area_of
from coffre.agent.jobs import NoDisk, resolve
from coffre.agent.model import Config, Job
from coffre.agent.steps import Endpoint
from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.core.secrets import SecretUnreadable, read_secret
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.repository.index import MasterIndex
from coffre.repository.mark import key_history
from coffre.repository.repo import Repository, load_config
from coffre.storage.base import Backend

COMMAND_TIMEOUT_S = 120.0


def restore_area(config: Config) -> Path:
    """Where restored files go (agent.config.restore_area_of)."""
    return Path(restore_area_of(config))


class Unavailable(CoffreError):
    """The job's repository cannot be read now (no disk, a password that does not open it,
    a storage that does not answer): said on the page, with what to do."""


# -- the password and the storage ------------------------------------------------------------
def read_password(endpoint: Endpoint) -> str:
    """The repository's password from its file or its command (as `coffre` reads
    COFFRE_PASSWORD_FILE / COFFRE_PASSWORD_COMMAND). No message quotes it nor the command."""
    try:
        secret = read_secret(endpoint.password_file, endpoint.password_command, timeout=COMMAND_TIMEOUT_S)
    except SecretUnreadable as exc:
        raise Unavailable(_("the password of {name} cannot be read: {reason}").format(
            name=endpoint.name, reason=exc.message)) from None
    if not secret:
        raise Unavailable(_("the password of {name} is empty").format(name=endpoint.name))
    return secret


def open_storage(endpoint: Endpoint) -> Backend:
    """The storage of an endpoint, as `coffre` opens it for a command (remote metadata kept
    in this machine's cache, the hosting server's token from the job's token file)."""
    from coffre.storage.url import is_url, open_backend

    url = endpoint.url
    backend: Backend
    if endpoint.token_file and url.lower().startswith(("https://", "http://")):
        from coffre.storage.server import TOKEN_FILE_ENV, ServerBackend, server_token
        from coffre.storage.url import parse_server

        if url.lower().startswith("http://") and "--insecure-http" not in endpoint.options:
            raise Unavailable(_("plain HTTP sends the server token in clear over the network"))
        backend = ServerBackend(parse_server(url), token=server_token({TOKEN_FILE_ENV: endpoint.token_file}))
    else:
        backend = open_backend(url, allow_plain_ftp="--insecure-ftp" in endpoint.options,
                               allow_insecure_http="--insecure-http" in endpoint.options)
    if is_url(url):
        from coffre.repository.cache import repo_cache_dir
        from coffre.storage.cached import CachedBackend

        backend = CachedBackend(backend, repo_cache_dir(load_config(backend).config.id) / "objects")
    return backend



def open_endpoint(endpoint: Endpoint) -> Repository:
    backend = open_storage(endpoint)
    config = load_config(backend)  # "not a repository" said before the password is read
    return Repository.open(backend, read_password(endpoint), config=config, history=key_history)


def belongs(job: Job, snap: Snapshot) -> bool:
    """Whether a snapshot of the job's repository is one of the job's: its host and tags
    when the job names them (a repository may hold several jobs' snapshots)."""
    if job.host and snap.hostname != job.host:
        return False
    return all(t in snap.tags for t in job.tags)


# -- paths given back by a page ---------------------------------------------------------------
def split_path(path: str) -> list[str]:
    """'/srv/officine/a.txt' -> ['srv', 'officine', 'a.txt']; ValueError for '.', '..', a NUL
    or a backslash-free trick ('//' collapses, as in a snapshot's own paths)."""
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", "..") or "\0" in p:
            raise ValueError(path)
    return parts


def joined(parts: list[str]) -> str:
    return "/" + "/".join(parts) if parts else "/"


def linkable(path: str) -> bool:
    """A path a page can carry in a link (names that are not UTF-8 cannot)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- opened repositories ----------------------------------------------------------------------
class TreeCache:
    """Folders by tree id (immutable: the id is the hash of the content), least recently used
    dropped past `limit`."""

    def __init__(self, limit: int = 8192) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._trees: OrderedDict[bytes, list[Node]] = OrderedDict()

    def get(self, repo: Repository, tree_id: bytes) -> list[Node]:
        with self._lock:
            nodes = self._trees.get(tree_id)
            if nodes is not None:
                self._trees.move_to_end(tree_id)
                return nodes
        nodes = load_tree(repo, tree_id)
        with self._lock:
            self._trees[tree_id] = nodes
            while len(self._trees) > self.limit:
                self._trees.popitem(last=False)
        return nodes


@dataclass
class Opened:
    """A job's repository, open, with its snapshots (the job's, oldest first)."""

    job: str
    endpoint: Endpoint
    repo: Repository
    snapshots: list[Snapshot] = field(default_factory=list)
    names: frozenset[str] = frozenset()  # the storage names of the snapshot files read
    index_files: frozenset[str] = frozenset()
    checked: float | None = None  # when the listings were last compared with the storage (monotonic)
    used: float = 0.0
    problems: list[str] = field(default_factory=list)  # damaged snapshot or index files
    trees: TreeCache = field(default_factory=TreeCache)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, ref: str) -> Snapshot:
        """A snapshot by its id (or an unambiguous prefix of 8 or more characters)."""
        ref = ref.lower()
        if len(ref) >= 8:
            found = [s for s in self.snapshots if s.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
        raise CoffreError(_("this backup is no longer in the repository (removed by the retention rules?)"))

    def folder(self, tree_id: bytes) -> list[Node]:
        return self.trees.get(self.repo, tree_id)

    def node(self, snap: Snapshot, parts: list[str]) -> Node | None:
        """The entry at a path (its parts) in a snapshot; None for the root or when absent."""
        current: bytes | None = snap.tree
        node: Node | None = None
        for part in parts:
            if current is None:
                return None
            name = os.fsencode(part)
            node = next((n for n in self.folder(current) if n.name == name), None)
            if node is None:
                return None
            current = node.subtree if node.type == "dir" else None
        return node

    def listing(self, snap: Snapshot, parts: list[str]) -> list[Node] | None:
        """The entries of the folder at a path; None when it is not a folder of the snapshot."""
        if not parts:
            return self.folder(snap.tree)
        node = self.node(snap, parts)
        if node is None or node.type != "dir":
            return None
        return self.folder(node.subtree) if node.subtree is not None else []

    def content(self, node: Node) -> Iterator[bytes]:
        """A file's bytes, blob after blob (a download streams them)."""
        for blob_id in node.content:
            yield self.repo.load_blob(blob_id)


class Repositories:
    """The opened repository of each job, kept while pages use it."""

    def __init__(self, config: Callable[[], Config], *, recheck_s: float = 3.0, idle_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic,
                 opener: Callable[[Endpoint], Repository] = open_endpoint) -> None:
        self.config, self.recheck_s, self.idle_s, self.clock = config, recheck_s, idle_s, clock
        self.opener = opener
        self._lock = threading.Lock()
        self._by_job: dict[str, Opened] = {}
        self._job_locks: dict[str, threading.Lock] = {}

    def endpoint(self, job_name: str) -> Endpoint:
        config = self.config()
        job = config.jobs.get(job_name)
        if job is None:
            raise Unavailable(_("there is no job named {job}").format(job=job_name))
        try:
            return resolve(config, job.repository)
        except NoDisk:
            raise Unavailable(_("no disk of the set {name} is plugged in").format(name=job.repository),
                              _("plug in one of the set's disks, then reload this page")) from None

    def get(self, job_name: str) -> Opened:
        """The job's repository, opened now or earlier, its snapshots up to date."""
        endpoint = self.endpoint(job_name)
        self._forget_idle()
        with self._lock:
            job_lock = self._job_locks.setdefault(job_name, threading.Lock())
        with job_lock:
            opened = self._by_job.get(job_name)
            if opened is not None and opened.endpoint != endpoint:
                opened = None  # the configuration changed, or another disk is plugged in
            if opened is None:
                try:
                    repo = self.opener(endpoint)
                except Unavailable:
                    raise
                except CoffreError as exc:
                    raise Unavailable(_("the backups of {job} cannot be read: {reason}").format(
                        job=job_name, reason=exc.message), exc.hint) from None
                opened = Opened(job_name, endpoint, repo)
                with self._lock:
                    self._by_job[job_name] = opened
            now = self.clock()
            if opened.checked is None or now - opened.checked >= self.recheck_s:
                try:
                    self._refresh(opened)
                except CoffreError as exc:
                    raise Unavailable(_("the backups of {job} cannot be read: {reason}").format(
                        job=job_name, reason=exc.message), exc.hint) from None
                opened.checked = self.clock()
            opened.used = now
            return opened

    def _refresh(self, opened: Opened) -> None:
        """Read the snapshot files added since the last look, drop the removed ones, and
        load the new index files (all again when a prune replaced some)."""
        repo = opened.repo
        job = self.config().jobs[opened.job]
        index_files = frozenset(repo.list_names("index"))
        names = frozenset(repo.list_names("snapshots"))
        problems: list[str] = []
        if index_files != opened.index_files:
            if not repo.index.loaded_files <= index_files:
                repo.index = MasterIndex()  # a prune rewrote it: what it moved is elsewhere now
            repo.load_index(errors=problems)
            opened.index_files = index_files
        if names != opened.names:
            kept = [s for s in opened.snapshots if s.id in names]
            for name in sorted(names - opened.names):
                try:
                    snap = Snapshot.from_bytes(repo.load_object("snapshots", name), name)
                except CoffreError as exc:  # removed meanwhile, or damaged: never hides the others
                    problems.append(_("snapshot {name}: {problem}").format(name=name[:12],
                                                                           problem=exc.message))
                    continue
                if belongs(job, snap):
                    kept.append(snap)
            opened.snapshots = sorted(kept, key=lambda s: (s.time_ns, s.id))
            opened.names = names
        opened.problems = problems

    def _forget_idle(self) -> None:
        now = self.clock()
        with self._lock:
            for name, opened in list(self._by_job.items()):
                if now - opened.used > self.idle_s:
                    del self._by_job[name]

    def forget(self) -> None:
        with self._lock:
            self._by_job.clear()
