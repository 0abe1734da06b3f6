"""The pharmacy's page, in-process: the `[web]` configuration, the login (repository password or
the page's own Argon2id password), the one light in a pharmacist's words (green only about what
really happened, orange and red with what to do and whom to call), the history, the plots,
« Sauvegarder maintenant » with its progress, and untrusted names rendered as text. Every page
is read as plain HTML (no JavaScript)."""

from __future__ import annotations

import html as htmllib
import os
import re
import stat
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from coffre.agent import model
from coffre.agent.config import ConfigError, load_config, restore_area_of
from coffre.agent.records import DiskSighting, RunRecord, StepResult
from coffre.agent.status import StatusStore
from coffre.web.local.app import AgentView, create_app
from coffre.web.local.login import authenticate_with, write_password_hash

NBSP = "\u00a0"
NOW = datetime(2026, 11, 30, 11, 31, tzinfo=UTC).timestamp()  # 12:31 in Paris
HOUR, DAY = 3600.0, 86400.0
XSS = "<script>alert(1)</script>"
CONTACT = "Informatique Dupont, 01 23 45 67 89"


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- [web]

def _write(tmp_path: Path, web: str) -> Path:
    path = tmp_path / "coffre.toml"
    path.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"

[repositories.nas]
url = "{tmp_path / 'nas'}"
password_file = "{tmp_path / 'pw'}"

[jobs.officine]
repository = "nas"
paths = ["{tmp_path}"]

{web}
""")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_the_web_section_is_read_and_checked(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ""))
    assert config.web == model.Web()  # enabled on 127.0.0.1:8650 by default
    assert restore_area_of(config) == str(tmp_path / "state" / "Restaurations")
    config = load_config(_write(tmp_path, f"""[web]
