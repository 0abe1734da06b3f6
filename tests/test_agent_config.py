"""The agent's configuration file: the sample `config init` writes validates, every problem
of a bad file is reported at once with its file, line and key, and defaults fill the rest."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from coffre.agent import model
from coffre.agent.config import (
    DEFAULT_PATH,
    ConfigError,
    default_config_path,
    load_config,
    parse_seconds,
)
from coffre.agent.sample import (
    Detected,
    MysqlServer,
    PgCluster,
    detect_databases,
    parse_lsclusters,
    sample_config,
)
from coffre.core.errors import EXIT_USAGE

DISK_A = "0123456789abcdef0123456789abcdef"
DISK_B = "fedcba9876543210fedcba9876543210"

MINIMAL = """\
[repositories.nas]
url = "/mnt/nas/coffre"
password_file = "/etc/coffre/pw"

[jobs.officine]
repository = "nas"
paths = ["/srv/officine"]
"""


def write(tmp_path: Path, text: str, name: str = "coffre.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.exit_code == EXIT_USAGE
    lines = caught.value.message.splitlines()
    assert lines[0].startswith(f"the configuration {path} has ")
    assert len(lines) - 1 == len(caught.value.problems)
    return lines[1:]


# --------------------------------------------------------------------------- the sample


@pytest.mark.parametrize("language", ["fr", "en"])
def test_the_sample_validates_and_sets_up_a_pharmacy(tmp_path: Path, language: str) -> None:
    text = sample_config(Detected(), language)
    config = load_config(write(tmp_path, text))
    job = config.jobs["officine"]
    assert config.repositories["nas"].url == "/mnt/nas/coffre"
    assert config.repositories["hors-site"].url.startswith("s3://")
    assert config.repositories["hors-site"].aws_profile == "coffre"
    assert len(config.media_sets["disques"].disks) == 2
    assert job.repository == "nas" and job.copies == ("hors-site", "disques")
    assert job.schedule.times == ("12:30", "19:30")
    assert not job.retention.is_empty()
    assert job.verification.check_subset and job.verification.drill_every
    assert config.alerts.email is not None
    assert config.alerts.email.to and config.alerts.email.provider
    assert config.agent.language == language
    # The comments are in the language asked for; no database found: examples, commented.
    assert ("Adaptez-le" in text) == (language == "fr")
    assert ("Adapt it" in text) == (language == "en")
    assert "# postgres = [" in text and job.postgres == () and job.mysql == ()
    # The placeholder disk ids say to replace them, next to them.
    before_disks = text[:text.index("[media_sets.disques.disks]")]
    assert ("REMPLACEZ" if language == "fr" else "REPLACE") in before_disks.splitlines()[-2]


def test_the_sample_fills_in_the_databases_found(tmp_path: Path) -> None:
    detected = Detected(
        postgres=(PgCluster(5433, "/var/run/postgresql", "15", "main", "postgres", ("lgo", "stock")),
                  PgCluster(5432, "/var/run/postgresql")),
        mysql=(MysqlServer("/run/mysqld/mysqld.sock", ("officine_ma",)),),
    )
    job = load_config(write(tmp_path, sample_config(detected))).jobs["officine"]
    assert job.postgres == ("host=/var/run/postgresql port=5433 dbname=lgo user=coffre",
                            "host=/var/run/postgresql port=5433 dbname=stock user=coffre",
                            "host=/var/run/postgresql port=5432 dbname=officine user=coffre")
    assert job.mysql == ("mysql://root@localhost/officine_ma?socket=/run/mysqld/mysqld.sock",)


def test_pg_lsclusters_output_gives_the_online_clusters() -> None:
    out = ("15  main    5432 online postgres /var/lib/postgresql/15/main /var/log/postgresql/x.log\n"
           "16  test    5433 down   postgres /var/lib/postgresql/16/test /var/log/postgresql/y.log\n"
           "13  old     5434 online,recovery postgres /var/lib/postgresql/13/old /var/log/z.log\n")
    clusters = parse_lsclusters(out)
    assert [(c.version, c.name, c.port, c.owner) for c in clusters] == [
        ("15", "main", 5432, "postgres"), ("13", "old", 5434, "postgres")]


def test_detection_without_servers_finds_nothing_and_does_not_fail(tmp_path: Path) -> None:
    (tmp_path / ".s.PGSQL.5432").write_text("not a socket")
    detected = detect_databases([str(tmp_path), str(tmp_path / "missing")], [str(tmp_path / "mysqld.sock")],
                                lsclusters=False)
    assert detected == Detected()


def test_detection_finds_a_running_postgresql_by_its_socket(postgres: Any, tmp_path: Path) -> None:
    detected = detect_databases([str(postgres.dir)], [], lsclusters=False)
    assert [(c.port, c.socket_dir, c.owner) for c in detected.postgres] == [
        (postgres.port, str(postgres.dir), "postgres")]
    # Its databases could not be listed (the test server has no "postgres" role): the sample
    # names the server and says to put in the database's name.
    text = sample_config(detected)
    prose = " ".join(text.replace("\n#", " ").split())  # the comments, unwrapped
    assert f"port {postgres.port}" in prose and "remplacez officine par le nom" in prose.lower()
    job = load_config(write(tmp_path, text)).jobs["officine"]
    assert job.postgres == (f"host={postgres.dir} port={postgres.port} dbname=officine user=coffre",)


# --------------------------------------------------------------------------- defaults, durations


def test_a_minimal_file_gets_the_models_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.path == str(tmp_path / "coffre.toml")
    assert config.agent == model.Agent()
    assert config.alerts == model.Alerts()
    assert config.media_sets == {}
    assert config.jobs["officine"] == model.Job(name="officine", repository="nas", paths=("/srv/officine",))
    assert config.repositories["nas"] == model.Repository(name="nas", url="/mnt/nas/coffre",
                                                          password_file="/etc/coffre/pw")


def test_every_section_is_read_into_the_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"""\
        [agent]
        state_dir = "/var/lib/coffre-test"
        timezone = "America/Cayenne"
        language = "en"
        nice = 19
        ionice = "best-effort:7"
        history_days = 500

        [repositories.nas]
        url = "sftp://coffre@nas.local/volume1/coffre"
        password_command = "cat /etc/coffre/pw"
        limit_upload = "08:30-19:30=1MiB/s,*=unlimited"
        limit_download = "4MiB/s"

        [repositories.ftp]
        url = "ftp://pharmacie@ftp.example.fr/coffre"
        password_file = "/etc/coffre/pw"
        insecure_ftp = true

        [media_sets.usb]
        search = ["/media"]
        path = ""
        password_file = "/etc/coffre/pw"
        rotate_after = "3d"
        disks = {{ lundi = "{DISK_A.upper()}", jeudi = "{DISK_B}" }}

        [jobs.officine]
        repository = "usb"
        paths = ["/srv/officine"]
        exclude = ["*.tmp"]
        one_file_system = true
        postgres = ["host=localhost dbname=officine user=coffre"]
        mysql = ["mysql://coffre@localhost/stock"]
        sqlite = ["/srv/lgo/officine.db"]
        tags = ["agent", "officine"]
        host = "comptoir"
        copies = ["nas", "ftp"]
        retries = 5
        schedule.times = ["19:30", "9:05"]
        schedule.days = ["lundi", "sat", "mon"]
        schedule.every = 3600
        schedule.realtime = true
        schedule.debounce = "30s"
        schedule.min_interval = "15min"
        schedule.window = "1d12h"

        [jobs.officine.retention]
        keep_last = 3
        keep_daily = 7
        keep_within = "30d"
        max_size = "400GiB"
        prune = false

        [jobs.officine.verification]
        check_subset = false
        verify_sample = "25%"
        drill_every = false
        check_copies = false

        [alerts]
        reminder_every = "12h"
        changed_files_share = 0.25
        medium_full_share = "95%"
        medium_full_days = 7

        [alerts.email]
        server = "127.0.0.1"
        port = 2525
        security = "none"
        sender = "coffre@pharmacie.example"
        to = ["pharmacien@pharmacie.example"]
        provider = ["support@prestataire.example"]
        escalate_after = "1d"
        timeout = 5
        ca_file = "/etc/coffre/ca.pem"

        [[alerts.webhooks]]
        url = "https://supervision.example/a"
        secret_file = "/etc/coffre/hook.key"

        [[alerts.webhooks]]
        url = "http://127.0.0.1:8080/b"
        timeout = "2s"

        [alerts.heartbeat]
        url = "https://hc-ping.com/abc"
        """))
    assert config.agent == model.Agent("/var/lib/coffre-test", "America/Cayenne", "en", 19, "best-effort:7",
                                       500)
    assert config.repositories["nas"] == model.Repository(
        "nas", "sftp://coffre@nas.local/volume1/coffre", None, "cat /etc/coffre/pw",
        "08:30-19:30=1MiB/s,*=unlimited", "4MiB/s")
    assert config.repositories["ftp"].insecure_ftp
    assert config.media_sets["usb"] == model.MediaSet(
        "usb", {"lundi": DISK_A, "jeudi": DISK_B}, ("/media",), "", "/etc/coffre/pw", None, 3 * 86400.0)
    assert config.jobs["officine"] == model.Job(
        "officine", "usb", ("/srv/officine",), ("*.tmp",), True,
        ("host=localhost dbname=officine user=coffre",),
        ("mysql://coffre@localhost/stock",), ("/srv/lgo/officine.db",), ("agent", "officine"), "comptoir",
        ("nas", "ftp"),
        model.Schedule(("09:05", "19:30"), ("mon", "sat"), 3600.0, True, 30.0, 900.0, 36 * 3600.0),
        model.Retention(keep_last=3, keep_daily=7, keep_within="30d", max_size="400GiB", prune=False),
        model.Verification(None, 0.25, None, False), 5)
    assert config.alerts == model.Alerts(
        model.Email("127.0.0.1", 2525, "none", None, None, None, "coffre@pharmacie.example",
                    ("pharmacien@pharmacie.example",), ("support@prestataire.example",), 86400.0, 5.0,
                    "/etc/coffre/ca.pem"),
        (model.Webhook("https://supervision.example/a", "/etc/coffre/hook.key"),
         model.Webhook("http://127.0.0.1:8080/b", None, 2.0)),
        model.Heartbeat("https://hc-ping.com/abc"), 12 * 3600.0, 0.25, 0.95, 7.0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60), ("10min", 600), ("2h", 7200), ("7d", 604800), ("1d12h", 129600), (" 1h 30min ", 5400),
    ("2w", 1209600), ("1.5h", 5400), ("90S", 90),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10m", "h", "0s", "2 hours", "1d-2h", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_seconds(text)


def test_the_default_path_is_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFRE_CONFIG", raising=False)
    assert default_config_path(None) == DEFAULT_PATH == "/etc/coffre/coffre.toml"
    monkeypatch.setenv("COFFRE_CONFIG", "/srv/coffre.toml")
    assert default_config_path(None) == "/srv/coffre.toml"
    assert default_config_path("/tmp/x.toml") == "/tmp/x.toml"


# --------------------------------------------------------------------------- bad input


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + "\n[jobs.officine.schedule]\ntimes = [12:30]\n")
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'coffre.toml'}:10: not valid TOML")


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert "absent.toml" in caught.value.message and "config init" in (caught.value.hint or "")


def test_an_unknown_key_is_named_with_a_suggestion_and_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + 'exlude = ["*.tmp"]\n')
    assert found == [
        f"{tmp_path / 'coffre.toml'}:8: jobs.officine.exlude: unknown key (did you mean exclude?)"]


def test_unknown_keys_in_every_kind_of_table(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + """\
        schedule = { time = ["12:30"] }

        [agnet]
        nice = 3

        [alerts.email]
        server = "smtp.example.fr"
        to = ["a@example.fr"]
        sendr = "x@example.fr"

        [[alerts.webhooks]]
        url = "https://x.example"
        secrets_file = "/k"
        """)
    assert [line.split(": ", 1)[1] for line in found] == [
        "jobs.officine.schedule.time: unknown key (did you mean times?)",
        "agnet: unknown section (did you mean agent?)",
        "alerts.email.sendr: unknown key (did you mean sender?)",
        "alerts.webhooks[0].secrets_file: unknown key (did you mean secret_file?)",
    ]
    assert found[0].split(":")[1] == "8" and found[3].split(":")[1] == "20"


def test_a_job_naming_a_missing_repository(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace(
        'repository = "nas"', 'repository = "nsa"\ncopies = ["nas", "nas", "cloud"]'))
    assert [line.split(": ", 1)[1] for line in found] == [
        "jobs.officine.repository: no repository or media set is named 'nsa' (did you mean nas?)",
        "jobs.officine.copies[1]: 'nas' is named twice",
        "jobs.officine.copies[2]: no repository or media set is named 'cloud'",
    ]


def test_a_copy_to_the_primary_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + 'copies = ["nas"]\n')
    assert found == [f"{tmp_path / 'coffre.toml'}:8: jobs.officine.copies[0]: 'nas' is the job's own "
                     "repository: a copy goes elsewhere"]


def test_exactly_one_password_source(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + f"""\
        [repositories.cloud]
        url = "s3://s3.example.fr/bucket/coffre"
        password_file = "/etc/coffre/pw"
        password_command = "pass show coffre"

        [media_sets.usb]
        disks = {{ a = "{DISK_A}" }}
        """)
    assert [line.split(": ", 1)[1] for line in found] == [
        "repositories.cloud.password_command: give password_file or password_command, not both",
        "media_sets.usb: no password source: add password_file (or password_command)",
    ]
    assert found[0].split(":")[1] == "11" and found[1].split(":")[1] == "13"


def test_bad_times_days_and_timezone(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + """\
        schedule.times = ["12:30", "24:00"]
        schedule.days = ["mon", "vendredi", "funday"]

        [agent]
        timezone = "Europe/Pariss"
        """)
    assert [line.split(": ", 1)[1] for line in found] == [
        "jobs.officine.schedule.times: item 2: '24:00' is not a time of day HH:MM such as \"12:30\"",
        "jobs.officine.schedule.days: item 3: 'funday' is not a day; use mon, tue, wed, thu, fri, sat, sun"
        " (did you mean sunday?)",
        "agent.timezone: unknown time zone 'Europe/Pariss', e.g. \"Europe/Paris\""
        " (did you mean Europe/Paris?)",
    ]


def test_several_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    found = problems(tmp_path, f"""\
        [agent]
        ionice = "low"
        nice = 40

        [repositories.nas]
        url = "nas/coffre"
        password_file = "/etc/coffre/pw"

        [media_sets.usb]
        password_file = "/etc/coffre/pw"
        rotate_after = "soon"
        [media_sets.usb.disks]
        a = "{DISK_A}"
        b = "not-an-id"
        c = "{DISK_A}"

        [jobs.officine]
        repository = "usb"
        retention.keep_daily = 0
        verification.verify_sample = 30
        schedule.realtime = true

        [alerts.email]
        server = "smtp.example.fr"
        security = "ssl"
        username = "pharmacie"
        """)
    keys = [line.split(": ")[1] for line in found]
    assert keys == [
        "agent.ionice", "agent.nice", "repositories.nas.url", "media_sets.usb.rotate_after",
        "media_sets.usb.disks.b", "media_sets.usb.disks.c", "jobs.officine",
        "jobs.officine.retention.keep_daily", "jobs.officine.verification.verify_sample",
        "jobs.officine.schedule.realtime", "alerts.email.to", "alerts.email.security",
        "alerts.email.username",
    ]
    lines = [int(line.split(":")[1]) for line in found]
    assert lines == sorted(lines) and lines[0] == 2 and lines[-1] == 26
    text = "\n".join(found)
    assert "30 is more than 1: write 0.3 or \"30%\"" in text
    assert "nothing to back up" in text and "the same id as the disk usb.a" in text
    assert "missing (required)" in text and "a login needs its password" in text


def test_sizes_rates_and_shares_out_of_range(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('password_file = "/etc/coffre/pw"', """\
        password_file = "/etc/coffre/pw"
        limit_upload = "fast"
        limit_download = "08:00-25:00=1MiB"
        """) + """\
        retention.max_size = "400"
        retention.keep_within = "forever"

        [alerts]
        changed_files_share = 0
        medium_full_share = "120%"
        medium_full_days = -1
        """)
    assert [line.split(": ")[1] for line in found] == [
        "repositories.nas.limit_upload", "repositories.nas.limit_download",
        "jobs.officine.retention.max_size", "jobs.officine.retention.keep_within",
        "alerts.changed_files_share", "alerts.medium_full_share", "alerts.medium_full_days"]
    assert "'fast': not a rate" in found[0] and "KiB" in found[0]
    assert "400 what?" in found[2]
    assert "a share of 0" in found[4] and "between 0 and 1" in found[5]


def test_wrong_types_say_what_was_expected(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + """\
        paths = "/srv/officine"
        retries = "3"
        one_file_system = "yes"
        """.replace("paths", "exclude"))
    assert [line.split(": ", 1)[1] for line in found] == [
        "jobs.officine.exclude: expected a list, e.g. [\"/srv/officine\"]",
        "jobs.officine.retries: expected a whole number, found a text",
        "jobs.officine.one_file_system: expected true or false, found a text",
    ]


def test_a_job_section_of_the_wrong_shape(tmp_path: Path) -> None:
    found = problems(tmp_path, 'repositories = "nas"\n[jobs]\nofficine = 3\n')
    assert [line.split(": ", 1)[1] for line in found] == [
        "repositories: expected a table [repositories], found a text",
        "jobs.officine: expected a table [jobs.NAME] holding keys, found a number",
    ]



def test_a_hosting_server_repository_needs_its_token_and_https(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + 'copies = ["hebergeur", "labo"]\n' + """\
        [repositories.hebergeur]
        url = "https://sauvegarde.example.fr/officine"
        password_file = "/etc/coffre/pw"
        token_file = "/etc/coffre/hebergeur.token"

        [repositories.labo]
        url = "http://127.0.0.1:8443/labo"
        password_file = "/etc/coffre/pw"
        """)
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "repositories.labo.token_file: a hosting server needs its access token: give token_file",
        "repositories.labo.url: http:// sends the hosting server's token in clear: use https://, "
        "or set insecure_http = true on a test machine",
    ]


def test_a_job_reaches_one_hosting_server_token(tmp_path: Path) -> None:
    two = MINIMAL.replace('url = "/mnt/nas/coffre"', 'url = "https://a.example.fr/nas"\n'
                          'token_file = "/etc/coffre/a.token"') + 'copies = ["b"]\n' + """\
        [repositories.b]
        url = "https://b.example.fr/officine"
        password_file = "/etc/coffre/pw"
        token_file = "/etc/coffre/b.token"
        """
    found = problems(tmp_path, two)
    assert [line.split(": ", 1)[1] for line in found] == [
        "jobs.officine.copies: the job's repositories are on hosting servers with different "
        "tokens: at most one token per job"]
    config = load_config(write(tmp_path, two.replace("/etc/coffre/b.token", "/etc/coffre/a.token")))
    from coffre.agent.steps import endpoint_for

    endpoint = endpoint_for(config.repositories["b"])
    assert endpoint.env("AGAINST_")["COFFRE_SERVER_TOKEN_FILE"] == "/etc/coffre/a.token"
    assert "--insecure-http" not in endpoint.options
