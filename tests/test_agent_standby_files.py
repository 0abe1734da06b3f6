"""The standby machine keeps the pharmacy's files current (`[continuity.NAME] files_target`):
the agent's continuity thread restores each newer snapshot of a real local repository into a
real folder as `coffre restore --sync --delete` does, writing only what changed; its status
line, the `files_behind` problem when a sync fails for longer than `max_lag`, its alerts, and
the configuration's checks. An injected clock moves time; nothing sleeps."""

from __future__ import annotations

import gettext
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from coffre.agent import continuity as loop
from coffre.agent.alerts.decide import Notice
from coffre.agent.alerts.texts import render
from coffre.agent.config import ConfigError, load_config
from coffre.agent.health import continuity_problems, light
from coffre.agent.model import Config
from coffre.agent.overview import status_report
from coffre.agent.plan import describe
from coffre.agent.scheduler import open_store, status_path
from coffre.agent.status import StatusStore
from coffre.cli import cmd_status
from coffre.core import i18n

from conftest import Coffre, agent_toml, tree_digest

T0 = 1_750_000_000_000_000_000  # the sources' modification times (ns)
KEPT = ["docs/lettre-0.txt", "docs/lettre-1.txt", "scans/scan-0.jpg"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    i18n.set_language("en")
    yield
    i18n.set_language("en")


def write(path: Path, data: bytes, t: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(t, t))


def write_config(tmp_path: Path, pwfile: Path, entry: str) -> Config:
    return load_config(agent_toml(tmp_path, tmp_path / "repo", pwfile, entry))


@dataclass
class Site:
    repo: Coffre
    src: Path
    target: Path
    config: Config

    @property
    def mirror(self) -> Path:
        """Where the snapshot puts the source folder inside the target (its whole path)."""
        return self.target / str(self.src).lstrip("/")

    def entry(self, clock: Clock, lines: list[str]) -> loop.Entry:
        c = self.config.continuity["secours"]
        return loop.Entry(c, self.config.repositories[c.repository], open_store(self.config), lines.append,
                          clock)

    def snapshots(self) -> list[str]:
        return [s["id"] for s in self.repo.ok("snapshots", "--json").json()]

    def second_backup(self) -> None:
        """A file changed, one added, one removed, then a backup."""
        write(self.src / "docs/lettre-2.txt", b"une lettre plus longue qu'avant\n", T0 + 10**9)
        write(self.src / "docs/nouvelle.txt", b"nouvelle\n")
        (self.src / "docs/lettre-3.txt").unlink()
        self.repo.ok("backup", str(self.src))


@pytest.fixture
def site(repo: Coffre, tmp_path: Path, pwfile: Path) -> Site:
    """A folder backed up once into a local repository, and a standby machine's agent keeping
    it current in its own folder."""
    src = tmp_path / "officine"
    for i in range(4):
        write(src / f"docs/lettre-{i}.txt", f"Bonjour {i}\n".encode() * (i + 1))
    write(src / "scans/scan-0.jpg", os.urandom(20_000))
    repo.ok("backup", str(src))
    target = tmp_path / "secours"
    config = write_config(tmp_path, pwfile, f"""
[continuity.secours]
repository = "nas"
files_target = "{target}"
files_paths = ["{src}"]
""")
    return Site(repo, src, target, config)


def shown(config: Config, now: float) -> tuple[str, list[dict[str, object]], int]:
    with StatusStore(status_path(config)) as store:
        report = status_report(config, store, now)
    doc = cmd_status.report_json(report)["continuity"]
    return cmd_status.render(report), doc, cmd_status.exit_code(report)


def problems(config: Config, now: float) -> list[str]:
    with StatusStore(status_path(config)) as store:
        return [p.kind for p in continuity_problems(config, store.continuity(), now)]


def inodes(root: Path, names: list[str]) -> dict[str, tuple[int, int]]:
    return {n: ((st := os.lstat(root / n)).st_ino, st.st_ctime_ns) for n in names}


# -- applying the snapshots ----------------------------------------------------------------------


def test_each_newer_snapshot_is_synced_writing_only_what_changed_and_deleting_what_went(site: Site) -> None:
    config = site.config
    assert config.continuity["secours"].files_every == 300.0 and config.continuity["secours"].files_delete
    first = site.snapshots()[-1]
    clock, lines = Clock(time.time()), []
    entry = site.entry(clock, lines)
    st = entry.pass_once().files
    assert st is not None and st.applied == first and st.error is None and st.pending_since is None
    assert (st.written, st.deleted, st.failed) == (5, 0, 0)
    assert tree_digest(site.mirror) == tree_digest(site.src)
    assert any("snapshot " + first[:8] + " applied" in line for line in lines), lines
    # Recorded in the status store: a restarted agent knows what it applied.
    with StatusStore(status_path(config)) as store:
        assert store.continuity()["secours"].files.applied == first  # type: ignore[union-attr]

    site.second_backup()
    second = site.snapshots()[-1]
    before = inodes(site.mirror, KEPT)
    clock.now += 60  # within files_every: the repository is not looked at again
    entry = site.entry(clock, lines)  # a restarted agent: it looks at once, from what it recorded
    entry._files_at = clock.now  # ... as if it had just looked
    assert entry.pass_once().files.applied == first  # type: ignore[union-attr]
    clock.now += 300
    st = entry.pass_once().files
    assert st is not None and st.applied == second and st.newest == second and st.error is None
    assert (st.written, st.unchanged, st.deleted, st.failed) == (2, 3, 1, 0)
    assert tree_digest(site.mirror) == tree_digest(site.src)
    assert not (site.mirror / "docs/lettre-3.txt").exists()
    assert inodes(site.mirror, KEPT) == before  # the unchanged files were neither rewritten nor touched
    clock.now += 300  # nothing newer: nothing is written again
    st = entry.pass_once().files
    assert st is not None and (st.applied, st.written, st.deleted) == (second, 2, 1)


def test_a_restarted_agent_does_not_sync_again_what_it_applied(site: Site) -> None:
    clock = Clock(time.time())
    site.entry(clock, []).pass_once()
    marker = site.mirror / "docs/lettre-0.txt"
    ino = os.lstat(marker).st_ino
    os.utime(marker, ns=(T0 + 5, T0 + 5))  # a sync would set the snapshot's time again
    clock.now += 10
    st = site.entry(clock, []).pass_once().files
    assert st is not None and st.written == 5  # the counts of the first sync, not of a new one
    assert os.lstat(marker).st_mtime_ns == T0 + 5 and os.lstat(marker).st_ino == ino


def test_the_status_shows_the_snapshot_applied(site: Site) -> None:
    config = site.config
    text, doc, code = shown(config, time.time())
    assert "to check  Standby files secours: not started yet (is the agent running?)" in text and code == 1
    clock = Clock(time.time())
    site.entry(clock, []).pass_once()
    with StatusStore(status_path(config)) as store:
        applied_ns = store.continuity()["secours"].files.applied_ns  # type: ignore[union-attr]
    now = applied_ns / 1e9 + 180
    when = datetime.fromtimestamp(applied_ns / 1e9, ZoneInfo(config.agent.timezone)).strftime("%m-%d %H:%M")
    text, doc, code = shown(config, now)
    assert f"OK        Standby files secours: snapshot of {when} applied (3 min 00 s ago)" in text, text
    assert code == 0
    files = doc[0]
    assert files["role"] == "files" and files["light"] == "ok"
    assert files["applied"] == site.snapshots()[-1] and files["behind_seconds"] == pytest.approx(180)
    assert (files["written"], files["deleted"], files["files_failed"], files["errors"]) == (5, 0, 0, [])


FRAGMENT = Path("/work/fr/files-standby.po")  # until the integrator merges it into the catalogue


@pytest.fixture
def french(tmp_path: Path) -> Iterator[None]:
    i18n.set_language("fr")
    if FRAGMENT.exists():
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        with FRAGMENT.open("rb") as f:
            catalog = read_po(f)
        mo = tmp_path / "fragment.mo"
        with mo.open("wb") as f:
            write_mo(f, catalog)
        with mo.open("rb") as f:
            layered = gettext.GNUTranslations(f)
        layered.add_fallback(i18n._translation)
        i18n._translation = layered
    yield
    i18n.set_language("en")


def test_the_status_line_in_french(site: Site, french: None) -> None:
    site.entry(Clock(time.time()), []).pass_once()
    with StatusStore(status_path(site.config)) as store:
        applied_ns = store.continuity()["secours"].files.applied_ns  # type: ignore[union-attr]
    moment = datetime.fromtimestamp(applied_ns / 1e9, ZoneInfo(site.config.agent.timezone))
    text = shown(site.config, applied_ns / 1e9 + 180)[0]
    expected = (f"Fichiers de secours secours : instantané du {moment:%d/%m %H:%M} appliqué "
                "(il y a 3 min 00 s)")
    assert expected in text, text


# -- a sync that fails -----------------------------------------------------------------------------


def test_a_failing_sync_is_files_behind_after_max_lag_and_recovers(
        repo: Coffre, tmp_path: Path, pwfile: Path) -> None:
    src = tmp_path / "officine"
    write(src / "a.txt", b"a\n")
    repo.ok("backup", str(src))
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file where the standby's folder should be made\n")  # root writes anywhere else
    config = write_config(tmp_path, pwfile, f"""
[continuity.secours]
repository = "nas"
files_target = "{blocker / 'secours'}"
max_lag = "10min"
""")
    c = config.continuity["secours"]
    clock, lines = Clock(time.time()), []
    entry = loop.Entry(c, config.repositories["nas"], open_store(config), lines.append, clock)
    st = entry.pass_once().files
    assert st is not None and st.applied == "" and st.error and "cannot create" in st.error
    assert st.pending_since == clock.now and st.newest
    assert sum("standby files secours:" in line for line in lines) == 1
    start = clock.now
    for minutes in (5, 9):  # failing, but not for max_lag yet
        clock.now = start + minutes * 60 + 1
        entry.pass_once()
        assert problems(config, clock.now) == []
    assert sum("standby files secours:" in line for line in lines) == 1  # said once, not at each try
    clock.now = start + 601
    entry.pass_once()
    assert problems(config, clock.now) == ["files_behind"]
    text, doc, code = shown(config, clock.now)
    assert "to check  Standby files secours: no snapshot applied yet" in text, text
    why = "    → the files of " + str(blocker / "secours") + " are not being kept current: cannot create"
    assert why in text
    assert code == 1 and doc[0]["light"] == "warning"
    with StatusStore(status_path(config)) as store:
        found = continuity_problems(config, store.continuity(), clock.now)
    assert light(found) == "warning" and found[0].since == start + 600

    blocker.unlink()  # the folder can be made again
    clock.now += 300
    st = entry.pass_once().files
    assert st is not None and st.error is None and st.applied and st.pending_since is None
    assert (blocker / "secours" / str(src).lstrip("/") / "a.txt").read_bytes() == b"a\n"
    assert problems(config, clock.now) == [] and shown(config, clock.now)[2] == 0
    assert lines[-1] == "standby files secours: synced again"


def test_an_agent_that_stopped_looking_is_files_behind(site: Site) -> None:
    clock = Clock(time.time())
    site.entry(clock, []).pass_once()
    c = site.config.continuity["secours"]
    assert problems(site.config, clock.now + c.files_every + c.max_lag + 29) == []
    assert problems(site.config, clock.now + c.files_every + c.max_lag + 31) == ["files_behind"]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_files_behind_alert_says_what_happened_what_it_means_and_what_to_do(lang: str) -> None:
    detail = {"lag": 7200.0, "target": "/srv/secours", "error": "cannot create /srv/secours: disk full"}
    for event, audience in (("problem", "pharmacist"), ("escalation", "provider"),
                            ("resolved", "pharmacist")):
        subject, body = render(Notice(event, audience, "files_behind:secours:nas", "files_behind", "secours",
                                      "nas", 0.0, 3600.0, detail), lang)
        assert "{" not in subject + body and "secours" in subject
    subject, body = render(Notice("problem", "pharmacist", "k", "files_behind", "secours", "nas", 0.0, 0.0,
                                  detail), lang)
    expected = {"fr": ("Fichiers du poste de secours en retard", "de 2 heures",
                       "Fichiers de secours : secours", "Ce qu'il faut faire", "disk full"),
                "en": ("Standby files behind", "by 2 hours", "Standby files: secours", "What to do",
                       "disk full")}[lang]
    assert subject.startswith(expected[0]) and all(e in body for e in expected[1:]), body


# -- the configuration -----------------------------------------------------------------------------


def test_files_keys_are_checked_with_their_dotted_keys(tmp_path: Path, pwfile: Path) -> None:
    (tmp_path / "repo").mkdir()
    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, pwfile, f"""
[continuity.a]
repository = "nas"
spool = "/var/spool/coffre"
files_paths = ["/srv/officine"]
files_every = "1min"

[continuity.b]
repository = "nas"
files_target = "relative/secours"

[continuity.c]
repository = "nas"
files_target = "/etc"

[continuity.d]
repository = "nas"
files_target = "{tmp_path}"

[continuity.e]
repository = "nas"
files_target = "/srv/secours/officine"
files_paths = ["srv/officine"]
files_delete = "yes"

[continuity.f]
repository = "nas"
files_target = "/srv/secours/officine/"
standby_pgdata = "/srv/secours/officine/pgdata"
""")
    found = [p.split(": ", 1)[1] for p in caught.value.message.splitlines()[1:]]
    assert found == [
        "continuity.a.files_paths: files_paths is for files kept current: give files_target too",
        "continuity.a.files_every: files_every is for files kept current: give files_target too",
        "continuity.b.files_target: 'relative/secours' is not an absolute path (starting with /)",
        "continuity.c.files_target: files_delete would empty /etc: it is the system folder /etc; give the "
        "copy a folder of its own (or files_delete = false)",
        f"continuity.d.files_target: files_delete would empty {tmp_path}: the repository being restored "
        f"from, {tmp_path / 'repo'}, is inside it; give the copy a folder of its own (or files_delete = "
        "false)",
        "continuity.e.files_paths: item 1: 'srv/officine' is not an absolute path (starting with /): the "
        "agent does not run from any particular folder",
        "continuity.e.files_delete: expected true or false, found a text",
        "continuity.f.files_target: /srv/secours/officine overlaps the standby_pgdata of the same entry",
        "continuity.f.files_target: /srv/secours/officine is already the files_target of continuity.e",
    ], found