enabled = false
listen = "0.0.0.0:8443"
tls_cert = "/etc/coffre/page.crt"
tls_key = "/etc/coffre/page.key"
password_hash_file = "/etc/coffre/page.argon2"
idle_timeout = "10min"
restore_area = "/srv/Restaurations"
contact = "{CONTACT}"
"""))
    assert config.web == model.Web(False, "0.0.0.0:8443", "/etc/coffre/page.crt", "/etc/coffre/page.key",
                                   "/etc/coffre/page.argon2", 600.0, "/srv/Restaurations", CONTACT)
    assert restore_area_of(config) == "/srv/Restaurations"
    # Another address than loopback without TLS: refused, naming the file, the line and the key.
    problems = _problems(_write(tmp_path, '[web]\nlisten = "0.0.0.0:8650"'))
    assert len(problems) == 1 and re.match(rf"{re.escape(str(tmp_path))}/coffre.toml:\d+: web.listen: ",
                                           problems[0]), problems
    assert "TLS" in problems[0]
    assert load_config(_write(tmp_path, '[web]\nlisten = "[::1]:8650"')).web.listen == "[::1]:8650"
    problems = _problems(_write(tmp_path, '[web]\nlisten = "127.0.0.1:8650"\ntls_cert = "/x.crt"'))
    assert any("web.tls_cert" in p and "tls_key" in p for p in problems), problems
    problems = _problems(_write(tmp_path, '[web]\nlisten = "127.0.0.1"\nidle_timout = "5min"\n'
                                          'restore_area = "relative"'))
    assert any("web.listen" in p for p in problems)
    assert any("web.idle_timout" in p and "idle_timeout" in p for p in problems)  # did you mean
    assert any("web.restore_area" in p for p in problems)


# --------------------------------------------------------------------------- the setting

def _config(tmp_path: Path, *, jobs: dict[str, model.Job] | None = None, web: model.Web | None = None,
            media: bool = False) -> model.Config:
    pw = tmp_path / "pw"
    if not pw.exists():
        pw.write_text("mot-de-passe-du-depot\n")
        (tmp_path / "pw-disks").write_text("celui-des-disques\n")
    media_sets = {"disques": model.MediaSet("disques", {"A": "a" * 32, "B": "b" * 32},
                                            password_file=str(tmp_path / "pw-disks"))} if media else {}
    default = {"officine": model.Job("officine", "nas", paths=("/srv/officine",), copies=("horsite",))}
    return model.Config(
        path=str(tmp_path / "coffre.toml"), agent=model.Agent(state_dir=str(tmp_path / "state")),
        repositories={"nas": model.Repository("nas", "/mnt/nas", password_file=str(pw)),
                      "horsite": model.Repository("horsite", "s3://x/y", password_file=str(pw))},
        media_sets=media_sets, jobs=jobs if jobs is not None else default,
        web=web or model.Web(contact=CONTACT))


def _step(name: str, target: str, at: float, ok: bool = True, code: int = 0, error: str | None = None,
          seconds: float = 60.0) -> StepResult:
    return StepResult(name, target, ok, code if not ok or code else 0, at, at + seconds, {}, error)


def _good_run(at: float, job: str = "officine", verified: bool = True, used: int = 100 * 2**30,
              sent: int = 5 * 2**20) -> RunRecord:
    steps = [_step("backup", "nas", at), _step("copy:horsite", "horsite", at + 60)]
    if verified:
        steps += [_step("against:horsite", "nas", at + 120), _step("check", "nas", at + 180)]
    return RunRecord(job=job, target="nas", trigger="schedule", started=at, ended=at + 240, outcome="ok",
                     snapshot="0123456789abcdef", bytes_read=2 * 2**30, bytes_sent=sent, files_total=1200,
                     files_changed=14, steps=tuple(steps), medium=(used, 1000 * 2**30),
                     db_sizes={"postgres:officine": 300 * 2**20 + int(at) % 1000})


class View:
    """An AgentView over a real status store, recording the runs asked for."""

    def __init__(self, config: model.Config, store: StatusStore, clock: Clock) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.asked: list[str] = []
        self.queued: set[str] = set()  # asked, until the test starts it (busy) or clears it
        self.busy: dict[str, float] = {}
        self.steps: dict[str, tuple[str, float]] = {}
        self.incarnation = "a1b2c3d4"  # the agent process; another after a restart

    def run_now(self, name: str) -> tuple[bool, int]:
        """As the scheduler's: refused for a job running, or asked already and not started;
        with the click's mark."""
        mark = self.store.run_mark(name)
        if name not in self.config.jobs or name in self.busy or name in self.queued:
            return False, mark
        self.asked.append(name)
        self.queued.add(name)
        return True, mark

    def view(self) -> AgentView:
        return AgentView(config=lambda: self.config, store=lambda: self.store, run_now=self.run_now,
                         running=lambda: dict(self.busy), clock=self.clock, step=self.steps.get,
                         pending=lambda job: job in self.queued or job in self.busy,
                         incarnation=self.incarnation)


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def _client(view: View, lang: str = "fr") -> TestClient:
    app = create_app(view.view(), authenticate_with(lambda: view.config))
    c = TestClient(app, base_url="http://127.0.0.1", headers={"accept-language": lang})
    token = _csrf(c.get("/login").text)
    r = c.post("/login", data={"password": "mot-de-passe-du-depot", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


@pytest.fixture
def store(tmp_path: Path) -> StatusStore:
    s = StatusStore(tmp_path / "state" / "agent.sqlite")
    yield s  # type: ignore[misc]
    s.close()


def _click(c: TestClient) -> tuple[str, str]:
    """« Sauvegarder maintenant » pressed: the progress page's address and its fragment's."""
    token = _csrf(c.get("/").text)
    page_url = c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=False).headers["location"]
    poll = re.search(r'hx-get="([^"]+)"', c.get(page_url).text).group(1).replace("&amp;", "&")
    return page_url, poll


def _record(store: StatusStore, r: RunRecord) -> int:
    run_id = store.start_run(r.job, r.target, r.trigger, r.started, r.slot)
    store.finish_run(run_id, r)
    return run_id


def _light(html: str) -> str:
    m = re.search(r'<section class="light light-(\w+)".*?</section>', html, re.S)
    assert m, html
    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", m.group(0)))
    return m.group(1) + ": " + re.sub(r"[ \t\r\n]+", " ", text).strip()  # no-break spaces kept


# --------------------------------------------------------------------------- login

def test_login_with_the_repository_password_or_only_the_pages_own(tmp_path: Path, store: StatusStore) -> None:
    config = _config(tmp_path, media=True)
    auth = authenticate_with(lambda: config)
    assert auth({"password": "mot-de-passe-du-depot"}, "127.0.0.1") is not None
    assert auth({"password": "celui-des-disques"}, "127.0.0.1") is not None  # a media set's password too
    assert auth({"password": "mot-de-passe"}, "127.0.0.1") is None
    assert auth({"password": ""}, "127.0.0.1") is None
    # The page's own password: then the repository's no longer opens it.
    hash_file = tmp_path / "etc" / "page.argon2"
    write_password_hash(str(hash_file), "un mot de passe de page")
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o600
    assert hash_file.read_text().startswith("$argon2id$")
    config = replace(config, web=replace(config.web, password_hash_file=str(hash_file)))
    assert auth({"password": "un mot de passe de page"}, "127.0.0.1") is not None
    assert auth({"password": "mot-de-passe-du-depot"}, "127.0.0.1") is None
    hash_file.unlink()  # a missing hash file opens nothing
    assert auth({"password": "un mot de passe de page"}, "127.0.0.1") is None


def test_the_web_password_command_writes_the_hash(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[web]\npassword_hash_file = "{tmp_path}/page.argon2"')
    (tmp_path / "pw").write_text("x\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "coffre", "agent", "web-password", "--config", str(path), "--stdin"]
    short = subprocess.run(argv, input=b"court\n", capture_output=True, env=env, check=False)
    assert short.returncode == 2 and not (tmp_path / "page.argon2").exists()
    done = subprocess.run(argv, input=b"le nouveau mot de passe\n", capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    config = load_config(path)
    assert authenticate_with(lambda: config)({"password": "le nouveau mot de passe"}, "-") is not None
    assert stat.S_IMODE((tmp_path / "page.argon2").stat().st_mode) == 0o600


def test_the_page_asks_for_the_password_and_refuses_a_wrong_one(tmp_path: Path, store: StatusStore) -> None:
    view = View(_config(tmp_path), store, Clock())
    app = create_app(view.view(), authenticate_with(lambda: view.config))
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and "/login" in r.headers["location"]
    token = _csrf(c.get("/login").text)
    assert c.post("/login", data={"password": "faux", "csrf": token}).status_code == 401
    cookie = c.get("/login").headers.get("set-cookie", "") or ""
    assert "samesite=strict" in cookie.lower() or cookie == ""


# --------------------------------------------------------------------------- the light

def test_green_says_when_and_what_was_verified(tmp_path: Path, store: StatusStore) -> None:
    _record(store, _good_run(NOW - DAY))
    _record(store, _good_run(NOW - 60))  # its backup step ended at 12:31
    view = View(_config(tmp_path), store, Clock())
    html = _client(view).get("/").text
    light = _light(html)
    assert light.startswith("green: "), light
    assert "Sauvegardes OK — dernière sauvegarde aujourd'hui à 12:31, copie horsite vérifiée" in light, light
    assert CONTACT not in light  # nobody to call when all is well


def test_green_never_says_verified_about_what_was_not(tmp_path: Path, store: StatusStore) -> None:
    _record(store, _good_run(NOW - 240, verified=False))
    view = View(_config(tmp_path), store, Clock())
    light = _light(_client(view).get("/").text)
    assert light.startswith("green: ")
    assert "copie horsite faite, non vérifiée" in light, light
    assert "copie horsite vérifiée" not in light


def test_nothing_backed_up_yet_is_not_ok(tmp_path: Path, store: StatusStore) -> None:
    view = View(_config(tmp_path), store, Clock())
    light = _light(_client(view).get("/").text)
    assert light.startswith("orange: À vérifier"), light
    assert "officine" in light and CONTACT in light


def test_orange_the_disk_was_not_changed(tmp_path: Path, store: StatusStore) -> None:
    jobs = {"officine": model.Job("officine", "nas", paths=("/srv",), copies=("disques",))}
    config = _config(tmp_path, jobs=jobs, media=True)
    for day in range(10, -1, -1):
        store.record_sighting(DiskSighting("disques", "a" * 32, "A", NOW - day * DAY))
        run = _good_run(NOW - day * DAY, verified=False)
        _record(store, replace(run, steps=(_step("backup", "nas", run.started),
                                           _step("copy:disques", "disques", run.started + 60),
                                           _step("against:disques", "nas", run.started + 120))))
    view = View(config, store, Clock())
    light = _light(_client(view).get("/").text)
    expected = f"orange: À vérifier{NBSP}: le disque A n'a pas été changé depuis 10 jours"
    assert light.startswith(expected), light
    assert "Emportez ce disque" in light, light
    assert f"Qui appeler{NBSP}: {CONTACT}" in light, light


def test_red_the_nas_does_not_answer(tmp_path: Path, store: StatusStore) -> None:
    _record(store, _good_run(NOW - 2 * DAY))
    failed_at = datetime(2026, 11, 29, 18, 30, tzinfo=UTC).timestamp()  # yesterday 19:30 in Paris
    for at in (failed_at, NOW - 300):
        _record(store, RunRecord(
            job="officine", target="nas", trigger="schedule", started=at, ended=at + 5, outcome="failed",
            steps=(_step("backup", "nas", at, ok=False, code=10,
                         error="coffre: /mnt/nas is not a Coffre repository (no config file)"),),
            error="coffre: /mnt/nas is not a Coffre repository (no config file)"))
    view = View(_config(tmp_path), store, Clock())
    html = _client(view).get("/").text
    light = _light(html)
    expected = f"red: En échec depuis hier à 19:30{NBSP}: la destination nas est injoignable"
    assert light.startswith(expected), light
    assert "Sauvegarder maintenant" in light  # what to do
    assert f"Qui appeler{NBSP}: {CONTACT}" in light
    # Below: the line per job and target, and the run-now button with its CSRF token.
    assert 'id="targets"' in html and "horsite" in html
    assert re.search(r'<form method="post" action="/jobs/officine/run".*?name="csrf"', html, re.S)


def test_the_page_speaks_english_when_asked(tmp_path: Path, store: StatusStore) -> None:
    _record(store, _good_run(NOW - 60))
    view = View(_config(tmp_path), store, Clock())
    light = _light(_client(view, "en").get("/").text)
    assert "Backups OK — last backup today at 12:31, copy horsite verified" in light, light


# --------------------------------------------------------------------------- history and plots

def test_history_and_plots(tmp_path: Path, store: StatusStore) -> None:
    for day in range(20, 0, -1):
        _record(store, _good_run(NOW - day * DAY, used=(100 + 10 * (20 - day)) * 2**30))
    _record(store, RunRecord(job="officine", target="nas", trigger="manual", started=NOW - 3600,
                             ended=NOW - 3500, outcome="failed", error="le NAS a disparu",
                             steps=(_step("backup", "nas", NOW - 3600, ok=False, code=1,
                                          error="le NAS a disparu"),)))
    run_id = _record(store, RunRecord(job="officine", target="nas", trigger="schedule", started=NOW - 60,
                                      outcome="running"))
    config = _config(tmp_path, media=True)
    for day in (20, 13, 6):
        store.record_sighting(DiskSighting("disques", "a" * 32 if day != 13 else "b" * 32,
                                           "A" if day != 13 else "B", NOW - day * DAY))
    view = View(config, store, Clock())
    c = _client(view)
    page = c.get("/history").text
    assert page.count("<details") >= 21  # a line per run, its detail on click (no script needed)
    assert "le NAS a disparu" in page and "à la main" in page
    assert "vérification des données" in page  # the checks
    assert "comparaison de la copie horsite" in page
    assert 'id="disks"' in page and page.count("<td>disques</td>") == 3  # A, B, A again
    assert f"{run_id}" in page
    detail = c.get(f"/runs/{run_id - 1}").text
    assert "le NAS a disparu" in detail and "en échec" in detail
    assert c.get("/runs/999999").status_code == 404
    plots = c.get("/plots").text
    assert plots.count("<svg") == 4  # medium, databases, bytes sent per day, durations
    assert 'class="trend"' in plots and 'class="limit"' in plots
    assert "plein vers le" in plots  # the date the medium will be full
    assert "<script>" not in plots.split("</head>")[1]
    from web_checks import unlabelled

    for path in ("/", "/history", "/plots", f"/runs/{run_id - 1}"):
        html = c.get(path).text
        assert not unlabelled(html), (path, unlabelled(html))
    assert not unlabelled(TestClient(_client(view).app).get("/login").text)


def test_untrusted_names_and_errors_render_as_text(tmp_path: Path, store: StatusStore) -> None:
    job = model.Job(XSS, "nas", paths=("/srv",))
    config = _config(tmp_path, jobs={XSS: job})
    _record(store, RunRecord(job=XSS, target="nas", trigger="schedule", started=NOW - 600, ended=NOW - 500,
                             outcome="failed", error=f"disque {XSS} absent",
                             steps=(_step("backup", "nas", NOW - 600, ok=False, code=1, error=XSS),)))
    view = View(config, store, Clock())
    c = _client(view)
    for path in ("/", "/history", "/plots", "/runs/1"):
        html = c.get(path).text
        assert XSS not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        assert re.findall(r"<script[^>]*>", html) == [re.search(r'<script src="[^"]+" defer>', html).group(0)]


# --------------------------------------------------------------------------- run now

def test_run_now_asks_the_scheduler_and_shows_progress(tmp_path: Path, store: StatusStore) -> None:
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    c = _client(view)
    token = _csrf(c.get("/").text)
    assert c.post("/jobs/officine/run").status_code == 403  # no CSRF token: refused
    assert view.asked == []
    r = c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and view.asked == ["officine"]
    page_url = r.headers["location"]
    assert page_url.startswith("/jobs/officine/run?after=")
    page = c.get(page_url).text
    assert "La sauvegarde officine démarre" in page  # the flash
    assert 'hx-trigger="every 1s"' in page and "Actualiser" in page and "Démarrage" in page
    poll = re.search(r'hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    # It runs: the step and the time elapsed.
    view.busy["officine"] = clock.t + 1
    view.steps["officine"] = ("copy:horsite", clock.t + 30)
    run_id = store.start_run("officine", "nas", "manual", clock.t + 1)
    store.finish_run(run_id, RunRecord("officine", "nas", "manual", clock.t + 1,
                                       steps=(_step("backup", "nas", clock.t + 1),)))
    clock.t += 66
    fragment = c.get(poll).text
    assert "copie vers horsite" in fragment and "1 min 05 s" in fragment, fragment
    assert "sauvegarde (nas)" in fragment  # the steps done
    assert 'hx-trigger="every 1s"' in fragment
    assert c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=True).status_code == 200
    assert view.asked == ["officine"]  # running already: not asked twice
    # It ends: the outcome, with the bytes.
    del view.busy["officine"]
    done = replace(_good_run(clock.t - 65), trigger="manual", run_id=run_id)
    store.finish_run(run_id, done)
    fragment = c.get(poll).text
    assert "réussie" in fragment and "2 Go" in fragment and "5 Mo" in fragment, fragment
    assert "hx-trigger" not in fragment  # polling stops
    assert c.post("/jobs/nope/run", data={"csrf": token}).status_code == 404


def test_the_progress_page_follows_the_clicks_run_not_one_just_before(tmp_path: Path,
                                                                     store: StatusStore) -> None:
    """A scheduled run that started a moment before the click (and has ended) is not the
    click's run: the page says the backup is starting until the click's run starts, then follows
    that run to its end, whatever the clock said and whatever runs after it."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    _record(store, replace(_good_run(clock.t - 1), trigger="schedule", bytes_sent=7 * 2**20))
    c = _client(view)
    _, poll = _click(c)
    queued = c.get(poll).text
    assert "Démarrage" in queued and "réussie" not in queued and "7 Mo" not in queued, queued
    assert 'hx-trigger="every 1s"' in queued  # it keeps asking
    # The click's run starts; the clock has stepped back meanwhile (it says 30 s before the click).
    mine = _record(store, replace(_good_run(clock.t - 30), trigger="manual", bytes_sent=3 * 2**20))
    _record(store, replace(_good_run(clock.t + 90), trigger="schedule", bytes_sent=9 * 2**20))
    done = c.get(poll).text
    assert "réussie" in done and "3 Mo" in done and "à la main" in done, done
    assert f"/runs/{mine}" in done, done
    assert "hx-trigger" not in done


def test_a_page_open_across_a_new_history_shows_its_runs(tmp_path: Path, store: StatusStore) -> None:
    """The status file was moved aside and the agent began a new history while the page was
    open: the run ids started again from 1, below the click's mark. The page shows the new
    history's run rather than waiting for ever for an id it will not see."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    for k in range(3):
        _record(store, replace(_good_run(clock.t - 900 + k), trigger="schedule"))
    c = _client(view)
    token = _csrf(c.get("/").text)
    page_url = c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=False).headers["location"]
    assert re.fullmatch(r"/jobs/officine/run\?after=3&agent=a1b2c3d4", page_url), page_url
    poll = re.search(r'hx-get="([^"]+)"', c.get(page_url).text).group(1).replace("&amp;", "&")
    view.store = StatusStore(tmp_path / "new-state" / "agent.sqlite")
    try:
        _record(view.store, replace(_good_run(clock.t + 1), trigger="manual", bytes_sent=3 * 2**20))
        done = c.get(poll).text
        assert "réussie" in done and "3 Mo" in done and "à la main" in done, done
    finally:
        view.store.close()


def test_a_run_in_a_terminal_at_the_click_is_the_one_followed(tmp_path: Path, store: StatusStore) -> None:
    """`coffre run officine` runs in a terminal when « Sauvegarder maintenant » is pressed: the
    agent's own start would find the job busy and record nothing, so the page follows the run
    in progress to its end instead of saying it is starting until the next night's run."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    _record(store, replace(_good_run(clock.t - 86_400), trigger="schedule", bytes_sent=7 * 2**20))
    terminal = store.start_run("officine", "nas", "manual", clock.t - 20)
    c = _client(view)
    token = _csrf(c.get("/").text)
    page_url = c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=False).headers["location"]
    page = c.get(page_url).text
    assert "progress-running" in page, page
    poll = re.search(r'hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    store.finish_run(terminal, replace(_good_run(clock.t - 20), trigger="manual", bytes_sent=3 * 2**20,
                                       run_id=terminal))
    done = c.get(poll).text
    assert "réussie" in done and "3 Mo" in done and f"/runs/{terminal}" in done, done


def test_a_second_click_while_the_first_is_queued_waits_for_it(tmp_path: Path, store: StatusStore) -> None:
    """Pressed twice before the agent started the first: the second page, too, says the backup
    is starting, not yesterday's run as its result."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    _record(store, replace(_good_run(clock.t - 86_400), trigger="schedule", bytes_sent=7 * 2**20))
    c = _client(view)
    token = _csrf(c.get("/").text)
    c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=False)
    second = c.post("/jobs/officine/run", data={"csrf": token}, follow_redirects=True).text
    assert view.asked == ["officine"]  # asked once
    assert "Démarrage" in second and "7 Mo" not in second and "réussie" not in second, second


def test_a_request_the_agent_dropped_is_said_so_and_can_be_made_again(tmp_path: Path,
                                                                      store: StatusStore) -> None:
    """The agent was restarted between the click and the run's start: its request is gone and no
    run will come of it. The page says so, stops polling and offers the button again, instead
    of « Démarrage… » until the next night's run (shown then as the click's result)."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    _record(store, replace(_good_run(clock.t - 86_400), trigger="schedule", bytes_sent=7 * 2**20))
    c = _client(view)
    page_url, poll = _click(c)
    assert "Démarrage" in c.get(poll).text  # asked, not started yet
    # The same agent that could not start it (the job ran in a terminal, say): never "lost".
    view.queued.clear()
    assert "Démarrage" in c.get(poll).text and "progress-lost" not in c.get(poll).text
    view.incarnation = "e5f6a7b8"  # the agent restarted: the request went with it
    # Its sessions too: the open page's next poll has it reload, which leads to the login.
    ended = TestClient(create_app(view.view(), authenticate_with(lambda: view.config)),
                       base_url="http://127.0.0.1").get(poll, headers={"hx-request": "true"})
    assert ended.status_code == 401 and ended.headers["hx-refresh"] == "true", ended.headers
    c = _client(view)
    lost = c.get(poll).text
    words = htmllib.unescape(lost)
    assert "progress-lost" in lost and "n'a pas démarré" in words and "Rien n'a été sauvegardé" in words, lost
    assert "Démarrage" not in lost and "7 Mo" not in lost and "hx-trigger" not in lost, lost
    assert "progress-lost" in c.get(page_url).text  # the page itself too (without JavaScript)
    # The button posts the request again; its page follows the new request.
    action = re.search(r'<form method="post" action="([^"]+)"', lost).group(1)
    again = c.post(action, data={"csrf": _csrf(lost)}, follow_redirects=False)
    assert again.status_code == 303 and view.asked == ["officine", "officine"]
    assert "Démarrage" in c.get(again.headers["location"]).text
    # A run ended by the time the page looks: its outcome, not « did not start ».
    view.queued.clear()
    _record(store, replace(_good_run(clock.t + 5), trigger="manual", bytes_sent=3 * 2**20))
    done = c.get(again.headers["location"]).text
    assert "réussie" in done and "3 Mo" in done and "progress-lost" not in done, done


def test_a_scheduled_run_that_took_the_clicks_place_is_followed(tmp_path: Path,
                                                                store: StatusStore) -> None:
    """The schedule started the job just after the click (the click's request then finds it
    running and is dropped): that run, which backs up what the click wanted, is the one shown."""
    clock = Clock()
    view = View(_config(tmp_path), store, clock)
    c = _client(view)
    _, poll = _click(c)
    _record(store, replace(_good_run(clock.t), trigger="schedule", bytes_sent=7 * 2**20))
    done = c.get(poll).text
    assert "réussie" in done and "7 Mo" in done, done
