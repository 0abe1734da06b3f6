"""Opening and creating repositories; reading and writing their encrypted objects."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from coffre import FORMAT_VERSION, FORMAT_VERSIONS, __version__
from coffre.chunker import Chunker, ChunkerParams
from coffre.compress import (
    CODEC_ZSTD_DELTA,
    DEFAULT_LEVEL,
    decompress,
    decompress_delta,
    delta_declared_length,
)
from coffre.core.clock import Clock, SystemClock, iso_ns
from coffre.core.errors import (
    CoffreError,
    FormatError,
    IntegrityError,
    NoRepositoryError,
    ObjectNotFound,
    StorageError,
    UnsupportedVersionError,
    WrongPasswordError,
)
from coffre.core.i18n import _, ngettext
from coffre.crypto import aead
from coffre.crypto.aead import Crypter, SubKeys
from coffre.crypto.kdf import new_recovery_key
from coffre.format import pack as packfmt
from coffre.format.codec import ID_LEN
from coffre.format.index import decode_index, encode_index
from coffre.format.snapshot import Snapshot
from coffre.repository import keyring
from coffre.repository.index import Location, MasterIndex
from coffre.repository.treepacks import TreePacks
from coffre.repository.wholepacks import PlannedPacks
from coffre.repository.window import PackWindows
from coffre.storage.asked import Ask, AskedBackend
from coffre.storage.base import Backend, Handle
from coffre.storage.cached import CachedBackend

T = TypeVar("T")

# Blobs of one pack closer than this are read with one request (the gap is read and dropped).
MERGE_GAP = 256 * 1024
REMOTE_MERGE_GAP = 8 * 1024 * 1024  # a round trip costs more than reading a few MiB more
MAX_RUN = 32 * 1024 * 1024


def _end(loc: Location) -> int:
    return loc.entry.offset + loc.entry.length
MAX_CONFIG = 64 * 1024
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
INDEX_FILE_PACKS = 2000

# The largest object of each kind Coffre writes, with a wide margin: a larger one is refused
# before it is read, so a planted file cannot exhaust memory.
MAX_SIZE = {
    "index": 256 * 1024 * 1024,
    "snapshots": 16 * 1024 * 1024,
    "locks": 64 * 1024,
    "trash": 64 * 1024 * 1024,
    "forgotten": 4 * 1024 * 1024,
}

_KIND_OF = {
    "index": aead.KIND_INDEX,
    "snapshots": aead.KIND_SNAPSHOT,
    "locks": aead.KIND_LOCK,
    "trash": aead.KIND_TRASH,
    "forgotten": aead.KIND_TOMBSTONE,
}


@dataclass(frozen=True)
class Config:
    id: bytes
    version: int
    chunker: ChunkerParams
    compression_level: int
    pack_size: int
    created: str
    content: bytes = b""  # format 2: the content secret, sealed under the master (crypto/aead.py)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": "coffre-repository",
            "version": self.version,
            "id": self.id.hex(),
            "chunker": {
                "min": self.chunker.min_size,
                "avg": self.chunker.avg_size,
                "max": self.chunker.max_size,
            },
            "compression_level": self.compression_level,
            "pack_size": self.pack_size,
            "created": self.created,
        }
        if self.version >= 2:
            body["content"] = self.content.hex()
        return body


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StoredConfig:
    """A config as read before unlock: from the config file, or (`problem` then says why)
    from the copy kept in the key slots. Trusted only once its MAC is checked (open)."""

    config: Config
    mac: bytes
    problem: str = ""


class _DamagedConfig(Exception):
    """A config document that cannot be used: `what` is the damage in a few words, `error`
    what to raise when no copy replaces it."""

    def __init__(self, what: str, error: CoffreError) -> None:
        super().__init__(what)
        self.what = what
        self.error = error


def parse_config(doc: Any, where: str) -> tuple[Config, bytes]:
    """A config document (the config file's JSON, or a key slot's copy of it) and its MAC,
    checked for format and version."""
    if not isinstance(doc, dict) or doc.get("format") != "coffre-repository":
        raise _DamagedConfig(_("not a Coffre config"), NoRepositoryError(
            _("{where} is not a Coffre repository").format(where=where)))
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise _DamagedConfig(_("invalid version"), FormatError(_("config: invalid version")))
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            _("this repository uses format version {version}, written by a newer Coffre; "
              "this Coffre ({coffre}) reads up to version {supported}").format(
                  version=version, coffre=__version__, supported=FORMAT_VERSION),
            _("upgrade Coffre on this machine to read it; nothing was changed"),
        )
    try:
        ch = doc["chunker"]
        params = ChunkerParams(int(ch["min"]), int(ch["avg"]), int(ch["max"]))
        params.validate()
        cfg = Config(
            id=bytes.fromhex(doc["id"]),
            version=version,
            chunker=params,
            compression_level=int(doc["compression_level"]),
            pack_size=int(doc["pack_size"]),
            created=str(doc["created"]),
            content=bytes.fromhex(doc["content"]) if version >= 2 else b"",
        )
        mac = bytes.fromhex(doc["mac"])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise _DamagedConfig(_("malformed"), FormatError(_("config: malformed"))) from None
    if len(cfg.id) != 16 or not 1 <= cfg.compression_level <= 19 or (
            version >= 2 and len(cfg.content) != aead.WRAPPED_CONTENT_LEN):
        raise _DamagedConfig(_("malformed"), FormatError(_("config: malformed")))
    if not 1024 * 1024 <= cfg.pack_size <= 256 * 1024 * 1024:
        raise _DamagedConfig(_("pack size out of range"), FormatError(_("config: pack size out of range")))
    return cfg, mac


def config_document(cfg: Config, mac: bytes) -> dict[str, Any]:
    return {**cfg.body(), "mac": mac.hex()}


def config_file_bytes(cfg: Config, mac: bytes) -> bytes:
    """The config file as `init` writes it."""
    return json.dumps(config_document(cfg, mac), indent=1).encode() + b"\n"


def _read_config_file(backend: Backend) -> tuple[Config, bytes]:
    where = backend.location
    try:
        # No existence check first: a missing config is ObjectNotFound (one request fewer).
        raw = backend.load(Handle("config", "config"), 0, MAX_CONFIG + 1)
    except ObjectNotFound:
        raise _DamagedConfig(_("missing"), NoRepositoryError(
            _("{where} is not a Coffre repository (no config file)").format(where=where),
            _("create one with 'coffre init --repo ...' or check the path"))) from None
    if len(raw) > MAX_CONFIG:
        raise _DamagedConfig(_("too large"), NoRepositoryError(
            _("{where}: the config file is too large to be Coffre's").format(where=where)))
    try:
        doc = json.loads(raw)
    except ValueError:
        what = _("empty") if not raw.strip() else _("not JSON")
        raise _DamagedConfig(what, NoRepositoryError(
            _("{where}: the config file is not readable ({reason})").format(
                where=where, reason=what))) from None
    return parse_config(doc, where)


def config_copies(slots: list[keyring.KeySlot]) -> list[tuple[Config, bytes]]:
    """The distinct well-formed config copies the slots keep, the most common first."""
    counts: dict[tuple[Config, bytes], int] = {}
    for slot in slots:
        if slot.config is not None:
            try:
                copy = parse_config(slot.config, _("key file {id}").format(id=slot.id[:8]))
            except _DamagedConfig:
                continue
            counts[copy] = counts.get(copy, 0) + 1
    return sorted(counts, key=lambda c: -counts[c])


def _candidates(first: tuple[Config, bytes], slots: list[keyring.KeySlot]) -> Iterator[tuple[Config, bytes]]:
    """The config to open with, then (only if it does not open) the other copies."""
    yield first
    for copy in config_copies(slots):
        if copy != first:
            yield copy


def load_config(backend: Backend) -> StoredConfig:
    """The config, checked for format and version before any password is asked. A config
    file that is missing or damaged is replaced by the copy kept in the key slots."""
    try:
        return StoredConfig(*_read_config_file(backend))
    except _DamagedConfig as exc:
        damage = exc
    try:
        slots = keyring.scan(backend)[0]
    except ObjectNotFound:
        slots = []  # no keys/ folder either: not a repository
    copies = config_copies(slots)
    if copies:
        return StoredConfig(*copies[0], problem=_("the config file is damaged ({damage}); using the copy "
                                                  "kept "
                                                  "in the key files").format(damage=damage.what))
    if slots:
        raise FormatError(
            ngettext("{where}: the config file is damaged ({damage}) and the only key file does not keep a "
                     "copy of it (it was written by an older Coffre)",
                     "{where}: the config file is damaged ({damage}) and none of the {n} key files keeps a "
                     "copy of it (they were written by an older Coffre)", len(slots)).format(
                         where=backend.location, damage=damage.what, n=len(slots)),
            _("restore the config file from a copy of the repository's storage"),
        )
    raise damage.error


def read_config(backend: Backend) -> tuple[Config, bytes]:
    """load_config as a pair (config, MAC)."""
    stored = load_config(backend)
    return stored.config, stored.mac


def _named_base(entry: packfmt.BlobEntry, plain: memoryview) -> bytes:
    """The base a delta's decrypted form names (after its codec byte), which must be the one
    its index entry names."""
    if entry.base is None or not hmac.compare_digest(plain[1 : 1 + ID_LEN], entry.base):
        raise FormatError(_("delta blob names another base than its index entry"))
    return entry.base


class Repository:
    """An unlocked repository. Create with `Repository.open` or `Repository.init`."""

    def __init__(self, backend: Backend, config: Config, master: bytes, clock: Clock) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock
        self._content: bytes | None = None
        if config.version >= 2:
            # IntegrityError when the master is not this repository's: open skips the slot.
            self._content = aead.unwrap_content(master, config.id, config.content)
            self.keys = SubKeys.derive_v2(master, self._content)
        else:
            self.keys = SubKeys.derive(master)
        self._master = master
        self.crypter = Crypter(self.keys, config.id)
        self.index = MasterIndex()
        self.key_slot_id = ""
        self.config_problem = ""  # set by open when the config file is damaged and a copy is used
        self.damaged_keys: list[keyring.UnusableSlot] = []  # damaged key files, found by open
        # Key slots that open with the password used but hold another master (planted in
        # the storage, or copied from another repository): skipped by open.
        self.foreign_keys: list[str] = []
        # Every key file open found: the usable slots and the others.
        self.key_slots: list[keyring.KeySlot] = []
        self.unusable_keys: list[keyring.UnusableSlot] = []
        # Remote storage: single data blobs (a backup's delta bases) are read by windows.
        self.windows = PackWindows(backend) if backend.remote else None
        # Remote storage: folder listings come from whole tree packs, kept in the cache folder
        # of the metadata copies when there is one.
        trees_dir = backend.tree_packs_dir if isinstance(backend, CachedBackend) else None
        self.tree_packs = TreePacks(backend, trees_dir) if backend.remote else None
        self.planned: PlannedPacks | None = None  # set by a remote restore for its run
        self.merge_gap = REMOTE_MERGE_GAP if backend.remote else MERGE_GAP
        self._ask: Ask | None = None  # in a copy of a restore: reads asked of the parent (read_through)
        self._inherited: tuple[object, ...] = ()  # there: the parent's storage objects, never used

    @property
    def opened_slot(self) -> keyring.KeySlot | None:
        """The key slot this repository was opened (or made) with; None if none is known."""
        return next((s for s in self.key_slots if s.id == self.key_slot_id), None)

    # -- creating and opening ----------------------------------------------------------------
    @classmethod
    def init(
        cls,
        backend: Backend,
        password: str,
        clock: Clock | None = None,
        chunker: ChunkerParams | None = None,
        compression_level: int = DEFAULT_LEVEL,
        pack_size: int = DEFAULT_PACK_SIZE,
        content: bytes | None = None,
        version: int = FORMAT_VERSION,
    ) -> tuple[Repository, str]:
        """Create a repository. Returns it and the printable recovery key (shown once).
        `content`: another format-2 repository's content secret, shared so both cut and name
        data alike (init --copy-chunking-from); a fresh random one otherwise. The master (what
        the passwords open) is always the new repository's own. `version` 1 only for tests
        and for reading what older Coffres wrote."""
        clock = clock or SystemClock()
        if version not in FORMAT_VERSIONS:
            raise ValueError(f"unknown format version {version}")
        if content is not None and version < 2:
            raise ValueError("format 1 has no content secret to share")
        if backend.exists():
            raise CoffreError(_("{where} already holds a Coffre repository").format(where=backend.location))
        backend.create()
        master = os.urandom(32)
        repo_id = os.urandom(16)
        cfg = Config(
            id=repo_id,
            version=version,
            chunker=chunker or ChunkerParams(),
            compression_level=compression_level,
            pack_size=pack_size,
            created=iso_ns(clock.now_ns()),
            content=aead.wrap_content(master, repo_id, content or os.urandom(aead.CONTENT_LEN))
            if version >= 2 else b"",
        )
        repo = cls(backend, cfg, master, clock)
        raw_recovery, recovery_text = new_recovery_key()
        # Keys first, config last. Each key slot keeps a copy of the config.
        doc = repo.config_document()
        opened = keyring.add_slot(
            backend, master, cfg.id, "password", password.encode(), "initial password", clock, doc
        )
        recovery = keyring.add_slot(
            backend, master, cfg.id, "recovery", raw_recovery, "recovery key", clock, doc
        )
        repo.key_slot_id, repo.key_slots = opened.id, [opened, recovery]
        backend.save(Handle("config", "config"), repo.config_file())
        return repo, recovery_text

    @classmethod
    def open(
        cls, backend: Backend, secret: str, clock: Clock | None = None,
        config: StoredConfig | tuple[Config, bytes] | None = None,
        history: Callable[[bytes], keyring.KeyHistory] | None = None,
    ) -> Repository:
        """Unlock a repository. `config`: what load_config (or read_config) already returned
        for this backend (saves reading it again over a slow link); its MAC is checked here
        either way. A config whose id opens no key slot, or whose MAC fails, is replaced by a
        copy kept in the key slots that opens and authenticates (`config_problem` says so).
        `history`: what this machine knows of the slots of the repository with a given id
        (its mark): slots that opened it before are tried first, removed ones never open it."""
        if config is None:
            config = load_config(backend)
        stored = config if isinstance(config, StoredConfig) else StoredConfig(*config)
        slots, bad = keyring.scan(backend)  # one damaged slot must not lock out the others
        first = (stored.config, stored.mac)
        opened: dict[bytes, _Replay[tuple[bytes, keyring.KeySlot]]] = {}
        foreign: set[str] = set()  # slots that open but hold a master that is not this one
        known: dict[bytes, keyring.KeyHistory] = {}
        tried: list[tuple[Config, bytes]] = []
        for cfg, mac in _candidates(first, slots):
            tried.append((cfg, mac))
            if cfg.id not in opened:
                # Looked up by the id of each config tried, not only the config file's: the
                # storage may have altered that one to dodge this machine's record.
                known[cfg.id] = history(cfg.id) if history else keyring.KeyHistory()
                usable = [s for s in slots if keyring.fingerprint(s.wrapped) not in known[cfg.id].removed]
                opened[cfg.id] = _Replay(keyring.openings(usable, cfg.id, secret, known[cfg.id].opened))
            for master, slot in opened[cfg.id]:
                repo = cls._unlocked(backend, cfg, mac, master, clock or SystemClock())
                if repo is None:
                    foreign.add(slot.id)
                    continue
                foreign.discard(slot.id)
                repo.key_slot_id = slot.id
                repo.key_slots, repo.unusable_keys = slots, bad
                repo.damaged_keys = [d for d in bad if d.damaged]
                repo.foreign_keys = sorted(foreign)
                if (cfg, mac) == first or stored.problem:
                    repo.config_problem = stored.problem
                else:
                    why = (_("it fails authentication") if opened[stored.config.id].any()
                           else _("its repository id opens no key slot"))
                    repo.config_problem = _("the config file was altered ({reason}); using the copy kept in "
                                            "the key files").format(reason=why)
                return repo
        if any(o.any() for o in opened.values()):
            raise IntegrityError(
                _("the repository config was altered (authentication failed)"),
                _("restore the config file from a copy of the repository"),
            )
        _refuse_removed(backend, slots, secret, tried, known)
        raise keyring.cannot_open(slots, bad)

    @classmethod
    def _unlocked(
        cls, backend: Backend, cfg: Config, mac: bytes, master: bytes, clock: Clock,
    ) -> Repository | None:
        """The repository `master` opens with this config, or None when the master is another
        repository's: its config MAC fails, or (format 2) it does not unseal the content key."""
        try:
            repo = cls(backend, cfg, master, clock)
        except IntegrityError:
            return None
        return repo if hmac.compare_digest(repo.config_mac(), mac) else None

    def config_mac(self) -> bytes:
        return self.crypter.mac(_canonical(self.config.body()))

    def config_document(self) -> dict[str, Any]:
        """The config with its MAC: what the config file holds and each key slot keeps a copy of."""
        return config_document(self.config, self.config_mac())

    def config_file(self) -> bytes:
        return config_file_bytes(self.config, self.config_mac())

    @property
    def master(self) -> bytes:
        return self._master

    @property
    def content_secret(self) -> bytes | None:
        """Format 2: what a repository made with --copy-chunking-from this one shares with it."""
        return self._content

    @property
    def version(self) -> int:
        return self.config.version

    def chunker(self) -> Chunker:
        return Chunker(self.config.chunker, self.keys.chunker_seed, self.keys.gear_key)

    # -- whole encrypted objects (index, snapshots, locks, trash) ------------------------------
    def save_object(self, kind: str, plaintext: bytes) -> str:
        name, envelope = self.seal_object(kind, plaintext)
        self.backend.save(Handle(kind, name), envelope)
        return name

    def seal_object(self, kind: str, plaintext: bytes) -> tuple[str, bytes]:
        """The name and stored form of an object, not written yet (a caller that must be able
        to remove it, even if interrupted while it is written, learns its name first)."""
        envelope = self.crypter.encrypt(_KIND_OF[kind], plaintext)
        # Verify after encrypt: what goes to storage must decrypt to what we meant.
        if self.crypter.decrypt(_KIND_OF[kind], envelope) != plaintext:
            raise IntegrityError(_("encryption self-check failed (memory fault?)"))
        return hashlib.sha256(envelope).hexdigest(), envelope

    def load_object(self, kind: str, name: str) -> bytes:
        # One request, not a stat then a read; at most one byte more than the limit is read.
        envelope = self.backend.load(Handle(kind, name), 0, MAX_SIZE[kind] + 1)
        if len(envelope) > MAX_SIZE[kind]:
            raise IntegrityError(_("{object} is larger than any Coffre writes; not read").format(
                object=f"{kind}/{name[:12]}"))
        if hashlib.sha256(envelope).hexdigest() != name:
            raise IntegrityError(_("{object} is damaged: its content does not match its name").format(
                object=f"{kind}/{name[:12]}"))
        return self.crypter.decrypt(_KIND_OF[kind], envelope)

    def list_names(self, kind: str) -> list[str]:
        return sorted(i.name for i in self.backend.list(kind))

    # -- index ------------------------------------------------------------------------------------
    def load_index(self, errors: list[str] | None = None, into: MasterIndex | None = None) -> None:
        """Load index files not loaded yet (into the repository's index, or `into`).
        Damaged ones are reported in `errors` or raised."""
        target = self.index if into is None else into
        for name in self.list_names("index"):
            if name in target.loaded_files:
                continue
            try:
                packs = decode_index(self.load_object("index", name), self.version)
            except ObjectNotFound:
                continue  # removed by a concurrent prune after listing; its successor is listed
            except FormatError as exc:
                if errors is None:
                    raise
                errors.append(_("index {name}: {problem}").format(name=name[:12], problem=exc.message))
                continue
            for pid, entries in packs.items():
                target.add_pack(pid, entries)
            target.loaded_files.add(name)

    def save_index(self, packs: dict[bytes, list[packfmt.BlobEntry]]) -> str:
        return self.save_object("index", encode_index(packs, self.version))

    def save_full_index(self, packs: dict[bytes, list[packfmt.BlobEntry]]) -> set[str]:
        """A whole index, split into files of INDEX_FILE_PACKS packs; their names."""
        items = list(packs.items())
        return {
            self.save_index(dict(items[i : i + INDEX_FILE_PACKS]))
            for i in range(0, len(items), INDEX_FILE_PACKS)
        }

    # -- snapshots ------------------------------------------------------------------------------
    def save_snapshot(self, snap: Snapshot) -> str:
        snap.id = self.save_object("snapshots", snap.to_bytes())
        return snap.id

    def snapshots(self, errors: list[str] | None = None) -> list[Snapshot]:
        out = []
        for name in self.list_names("snapshots"):
            try:
                out.append(Snapshot.from_bytes(self.load_object("snapshots", name), name))
            except ObjectNotFound:
                continue
            except FormatError as exc:
                if errors is None:
                    raise
                errors.append(_("snapshot {name}: {problem}").format(name=name[:12], problem=exc.message))
        return sorted(out, key=lambda s: (s.time_ns, s.id))

    # -- blobs ----------------------------------------------------------------------------------
    def read_pack_header(
        self, pack_id: bytes, size: int | None = None, data: bytes | None = None,
    ) -> list[packfmt.BlobEntry]:
        """A pack's header, read from the storage, or taken from `data`, the whole pack when
        the caller has read it already (a request less)."""
        return self.read_pack_end(pack_id, size, data)[0]

    def read_pack_end(
        self, pack_id: bytes, size: int | None = None, data: bytes | None = None,
    ) -> tuple[list[packfmt.BlobEntry], int, bytes]:
        """A pack's header (as read_pack_header), with the offset and the stored bytes it was
        decoded from (its envelope and the trailer): a caller that reads the pack again can
        check that it read the same."""
        handle = Handle("data", pack_id.hex())
        if data is not None:
            size = len(data)
        elif size is None:
            size = self.backend.stat(handle).size
        # The pack's last 64 KiB hold its header but for a larger one (then read on its own);
        # a whole pack holds it always.
        tail = data if data is not None else self.backend.load(handle, max(0, size - 64 * 1024))
        trailer = packfmt.trailer_size(self.version)
        if len(tail) < trailer:
            raise FormatError(_("pack {name} is truncated").format(name=pack_id.hex()[:12]))
        hlen = packfmt.split_trailer(tail, size, self.version)
        if hlen + trailer <= len(tail):
            envelope = tail[len(tail) - trailer - hlen : len(tail) - trailer]
        else:
            envelope = self.backend.load(handle, size - trailer - hlen, hlen)
        salt = packfmt.trailer_salt(tail) if self.version >= 2 else None
        at = size - trailer - hlen
        return self.decode_header(envelope, at, salt), at, bytes(envelope) + tail[len(tail) - trailer :]

    def decode_header(self, envelope: bytes, body_size: int, salt: bytes | None) -> list[packfmt.BlobEntry]:
        """A pack's header from its encrypted form (salt: format 2's pack salt)."""
        if salt is None:
            plain = self.crypter.decrypt(aead.KIND_PACK_HEADER, envelope)
        else:
            plain = self.crypter.unseal(salt, aead.KIND_PACK_HEADER, envelope)
        return packfmt.decode_header(plain, body_size, salt)

    def decode_blob(
        self, entry: packfmt.BlobEntry, envelope: bytes | memoryview, base: bytes | None = None,
        verify: bool = True,
    ) -> bytes:
        """Decrypt, decompress and check the id of one stored blob. A delta blob's base is
        loaded from the repository unless the caller already holds its content (`base`).
        verify=False skips the hash check: only for a base whose delta's output is checked
        (a wrong base cannot produce the right output)."""
        return self.decode_plain(entry, self.open_blob(entry, envelope), base, verify)

    def open_blob(self, entry: packfmt.BlobEntry, stored: bytes | memoryview) -> bytes | memoryview:
        """A stored blob decrypted (and, format 2, unpadded): its codec byte and payload, a
        view into the decrypted bytes rather than a copy."""
        if len(stored) != entry.length:
            raise IntegrityError(_("blob is truncated"))
        plain = self.crypter.decrypt_blob(entry.salt, entry.kind, stored, entry.id)
        return plain if entry.salt is None else packfmt.unpad_view(plain)

    def decode_plain(
        self, entry: packfmt.BlobEntry, stored_form: bytes | memoryview, base: bytes | None = None,
        verify: bool = True,
    ) -> bytes:
        """decode_blob after decryption: the stored form (codec byte and payload) to the
        content, checked against its id."""
        # Sliced as a view: the payload is handed to zstd without a copy of it.
        plain = memoryview(stored_form)
        if not plain:
            raise FormatError(_("blob is empty"))
        if plain[0] == CODEC_ZSTD_DELTA:
            base_id = _named_base(entry, plain)
            if base is None:
                base = self.load_base(base_id, verify=False)
            data = decompress_delta(plain[1 + ID_LEN :], base, entry.raw_length)
        else:
            if entry.base is not None:
                raise FormatError(_("blob is listed as a delta but is not one"))
            data = decompress(plain[0], plain[1:], entry.raw_length)
        if verify and not hmac.compare_digest(self.crypter.blob_id(data), entry.id):
            raise IntegrityError(_("blob content does not match its id"))
        return data

    def check_delta_form(self, entry: packfmt.BlobEntry, stored_form: bytes | memoryview) -> None:
        """A delta blob checked without its base, after decryption authenticated it: it is a
        delta, names the base its index entry names, and declares the length the index
        records. Its content was compared with the chunk it stands for when it was written
        (Packer.add); its base is checked where its own pack is read."""
        plain = memoryview(stored_form)
        if not plain or plain[0] != CODEC_ZSTD_DELTA:
            raise FormatError(_("blob is listed as a delta but is not one"))
        _named_base(entry, plain)
        if delta_declared_length(plain[1 + ID_LEN :]) != entry.raw_length:
            raise FormatError(_("blob length differs from the index"))

    def load_base(self, base_id: bytes, verify: bool = True) -> bytes:
        """The content of a delta's base: a data blob that is not a delta itself (depth one,
        so a delta never needs more than one other blob)."""
        if base_id not in self.index:
            raise FormatError(_("base {id} of a delta blob is not in the index").format(
                id=base_id.hex()[:12]))
        if not self.index.plain_data(base_id):
            raise FormatError(_("base {id} of a delta blob is not a plain data blob").format(
                id=base_id.hex()[:12]))
        return self.load_blob(base_id, verify)

    def load_blob(self, blob_id: bytes, verify: bool = True) -> bytes:
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise FormatError(_("blob {id} is not in the index").format(id=blob_id.hex()[:12]))
        errors: list[str] = []
        for cand in [loc, *[c for c in self.index.locations(blob_id) if c.pack != loc.pack]]:
            try:
                # Windows for data (a backup's delta bases follow each other), whole packs for
                # trees in packs of their own; other trees lie scattered among the data, where
                # a window would be read for each.
                entry = cand.entry
                whole = self._from_whole_pack(cand.pack, entry.offset, entry.length) if cand is loc else None
                if whole is not None:
                    envelope = whole
                elif self.windows is not None and cand is loc and entry.kind == aead.KIND_DATA:
                    envelope = self.windows.read(cand.pack, entry.offset, entry.length)
                else:
                    envelope = self.backend.load(Handle("data", cand.pack.hex()), entry.offset, entry.length)
                return self.decode_blob(cand.entry, envelope, verify=verify)
            except (FormatError, ObjectNotFound) as exc:
                errors.append(_("pack {name}: {problem}").format(
                    name=cand.pack.hex()[:12], problem=exc.message))
        raise IntegrityError(_("blob {id} cannot be read: {problems}").format(
            id=blob_id.hex()[:12], problems="; ".join(errors)))

    def read_envelope(self, loc: Location) -> bytes:
        """The stored (encrypted) form of one blob, as is: the caller authenticates it."""
        if self.windows is not None:
            return self.windows.read(loc.pack, loc.entry.offset, loc.entry.length)
        return self.backend.load(Handle("data", loc.pack.hex()), loc.entry.offset, loc.entry.length)

    def will_read(self, located: list[Location]) -> None:
        """Tell the storage these blobs are loaded soon (a hint: Backend.will_read), one span
        of each pack from the first blob to the end of the last."""
        if self.backend.remote:
            return  # ignored there: not worth grouping
        spans: dict[bytes, tuple[int, int]] = {}
        for loc in located:
            start, end = spans.get(loc.pack, (loc.entry.offset, 0))
            spans[loc.pack] = (min(start, loc.entry.offset), max(end, _end(loc)))
        for pack, (start, end) in spans.items():
            self.backend.will_read(Handle("data", pack.hex()), start, end - start)

    def will_read_bases(self, ancestors: list[bytes]) -> None:
        """Tell the storage that the bases of deltas against these blobs are loaded soon
        (load_base: the blob itself, or its own base if it is a delta), one span each: they
        lie scattered, and a span from the first to the last would read what lies between."""
        for ancestor in ancestors:
            loc = self.index.lookup(self.index.base_of(ancestor) or ancestor)
            if loc is not None:
                self.will_read([loc])

    def load_many(self, blob_ids: list[bytes], gap: int | None = None) -> list[bytes | CoffreError]:
        """Several blobs (and the bases of the deltas among them), reading the neighbours that
        share a pack with one request (blobs up to `gap` bytes apart; by default wider on
        remote storage). Bases are read in the same pass as the blobs, so a pack holding both
        is not read twice. Each result is the blob, or why it cannot be read."""
        # Only plain data blobs serve as bases; decode_blob reports any other (load_base).
        wanted = {b for b in map(self.index.base_of, blob_ids) if b and self.index.plain_data(b)}
        extra = sorted(wanted.difference(blob_ids))
        ids = [*blob_ids, *extra]
        gap = self.merge_gap if gap is None else gap
        out: list[bytes | CoffreError | None] = [None] * len(ids)
        located = []
        for i, blob_id in enumerate(ids):
            loc = self.index.lookup(blob_id)
            if loc is None:
                out[i] = FormatError(_("blob {id} is not in the index").format(id=blob_id.hex()[:12]))
            else:
                located.append((loc.pack, loc.entry.offset, i, loc))
        located.sort()
        # Plain blobs (among them the bases) decoded as their run comes, the deltas once all
        # runs are read, against the bases. A base only read for a delta is not checked
        # against its id: the delta's output is.
        bases: dict[bytes, bytes] = {}
        deltas: list[tuple[bytes, Location, int]] = []
        for run in self._runs(located, gap):
            span = self._read_span(run)
            for _pack, offset, i, loc in run:
                envelope = span[offset - run[0][1] : offset - run[0][1] + loc.entry.length]
                if loc.entry.base is not None:
                    deltas.append((bytes(envelope), loc, i))
                    continue
                got = self._decode_at(envelope, loc, ids[i], i < len(blob_ids), None)
                out[i] = got
                if isinstance(got, bytes) and ids[i] in wanted:
                    bases[ids[i]] = got
        for stored, loc, i in deltas:
            out[i] = self._decode_at(stored, loc, ids[i], True, bases.get(loc.entry.base or b""))
        return [r if r is not None else FormatError(_("blob not read")) for r in out[: len(blob_ids)]]

    def _runs(
        self, located: list[tuple[bytes, int, int, Location]], gap: int,
    ) -> Iterator[list[tuple[bytes, int, int, Location]]]:
        """Located blobs (sorted by pack and offset) in runs, each read with one request."""
        run: list[tuple[bytes, int, int, Location]] = []
        useful = waste = 0
        for item in [*located, None]:
            hole = item[1] - _end(run[-1][3]) if run and item is not None else 0
            if run and (
                item is None
                or item[0] != run[0][0]
                or hole > gap
                or _end(item[3]) - run[0][1] > MAX_RUN
                # Blobs scattered among others (format 2 shuffles packs): at most as many
                # bytes read and dropped as kept, or one gap's worth.
                or waste + hole > max(useful, gap)
            ):
                yield run
                run, useful, waste, hole = [], 0, 0, 0
            if item is not None:
                run.append(item)
                useful += item[3].entry.length
                waste += max(hole, 0)

    def stored_runs(self, locations: list[Location], gap: int | None = None) -> list[list[Location]]:
        """Blob locations grouped by pack into runs of neighbours (up to `gap` bytes apart, by
        default as load_many), each read with one request (read_run, load_many), in pack and
        offset order."""
        located = sorted(((loc.pack, loc.entry.offset, i, loc) for i, loc in enumerate(locations)),
                         key=lambda item: item[:3])
        gap = self.merge_gap if gap is None else gap
        return [[item[3] for item in run] for run in self._runs(located, gap)]

    def read_run(self, run: list[Location]) -> list[bytes | memoryview]:
        """The stored (encrypted) form of each blob of a run from stored_runs, with one request
        (views into it, not copies); each blob alone if the span cannot be read. The caller
        authenticates them. Not through the pack windows on remote storage: the run is already
        one request, and windows kept beside it only read its bytes again; the bases of the
        run's deltas are read apart (repository/packbases.py)."""
        span = self._read_span([(loc.pack, loc.entry.offset, i, loc) for i, loc in enumerate(run)])
        start = run[0].entry.offset
        out: list[bytes | memoryview] = []
        for loc in run:
            at = loc.entry.offset - start
            piece = span[at : at + loc.entry.length]
            out.append(piece if len(piece) == loc.entry.length else self.read_envelope(loc))
        return out

    def _read_span(self, run: list[tuple[bytes, int, int, Location]]) -> memoryview:
        """The bytes of one run's pack from its first blob to the end of its last, with one
        request; empty if they cannot be read (each blob then falls back to load_blob)."""
        start = run[0][1]
        end = max(_end(item[3]) for item in run)
        pack = run[0][0]
        try:
            whole = self._from_whole_pack(pack, start, end - start, len(run))
            if whole is not None:
                return memoryview(whole)
            return memoryview(self.backend.load(Handle("data", pack.hex()), start, end - start))
        except StorageError:
            return memoryview(b"")

    def _from_whole_pack(self, pack: bytes, offset: int, length: int, blobs: int = 1) -> bytes | None:
        """Remote storage: bytes of a pack read whole (a tree pack, or one a restore needs most
        of), or None for the other packs."""
        if self._ask is not None:  # the parent holds the whole packs, and decides
            return self._ask("data", pack.hex(), offset, length, blobs)
        if self.tree_packs is not None and self.index.tree_pack(pack):
            return self.tree_packs.read(pack, offset, length)
        planned = self.planned
        if planned is not None and planned.wants(pack):
            return planned.take(pack, offset, length, blobs)
        return None

    def _decode_at(
        self, envelope: bytes | memoryview, loc: Location, blob_id: bytes, verify: bool, base: bytes | None,
    ) -> bytes | CoffreError:
        """One blob read in a span, decoded; any failure falls back to load_blob (other
        copies, and a precise error)."""
        try:
            return self.decode_blob(loc.entry, envelope, base, verify)
        except (FormatError, StorageError):
            try:
                return self.load_blob(blob_id, verify)
            except CoffreError as exc:
                return exc

    # -- a copy of a restore process reading through its parent (ops/restoreprocs.py) -----------
    def read_through(self, ask: Ask) -> None:
        """In a copy of a restore process: every read of the storage asked of the parent
        (answer_read), whose connections the copy must not use. The storage objects are kept
        referenced, never closed nor collected here: closing them could speak on the parent's
        connections."""
        self._inherited = (self.backend, self.windows, self.tree_packs, self.planned)
        self.backend = AskedBackend(ask, self.backend.location, self.backend.remote)
        self.windows = self.tree_packs = self.planned = None
        self._ask = ask

    def answer_read(self, kind: str, name: str, offset: int, length: int | None, blobs: int) -> bytes:
        """In the parent, for a copy (read_through): the bytes it asks for, through the whole
        packs held here when `blobs` (the blobs they hold) is given."""
        handle = Handle(kind, name)  # validated: a copy's request, checked like any name
        if kind == "data" and blobs and length is not None:
            whole = self._from_whole_pack(bytes.fromhex(name), offset, length, blobs)
            if whole is not None:
                return whole
        return self.backend.load(handle, offset, length)

    def iter_pack_names(self) -> Iterator[tuple[str, int]]:
        for info in self.backend.list("data"):
            yield info.name, info.size


