"""Memory and time at N million blobs: a synthetic repository built fast, then the commands a
pharmacy runs every day against it, with their wall time and peak RSS.

    python bench/bigindex.py                        # 10 million blobs (~10 min, ~5 GB RAM)
    python bench/bigindex.py --blobs 200000         # quick

The repository is real where commands read it and synthetic where they do not:
- a real backup of a small real tree (the source of the daily backup below);
- N data blobs in packs of the default size, as a backup of ~3 TB of large files would leave
  (PER_PACK blobs a pack): index files listing them (real, encrypted, as many as a real
  repository would have, INDEX_FILE_PACKS packs each), and pack files of the right size whose
  blob area is a hole (sparse: no disk space; nothing below reads it);
- a second snapshot whose folder listings (real trees, PER_FILE blobs a file, FILES_PER_DIR
  files a folder) reference every one of them, so prune must mark them all as used.
Steps, each a `coffre` process: `snapshots` (opens, no index: the baseline), an unchanged
backup of the real tree (loads the whole index), `prune` (loads it, walks every listing, marks
N blobs, keeps everything). Not `check`: it hashes every pack, and these are holes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coffre.repository.packer import Packer
    from coffre.repository.repo import Repository

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import timed

PER_PACK = 50  # blobs of ~320 KiB in a 16 MiB pack
PER_FILE = 50  # a 16 MB file
FILES_PER_DIR = 1000
PASSWORD = "benchmark password"  # noqa: S105 (a throwaway repository)


def coffre(*args: str) -> list[str]:
    return [sys.executable, "-m", "coffre", *args]


def build(repo_dir: Path, source: Path, blobs: int, env: dict[str, str]) -> None:
    """The synthetic repository (see the module's docstring)."""
    from coffre.crypto import aead
    from coffre.format.pack import BlobEntry
    from coffre.format.snapshot import Snapshot
    from coffre.format.tree import Node, encode_tree
    from coffre.repository.locks import Lock
    from coffre.repository.packer import Packer, pack_size
    from coffre.repository.repo import Repository
    from coffre.storage.local import LocalBackend

    timed(coffre("init"), env, repo_dir.parent)
    timed(coffre("backup", "--host", "pharmacie", str(source)), env, repo_dir.parent)
    repo = Repository.open(LocalBackend(repo_dir), PASSWORD)
    rnd = random.Random(18)  # noqa: S311 (test data, not secrets)
    ids = [rnd.randbytes(32) for _ in range(blobs)]
    packs: dict[bytes, list[BlobEntry]] = {}
    for first in range(0, blobs, PER_PACK):
        salt = rnd.randbytes(aead.PACK_SALT_LEN) if repo.version >= 2 else None
        entries, offset = [], 0
        for blob_id in ids[first : first + PER_PACK]:
            length = 330_000 + rnd.randrange(-4096, 4096)
            entries.append(BlobEntry(aead.KIND_DATA, blob_id, offset, length, length - 100, None, salt))
            offset += length
        pack_id = rnd.randbytes(32)
        packs[pack_id] = entries
        path = repo_dir / "data" / pack_id.hex()[:2] / pack_id.hex()
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(pack_size(entries, repo.version))  # a hole: only its size is real
    with Lock(repo, exclusive=False, command="backup"):
        repo.save_full_index(packs)
        packer = Packer(repo)
        folders = []
        for d, first in enumerate(range(0, blobs, PER_FILE * FILES_PER_DIR)):
            nodes = []
            for f, at in enumerate(range(first, min(first + PER_FILE * FILES_PER_DIR, blobs), PER_FILE)):
                content = ids[at : at + PER_FILE]
                nodes.append(Node(name=f"archive-{f:04d}.bin".encode(), type="file", mode=0o644,
                                  size=len(content) * 330_000, content=content))
            folders.append(Node(name=f"lot-{d:05d}".encode(), type="dir", mode=0o755,
                                subtree=_store(packer, repo, encode_tree(nodes))))
        top = _store(packer, repo, encode_tree(folders))
        archives = Node(name=b"archives", type="dir", mode=0o755, subtree=top)
        root = _store(packer, repo, encode_tree([archives]))
        packer.flush()
        repo.save_index(packer.take_written())
        repo.save_snapshot(Snapshot(time_ns=time.time_ns(), hostname="archives", username="bench",
                                    paths=["/archives"], tree=root))


def _store(packer: Packer, repo: Repository, data: bytes) -> bytes:
    from coffre.crypto import aead

    tree_id = repo.crypter.blob_id(data)
    packer.add(aead.KIND_TREE, tree_id, data)
    return tree_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=10_000_000)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108
    ap.add_argument("--out", type=Path, default=tmp / "pharmabench" / "bigindex")
    ap.add_argument("--keep", action="store_true", help="keep the repository afterwards")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    env = {**os.environ, "COFFRE_REPOSITORY": str(args.out / "repo"),
           "COFFRE_PASSWORD_FILE": str(args.out / "password"),
           "COFFRE_CACHE_DIR": str(args.out / "cache"), "COFFRE_STATE_DIR": str(args.out / "state")}
    if args.build_only:
        build(args.out / "repo", args.out / "source", args.blobs, env)
        return 0
    shutil.rmtree(args.out, ignore_errors=True)
    source = args.out / "source"
    for i in range(200):  # the real tree backed up every day
        folder = source / f"d{i // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"ordonnance {i}\n" * (i + 1))
    repo_dir = args.out / "repo"
    (args.out / "password").write_text(PASSWORD + "\n")
    (args.out / "password").chmod(0o600)
    # Built by another process: a child's peak RSS counts the memory it shared with this one
    # between fork and exec, so this one stays small.
    start = time.monotonic()
    subprocess.run([sys.executable, __file__, "--blobs", str(args.blobs), "--out", str(args.out),
                    "--build-only"], check=True)
    built = time.monotonic() - start
    index_files = list((repo_dir / "index").iterdir())
    index_bytes = sum(p.stat().st_size for p in index_files)
    print(f"{args.blobs:,} synthetic blobs built in {built:.0f} s; {len(index_files)} index files, "
          f"{index_bytes / 1e6:.0f} MB", flush=True)
    print(f"{'step':34} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13} {'B/blob':>7}")
    baseline = None
    steps = {
        "snapshots (open only)": coffre("snapshots"),
        "unchanged backup": coffre("backup", "--host", "pharmacie", str(source)),
        "prune (keeps everything)": coffre("prune"),
    }
    for step, command in steps.items():
        m = timed(command, env, args.out)
        baseline = m.rss_mib if baseline is None else baseline  # a command without the index
        per_blob = (m.rss_mib - baseline) * 2**20 / args.blobs  # what the index and the walk add
        print(f"{step:34} {m.wall:8.1f} {m.cpu:8.1f} {m.rss_mib:13.0f} {per_blob:7.0f}", flush=True)
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
