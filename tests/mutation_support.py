"""Mutation testing (`./run mutation`, mutmut) through the real `coffre` command.

Most tests run `python -m coffre` in a child process. Under mutmut (MUTANT_UNDER_TEST is in
the environment), that child must import the same mutated copy of Coffre as the test
(`mutants/src`), so that the mutant under test is live in it; and during mutmut's "stats"
phase, the functions the child reached must be credited to the test that started it, or
mutmut would believe no test covers `ops/check.py`, `ops/prune.py`, `ops/restore.py`...
This module gives the child its environment and gathers what the children recorded; the
other half is `mutation_site/sitecustomize.py`, which the child imports at start-up.
Outside mutmut, it does nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

SITE = Path(__file__).resolve().with_name("mutation_site")
HITS = "COFFRE_MUTMUT_HITS"  # where children leave the names of the functions they reached

_hits_dir: Path | None = None


def _hits() -> Path:
    global _hits_dir
    if _hits_dir is None:
        _hits_dir = Path(tempfile.mkdtemp(prefix="coffre-mutmut-hits-"))
        # Some tests run `coffre` as another user (nobody): what they reach counts too.
        _hits_dir.chmod(0o1777)
        atexit.register(shutil.rmtree, _hits_dir, ignore_errors=True)
    return _hits_dir


def child_env() -> dict[str, str]:
    """What to add to the environment of a child `coffre` process: nothing outside mutmut."""
    mutant = os.environ.get("MUTANT_UNDER_TEST")
    if mutant is None:
        return {}
    import coffre

    # The mutated copy the test imported (mutmut put mutants/src first on sys.path).
    path = [str(Path(coffre.__file__).resolve().parents[1]), str(SITE)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    # The mutated modules are ten times the size of the originals: compiling them again in
    # every child (PYTHONDONTWRITEBYTECODE) would cost seconds per command.
    env = {"PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": ""}
    if mutant == "stats":
        env[HITS] = str(_hits())
    return env


def collect_hits() -> None:
    """Credit the running test with what its finished children reached (stats phase only)."""
    if _hits_dir is None:
        return
    from mutmut.state import state

    for dump in sorted(_hits_dir.glob("*.json")):
        hits = json.loads(dump.read_text())
        state()._stats.update(hits["stats"])
        for name, callers in hits["dependencies"].items():
            state().function_dependencies[name].update(callers)
        dump.unlink()
