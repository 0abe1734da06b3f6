"""demo: Coffre's main job end to end on a sample pharmacy tree, in a scratch directory —
create a repository, back up, restore, verify the restored files byte for byte; then the
pharmacy's real flow: the agent runs the job from a configuration, an alert reaches a local
mail sink, and `coffre status` shows it (demo_agent.py)."""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import sqlite3
import tempfile
from pathlib import Path

from coffre.cli.demo_agent import agent_demo
from coffre.cli.output import human_size, say
from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.check import Checker
from coffre.ops.common import find_snapshot
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help=_("back up and restore a sample pharmacy tree in a scratch directory"))
    p.add_argument("--dir", metavar="DIR", help=_("scratch directory (default: a new temporary one)"))
    p.set_defaults(func=cmd_demo)


def make_sample(root: Path, seed: int = 1) -> None:
    rnd = random.Random(seed)  # noqa: S311 - sample data, not secrets
    (root / "officine" / "data").mkdir(parents=True)
    db = sqlite3.connect(root / "officine" / "data" / "officine.db")
    db.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT, qte INT, prix REAL)")
    db.executemany("INSERT INTO ventes (produit, qte, prix) VALUES (?, ?, ?)",
                   [(f"CIP{rnd.randrange(10**7):07d}", rnd.randrange(1, 5), rnd.random() * 50)
                    for _ in range(20000)])
    db.commit()
    db.close()
    scans = root / "scans" / "2026" / "11"
    scans.mkdir(parents=True)
    for i in range(8):
        (scans / f"ordonnance-{i:04d}.jpg").write_bytes(rnd.randbytes(rnd.randrange(50_000, 400_000)))
    docs = root / "documents"
    docs.mkdir()
    for i in range(30):
        (docs / f"courrier-{i}.txt").write_text(f"Madame, Monsieur,\ncommande n°{i}\n" * 200)
    (docs / "vide.txt").write_bytes(b"")
    (docs / "dernier-courrier").symlink_to("courrier-29.txt")
    os.link(docs / "courrier-1.txt", docs / "lien-dur.txt")
    (docs / os.fsdecode(b"nom-latin1-\xe9t\xe9.txt")).write_bytes(b"encodage ancien\n")
    with open(root / "officine" / "clairsemé.img", "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(4 * 1024 * 1024)
        f.write(b"donnees au milieu")
    (root / "vide").mkdir()


def cmd_demo(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="coffre-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    source, repo_dir, target = base / "pharmacie", base / "depot", base / "restauration"
    if source.exists() or repo_dir.exists() or target.exists():
        raise CoffreError(_("{dir} already holds a demo; give an empty --dir").format(dir=base))
    source.mkdir()
    make_sample(source)
    say(_("1. sample pharmacy tree created in {dir}").format(dir=source))
    password = os.urandom(12).hex()
    repo, recovery = Repository.init(LocalBackend(repo_dir), password)
    say(_("2. encrypted repository created in {dir} (recovery key {start}...)").format(
        dir=repo_dir, start=recovery[:11]))
    with Lock(repo, exclusive=False, command="demo backup") as lock:
        result = Backup(repo, lock, BackupOptions(paths=[str(source)], host="demo")).run()
    s = result.snapshot.summary
    say(_("3. backup: snapshot {id}, {read} read, {stored} stored").format(
        id=result.snapshot.id[:8], read=human_size(s["bytes_total"]),
        stored=human_size(s["data_added_stored"])))
    with Lock(repo, exclusive=False, command="demo backup") as lock:
        again = Backup(repo, lock, BackupOptions(paths=[str(source)], host="demo")).run()
    added = human_size(again.snapshot.summary["data_added_stored"])
    say(_("4. second backup of the unchanged tree added {size}").format(size=added))
    reopened = Repository.open(LocalBackend(repo_dir), password)
    reopened.load_index()
    snap = find_snapshot(reopened, "latest")
    restorer = Restorer(reopened, RestoreOptions(target=str(target), verify=True))
    problems = restorer.run(snap)
    if problems.errors:
        raise CoffreError(_("restore failed: {errors}").format(errors="; ".join(problems.errors)))
    say(_("5. restored and re-read {n} files into {dir}").format(n=restorer.stats.verified, dir=target))
    restored = target / str(source).lstrip("/")
    mismatch = _compare(source, restored)
    if mismatch:
        raise CoffreError(_("restored tree differs from the original: {difference}").format(
            difference=mismatch))
    say(_("6. restored tree is identical to the original (content, links, empty files and folders)"))
    check = Checker(reopened).run(read_data=True)
    if not check.ok:
        raise CoffreError(_("check --read-data found errors: {errors}").format(
            errors="; ".join(check.errors)))
    say(_("7. check --read-data: {n} packs read, no errors").format(n=check.packs_read))
    agent_demo(base, source, repo_dir, password, step=8)
    say(_("demo OK"))
    return 0


def _compare(a: Path, b: Path) -> str | None:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return f"{a}: {cmp.left_only or cmp.right_only or cmp.funny_files}"
    for name in cmp.common_files:
        pa, pb = a / name, b / name
        if pa.is_symlink():
            if not pb.is_symlink() or os.readlink(pa) != os.readlink(pb):
                return f"{pa}: symlink differs"
        elif pa.read_bytes() != pb.read_bytes():
            return f"{pa}: content differs"
    for name in cmp.common_dirs:
        found = _compare(a / name, b / name)
        if found:
            return found
    return None
