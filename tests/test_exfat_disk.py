"""A USB disk formatted exFAT (how most are sold), for real: as the repository (an exFAT file
system has no hard links, which every save used to refuse the same name twice) and as the
restore target (it keeps no owner and not every mode). tests/conftest.py's `exfat` mounts one."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from coffre.core import posix
from coffre.core.errors import ObjectExists, StorageError
from coffre.ops import casefold
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.ops.target import keeps_modes
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest

NAME = "ab" * 32


def test_a_repository_on_an_exfat_disk_backs_up_prunes_checks_and_restores(
        exfat: Path, pwfile: Path, tree: Path, tmp_path: Path) -> None:
    with pytest.raises(OSError) as no_links:  # what the repository copes with below
        _link_in(exfat)
    assert no_links.value.errno == errno.EPERM
    usb = Coffre(exfat / "coffre", pwfile, tmp_path / "cache")
    usb.ok("init")
    usb.ok("backup", str(tree))
    (tree / "docs" / "lettre-3.txt").write_text("changed\n")
    age_tree(tree)
    usb.ok("backup", str(tree))
    usb.ok("forget", "--keep-last", "1", "--prune")
    assert "no errors were found" in usb.ok("check", "--read-data").out
    usb.ok("key", "add", "--new-password-file", str(pwfile))
    usb.ok("restore", "latest", "--target", str(tmp_path / "r"))
    assert tree_digest(tmp_path / "r" / str(tree).lstrip("/")) == tree_digest(tree)
    assert not [p for p in (exfat / "coffre").rglob("*") if p.name.startswith(".tmp-")]


def _link_in(folder: Path) -> None:
    (folder / "probe").write_bytes(b"x")
    try:
        os.link(folder / "probe", folder / "probe-link")
    finally:
        (folder / "probe").unlink()


def test_a_save_on_exfat_never_replaces_another_object(exfat: Path) -> None:
    backend = LocalBackend(exfat / "coffre")
    backend.create()
    handle = Handle("index", NAME)
    backend.save(handle, b"first")
    backend.save(handle, b"first")  # the same bytes again (a save retried): done already
    with pytest.raises(ObjectExists):
        backend.save(handle, b"other")
    assert backend.load(handle) == b"first"
    assert sorted(os.listdir(exfat / "coffre" / "index")) == [NAME]


def test_without_hard_links_a_rename_that_cannot_replace_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's exFAT and FAT drivers (and CIFS) have no link() but rename without
    replacing in one step (RENAME_NOREPLACE): this machine's ext4 plays them, its link() made
    to answer as theirs does."""
    def no_link(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    renamed: list[bool] = []

    def spied(src: str, dst: str) -> bool:
        renamed.append(rename_noreplace(src, dst))
        return renamed[-1]

    rename_noreplace = posix.rename_noreplace
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(posix, "rename_noreplace", spied)
    handle = Handle("index", NAME)
    backend.save(handle, b"first")
    assert renamed == [True]  # placed in one step, not by the FUSE fallback
    with pytest.raises(ObjectExists):
        backend.save(handle, b"other")
    assert backend.load(handle) == b"first"
    assert os.listdir(tmp_path / "repo" / "index") == [NAME]


def test_rename_noreplace_refuses_an_existing_name_and_renames_to_a_free_one(tmp_path: Path) -> None:
    (tmp_path / "new").write_bytes(b"new")
    (tmp_path / "there").write_bytes(b"there")
    with pytest.raises(FileExistsError):
        posix.rename_noreplace(str(tmp_path / "new"), str(tmp_path / "there"))
    assert (tmp_path / "there").read_bytes() == b"there" and (tmp_path / "new").exists()
    assert posix.rename_noreplace(str(tmp_path / "new"), str(tmp_path / "free"))
    assert (tmp_path / "free").read_bytes() == b"new" and not (tmp_path / "new").exists()


def test_a_restore_onto_an_exfat_disk_keeps_contents_and_dates_and_warns_once_for_modes(
        repo: Coffre, tmp_path: Path, exfat: Path) -> None:
    src = tmp_path / "src"
    shared = src / "partage"  # a folder open to all with the sticky bit, as /tmp: exFAT refuses it
    shared.mkdir(parents=True)
    for i in range(5):
        (shared / f"ordonnance-{i}.pdf").write_bytes(os.urandom(3000 + i))
    (src / "notes.txt").write_text("à rappeler\n")
    age_tree(src, seconds=86_400 * 30)
    shared.chmod(0o1777)
    repo.ok("backup", str(src))
    res = repo("restore", "latest", "--target", str(exfat / "restored"))
    assert res.code == 0, res
    out = exfat / "restored" / str(src).lstrip("/")
    for original in [*shared.iterdir(), src / "notes.txt", shared]:
        copy = out / original.relative_to(src)
        if original.is_file():
            assert copy.read_bytes() == original.read_bytes()
        # Dates are kept (a month old, to the second here), also where the mode was refused.
        assert abs(copy.stat().st_mtime - original.stat().st_mtime) < 2, copy
    assert not stat.S_IMODE((out / "partage").stat().st_mode) & stat.S_ISVTX
    assert "error" not in res.err
    # exfat-fuse refuses the sticky bit (EPERM) and takes any other mode without keeping it:
    # one warning says so for all, not a count of the refusals only.
    modes = [stat.S_IMODE(p.stat().st_mode) for p in (out / "notes.txt", src / "notes.txt")]
    assert modes[0] != modes[1]
    assert res.err.count("the target does not keep modes or owners") == 1
    assert "refused by the target" not in res.err
    ok = repo("restore", "latest", "--target", str(tmp_path / "ext4"))
    assert ok.code == 0 and "keep modes" not in ok.err


def test_a_target_that_refuses_some_modes_counts_them(
        repo: Coffre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux's own exFAT driver, or a network share, refuses a mode (EPERM) rather than
    ignore it: each refusal is counted into one warning."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x")
    repo.ok("backup", str(src))
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    real_fchmod = os.fchmod

    def refuse_files(fd: int, mode: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size == 1:  # the 3 files only
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", refuse_files)
    problems = Restorer(stored, RestoreOptions(target=str(tmp_path / "r"))).run(stored.snapshots()[0])
    assert not problems.errors
    assert problems.warnings == ["the owners or modes of 3 files and folders were refused by the target "
                                 "(a FAT or exFAT disk keeps neither, some network shares no owner): "
                                 "their contents and dates are restored"]
    assert all((tmp_path / "r" / str(src).lstrip("/") / f"f{i}").read_bytes() == b"x" for i in range(3))


def test_the_mode_probe_tells_a_disk_that_keeps_modes_from_one_that_does_not(
        tmp_path: Path, exfat: Path) -> None:
    for folder, kept in ((tmp_path, True), (exfat, False)):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert keeps_modes(fd) is kept
            assert casefold.ignores_case(fd) is not kept  # exFAT: neither; ext4: both
        finally:
            os.close(fd)
        assert not [p for p in folder.iterdir() if p.name.startswith(".coffre-")]  # probes removed


def test_names_an_exfat_disk_takes_as_one_are_not_restored_over_each_other(
        repo: Coffre, tmp_path: Path, exfat: Path) -> None:
    """Facture.pdf and facture.pdf are two files on Linux, one entry on exFAT: the second is
    an error (it was "left as it was", or written over the first with --overwrite always)."""
    src = tmp_path / "src"
    (src / "Docs").mkdir(parents=True)
    (src / "docs").mkdir()
    (src / "Facture.pdf").write_bytes(b"first")
    (src / "facture.pdf").write_bytes(b"second")
    (src / "Docs" / "a.txt").write_bytes(b"a")
    (src / "docs" / "b.txt").write_bytes(b"b")
    (src / "autre.txt").write_bytes(b"other")
    age_tree(src)
    repo.ok("backup", str(src))
    assert ignores_case(exfat)
    for overwrite in ("never", "always"):
        res = repo("restore", "latest", "--target", str(exfat / "r"), "--overwrite", overwrite)
        assert res.code == 1, res
        assert "2 files could not be restored" in res.out
        out = exfat / "r" / str(src).lstrip("/")
        assert sorted(os.listdir(out)) == ["Docs", "Facture.pdf", "autre.txt"]
        assert (out / "Facture.pdf").read_bytes() == b"first"
        assert os.listdir(out / "Docs") == ["a.txt"]
        for name, twin in (("facture.pdf", "Facture.pdf"), ("docs", "Docs")):
            assert f"{out / name}: not restored: {twin} takes its place on the target" in res.err
    # Where case counts (this machine's ext4), all of them are restored, and nothing is said.
    ok = repo.ok("restore", "latest", "--target", str(tmp_path / "ext4"))
    assert not ignores_case(tmp_path)
    assert tree_digest(tmp_path / "ext4" / str(src).lstrip("/")) == tree_digest(src)
    assert "takes its place" not in ok.err


def test_of_two_twins_the_one_written_first_stays_whichever_comes_first_in_the_folder(
        repo: Coffre, tmp_path: Path, exfat: Path) -> None:
    """A large file is handed to the threads at once, the small ones in batches: here the large
    scan.pdf is created before SCAN.pdf, which sorts before it. The one that finds the place
    taken is the one reported, and the other is whole (it was left as it was, or with
    --overwrite always a 24 MiB scan was replaced by 5 bytes)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "SCAN.pdf").write_bytes(b"small")
    (src / "scan.pdf").write_bytes(os.urandom(24 * 1024 * 1024))
    age_tree(src)
    repo.ok("backup", str(src))
    for overwrite in ("never", "always"):
        res = repo("restore", "latest", "--target", str(exfat / "r"), "--overwrite", overwrite)
        assert res.code == 1, res
        out = exfat / "r" / str(src).lstrip("/")
        [kept] = os.listdir(out)
        [lost] = {"SCAN.pdf", "scan.pdf"} - {kept}
        assert (out / kept).read_bytes() == (src / kept).read_bytes()
        assert f"{out / lost}: not restored: {kept} takes its place on the target" in res.err
        assert "1 file could not be restored" in res.out


def test_a_symlink_or_a_hard_link_whose_twin_took_its_place_is_not_restored(
        repo: Coffre, tmp_path: Path, posix_exfat: Path) -> None:
    """Where the target ignores case but has symlinks and hard links, the folder Docs is made
    first (the walk makes folders and symlinks as it meets them, hard links at the end), and
    its twins, the symlink docs and the hard link dOCS (to a.txt), find their place taken: they
    were counted as left as they were, exit status 0, and lost."""
    src = tmp_path / "src"
    (src / "Docs").mkdir(parents=True)
    (src / "Docs" / "lettre.txt").write_bytes(b"lettre")
    (src / "a.txt").write_bytes(b"a")
    os.link(src / "a.txt", src / "dOCS")
    os.symlink("Docs/lettre.txt", src / "docs")
    age_tree(src)
    repo.ok("backup", str(src))
    assert ignores_case(posix_exfat)
    for overwrite in ("never", "if-changed"):
        res = repo("restore", "latest", "--target", str(posix_exfat / overwrite), "--overwrite", overwrite)
        assert res.code == 1, res
        out = posix_exfat / overwrite / str(src).lstrip("/")
        for name in ("docs", "dOCS"):
            assert f"{out / name}: not restored: Docs takes its place on the target" in res.err
        assert sorted(os.listdir(out)) == ["Docs", "a.txt"]
        assert (out / "Docs" / "lettre.txt").read_bytes() == b"lettre"
        assert (out / "a.txt").read_bytes() == b"a"


def test_a_disk_mounted_inside_the_target_is_asked_whether_it_ignores_case(
        repo: Coffre, tmp_path: Path, exfat: Path) -> None:
    """A restore into a folder below which a USB disk (or a share) is mounted, as a full
    restore to / meets them: the target's root tells case apart, the disk does not. facture.pdf
    found its place taken on the disk and was counted as left as it was, exit status 0."""
    src = tmp_path / "src"
    (src / "usb").mkdir(parents=True)
    (src / "usb" / "Facture.pdf").write_bytes(b"first")
    (src / "usb" / "facture.pdf").write_bytes(b"second")
    (src / "local.txt").write_bytes(b"local")
    age_tree(src)
    repo.ok("backup", str(src))
    target = tmp_path / "target"
    inside = target / str(src).lstrip("/") / "usb"
    inside.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(exfat), str(inside)], check=True)
    try:
        assert not ignores_case(target) and ignores_case(inside)
        res = repo("restore", "latest", "--target", str(target))
        assert res.code == 1, res
        assert f"{inside / 'facture.pdf'}: not restored: Facture.pdf takes its place on the target" in res.err
        assert os.listdir(inside) == ["Facture.pdf"]
        assert (inside / "Facture.pdf").read_bytes() == b"first"
        assert (inside.parent / "local.txt").read_bytes() == b"local"
    finally:
        subprocess.run(["umount", str(inside)], check=True)


def test_holder_names_the_entry_listed_in_a_names_place(tmp_path: Path) -> None:
    (tmp_path / "Facture.pdf").write_bytes(b"x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert casefold.holder(fd, b"Facture.pdf") is None
        assert casefold.holder(fd, b"FACTURE.PDF") == "Facture.pdf"
        assert casefold.holder(fd, b"autre.pdf") == ""
    finally:
        os.close(fd)


def test_a_disk_that_fails_to_read_is_not_said_to_be_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unplugged disk answers ENOTCONN or ENODEV (nothing it held changed), a failing one EIO
    (what it held may be damaged): only the first is said to be whole."""
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    handle = Handle("index", NAME)
    backend.save(handle, b"first")
    hints = {}
    for code in (errno.ENOTCONN, errno.EIO):
        def fail(*_args: object, code: int = code) -> bytes:
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(os, "pread", fail)
        with pytest.raises(StorageError) as exc:
            backend.load(handle)
        hints[code] = exc.value.hint or ""
    assert "what was saved before stays whole" in hints[errno.ENOTCONN]
    assert "stays whole" not in hints[errno.EIO]
    assert "coffre check --read-data" in hints[errno.EIO]


def ignores_case(folder: Path) -> bool:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return casefold.ignores_case(fd)
    finally:
        os.close(fd)


def test_twins_are_all_the_names_of_the_same_letters() -> None:
    assert casefold.twins([b"Facture.pdf", b"autre", b"facture.PDF", b"FACTURE.pdf", b"\xc9t\xc3"]) == {
        b"Facture.pdf": [b"facture.PDF", b"FACTURE.pdf"], b"facture.PDF": [b"Facture.pdf", b"FACTURE.pdf"],
        b"FACTURE.pdf": [b"Facture.pdf", b"facture.PDF"]}
    accented = ["Étude".encode(), "étude".encode(), b"etude"]
    assert casefold.twins(accented) == {accented[0]: [accented[1]], accented[1]: [accented[0]]}


def test_a_usb_disk_pulled_out_during_a_backup(exfat: Path, pwfile: Path, tree: Path, tmp_path: Path) -> None:
    """The disk goes away while a backup writes to it (here its FUSE process is killed: every
    access then fails with ENOTCONN or ECONNABORTED, as an unplugged disk's with EIO). The backup fails and
    says what to check; once the disk is back, what was saved before is whole and the next
    backup goes through, the dead backup's lock notwithstanding."""
    usb = Coffre(exfat / "coffre", pwfile, tmp_path / "cache")
    usb.ok("init", "--pack-size", "1")
    usb.ok("backup", str(tree))
    before = {p for p in (exfat / "coffre" / "data").rglob("*") if p.is_file()}
    proc = subprocess.Popen(usb.argv("backup", "--stdin", "--stdin-filename", "export.bin"), env=usb.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    pulled = False
    try:
        for _ in range(48):  # MiB, up to twice what the disk holds after its first packs
            proc.stdin.write(os.urandom(1024 * 1024))
            proc.stdin.flush()
            if not pulled and {p for p in (exfat / "coffre" / "data").rglob("*") if p.is_file()} - before:
                # A first new pack is on the disk: pull the disk out.
                subprocess.run(["pkill", "-KILL", "-f", f"mount.exfat-fuse .* {exfat}$"], check=True)
                pulled = True
    except BrokenPipeError:  # the backup stopped reading: it failed
        pass
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=120)
    assert pulled
    assert proc.returncode == 1, (out, err)
    assert any(reason in err.decode() for reason in ("Transport endpoint is not connected",
                                                     "Software caused connection abort"))
    assert "check that the backup disk is still plugged in and mounted" in err.decode()
    assert "Traceback" not in err.decode()
    # Plugged in again.
    device = subprocess.run(["findmnt", "--noheadings", "--output", "SOURCE", str(exfat)], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["umount", "--lazy", str(exfat)], check=True)
    subprocess.run(["mount.exfat-fuse", device, str(exfat)], check=True, capture_output=True)
    assert "no errors were found" in usb.ok("check", "--read-data").out
    usb.ok("restore", "latest", "--target", str(tmp_path / "r"))
    assert tree_digest(tmp_path / "r" / str(tree).lstrip("/")) == tree_digest(tree)
    usb.ok("backup", str(tree))
    assert len(snapshot_ids(usb)) == 2
