"""Coffre starts, and its pure parts work, where the POSIX-only modules are missing (Windows):
every module is imported, `coffre --help` runs, options are parsed, tree nodes are made and
encoded, in a child Python where `pwd`, `grp`, `fcntl`, `termios`, `resource` cannot be
imported (a meta path finder refusing them, installed before anything of Coffre is loaded).
Only coffre/core/posix.py may need them, and it degrades as its docstring says."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HIDDEN = ("pwd", "grp", "fcntl", "termios", "resource")

# Installed first in the child: the modules are gone from sys.modules and cannot be imported.
PRELUDE = textwrap.dedent(f"""
    import importlib.abc, sys
    HIDDEN = {HIDDEN!r}

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ImportError(f"No module named {{name!r}} (hidden, as on Windows)", name=name)
            return None

    for _name in HIDDEN:
        sys.modules.pop(_name, None)
    sys.meta_path.insert(0, Hide())
    for _name in HIDDEN:
        try:
            __import__(_name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{{_name}} could still be imported")
""")

# Attributes of `os` that Windows' Python does not have, among those Coffre's modules read
# when they are imported (not those only called at run time: see docs/windows.md).
WINDOWS_OS_LACKS = ("O_DIRECTORY", "O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK", "O_NOATIME", "geteuid",
                    "getuid", "getgid", "pread", "statvfs", "listxattr", "getxattr", "setxattr",
                    "lchown", "chown", "posix_fadvise", "sched_getaffinity")


def run_child(body: str, tmp_path: Path, windows_os: bool = False) -> subprocess.CompletedProcess[str]:
    script = PRELUDE
    if windows_os:
        script += "import os\n" + "".join(f"os.__dict__.pop({a!r}, None)\n" for a in WINDOWS_OS_LACKS)
    script += textwrap.dedent(body)
    path = tmp_path / "child.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path)


IMPORT_ALL = """
    import importlib, pkgutil, coffre
    names = sorted(m.name for m in pkgutil.walk_packages(coffre.__path__, "coffre."))
    names = [n for n in names if n != "coffre.__main__"]  # runs the command line
    failed = {}
    for n in names:
        try:
            importlib.import_module(n)
        except Exception as exc:
            failed[n] = f"{type(exc).__name__}: {exc}"
    import json
    print(json.dumps({"imported": len(names), "failed": failed}))
"""


def test_every_module_imports_without_the_posix_only_modules(tmp_path: Path) -> None:
    done = run_child(IMPORT_ALL, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["failed"] == {}
    assert report["imported"] > 80  # every module, not a few


def test_every_module_imports_with_the_os_of_windows(tmp_path: Path) -> None:
    """Module-level uses of os attributes Windows lacks would stop `coffre` from starting."""
    done = run_child(IMPORT_ALL, tmp_path, windows_os=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["failed"] == {}


def test_help_runs_without_the_posix_only_modules(tmp_path: Path) -> None:
    done = run_child("""
        import sys
        sys.argv = ["coffre", "--help"]
        from coffre.cli.entry import main
        raise SystemExit(main())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "backup" in done.stdout and "restore" in done.stdout
    done = run_child("""
        import sys
        sys.argv = ["coffre", "backup", "--help"]
        from coffre.cli.entry import main
        raise SystemExit(main())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--exclude" in done.stdout


def test_pure_operations_work_and_owner_names_degrade_honestly(tmp_path: Path) -> None:
    from coffre.core import posix

    (tmp_path / "ordonnance.txt").write_text("Doliprane 1000\n")
    done = run_child("""
        import json, os
        from coffre.cli.main import build_parser
        from coffre.core import posix
        from coffre.format.tree import decode_tree, encode_tree
        from coffre.sources.files import Excluder, node_from_stat
        from coffre.sources.patterns import PathMatcher

        args = build_parser().parse_args(["backup", "--exclude", "*.tmp", "/srv/officine"])
        st = os.lstat("ordonnance.txt")
        node = node_from_stat(b"ordonnance.txt", b"ordonnance.txt", st)
        back = decode_tree(encode_tree([node]))[0]
        try:
            posix.lock_exclusive(0, "mark.lock")
            locking = "locked"
        except posix.LockingUnavailable as exc:
            locking = exc.message
        print(json.dumps({
            "exclude": args.exclude,
            "excluded": Excluder(["*.tmp"]).excluded(b"/srv/officine/a.tmp"),
            "matches": PathMatcher(["/srv/*.tmp"]).matches(b"/srv/a.tmp"),
            "not_deeper": PathMatcher(["/srv/*.tmp"]).matches(b"/srv/scans/keep.tmp"),
            "user": node.user, "group": node.group, "uid": node.uid, "same": back == node,
            "size": back.size, "owner_of_root": posix.user_name(0), "uid_of_root": posix.uid_of("root"),
            "locking": locking, "accounts": posix.ACCOUNTS, "open_files": posix.open_files_limit(100_000),
        }))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["exclude"] == ["*.tmp"]
    assert out["excluded"] is True and out["matches"] is True and out["not_deeper"] is False
    assert out["same"] is True and out["size"] == len("Doliprane 1000\n")
    # No account database: no names, the numeric ids are kept; nothing pretends.
    assert out["user"] == "" and out["group"] == ""
    assert out["uid"] == (tmp_path / "ordonnance.txt").stat().st_uid
    assert out["owner_of_root"] == "" and out["uid_of_root"] is None and out["accounts"] is False
    # No file lock: refused, never skipped.
    assert "cannot lock mark.lock" in out["locking"]
    # No limit to read or raise: the C runtime's usual one is assumed, not what was asked.
    assert out["open_files"] == posix.DEFAULT_OPEN_FILES


def test_the_mark_is_not_updated_without_a_lock(tmp_path: Path) -> None:
    """Where files cannot be locked, the mark (what this machine saw of a repository) is left
    alone with a reason, instead of being rewritten unlocked beside another Coffre."""
    done = run_child("""
        import json
        from pathlib import Path
        from coffre.repository.mark import MarkUnavailable, updating
        try:
            with updating(b"\\x01" * 32, 0, root=Path("state")) as mark:
                pass
            print(json.dumps("updated"))
        except MarkUnavailable as exc:
            print(json.dumps(exc.message))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    assert said.startswith("cannot lock ") and "no file locks" in said
    assert not list((tmp_path / "state").rglob("mark.json"))


def test_the_posix_only_modules_are_imported_in_one_place() -> None:
    """Only coffre/core/posix.py imports them; every other module asks it."""
    import re

    root = Path(__file__).resolve().parent.parent / "src" / "coffre"
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(HIDDEN)})\b", re.MULTILINE)
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text()))
    assert users == ["core/posix.py"]


def test_the_real_modules_are_used_where_they_exist() -> None:
    import os

    from coffre.core import posix

    assert posix.ACCOUNTS and posix.LOCKING
    assert posix.user_name(0) == "root" and posix.uid_of("root") == 0
    assert posix.pid_alive(os.getpid())
