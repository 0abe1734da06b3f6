"""Coffre's own child processes never import a module from the folder they were started in:
`python -m` looks there first, and the agent runs as root, with the repository's passwords
(`python -P`). The backup's children are tested in test_smallreads.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from coffre.agent.steps import Priority, run_step


def test_an_agent_step_does_not_import_a_module_planted_where_the_agent_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "ran"
    (planted / "argparse.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(planted)

    outcome = run_step(["snapshots", "--repo", str(tmp_path / "nowhere")], {}, Priority(ionice="none"), "en",
                       threading.Event())

    assert outcome is not None
    assert not marker.exists()
