"""What a backup keeps besides bytes: file types, ownership, permissions, times, extended
attributes, ACLs, holes, odd names; what it reports about files it cannot read or that change
under it; and `coffre verify` / `backup --verify`, which compare a snapshot with live files.

Most tests run the real command line. They run as root: chown, ACLs and setpriv need it."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffre.chunker import Chunker
from coffre.ops.backup import Backup, BackupOptions
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, AsNobody, Coffre, chown_tree, snapshot_ids

NS = 1_500_000_000_123_456_789  # an mtime with every nanosecond digit set
MiB = 1024 * 1024


# -- describing a tree --------------------------------------------------------------------------
def _xattrs(path: bytes) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in os.listxattr(path, follow_symlinks=False)}


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def describe(root: Path | bytes) -> dict[bytes, tuple[Any, ...]]:
    """Relative bytes path -> everything a restore must reproduce (the root included).
    Hard links are described by the first path of their group."""
    base = os.fsencode(root)
    paths = [base]
    for dirpath, dirnames, filenames in os.walk(base):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    first_of_inode: dict[int, bytes] = {}
    out: dict[bytes, tuple[Any, ...]] = {}
    for p in sorted(paths):
        rel = os.path.relpath(p, base)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            body: object = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            body = (st.st_size, _digest(p), first_of_inode.setdefault(st.st_ino, rel))
        else:
            body = None
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    st.st_mtime_ns, body, _xattrs(p))
    return out


def inside(restored: Path, source: Path) -> Path:
    """Where a restore puts `source` (snapshots mirror absolute paths)."""
    return restored / str(source).lstrip("/")


def getfacl(path: Path) -> str:
    return subprocess.run(["getfacl", "--omit-header", "--physical", str(path)],
                          capture_output=True, text=True, check=True).stdout


def set_times(root: Path, ns: int = NS) -> None:
    """Distinct nanosecond mtimes everywhere, children before their directory."""
    i = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames, ""]:
            i += 1
            os.utime(os.path.join(dirpath, name) if name else dirpath,
                     ns=(ns + i * 1001, ns + i * 7777), follow_symlinks=False)


def backup_restore(c: Coffre, src: Path, restored: Path) -> Path:
    c.ok("backup", str(src))
    c.ok("restore", "latest", "--target", str(restored), "--verify")
    return inside(restored, src)


# -- 1. file types --------------------------------------------------------------------------------
def test_file_types_roundtrip(repo: Coffre, tmp_path: Path, restored: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"not to be backed up")
    (outside / "deep" / "x.txt").write_bytes(b"nor this")
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "file.txt").write_bytes(b"ordonnance\n" * 100)
    (src / "empty.txt").write_bytes(b"")
    (src / "dir" / "sub" / "deep.bin").write_bytes(os.urandom(50_000))
    (src / "hard-a").write_bytes(b"one inode, two names")
    os.link(src / "hard-a", src / "dir" / "hard-b")
    (src / "link-in").symlink_to("file.txt")
    (src / "link-out").symlink_to(outside / "secret.txt")
    (src / "link-dir-out").symlink_to(outside)
    (src / "dangling").symlink_to("/nonexistent/target")
    set_times(src)
    before = describe(src)

    out = backup_restore(repo, src, restored)

    assert describe(out) == before
    a, b = (out / "hard-a").stat(), (out / "dir" / "hard-b").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert os.readlink(out / "link-out") == str(outside / "secret.txt")
    assert (out / "link-dir-out").is_symlink()
    listed = json.loads(repo.ok("ls", "latest", "--json").out)["nodes"]
    paths = {n["path"] for n in listed}
    assert str(src / "link-out") in paths and str(src / "link-dir-out") in paths
    assert not any(p.startswith(str(outside)) or p.startswith(str(src / "link-dir-out") + "/")
                   for p in paths)
    assert not any(n["name"] in ("secret.txt", "x.txt") for n in listed)
    assert "no difference" in repo.ok("verify", "latest").out


# -- 2. permissions, owners, times ----------------------------------------------------------------
def test_permissions_owners_and_nanosecond_times(repo: Coffre, tmp_path: Path,
                                                 restored: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    src = tmp_path / "src"
    (src / "setgid-dir" / "inner").mkdir(parents=True)
    (src / "sticky-dir").mkdir()
    (src / "closed-dir").mkdir()
    (src / "closed-dir" / "in.txt").write_bytes(b"in a closed directory")
    files = {"plain.txt": 0o640, "setuid-setgid": 0o6755, "setgid-only": 0o2750,
             "private": 0o600, "nothing": 0o000, "sticky-file": 0o1644}
    for name in files:
        (src / name).write_bytes(name.encode())
    (src / "sticky-dir" / "tmp.txt").write_bytes(b"t")
    (src / "to-nobody").symlink_to("plain.txt")
    for name in ("plain.txt", "setuid-setgid", "setgid-only", "setgid-dir"):
        os.chown(src / name, 1234, 5678)
    os.chown(src / "private", nobody.pw_uid, nobody.pw_gid)
    os.chown(src / "closed-dir", nobody.pw_uid, nobody.pw_gid)
    os.chown(src / "to-nobody", 1234, 5678, follow_symlinks=False)
    for name, mode in files.items():  # after chown, which clears set-id bits
        os.chmod(src / name, mode)
    os.chmod(src / "setgid-dir", 0o2775)
    os.chmod(src / "sticky-dir", 0o1777)
    os.chmod(src / "closed-dir", 0o500)
    set_times(src)
    before = describe(src)
    assert before[b"setuid-setgid"][1:4] == (0o6755, 1234, 5678)
    assert before[b"setgid-dir"][4] % 1000 != 0  # really nanosecond times

    out = backup_restore(repo, src, restored)

    assert describe(out) == before
    assert (out / "private").stat().st_uid == nobody.pw_uid
    # directory times survive the files written into them afterwards
    assert (out / "sticky-dir").stat().st_mtime_ns == (src / "sticky-dir").stat().st_mtime_ns


# -- 3. extended attributes and ACLs --------------------------------------------------------------
def test_xattrs_and_posix_acls(repo: Coffre, tmp_path: Path, restored: Path) -> None:
    src = tmp_path / "src"
    (src / "acl-dir").mkdir(parents=True)
    (src / "acl.txt").write_bytes(b"acl")
    (src / "attrs.txt").write_bytes(b"attrs")
    (src / "acl-dir" / "child.txt").write_bytes(b"child")
    os.setxattr(src / "attrs.txt", "user.comment", b"ordonnance scannee")
    os.setxattr(src / "attrs.txt", "user.binary", bytes(range(256)))
    os.setxattr(src / "acl-dir", "user.dir", b"on a directory")
    subprocess.run(["setfacl", "-m", "u:1234:rw,g:5678:r", str(src / "acl.txt")], check=True)
    subprocess.run(["setfacl", "-m", "u:1234:rwx", "-d", "-m", "g:5678:rx", str(src / "acl-dir")],
                   check=True)
    (src / "acl-dir" / "inherited.txt").write_bytes(b"gets the default ACL")
    set_times(src)
    before = describe(src)
    acls = {p: getfacl(src / p)
            for p in ("acl.txt", "acl-dir", "acl-dir/child.txt", "acl-dir/inherited.txt")}
    assert "user:1234:rw-" in acls["acl.txt"] and "default:group:5678:r-x" in acls["acl-dir"]
    assert "group:5678:r-x" in acls["acl-dir/inherited.txt"]
    assert "5678" not in acls["acl-dir/child.txt"]
    assert "system.posix_acl_access" in before[b"acl.txt"][6]

    out = backup_restore(repo, src, restored)

    assert describe(out) == before
    assert {p: getfacl(out / p) for p in acls} == acls
    assert os.getxattr(out / "attrs.txt", "user.binary") == bytes(range(256))


# -- 4. holes -------------------------------------------------------------------------------------
def test_sparse_file_keeps_its_hole(repo: Coffre, tmp_path: Path, restored: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "base.db"
    with open(sparse, "wb") as f:
        f.write(b"debut de base" * 1000)
        f.seek(64 * MiB, os.SEEK_CUR)
        f.write(b"fin de base" * 1000)
    size = sparse.stat().st_size
    assert sparse.stat().st_blocks * 512 < MiB  # the test file really has a hole

    out = backup_restore(repo, src, restored)

    st = (out / "base.db").stat()
    assert st.st_size == size > 64 * MiB
    assert st.st_blocks * 512 < 16 * MiB
    assert _digest(os.fsencode(out / "base.db")) == _digest(os.fsencode(sparse))


# -- 5. names that are not UTF-8, fifos ----------------------------------------------------------
def test_non_utf8_names_and_fifo(repo: Coffre, tmp_path: Path, restored: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    bsrc = os.fsencode(src)
    os.mkdir(bsrc + b"/r\xe9sultats")
    with open(bsrc + b"/caf\xe9.txt", "wb") as f:
        f.write(b"latin-1 name")
    with open(bsrc + b"/r\xe9sultats/\xff\xfe.bin", "wb") as f:
        f.write(b"not utf-8 at all")
    os.symlink(b"caf\xe9.txt", bsrc + b"/lien-\xe9")
    os.mkfifo(src / "queue")
    set_times(src)
    before = describe(src)
    assert b"caf\xe9.txt" in before

    out = backup_restore(repo, src, restored)

    assert describe(out) == before
    bout = os.fsencode(out)
    assert sorted(os.listdir(bout)) == [b"caf\xe9.txt", b"lien-\xe9", b"queue", b"r\xe9sultats"]
    assert os.listdir(bout + b"/r\xe9sultats") == [b"\xff\xfe.bin"]
    assert stat.S_ISFIFO(os.lstat(out / "queue").st_mode)


# -- 6. unreadable files and directories (run as 'nobody') ----------------------------------------
def test_unreadable_file_and_directory_are_reported_and_skipped(shared_dir: Path) -> None:
    pw = shared_dir / "password"
    pw.write_text(PASSWORD + "\n")
    os.chown(pw, 65534, 65534)
    pw.chmod(0o600)
    c = AsNobody(shared_dir / "repo", pw, shared_dir / "cache")
    c.ok("init")
    src = shared_dir / "src"
    (src / "private").mkdir(parents=True)
    (src / "public").mkdir()
    (src / "public" / "ok.txt").write_bytes(b"lisible")
    (src / "secret.txt").write_bytes(b"illisible")
    (src / "private" / "inner.txt").write_bytes(b"illisible aussi")
    (src / "secret.txt").chmod(0o000)
    (src / "private").chmod(0o700)  # root's; nobody may not list it

    res = c("backup", str(src), "--json")

    assert res.code == 3, res
    report = res.json()
    errors = report["errors"]
    assert len(errors) == 2, errors
    assert any(str(src / "secret.txt") in e for e in errors)
    assert any(str(src / "private") in e for e in errors)
    assert snapshot_ids(c) == [report["snapshot"]]
    paths = {n["path"] for n in json.loads(c.ok("ls", "latest", "--json").out)["nodes"]}
    assert str(src / "public" / "ok.txt") in paths
    assert not {str(src / "secret.txt"), str(src / "private")} & paths
    assert c.ok("dump", "latest", str(src / "public" / "ok.txt")).outb == b"lisible"
    human = c("backup", str(src))
    assert human.code == 3 and "could not be read" in human.err and "secret.txt" in human.err
    # backup --verify compares the new snapshot with the files: what was skipped shows up.
    verified = c("backup", str(src), "--verify", "--json").json()
    assert sorted(verified["verify_differences"]) == [
        f"{src / 'private'}: not in the snapshot", f"{src / 'secret.txt'}: not in the snapshot"]


def test_restore_as_ordinary_user_of_directories_closed_to_their_owner(
    shared_dir: Path, restored: Path
) -> None:
    """Root backed up a directory its owner may not enter (mode 644, a classic `chmod -R`
    slip) holding another directory; an ordinary user restores it: the inner directory's
    metadata must be set before the outer one is closed."""
    pw = shared_dir / "password"
    pw.write_text(PASSWORD + "\n")
    c = Coffre(shared_dir / "repo", pw, shared_dir / "cache")
    c.ok("init")
    src = shared_dir / "src"
    (src / "closed" / "inner").mkdir(parents=True)
    (src / "closed" / "inner" / "f.txt").write_bytes(b"deep")
    os.chmod(src / "closed" / "inner", 0o750)
    os.chmod(src / "closed", 0o644)
    set_times(src)
    before = {k: v[1] for k, v in describe(src).items()}
    c.ok("backup", str(src))
    chown_tree(shared_dir, 65534)
    target = shared_dir / "target"

    AsNobody(c.repo, pw, shared_dir / "cache").ok("restore", "latest", "--target", str(target))

    out = inside(target, src)
    os.chmod(out / "closed", 0o755)  # to look inside as the owner would
    got = {k: v[1] for k, v in describe(out).items()}
    assert got == {**before, b"closed": 0o755}


# -- 7. a file that changes while it is read (in-process) -----------------------------------------
def _backup_in_process(repo_dir: Path, src: Path) -> list[str]:
    backend = LocalBackend(repo_dir)
    repo = (Repository.open(backend, PASSWORD) if backend.exists()
            else Repository.init(backend, PASSWORD)[0])
    repo.load_index()
    with Lock(repo, exclusive=False, command="backup") as lock:
        result = Backup(repo, lock, BackupOptions(paths=[str(src)], workers=2)).run()
    return result.problems.warnings


def test_file_changed_while_read_is_a_warning(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big, small = src / "growing.db", src / "calm.txt"
    big.write_bytes(os.urandom(20 * MiB))  # larger than what the chunker reads ahead
    small.write_bytes(b"calme")
    assert _backup_in_process(tmp_path / "repo", src) == []

    real_chunks = Chunker.chunks

    def chunks_while_writing(self: Chunker, stream: Any) -> Iterator[bytes]:
        for i, chunk in enumerate(real_chunks(self, stream)):
            if i == 0:
                with open(big, "ab") as f:
                    f.write(b"written during the backup" * 100)
            yield chunk

    monkeypatch.setattr(Chunker, "chunks", chunks_while_writing)
    warnings = _backup_in_process(tmp_path / "repo", src)

    assert len(warnings) == 1, warnings
    assert str(big) in warnings[0] and "changed while it was read" in warnings[0]
    # The snapshot records the size of what it stored, so the copy restores and verifies.
    c = Coffre(tmp_path / "repo", tmp_path / "pw", tmp_path / "cache")
    c.pwfile.write_text(PASSWORD)
    c.ok("restore", "latest", "--target", str(tmp_path / "out"), "--verify")
    restored = tmp_path / "out" / str(big).lstrip("/")
    assert big.read_bytes().startswith(restored.read_bytes())


# -- 8. verify -----------------------------------------------------------------------------------
def test_verify_lists_every_difference(repo: Coffre, tree: Path) -> None:
    repo.ok("backup", str(tree))
    snap = snapshot_ids(repo)[0][:8]
    res = repo.ok("verify", snap)
    assert "no difference" in res.out and "compared 27 files" in res.out

    docs = tree / "docs"
    (docs / "lettre-3.txt").write_bytes(b"X" + (docs / "lettre-3.txt").read_bytes()[1:])
    (docs / "lettre-4.txt").chmod(0o600)
    (docs / "lettre-5.txt").unlink()
    (docs / "nouvelle.txt").write_text("nouvelle")

    res = repo("verify", snap)
    assert res.code == 1, res
    lines = res.out.splitlines()[:-1]
    by_path: dict[str, list[str]] = {}
    for line in lines:
        path, _, what = line.partition(": ")
        by_path.setdefault(path, []).append(what)
    assert set(by_path) == {str(docs / n) for n in
                            ("lettre-3.txt", "lettre-4.txt", "lettre-5.txt", "nouvelle.txt")}, lines
    assert any("content differs" in w for w in by_path[str(docs / "lettre-3.txt")])
    assert by_path[str(docs / "lettre-4.txt")] == ["permissions 644 -> 600"]
    assert by_path[str(docs / "lettre-5.txt")] == ["missing from the live files"]
    assert by_path[str(docs / "nouvelle.txt")] == ["not in the snapshot"]
    assert res.out.splitlines()[-1].endswith(f"{len(lines)} differences")

    only = repo("verify", snap, str(docs / "lettre-4.txt"))
    assert only.code == 1 and only.out.splitlines()[:-1] == [
        f"{docs / 'lettre-4.txt'}: permissions 644 -> 600"]
    assert "no difference" in repo.ok("verify", snap, str(tree / "db"), str(tree / "scans")).out
    sub = repo("verify", snap, str(docs))
    assert sub.code == 1 and len(sub.out.splitlines()) - 1 == len(lines)


def test_backup_verify_reports_matching(repo: Coffre, tree: Path) -> None:
    res = repo.ok("backup", str(tree), "--verify")
    assert "verify: the snapshot matches the files" in res.out
    res = repo.ok("backup", str(tree), "--verify", "--json").json()
    assert res["verify_differences"] == []


def test_verify_ignores_what_the_backup_left_out(tree: Path, pwfile: Path, cache_dir: Path) -> None:
    """Excluded files and the repository itself (kept inside the backed-up tree) are not
    differences; a new file is one, also when it is the only path asked about."""
    c = Coffre(tree / "sauvegardes", pwfile, cache_dir)
    c.ok("init")
    res = c.ok("backup", str(tree), "--exclude", "*.jpg", "--verify")
    assert "verify: the snapshot matches the files" in res.out
    assert "no difference" in c.ok("verify", "latest").out

    (tree / "scans" / "2026" / "new.jpg").write_bytes(b"excluded")
    (tree / "docs" / "new.txt").write_bytes(b"new")
    assert "no difference" in c.ok("verify", "latest", str(tree / "scans")).out
    res = c("verify", "latest", str(tree / "docs" / "new.txt"))
    assert res.code == 1 and res.out.splitlines()[0] == f"{tree / 'docs' / 'new.txt'}: not in the snapshot"
    assert "no difference" in c.ok("verify", "latest", str(tree / "docs" / "lettre-1.txt")).out


def test_very_deep_folders_back_up_and_restore(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "deep"
    leaf = src.joinpath(*(["d"] * 700))  # two calls a level: past Python's default limit
    leaf.mkdir(parents=True)
    (leaf / "fond.txt").write_text("tout en bas")
    repo.ok("backup", str(src))
    repo.ok("restore", "latest", "--target", str(tmp_path / "r"), "--verify")
    out = tmp_path / "r" / str(leaf).lstrip("/") / "fond.txt"
    assert out.read_text() == "tout en bas"
    assert repo.ok("check", "--json").json()["ok"]
