"""restore --sync [--delete]: a warm standby kept current by restoring each new snapshot over
the previous restore, writing only what changed (docs/restore.md)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffre.core.errors import EXIT_USAGE, UsageError
from coffre.ops.inspect import iter_tree
from coffre.ops.sync import check_target
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, Mount, tree_digest

T0 = 1_750_000_000_000_000_000  # the sources' modification times (ns): no clock, no sleep
UNCHANGED = ["docs/lettre-0.txt", "docs/lettre-1.txt", "docs/lettre-2.txt", "scans/2026/scan-0.jpg",
             "scans/2026/scan-1.jpg"]
CHANGED = ["docs/lettre-3.txt", "base.db"]
NEW = ["docs/nouvelle.txt"]
REMOVED = ["docs/lettre-4.txt", "old/a.txt", "old/sub/b.txt", "old/sub", "old"]


def write(path: Path, data: bytes, t: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(t, t))


@dataclass
class Standby:
    src: Path
    target: Path
    ref: str  # the second snapshot's src, as SNAPSHOT:PATH

    def ids(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """Inode and ctime of each name in the target."""
        return {n: ((st := os.lstat(self.target / n)).st_ino, st.st_ctime_ns) for n in names}


@pytest.fixture
def standby(repo: Coffre, tmp_path: Path) -> Standby:
    """A first snapshot restored into the standby's folder, then a second one with changed, new
    and removed files (not restored yet)."""
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"docs/lettre-{i}.txt", f"Bonjour {i}\n".encode() * (i + 1))
    for i in range(2):
        write(src / f"scans/2026/scan-{i}.jpg", os.urandom(30_000 + i))
    write(src / "base.db", os.urandom(100_000))
    write(src / "old/a.txt", b"a\n")
    write(src / "old/sub/b.txt", b"b\n")
    repo.ok("backup", str(src))
    target = tmp_path / "standby"
    repo.ok("restore", f"latest:{src}", "--target", str(target))
    write(src / "docs/lettre-3.txt", b"une autre lettre, plus longue\n", T0 + 10**9)
    write(src / "base.db", os.urandom(120_000), T0 + 10**9)
    write(src / "docs/nouvelle.txt", b"nouvelle\n")
    (src / "docs/lettre-4.txt").unlink()
    for p in ("old/sub/b.txt", "old/a.txt"):
        (src / p).unlink()
    for p in ("old/sub", "old"):
        (src / p).rmdir()
    repo.ok("backup", str(src))
    return Standby(src, target, f"latest:{src}")


def test_sync_writes_only_what_changed_and_deletes_nothing_without_delete(
    repo: Coffre, standby: Standby
) -> None:
    before = standby.ids(UNCHANGED + CHANGED)
    # Same size and time as the snapshot's, other bytes: taken as unchanged, so never read.
    scan = standby.target / "scans/2026/scan-0.jpg"
    data, st = scan.read_bytes(), scan.stat()
    scan.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(scan, ns=(st.st_atime_ns, st.st_mtime_ns))
    before[UNCHANGED[3]] = standby.ids([UNCHANGED[3]])[UNCHANGED[3]]

    out = repo.ok("restore", standby.ref, "--target", str(standby.target), "--sync", "--json").json()

    assert (out["files"], out["replaced"], out["unchanged"], out["deleted"]) == (3, 2, 5, 0), out
    assert (out["overwrite"], out["errors"], out["files_failed"]) == ("if-changed", [], 0), out
    after = standby.ids(UNCHANGED + CHANGED)
    for name in UNCHANGED:  # neither rewritten nor even touched
        assert after[name] == before[name], name
    for name in CHANGED:  # a new file renamed over the old one
        assert after[name][0] != before[name][0], name
        assert (standby.target / name).read_bytes() == (standby.src / name).read_bytes()
    assert scan.read_bytes()[0] == data[0] ^ 1
    assert (standby.target / NEW[0]).read_bytes() == b"nouvelle\n"
    for name in REMOVED:
        assert (standby.target / name).exists(), name
    assert not [p for p in standby.target.rglob(".coffre-restore-*")]


def test_sync_delete_removes_exactly_what_the_snapshot_no_longer_holds(
    repo: Coffre, standby: Standby
) -> None:
    write(standby.target / "docs/brouillon.txt", b"left by someone\n")  # never in any snapshot
    before = standby.ids(UNCHANGED)

    res = repo.ok("restore", standby.ref, "--target", str(standby.target), "--sync", "--delete")

    assert tree_digest(standby.target) == tree_digest(standby.src)
    assert standby.ids(UNCHANGED) == before
    assert "6 files and folders not in the snapshot deleted" in res.out, res
    assert "5 files already as in the snapshot, left as they were" in res.out
    assert "2 existing files replaced" in res.out
    again = repo.ok("restore", standby.ref, "--target", str(standby.target), "--sync", "--delete",
                    "--json").json()
    assert (again["files"], again["unchanged"], again["deleted"]) == (0, 8, 0), again


def test_json_counts_of_a_sync_with_delete(repo: Coffre, standby: Standby) -> None:
    out = repo.ok("restore", standby.ref, "--target", str(standby.target), "--sync", "--delete",
                  "--json").json()

    assert {k: out[k] for k in ("files", "replaced", "unchanged", "deleted", "skipped", "files_failed")} == {
        "files": 3, "replaced": 2, "unchanged": 5, "deleted": len(REMOVED), "skipped": 0, "files_failed": 0}
    assert out["errors"] == []


def test_unchanged_entries_get_the_snapshots_metadata_again(repo: Coffre, standby: Standby) -> None:
    moded = standby.target / "docs/lettre-0.txt"
    moded.chmod(0o600)
    timed = standby.target / "docs/lettre-1.txt"
    os.utime(timed, ns=(T0 + 5 * 10**9, T0 + 5 * 10**9))  # same bytes: compared, found unchanged
    inodes = standby.ids(["docs/lettre-0.txt", "docs/lettre-1.txt"])

    out = repo.ok("restore", standby.ref, "--target", str(standby.target), "--sync", "--json").json()

    assert out["unchanged"] == 5, out
    wanted = (standby.src / "docs/lettre-0.txt").stat().st_mode
    assert stat.S_IMODE(moded.stat().st_mode) == stat.S_IMODE(wanted) != 0o600
    assert timed.stat().st_mtime_ns == T0
    after = standby.ids(["docs/lettre-0.txt", "docs/lettre-1.txt"])
    assert [after[n][0] for n in after] == [inodes[n][0] for n in inodes]  # set again, not rewritten


def test_excluded_and_unselected_paths_survive_delete(repo: Coffre, standby: Standby) -> None:
    t = standby.target
    write(t / "docs/notes.tmp", b"excluded\n")
    write(t / "cache/index.bin", b"excluded folder\n")
    write(t / "stale/keep.tmp", b"excluded, in a folder the snapshot does not hold\n")
    write(t / "stale/gone.txt", b"selected\n")

    out = repo.ok("restore", standby.ref, "--target", str(t), "--sync", "--delete",
                  "--exclude", "*.tmp", "--exclude", "cache", "--json").json()

    assert (t / "docs/notes.tmp").read_bytes() == b"excluded\n"
    assert (t / "cache/index.bin").read_bytes() == b"excluded folder\n"
    assert sorted(os.listdir(t / "stale")) == ["keep.tmp"]
    assert not (t / "old").exists() and not (t / "docs/lettre-4.txt").exists()
    assert out["deleted"] == len(REMOVED) + 1, out

    # --include: only what it covers may go
    write(t / "docs/extra.txt", b"in docs: selected\n")
    write(t / "scans/extra.jpg", b"outside docs\n")
    out = repo.ok("restore", standby.ref, "--target", str(t), "--sync", "--delete", "--include", "docs",
                  "--json").json()
    assert not (t / "docs/extra.txt").exists()
    assert (t / "scans/extra.jpg").read_bytes() == b"outside docs\n"
    assert not (t / "docs/notes.tmp").exists()  # not excluded this time
    assert out["deleted"] == 2, out
    assert (t / "stale/keep.tmp").exists() and (t / "cache/index.bin").exists()


def test_snapshot_path_of_one_file_deletes_nothing_beside_it(repo: Coffre, standby: Standby) -> None:
    write(standby.target / "docs/brouillon.txt", b"not covered\n")

    out = repo.ok("restore", f"{standby.ref}/docs/lettre-3.txt", "--target", str(standby.target / "docs"),
                  "--sync", "--delete", "--json").json()

    assert (out["files"], out["deleted"]) == (1, 0), out
    assert (standby.target / "docs/brouillon.txt").exists()
    assert (standby.target / "docs/lettre-4.txt").exists()


def test_delete_never_follows_a_symlink_out_of_the_target(
    repo: Coffre, standby: Standby, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "precious.txt", b"outside the target\n")
    write(outside / "sub/deep.txt", b"deep\n")
    t = standby.target
    (t / "escape").symlink_to(outside)  # a folder link the snapshot does not hold
    (t / "docs/file-link.txt").symlink_to(outside / "precious.txt")
    (t / "stale").mkdir()
    (t / "stale/inner").symlink_to(outside / "sub")
    os.rename(t / "scans", tmp_path / "scans-moved")
    (t / "scans").symlink_to(outside)  # where the snapshot has a folder

    out = repo.ok("restore", standby.ref, "--target", str(t), "--sync", "--delete", "--json").json()

    assert (outside / "precious.txt").read_bytes() == b"outside the target\n"
    assert (outside / "sub/deep.txt").read_bytes() == b"deep\n"
    assert sorted(os.listdir(outside)) == ["precious.txt", "sub"]
    assert not (t / "escape").exists() and not (t / "escape").is_symlink()
    assert not (t / "docs/file-link.txt").is_symlink() and not (t / "stale").exists()
    assert (t / "scans").is_dir() and not (t / "scans").is_symlink()
    assert tree_digest(t) == tree_digest(standby.src)
    assert (out["deleted"], out["errors"]) == (len(REMOVED) + 4, []), out


def test_type_changes_file_folder_and_symlink(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "becomes-folder", b"a file first\n")
    write(src / "becomes-file/inside.txt", b"in a folder first\n")
    (src / "becomes-link").write_bytes(b"a file, then a link\n")
    (src / "link-becomes-file").symlink_to("becomes-folder")
    write(src / "kept.txt", b"kept\n")
    repo.ok("backup", str(src))
    target = tmp_path / "standby"
    repo.ok("restore", f"latest:{src}", "--target", str(target))
    (src / "becomes-folder").unlink()
    write(src / "becomes-folder/now.txt", b"now a folder\n")
    (src / "becomes-file/inside.txt").unlink()
    (src / "becomes-file").rmdir()
    write(src / "becomes-file", b"now a file\n")
    (src / "becomes-link").unlink()
    (src / "becomes-link").symlink_to("kept.txt")
    (src / "link-becomes-file").unlink()
    write(src / "link-becomes-file", b"now a file too\n")
    write(src / "kept.txt", b"kept, changed\n", T0 + 10**9)
    repo.ok("backup", str(src))

    res = repo("restore", f"latest:{src}", "--target", str(target), "--sync")

    assert res.code == 1, res
    assert (f"{target}/becomes-file exists as a folder; not replaced (with --sync, --delete removes a folder "
            "standing where the snapshot has a file)") in res.err
    assert (target / "becomes-file/inside.txt").read_bytes() == b"in a folder first\n"
    # the rest goes on
    assert (target / "becomes-folder/now.txt").read_bytes() == b"now a folder\n"
    assert os.readlink(target / "becomes-link") == "kept.txt"
    assert (target / "link-becomes-file").read_bytes() == b"now a file too\n"
    assert (target / "kept.txt").read_bytes() == b"kept, changed\n"

    out = repo.ok("restore", f"latest:{src}", "--target", str(target), "--sync", "--delete", "--json").json()
    assert (target / "becomes-file").read_bytes() == b"now a file\n"
    assert tree_digest(target) == tree_digest(src)
    assert (out["deleted"], out["files"], out["errors"]) == (2, 1, []), out


def test_refusals_say_why_and_change_nothing(repo: Coffre, standby: Standby, tmp_path: Path) -> None:
    t = str(standby.target)
    before = tree_digest(standby.target)

    res = repo("restore", standby.ref, "--target", t, "--delete")
    assert res.code == EXIT_USAGE and "--delete goes only with --sync" in res.err, res
    for value in ("never", "always"):
        res = repo("restore", standby.ref, "--target", t, "--sync", "--overwrite", value)
        assert res.code == EXIT_USAGE, res
        assert f"--sync cannot go with --overwrite {value}" in res.err and "--sync implies" in res.err

    res = repo("restore", standby.ref, "--target", str(tmp_path), "--sync", "--delete")  # holds repo.repo
    assert res.code == EXIT_USAGE, res
    assert f"the repository being restored from, {repo.repo}, is inside it" in res.err

    home = tmp_path / "users" / "pharmacien"
    write(home / ".bashrc", b"mine\n")
    for where, why in ((home, f"it is the home folder {home}"),
                       (home.parent, f"it holds the home folder {home}")):
        res = repo("restore", standby.ref, "--target", str(where), "--sync", "--delete",
                   env={"HOME": str(home)})
        assert res.code == EXIT_USAGE and why in res.err, res
    assert (home / ".bashrc").read_bytes() == b"mine\n"

    other = tmp_path / "other-repo"
    repo.ok("init", "--repo", str(other))
    inside = sorted(str(p.relative_to(other)) for p in other.rglob("*"))
    for where, why in ((other, "it holds a backup repository"),
                       (other / "data", f"it is inside the backup repository {other}")):
        res = repo("restore", standby.ref, "--target", str(where), "--sync", "--delete")
        assert res.code == EXIT_USAGE and why in res.err, res
    assert sorted(str(p.relative_to(other)) for p in other.rglob("*")) == inside
    assert tree_digest(standby.target) == before


@pytest.mark.parametrize("where", ["/", "/usr", "/etc", "/var"])
def test_the_file_systems_root_and_system_folders_are_refused(where: str) -> None:
    # Checked by calling the check itself: a regression must not get to empty the machine.
    with pytest.raises(UsageError, match="refused: it is"):
        check_target(where, None)


def test_delete_stops_at_mount_points_and_repositories(
    repo: Coffre, standby: Standby, mount: Mount, tmp_path: Path
) -> None:
    t = standby.target
    (t / "stale").mkdir()
    point = str((t / "stale" / "disk").relative_to(tmp_path))
    mounted = mount(point, "-t", "tmpfs", "-o", "size=1m", "tmpfs")
    write(mounted / "on-another-disk.txt", b"another file system\n")
    repo.ok("init", "--repo", str(t / "old-repo"))
    listing = sorted(os.listdir(t / "old-repo"))

    res = repo("restore", standby.ref, "--target", str(t), "--sync", "--delete", "--json")

    assert res.code == 1, res
    out = res.json()
    assert f"{t}/stale/disk: another file system is mounted here; not deleted" in out["errors"], out
    assert f"{t}/old-repo: holds a backup repository; not deleted" in out["errors"], out
    assert (mounted / "on-another-disk.txt").read_bytes() == b"another file system\n"
    assert sorted(os.listdir(t / "old-repo")) == listing
    assert not (t / "old").exists() and (t / "stale/disk").is_dir()


def test_a_disks_lost_and_found_is_left(repo: Coffre, standby: Standby, mount: Mount) -> None:
    disk = mount("standby-disk", "-t", "tmpfs", "-o", "size=4m", "tmpfs")  # a disk of its own
    (disk / "lost+found").mkdir()
    (disk / "docs" / "lost+found").mkdir(parents=True)  # an ordinary folder, not the disk's

    out = repo.ok("restore", standby.ref, "--target", str(disk), "--sync", "--delete", "--json").json()

    assert (disk / "lost+found").is_dir() and not (disk / "docs" / "lost+found").exists()
    assert out["deleted"] == 1, out


def test_a_failed_replacement_leaves_the_old_file_whole(repo: Coffre, standby: Standby) -> None:
    old = {name: (standby.target / name).read_bytes() for name in CHANGED}
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    snap = max(stored.snapshots(), key=lambda s: s.time_ns)
    node = next(n for p, n in iter_tree(stored, snap.tree) if p.endswith("/base.db"))
    loc = stored.index.lookup(node.content[-1])
    assert loc is not None
    pack = next((Path(repo.repo) / "data").glob(f"*/{loc.pack.hex()}"))
    data = bytearray(pack.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40  # the new base.db's last piece
    pack.write_bytes(bytes(data))

    res = repo("restore", standby.ref, "--target", str(standby.target), "--sync", "--delete", "--json")

    assert res.code == 1, res
    for name in CHANGED:  # the old version or the new one, never a mix
        assert (standby.target / name).read_bytes() in (old[name], (standby.src / name).read_bytes()), name
    assert (standby.target / "base.db").read_bytes() == old["base.db"]
    assert not [p for p in standby.target.rglob(".coffre-restore-*")]
    assert res.json()["deleted"] == len(REMOVED)  # the folder listings were read: the rest goes on