def _refuse_removed(
    backend: Backend, slots: list[keyring.KeySlot], secret: str, tried: list[tuple[Config, bytes]],
    known: dict[bytes, keyring.KeyHistory],
) -> None:
    """When no other slot opens: if the secret opens a slot removed on this machine (put back
    by the storage), say so instead of "wrong password". Argon2 runs on those slots only here."""
    for repo_id, history in known.items():
        removed = [s for s in slots if keyring.fingerprint(s.wrapped) in history.removed]
        configs = [(cfg, mac) for cfg, mac in tried if cfg.id == repo_id]
        for master, slot in keyring.openings(removed, repo_id, secret):
            if any(Repository._unlocked(backend, cfg, mac, master, SystemClock()) for cfg, mac in configs):
                raise WrongPasswordError(
                    _("this password or recovery key opens only key slot {id}, which was removed on this "
                      "machine ('coffre key remove') and has been put back in the storage: refused").format(
                          id=slot.id[:8]),
                    _("open with another password or the recovery key; 'coffre key remove {id}' removes that "
                      "slot again (docs/design.md, section 8)").format(id=slot.id[:8]),
                )


class _Replay(Generic[T]):
    """An iterator that can be walked again from its start, computing each item once (each
    is an Argon2 run, and several config copies share one repository id)."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items, self._seen, self._done = items, list[T](), False

    def __iter__(self) -> Iterator[T]:
        i = 0
        while True:
            if i < len(self._seen):
                yield self._seen[i]
                i += 1
            elif self._done:
                return
            else:
                try:
                    self._seen.append(next(self._items))
                except StopIteration:
                    self._done = True

    def any(self) -> bool:
        return next(iter(self), None) is not None