def test_a_files_only_entry_is_valid_and_files_delete_false_lifts_the_refusal(
        tmp_path: Path, pwfile: Path) -> None:
    config = write_config(tmp_path, pwfile, """
[continuity.secours]
repository = "nas"
files_target = "/srv"
files_delete = false
files_host = "comptoir"
files_every = "2min"
max_lag = "1h"
""")
    c = config.continuity["secours"]
    assert (c.files_target, c.files_delete, c.files_host, c.files_every, c.max_lag, c.files_paths) == (
        "/srv", False, "comptoir", 120.0, 3600.0, ())
    plan = "\n".join(describe(config, 0.0))  # what `coffre config check` says
    assert ("keeps /srv equal to the newest snapshot of comptoir (every path of the snapshot) from nas"
            in plan), plan
    assert "alerts when a newer one waits longer than 1 h 00 min" in plan and "files_delete" not in plan


def test_a_refused_target_made_after_the_check_is_refused_by_the_sync_too(site: Site) -> None:
    """The check of the configuration cannot see a repository put into the target later: the
    sync refuses it as `restore --sync --delete` does, and records why."""
    shutil.copytree(site.repo.repo, site.target)  # a copy of the repository where the files go
    st = site.entry(Clock(time.time()), []).pass_once().files
    assert st is not None and st.applied == "" and st.error is not None
    assert "refused: it holds a backup repository" in st.error
    assert sorted(os.listdir(site.target)) == sorted(os.listdir(site.repo.repo))
