"""Imported at start-up by every Python process a test starts under mutmut
(tests/mutation_support.py puts this folder on its PYTHONPATH). In mutmut's "stats" phase, it
hands the names of the mutable functions this process reached to the test that started it,
at exit. Under a mutant, or outside mutmut, it does nothing: the mutated code on PYTHONPATH
reads MUTANT_UNDER_TEST by itself."""

import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats" and os.environ.get("COFFRE_MUTMUT_HITS"):
    import atexit
    import json
    from pathlib import Path

    from mutmut.configuration import config
    from mutmut.state import state
    from mutmut.utils.file_utils import change_cwd

    # mutmut reads its settings from pyproject.toml in the current directory: read them from
    # the project's (the folder holding tests/), not from wherever this process runs.
    with change_cwd(Path(__file__).resolve().parents[2]):
        config()

    def _dump() -> None:
        folder = Path(os.environ["COFFRE_MUTMUT_HITS"])
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        hits = {"stats": sorted(state()._stats),
                "dependencies": {k: sorted(v) for k, v in state().function_dependencies.items()}}
        (folder / f"{name}.tmp").write_text(json.dumps(hits))
        (folder / f"{name}.tmp").rename(folder / f"{name}.json")  # whole, or not at all

    atexit.register(_dump)
