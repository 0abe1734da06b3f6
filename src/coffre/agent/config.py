"""The agent's configuration file: one TOML file read into `model.Config`, or refused with
every problem listed at once, each as `FILE:LINE: dotted.key: what is wrong`.

Each key is described once, in `SCHEMA` (its name, its kind, its help text in English and
French): the validation reads it here, and `sample.py` writes its comments from it. Defaults
are the model's own (`model.py`). Durations are `60s`, `10min`, `2h`, `7d`, `1d12h` or a
number of seconds; shares are `0.3` or `"30%"`.

Line numbers are best effort: TOML syntax errors carry tomllib's own line; the other
problems are placed by a light scan of the text for the tables and keys (`_key_lines`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from coffre.agent import model
from coffre.core.errors import EXIT_USAGE, CoffreError
from coffre.core.i18n import LANGUAGES, _, ngettext
from coffre.core.net import is_loopback
from coffre.core.sizes import parse_size
from coffre.policy.retention import parse_duration
from coffre.storage.pacing import parse_limit

DEFAULT_PATH = "/etc/coffre/coffre.toml"
MAX_BYTES = 1 << 20  # a configuration is a few kilobytes; more is not one

KeyPath = tuple[str | int, ...]


class ConfigError(CoffreError):
    """A configuration that cannot be used; `problems` holds each one found."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None,
                 problems: tuple[ConfigProblem, ...] = ()) -> None:
        super().__init__(message, hint)
        self.problems = problems


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int | None
    key: str  # dotted, e.g. jobs.officine.schedule.times[1]; "" for the file as a whole
    what: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.what}" if self.key else f"{where}: {self.what}"


def default_config_path(flag: str | None = None) -> str:
    """`--config` (passed in by the CLI), else COFFRE_CONFIG, else /etc/coffre/coffre.toml."""
    return flag or os.environ.get("COFFRE_CONFIG") or DEFAULT_PATH


# --------------------------------------------------------------------------- values

_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_SECONDS_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(min|s|h|d|w)", re.IGNORECASE)


def parse_seconds(text: str) -> float:
    """Seconds for a duration such as `60s`, `10min`, `2h`, `7d` or `1d12h` (units s, min, h,
    d, w, combinable); ValueError with an explanation otherwise, or for zero."""
    total, position = 0.0, 0
    stripped = text.strip()
    for m in _SECONDS_TOKEN.finditer(stripped):
        if m.start() != position:
            break
        total += float(m.group(1)) * _SECONDS[m.group(2).lower()]
        position = m.end()
    if not stripped or position != len(stripped):
        raise ValueError(_("cannot read the duration {text}: write a number and a unit among s, min, "
                           "h, d, w, e.g. \"90s\", \"10min\", \"2h\", \"7d\" or \"1d12h\"").format(
            text=repr(text)))
    if total <= 0:
        raise ValueError(_("the duration {text} is zero; it must be longer").format(text=repr(text)))
    return total


def format_seconds(seconds: float) -> str:
    """The shortest of parse_seconds' forms for a number of seconds: 7200 -> "2h"."""
    rest, out = int(seconds), ""
    if rest != seconds or rest <= 0:
        return f"{seconds}s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return _("true or false")
    if isinstance(value, int | float):
        return _("a number")
    if isinstance(value, str):
        return _("a text")
    if isinstance(value, list):
        return _("a list")
    if isinstance(value, dict):
        return _("a table")
    return _("a date")


def _expect(value: object, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(_("expected {what}, found {found}").format(what=what, found=_type_name(value)))


def _text(value: object) -> str:
    _expect(value, str, _("a text in quotes"))
    assert isinstance(value, str)
    return value


def _nonempty(value: object) -> str:
    text = _text(value)
    if not text.strip():
        raise ValueError(_("is empty"))
    return text


def _bool(value: object) -> bool:
    _expect(value, bool, _("true or false"))
    return bool(value)


def _texts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(_("expected a list, e.g. [{value}]").format(
            value=json.dumps(value, ensure_ascii=False)))
    _expect(value, list, _("a list of texts, e.g. [\"a\", \"b\"]"))
    assert isinstance(value, list)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(_("item {n}: expected a non-empty text in quotes").format(n=i + 1))
        out.append(item)
    return tuple(out)


def _paths(value: object) -> tuple[str, ...]:
    paths = _texts(value)
    for i, p in enumerate(paths):
        if not p.startswith("/"):
            raise ValueError(_("item {n}: {path} is not an absolute path (starting with /): the agent "
                               "does not run from any particular folder").format(n=i + 1, path=repr(p)))
    return paths


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(_("must be longer than zero"))
        return float(value)
    if isinstance(value, str):
        return parse_seconds(value)
    raise ValueError(_("expected a duration such as \"10min\", \"2h\" or \"7d\", found {found}").format(
        found=_type_name(value)))


def _duration_or_off(value: object) -> float | None:
    return None if value is False else _duration(value)


def _share(value: object) -> float:
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if not m:
            raise ValueError(_("expected a share such as 0.3 or \"30%\""))
        share = float(m.group(1)) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = float(value)
        if share > 1:
            raise ValueError(_("{value} is more than 1: write {fraction} or \"{value}%\"").format(
                value=value, fraction=share / 100))
    else:
        raise ValueError(_("expected a share such as 0.3 or \"30%\", found {found}").format(
            found=_type_name(value)))
    if not 0 <= share <= 1:
        raise ValueError(_("a share lies between 0 and 1 (0% and 100%)"))
    return share


def _share_above_zero(value: object) -> float:
    share = _share(value)
    if share == 0:
        raise ValueError(_("a share of 0 would always be exceeded; give more, e.g. \"30%\""))
    return share


def _subset_or_off(value: object) -> str | None:
    if value is False:
        return None
    text = _text(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if m and 0 < float(m.group(1)) <= 100:
        return text
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if m and 1 <= int(m.group(1)) <= int(m.group(2)):
        return text
    raise ValueError(_("expected a percentage (\"5%\"), a slice (\"2/7\") or false"))


def _times(value: object) -> tuple[str, ...]:
    out = set()
    for i, item in enumerate(_texts(value)):
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", item)
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError(_("item {n}: {time} is not a time of day HH:MM such as \"12:30\"").format(
                n=i + 1, time=repr(item)))
        out.add(f"{int(m.group(1)):02d}:{m.group(2)}")
    return tuple(sorted(out))


_DAY_NAMES = {"lun": "mon", "lundi": "mon", "mar": "tue", "mardi": "tue", "mer": "wed", "mercredi": "wed",
              "jeu": "thu", "jeudi": "thu", "ven": "fri", "vendredi": "fri", "sam": "sat", "samedi": "sat",
              "dim": "sun", "dimanche": "sun", "monday": "mon", "tuesday": "tue", "wednesday": "wed",
              "thursday": "thu", "friday": "fri", "saturday": "sat", "sunday": "sun"}


def _days(value: object) -> tuple[str, ...]:
    days = set()
    for i, item in enumerate(_texts(value)):
        day = item.strip().lower()
        day = _DAY_NAMES.get(day, day)
        if day not in model.DAYS:
            raise ValueError(_("item {n}: {day} is not a day; use {days}").format(
                n=i + 1, day=repr(item), days=", ".join(model.DAYS))
                + _did_you_mean(day, [*model.DAYS, *_DAY_NAMES]))
        days.add(day)
    if not days:
        raise ValueError(_("no day: the job would never run at these times"))
    return tuple(d for d in model.DAYS if d in days)


def _timezone(value: object) -> str:
    name = _nonempty(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_("unknown time zone {name}, e.g. \"Europe/Paris\"").format(name=repr(name))
                         + _did_you_mean(name, sorted(available_timezones()))) from None
    return name


def _language(value: object) -> str:
    lang = _text(value)
    if lang not in LANGUAGES:
        raise ValueError(_("expected one of {choices}").format(choices=", ".join(LANGUAGES)))
    return lang


def _ionice(value: object) -> str:
    text = _text(value).strip()
    if not re.fullmatch(r"idle|none|best-effort:[0-7]", text):
        raise ValueError(_("expected \"idle\", \"best-effort:0\" to \"best-effort:7\" or \"none\""))
    return text


def _security(value: object) -> str:
    text = _text(value)
    if text not in ("starttls", "tls", "none"):
        raise ValueError(_("expected \"starttls\", \"tls\" or \"none\"")
                         + _did_you_mean(text, ("starttls", "tls")))
    return text


def _limit(value: object) -> str:
    text = _nonempty(value)
    try:
        parse_limit(text, option="")
    except CoffreError as exc:
        raise ValueError("; ".join(filter(None, (exc.message.lstrip(": "), exc.hint)))) from None
    return text


def _keep_within(value: object) -> str:
    text = _nonempty(value)
    parse_duration(text)  # its ValueError explains
    return text


def _size(value: object) -> str:
    text = _nonempty(value)
    parse_size(text)  # SizeError is a ValueError
    return text


_SCHEMES = ("s3", "s3+http", "s3+https", "sftp", "ftps", "ftp", "https", "http")


def _url(value: object) -> str:
    url = _nonempty(value).strip()
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme.lower() not in _SCHEMES:
            raise ValueError(_("{scheme}:// repositories are not supported; use a local path, s3://, "
                               "s3+http://, sftp://, ftps:// or https:// (a Coffre hosting server)")
                             .format(scheme=scheme))
        if ":" in rest.split("/", 1)[0].rpartition("@")[0]:
            raise ValueError(_("a password does not belong in the URL: use password_file or the "
                               "storage's own credentials"))
    elif not url.startswith("/"):
        raise ValueError(_("a local repository is an absolute path (starting with /), or a URL such "
                           "as s3://HOST/BUCKET"))
    return url


def _http_url(value: object) -> str:
    url = _nonempty(value).strip()
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(_("expected an http:// or https:// address"))
    return url


def _server_url(value: object) -> str:
    url = _nonempty(value).strip()
    m = re.fullmatch(r"(https?)://([^/\s?#]+)(/[^\s?#]*)?", url)
    if not m:
        raise ValueError(_("expected the server's address, https://HOST[:PORT][/PREFIX], without a query"))
    if "@" in m.group(2):
        raise ValueError(_("a user name or password does not belong in the URL: the token goes in "
                           "token_file"))
    return url.rstrip("/")


def _relative(value: object) -> str:
    path = _text(value).strip()
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(_("a folder inside the disk, such as \"coffre\" (not starting with /, no ..)"))
    return path


def _mysql_server(value: object) -> str:
    from coffre.core.errors import CoffreError
    from coffre.sources.databases.mysql import Connection

    dsn = _nonempty(value)
    try:
        Connection(dsn, database=False)
    except CoffreError as exc:
        raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return dsn


def _optional_path(value: object) -> str:
    path = _nonempty(value)
    if not path.startswith("/"):
        raise ValueError(_("{path} is not an absolute path (starting with /)").format(path=repr(path)))
    return path


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" ("127.0.0.1:8650", "[::1]:8650", "0.0.0.0:8443"); ValueError
    with an explanation otherwise."""
    m = re.fullmatch(r"\s*(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\s*", text)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise ValueError(_("expected an address and a port, HOST:PORT, such as \"127.0.0.1:8650\""))
    return m.group(1).strip("[]"), int(m.group(2))


def _listen(value: object) -> str:
    text = _nonempty(value).strip()
    parse_listen(text)
    return text


def restore_area_of(config: model.Config) -> str:
    """Where the pages restore files: `[web].restore_area`, else `<state_dir>/Restaurations`."""
    return config.web.restore_area or os.path.join(config.agent.state_dir, "Restaurations")


def _int(lo: int, hi: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        _expect(value, int, _("a whole number"))
        assert isinstance(value, int)
        if not lo <= value <= hi:
            raise ValueError(_("must be between {lo} and {hi}").format(lo=lo, hi=hi))
        return value
    return convert


def _number(lo: float, hi: float) -> Callable[[object], float]:
    def convert(value: object) -> float:
        _expect(value, (int, float), _("a number"))
        assert isinstance(value, int | float)
        if not lo < value <= hi:
            raise ValueError(_("must be more than {lo} and at most {hi}").format(lo=lo, hi=hi))
        return float(value)
    return convert


# --------------------------------------------------------------------------- the schema

SECTION = "section"  # a sub-table, read by its own schema
SECTIONS = "sections"  # an array of tables


@dataclass(frozen=True)
class Key:
    """One key of a table: how its value is read (`convert` returns the model's value or
    raises ValueError with a message for people), and what it means, for the sample."""

    name: str
    convert: Callable[[object], Any] | str
    en: str
    fr: str
    required: bool = False
    example: str | None = None  # a TOML value shown in the sample when there is no default


_PASSWORD = (
    Key("password_file", _optional_path, "a file holding the password (readable by root only)",
        "un fichier contenant le mot de passe (lisible par root seulement)",
        example='"/etc/coffre/mot-de-passe"'),
    Key("password_command", _nonempty, "or a command that prints the password (e.g. a vault)",
        "ou une commande qui affiche le mot de passe (un coffre-fort de secrets, par exemple)",
        example='"pass show coffre"'),
)

SCHEMA: dict[str, tuple[Key, ...]] = {
    "agent": (
        Key("state_dir", _optional_path, "where the agent keeps its status and history",
            "où l'agent garde son état et son historique"),
        Key("timezone", _timezone, "the time zone of the schedules", "le fuseau horaire des horaires"),
        Key("language", _language, "the language of alerts and messages (fr or en)",
            "la langue des alertes et des messages (fr ou en)"),
        Key("nice", _int(0, 19), "CPU priority of backups (0 normal, 19 lowest)",
            "priorité processeur des sauvegardes (0 normale, 19 la plus basse)"),
        Key("ionice", _ionice, "disk priority of backups: idle, best-effort:0..7 or none",
            "priorité disque des sauvegardes : idle, best-effort:0..7 ou none"),
        Key("history_days", _int(400, 100000), "days of run history kept (at least 400)",
            "jours d'historique des exécutions conservés (au moins 400)"),
    ),
    "repository": (
        Key("url", _url, "a local path (disk, mounted NAS share) or s3://, s3+http://, sftp://, ftps://, "
            "https:// (a Coffre hosting server)",
            "un chemin local (disque, partage NAS monté) ou s3://, s3+http://, sftp://, ftps://, "
            "https:// (un serveur d'hébergement Coffre)",
            required=True),
        *_PASSWORD,
        Key("limit_upload", _limit, "upload bandwidth, e.g. \"2MiB/s\" or by time of day",
            "débit d'envoi maximal, par ex. \"2MiB/s\", ou selon l'heure",
            example='"08:30-19:30=1MiB/s,*=unlimited"'),
        Key("limit_download", _limit, "download bandwidth, same form",
            "débit de réception maximal, même forme",
            example='"4MiB/s"'),
        Key("aws_profile", _nonempty, "S3 credentials: a profile of /root/.aws/credentials",
            "identifiants S3 : un profil de /root/.aws/credentials", example='"coffre"'),
        Key("insecure_ftp", _bool, "allow plain ftp:// (password in clear on the network)",
            "autoriser ftp:// sans chiffrement (mot de passe en clair sur le réseau)"),
        Key("token_file", _nonempty, "a hosting server's access token (https:// repositories), in a "
            "file only root can read", "le jeton d'accès au serveur d'hébergement (dépôts https://), "
            "dans un fichier que seul root peut lire", example='"/etc/coffre/serveur.token"'),
        Key("insecure_http", _bool, "allow plain http:// to a hosting server (token in clear: tests only)",
            "autoriser http:// vers un serveur d'hébergement (jeton en clair : tests seulement)"),
    ),
    "media_set": (
        Key("disks", SECTION, "the disks: a name -> the repository id of that disk (32 hex digits)",
            "les disques : un nom -> l'identifiant du dépôt de ce disque (32 caractères hexadécimaux)",
            required=True),
        Key("search", _paths, "where the disks get mounted", "où les disques sont montés"),
        Key("path", _relative, "the repository's folder on each disk (\"\" = the disk's root)",
            "le dossier du dépôt sur chaque disque (\"\" = la racine du disque)"),
        *_PASSWORD,
        Key("rotate_after", _duration, "the same disk plugged in longer than this: an alert to change it",
            "le même disque branché plus longtemps que cela : une alerte pour le changer"),
    ),
    "job": (
        Key("repository", _nonempty, "where the backup goes: a repository or a media set",
            "où va la sauvegarde : un dépôt ou un jeu de disques", required=True),
        Key("paths", _paths, "the folders and files to back up", "les dossiers et fichiers à sauvegarder",
            example='["/srv/officine"]'),
        Key("exclude", _texts, "patterns left out", "motifs exclus", example='["*.tmp", "*.lock"]'),
        Key("one_file_system", _bool, "do not cross mount points", "ne pas traverser les points de montage"),
        Key("postgres", _texts, "live PostgreSQL databases (libpq connection strings)",
            "bases PostgreSQL en service (chaînes de connexion libpq)",
            example='["host=/var/run/postgresql dbname=officine user=coffre"]'),
        Key("mysql", _texts, "live MariaDB/MySQL databases: mysql://USER@localhost/DB",
            "bases MariaDB/MySQL en service : mysql://UTILISATEUR@localhost/BASE",
            example='["mysql://root@localhost/officine?socket=/run/mysqld/mysqld.sock"]'),
        Key("sqlite", _paths, "live SQLite database files", "fichiers de bases SQLite en service",
            example='["/srv/officine/data/officine.db"]'),
        Key("tags", _texts, "tags put on each snapshot", "étiquettes posées sur chaque sauvegarde",
            example='["agent"]'),
        Key("host", _nonempty, "the host name recorded (default: this machine's)",
            "le nom de machine enregistré (par défaut : celui de ce serveur)", example='"comptoir"'),
        Key("copies", _texts, "repositories or media sets the snapshot is copied to, in order",
            "dépôts ou jeux de disques où la sauvegarde est copiée ensuite, dans l'ordre"),
        Key("retries", _int(0, 20), "attempts after the first when a destination is unreachable",
            "nouvelles tentatives quand une destination est injoignable"),
        Key("retry_pause", _duration, "the first pause before a retry; each next one is 4 times longer",
            "la première pause avant une nouvelle tentative ; chacune des suivantes est 4 fois plus longue"),
        Key("schedule", SECTION, "when it runs", "quand elle s'exécute"),
        Key("retention", SECTION, "which snapshots are kept", "quelles sauvegardes sont conservées"),
        Key("verification", SECTION, "how the backups are checked", "comment les sauvegardes sont vérifiées"),
    ),
    "continuity": (
        Key("repository", _nonempty, "where the pieces go: a repository (the NAS, off site; not a media set)",
            "où vont les morceaux : un dépôt (le NAS, hors site ; pas un jeu de disques)", required=True),
        Key("spool", _optional_path, "the spool folder 'coffre wal push --spool' fills (PostgreSQL's "
            "archive_command)", "le dossier d'attente que remplit « coffre wal push --spool » "
            "(archive_command de PostgreSQL)", example='"/var/lib/postgresql/coffre-spool"'),
        Key("sqlite", _optional_path, "on the pharmacy's server: a SQLite database (WAL mode) whose changes "
            "the agent follows into the spool (as 'coffre wal sqlite')", "sur le serveur de la pharmacie : "
            "une base SQLite (mode WAL) dont l'agent suit les changements dans le dossier d'attente (comme "
            "« coffre wal sqlite »)", example='"/srv/officine/data/officine.db"'),
        Key("mysql", _mysql_server, "on the pharmacy's server: a MariaDB server whose binary log the agent "
            "follows into the spool (as 'coffre wal mysql'; password in ~/.my.cnf or by the socket)",
            "sur le serveur de la pharmacie : un serveur MariaDB dont l'agent suit le journal binaire dans "
            "le dossier d'attente (comme « coffre wal mysql » ; mot de passe dans ~/.my.cnf ou par la "
            "socket)", example='"mysql://coffre@localhost?socket=/run/mysqld/mysqld.sock"'),
        Key("every", _duration, "a pass every ... (default 1s for a local path, 10s for a remote repository)",
            "un passage toutes les ... (par défaut 1s pour un chemin local, 10s pour un dépôt distant)",
            example='"1s"'),
        Key("max_backlog", _duration, "alert when a piece has waited in the spool longer than this",
            "alerte quand un morceau attend dans le dossier d'attente depuis plus longtemps que cela"),
        Key("standby_pgdata", _optional_path, "on a standby machine: the data folder 'coffre standby init' "
            "set up, fed at each pass", "sur un poste de secours : le dossier de données préparé par "
            "« coffre standby init », alimenté à chaque passage", example='"/srv/secours/pgdata"'),
        Key("standby_sqlite", _optional_path, "on a standby machine: the SQLite file 'coffre standby "
            "sqlite-init' wrote, fed at each pass", "sur un poste de secours : le fichier SQLite écrit par "
            "« coffre standby sqlite-init », alimenté à chaque passage",
            example='"/srv/secours/officine.db"'),
        Key("standby_mysql", _optional_path, "on a standby machine: the state file 'coffre standby "
            "mysql-init' wrote (it names the standby database), fed at each pass",
            "sur un poste de secours : le fichier d'état écrit par « coffre standby mysql-init » (il "
            "nomme la base de secours), alimentée à chaque passage",
            example='"/var/lib/coffre/mysql-standby/officine.json"'),
        Key("max_lag", _duration, "alert when pieces stored in the repository have waited this long without "
            "reaching the standby, or its passes have failed this long (files: when a newer snapshot has "
            "waited this long without being applied)",
            "alerte quand des morceaux gardés dans le dépôt attendent depuis ce temps sans arriver au poste "
            "de secours, ou que ses passages échouent depuis ce temps (fichiers : quand une sauvegarde plus "
            "récente attend depuis ce temps sans être appliquée)"),
        Key("files_target", _optional_path, "on a standby machine: a folder kept equal to the newest "
            "snapshot (as 'coffre restore --sync --delete')", "sur un poste de secours : un dossier "
            "tenu égal à la sauvegarde la plus récente (comme « coffre restore --sync --delete »)",
            example='"/srv/secours/officine"'),
        Key("files_paths", _paths, "the snapshot's paths kept there (default: all of them)",
            "les chemins de la sauvegarde qui y sont tenus à jour (par défaut : tous)",
            example='["/srv/officine"]'),
        Key("files_host", _nonempty, "only the snapshots of this host",
            "seulement les sauvegardes de cette machine", example='"comptoir"'),
        Key("files_delete", _bool, "also remove what the snapshot no longer holds (default true)",
            "supprimer aussi ce que la sauvegarde ne contient plus (par défaut true)"),
        Key("files_every", _duration, "look for a newer snapshot this often (default 5min)",
            "chercher une sauvegarde plus récente à cet intervalle (par défaut 5min)", example='"5min"'),
    ),
    "schedule": (
        Key("times", _times, "times of day, HH:MM", "heures de la journée, HH:MM"),
        Key("days", _days, "days of the week (mon ... sun)",
            "jours de la semaine (mon ... sun, ou lundi ... dimanche)"),
        Key("every", _duration_or_off, "or: run every this long (e.g. \"4h\")",
            "ou : une exécution toutes les ... (par ex. \"4h\")", example='"4h"'),
        Key("realtime", _bool, "also back up when files change (watching the paths)",
            "sauvegarder aussi dès que des fichiers changent (surveillance des dossiers)"),
        Key("debounce", _duration, "real time: quiet needed after the last change",
            "temps réel : calme attendu après le dernier changement"),
        Key("min_interval", _duration, "real time: at most one backup per this long",
            "temps réel : au plus une sauvegarde par ... "),
        Key("window", _duration, "retries happen within it; the job is late after it",
            "les nouvelles tentatives ont lieu dans ce délai ; après, la sauvegarde est en retard"),
    ),
    "retention": (
        *(Key(f"keep_{unit}", _int(1, 100000), f"keep the last N {n}", f"garder les N {nfr}", example=example)
          for unit, n, nfr, example in (("last", "snapshots", "dernières sauvegardes", "10"),
                                        ("hourly", "hourly snapshots", "sauvegardes horaires", "24"),
                                        ("daily", "daily snapshots", "sauvegardes quotidiennes", "14"),
                                        ("weekly", "weekly snapshots", "sauvegardes hebdomadaires", "8"),
                                        ("monthly", "monthly snapshots", "sauvegardes mensuelles", "24"),
                                        ("yearly", "yearly snapshots", "sauvegardes annuelles", "10"))),
        Key("keep_within", _keep_within, "keep everything younger than this (y, m, w, d, h)",
            "garder tout ce qui a moins de ... (y, m, w, d, h)", example='"30d"'),
        Key("max_size", _size, "when the repository is larger, the oldest go first",
            "au-delà de cette taille, les plus anciennes partent d'abord", example='"400GiB"'),
        Key("prune", _bool, "free the space of forgotten snapshots",
            "libérer la place des sauvegardes oubliées"),
    ),
    "verification": (
        Key("check_subset", _subset_or_off,
            "share of the data read back after each run (false: structure only)",
            "part des données relue après chaque sauvegarde (false : structure seulement)"),
        Key("verify_sample", _share, "share of files compared with the originals",
            "part des fichiers comparés aux originaux"),
        Key("drill_every", _duration_or_off,
            "restore the databases in a test instance every ... (false: never)",
            "restaurer les bases dans une instance d'essai tous les ... (false : jamais)"),
        Key("check_copies", _bool, "compare each copy with the primary",
            "comparer chaque copie avec l'original"),
    ),
    "alerts": (
        Key("email", SECTION, "alerts by e-mail", "alertes par courriel"),
        Key("webhooks", SECTIONS, "JSON POSTs to the provider's tools",
            "envois JSON vers les outils du prestataire"),
        Key("heartbeat", SECTION, "pings to a healthchecks.io-style service",
            "signaux de vie vers un service de type healthchecks.io"),
        Key("reminder_every", _duration, "a problem that lasts is reported again this often",
            "un problème qui dure est signalé de nouveau à cet intervalle"),
        Key("changed_files_share", _share_above_zero,
            "alert when a backup finds more changed files than this share",
            "alerte quand une sauvegarde trouve plus de fichiers modifiés que cette part"),
        Key("medium_full_share", _share_above_zero, "alert when a medium is fuller than this",
            "alerte quand un support est plus rempli que cela"),
        Key("medium_full_days", _number(0, 3650), "or when it will be full within this many days",
            "ou quand il sera plein dans moins de ce nombre de jours"),
    ),
    "email": (
        Key("server", _nonempty, "the SMTP server", "le serveur SMTP", required=True),
        Key("port", _int(1, 65535), "its port", "son port"),
        Key("security", _security, "starttls, tls or none (none: a relay on this machine only)",
            "starttls, tls ou none (none : relais sur cette machine seulement)"),
        Key("username", _nonempty, "the login, if the server asks for one",
            "l'identifiant, si le serveur en demande un",
            example='"pharmacie@example.fr"'),
        *_PASSWORD,
        Key("sender", _nonempty, "the From address", "l'adresse d'expédition"),
        Key("to", _texts, "who is told: the pharmacist", "qui est prévenu : le pharmacien", required=True),
        Key("provider", _texts, "the IT provider, told when a problem lasts",
            "le prestataire informatique, prévenu quand un problème dure",
            example='["support@prestataire.example"]'),
        Key("escalate_after", _duration, "the provider is told after this long",
            "le prestataire est prévenu au bout de ce délai"),
        Key("timeout", _duration, "network timeout", "délai d'attente réseau"),
        Key("ca_file", _optional_path, "a private certificate authority",
            "une autorité de certification privée",
            example='"/etc/coffre/ca.pem"'),
    ),
    "webhook": (
        Key("url", _http_url, "the address that receives the JSON", "l'adresse qui reçoit le JSON",
            required=True),
        Key("secret_file", _optional_path, "a file holding the HMAC key (X-Coffre-Signature)",
            "un fichier contenant la clé HMAC (X-Coffre-Signature)", example='"/etc/coffre/webhook.key"'),
        Key("timeout", _duration, "network timeout", "délai d'attente réseau"),
    ),
    "server": (
        Key("url", _server_url, "the provider's hosting server, told the status of each run (its address, "
            "not a repository's)", "le serveur d'hébergement du prestataire, informé de l'état de chaque "
            "sauvegarde (son adresse, pas celle d'un dépôt)", required=True,
            example='"https://sauvegarde.prestataire.example"'),
        Key("token_file", _optional_path, "a file holding the pharmacy's token (readable by root only)",
            "un fichier contenant le jeton de la pharmacie (lisible par root seulement)", required=True,
            example='"/etc/coffre/jeton-serveur"'),
        Key("ca_file", _optional_path, "the server's certificate, when it is self-signed",
            "le certificat du serveur, s'il est auto-signé", example='"/etc/coffre/serveur.pem"'),
        Key("insecure_http", _bool, "allow http:// (the token in clear on the network: tests only)",
            "autoriser http:// (le jeton en clair sur le réseau : pour des essais seulement)"),
        Key("timeout", _duration, "network timeout", "délai d'attente réseau"),
    ),
    "web": (
        Key("enabled", _bool, "serve the pharmacy's page (status, history, restore) while the agent runs",
            "servir la page de la pharmacie (état, historique, restauration) pendant que l'agent tourne"),
        Key("listen", _listen, "the page's address and port; another address than 127.0.0.1 needs TLS",
            "l'adresse et le port de la page ; une autre adresse que 127.0.0.1 demande TLS"),
        Key("tls_cert", _optional_path, "the TLS certificate (PEM), with tls_key",
            "le certificat TLS (PEM), avec tls_key", example='"/etc/coffre/page.crt"'),
        Key("tls_key", _optional_path, "its private key (PEM, readable by root only)",
            "sa clé privée (PEM, lisible par root seulement)", example='"/etc/coffre/page.key"'),
        Key("password_hash_file", _optional_path,
            "a separate password for the page ('coffre agent web-password' writes it); without it, "
            "the repository's password opens the page",
            "un mot de passe propre à la page (« coffre agent web-password » l'écrit) ; sans lui, le mot "
            "de passe du dépôt ouvre la page", example='"/etc/coffre/page.argon2"'),
        Key("idle_timeout", _duration, "a session without activity for this long asks for the password again",
            "une session inactive depuis ce délai redemande le mot de passe"),
        Key("restore_area", _optional_path,
            "where restored files go (default: the state folder's Restaurations)",
            "où vont les fichiers restaurés (par défaut : Restaurations dans le dossier d'état)",
            example='"/srv/officine/Restaurations"'),
        Key("contact", _text, "whom to call when something is wrong (shown on the page)",
            "qui appeler quand quelque chose ne va pas (affiché sur la page)",
            example='"Informatique Dupont, 01 23 45 67 89"'),
    ),
    "heartbeat": (
        Key("url", _http_url, "pinged at start and success; /fail is added on failure",
            "appelée au début et en cas de succès ; /fail est ajouté en cas d'échec", required=True),
        Key("timeout", _duration, "network timeout", "délai d'attente réseau"),
    ),
}

LOOPBACK = (None, "localhost", "127.0.0.1", "::1")
TOP = ("agent", "repositories", "media_sets", "jobs", "continuity", "alerts", "server", "web")
MIN_EVERY = 0.1  # seconds: a continuity pass more often than this costs CPU for nothing
LOCAL_EVERY, REMOTE_EVERY = 1.0, 10.0  # a continuity pass's default period
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DISK_ID = re.compile(r"[0-9a-fA-F]{32}")


def model_default(cls: type, name: str) -> Any:
    """The model's default for a field (None when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None if f.default is dataclasses.MISSING else f.default
    raise KeyError(name)


def toml_literal(value: Any) -> str:
    """A TOML literal for a plain value: text, number, boolean, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(toml_literal(v) for v in value) + "]"


def toml_value(key: Key, value: Any) -> str:
    """How the model's `value` for `key` is written in the file (durations as "2h")."""
    if key.convert in (_duration, _duration_or_off) and isinstance(value, int | float):
        return toml_literal(format_seconds(value))
    return toml_literal(value)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return _(" (did you mean {name}?)").format(name=close[0]) if close else ""


# --------------------------------------------------------------------------- lines

_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> list[str]:
    out = []
    for p in re.findall(_PART, dotted):
        if p.startswith('"'):
            try:
                p = json.loads(p)
            except ValueError:
                p = p[1:-1]
        elif p.startswith("'"):
            p = p[1:-1]
        out.append(p)
    return out


def render(path: KeyPath) -> str:
    """A key path as people write it: jobs.officine.schedule.times[1], quoting odd names."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            name = p if _NAME.fullmatch(p) else json.dumps(p, ensure_ascii=False)
            out += f".{name}" if out else name
    return out


def _key_lines(text: str) -> dict[KeyPath, int]:
    """Where each table and key starts (1-based), skipping the inside of multi-line values."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    arrays: dict[KeyPath, int] = {}  # [[array]] paths -> the index of their current element
    depth, multiline = 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        rest = line
        if not multiline and depth == 0:
            header = _HEADER.match(line)
            if header:
                path: KeyPath = ()
                for p in _parts(header.group(2)):
                    path += (p,)
                    if path in arrays and path != tuple(_parts(header.group(2))):
                        path += (arrays[path],)
                if header.group(1) == "[[":
                    lines.setdefault(path, number)
                    arrays[path] = arrays.get(path, -1) + 1
                    path += (arrays[path],)
                table = path
                lines.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                lines.setdefault(table + tuple(_parts(assign.group(1))), number)
                rest = line[assign.end():]
        depth, multiline = _scan(rest, depth, multiline)
    return lines


def _scan(text: str, depth: int, multiline: str) -> tuple[int, str]:
    """Bracket depth and open multi-line string delimiter after `text`."""
    i = 0
    while i < len(text):
        if multiline:
            end = text.find(multiline, i)
            if end < 0:
                return depth, multiline
            i, multiline = end + 3, ""
            continue
        c = text[i]
        if text.startswith(('"""', "'''"), i):
            multiline, i = text[i:i + 3], i + 3
            continue
        if c in "\"'":
            m = re.compile(r'"(?:[^"\\]|\\.)*"' if c == '"' else r"'[^']*'").match(text, i)
            i = m.end() if m else len(text)
            continue
        if c == "#":
            break
        depth += (c in "[{") - (c in "]}")
        i += 1
    return max(depth, 0), multiline


# --------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = _key_lines(text)
        self.problems: list[ConfigProblem] = []

    def line_of(self, path: KeyPath) -> int | None:
        while True:
            if path in self.lines:
                return self.lines[path]
            inside = [n for p, n in self.lines.items() if p[:len(path)] == path]
            if inside and path:
                return min(inside)
            if not path:
                return None
            path = path[:-1]

    def bad(self, path: KeyPath, what: str) -> None:
        self.problems.append(ConfigProblem(self.file, self.line_of(path), render(path), what))

    def table(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.bad(path, _("expected a table [{name}], found {found}").format(
            name=render(path), found=_type_name(value)))
        return None

    def fields(self, table: Mapping[str, Any], section: str, path: KeyPath) -> dict[str, Any]:
        """The converted values of the keys present (sub-tables left as they are); a problem
        for each unknown key, missing required key and bad value."""
        keys = {k.name: k for k in SCHEMA[section]}
        out: dict[str, Any] = {}
        for name, value in table.items():
            key = keys.get(name)
            if key is None:
                self.bad((*path, name), _("unknown key") + _did_you_mean(name, keys))
            elif isinstance(key.convert, str):
                out[name] = value
            else:
                try:
                    out[name] = key.convert(value)
                except ValueError as exc:
                    self.bad((*path, name), str(exc))
        for key in keys.values():
            if key.required and key.name not in table:
                self.bad((*path, key.name), _("missing (required)"))
        return out

    def one_password(self, table: Mapping[str, Any], path: KeyPath,
                     required: bool = True) -> None:
        given = [k for k in ("password_file", "password_command") if k in table]
        if len(given) > 1:
            self.bad((*path, given[1]), _("give password_file or password_command, not both"))
        elif not given and required:
            self.bad(path, _("no password source: add password_file (or password_command)"))

    def name(self, name: str, path: KeyPath) -> bool:
        if _NAME.fullmatch(name):
            return True
        self.bad(path, _("names use letters, digits, - and _ only (at most 64)"))
        return False


def load_config(path: str | Path) -> model.Config:
    """The configuration in `path`; ConfigError listing every problem otherwise."""
    file = str(path)
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(_("cannot read the configuration {file}: {reason}").format(
            file=file, reason=exc.strerror or exc),
            _("'coffre config init' writes a starting file")) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(_("{file} is larger than 1 MiB: not a configuration file").format(file=file))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        what = _("not UTF-8 text (save the file as UTF-8)")
        raise _refused(file, [ConfigProblem(file, line, "", what)]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        at: int | None = int(m.group(1)) if m else None
        what = _("not valid TOML: {reason}").format(reason=reason)
        if m:
            what += _(" (column {column})").format(column=m.group(2))
        hint = _("texts go in quotes, lists in [ ], one key per line; e.g. times = [\"12:30\"]")
        raise _refused(file, [ConfigProblem(file, at, "", what)], hint) from None
    reader = _Reader(file, text)
    config = _build(reader, raw, file)
    if reader.problems:
        raise _refused(file, reader.problems)
    assert config is not None
    return config


def _refused(file: str, problems: list[ConfigProblem], hint: str | None = None) -> ConfigError:
    problems = sorted(problems, key=lambda p: p.line or 1 << 30)  # in the file's order
    head = ngettext("the configuration {file} has {n} problem:", "the configuration {file} has {n} problems:",
                    len(problems)).format(file=file, n=len(problems))
    return ConfigError("\n".join([head, *map(str, problems)]), hint, tuple(problems))


def _build(r: _Reader, raw: dict[str, Any], file: str) -> model.Config | None:
    for name in raw:
        if name not in TOP:
            r.bad((name,), _("unknown section") + _did_you_mean(name, TOP))
    agent = model.Agent()
    table = r.table(raw.get("agent", {}), ("agent",))
    if table is not None:
        agent = model.Agent(**r.fields(table, "agent", ("agent",)))

    repositories: dict[str, model.Repository] = {}
    for name, value in _named(r, raw, "repositories"):
        path: KeyPath = ("repositories", name)
        values = r.fields(value, "repository", path)
        r.one_password(value, path)
        if "url" in values:
            if values["url"].lower().startswith("ftp://") and not values.get("insecure_ftp"):
                r.bad((*path, "url"), _("plain FTP sends the password in clear: use ftps://, or set "
                                         "insecure_ftp = true if the server offers nothing else"))
            scheme = values["url"].split("://", 1)[0].lower() if "://" in values["url"] else ""
            if scheme == "http" and not values.get("insecure_http"):
                r.bad((*path, "url"), _("http:// sends the hosting server's token in clear: use "
                                         "https://, or set insecure_http = true on a test machine"))
            if scheme in ("http", "https") and "token_file" not in values:
                r.bad((*path, "token_file"), _("a hosting server needs its access token: give "
                                                "token_file"))
            repositories[name] = model.Repository(name=name, **values)

    media_sets: dict[str, model.MediaSet] = {}
    owner: dict[str, str] = {}  # disk id -> its media set
    for name, value in _named(r, raw, "media_sets"):
        path = ("media_sets", name)
        values = r.fields(value, "media_set", path)
        r.one_password(value, path)
        disks = _disks(r, values.pop("disks", None), path, name, owner)
        if name in repositories:
            r.bad(path, _("{name} is already a repository's name: a job could not tell which is "
                          "meant").format(name=name))
        if disks is not None:
            media_sets[name] = model.MediaSet(name=name, disks=disks, **values)

    jobs: dict[str, model.Job] = {}
    known = {*_names(raw, "repositories"), *_names(raw, "media_sets")}
    for name, value in _named(r, raw, "jobs"):
        job = _job(r, name, value, known)
        if job is not None:
            _one_server_token(r, job, repositories)
            jobs[name] = job
    continuity = _continuity(r, raw, repositories, set(_names(raw, "repositories")),
                             set(_names(raw, "media_sets")))
    if not _names(raw, "jobs") and not _names(raw, "continuity"):
        r.bad(("jobs",), _("no job: add a [jobs.NAME] table ('coffre config init' writes an example)"))

    alerts = _alerts(r, raw.get("alerts", {}))
    server = _server(r, raw.get("server"))
    web = _web(r, raw.get("web"))
    if r.problems:
        return None
    return model.Config(path=file, agent=agent, repositories=repositories, media_sets=media_sets,
                        jobs=jobs, continuity=continuity, alerts=alerts, server=server, web=web)


def _names(raw: Mapping[str, Any], section: str) -> list[str]:
    outer = raw.get(section)
    return list(outer) if isinstance(outer, dict) else []


def _named(r: _Reader, raw: Mapping[str, Any], section: str) -> list[tuple[str, dict[str, Any]]]:
    """The NAME -> table entries of [section.NAME] tables, names checked."""
    outer = r.table(raw.get(section, {}), (section,))
    out = []
    for name, value in (outer or {}).items():
        if not isinstance(value, dict):
            r.bad((section, name), _("expected a table [{section}.NAME] holding keys, found {found}").format(
                section=section, found=_type_name(value)))
        elif r.name(name, (section, name)):
            out.append((name, value))
    return out


def _disks(r: _Reader, value: object, path: KeyPath, set_name: str,
           owner: dict[str, str]) -> dict[str, str] | None:
    if value is None:
        return None
    table = r.table(value, (*path, "disks"))
    if table is None:
        return None
    if not table:
        r.bad((*path, "disks"), _("no disk: give at least one, name = \"repository id\""))
        return None
    disks = {}
    for disk, disk_id in table.items():
        where = (*path, "disks", disk)
        if not r.name(disk, where):
            continue
        if not isinstance(disk_id, str) or not _DISK_ID.fullmatch(disk_id.strip()):
            r.bad(where, _("expected the disk's repository id, 32 hexadecimal digits (shown on its recovery "
                           "sheet)"))
            continue
        disk_id = disk_id.strip().lower()
        if disk_id in owner:
            r.bad(where, _("the same id as the disk {other}").format(other=owner[disk_id]))
            continue
        owner[disk_id] = f"{set_name}.{disk}"
        disks[disk] = disk_id
    return disks


def _one_server_token(r: _Reader, job: model.Job, repositories: dict[str, model.Repository]) -> None:
    """A step's commands reach one hosting server's token (COFFRE_SERVER_TOKEN_FILE): a job
    whose primary and copies are on hosting servers with different tokens cannot run."""
    token_files = {repositories[n].token_file for n in (job.repository, *job.copies)
                   if n in repositories and repositories[n].token_file}
    if len(token_files) > 1:
        r.bad(("jobs", job.name, "copies"), _("the job's repositories are on hosting servers with "
                                              "different tokens: at most one token per job"))


def _job(r: _Reader, name: str, table: dict[str, Any], known: set[str]) -> model.Job | None:
    """A job, its references checked against `known`: every repository and media set named in
    the file, so one with a problem of its own is not reported again in each job naming it."""
    path: KeyPath = ("jobs", name)
    values = r.fields(table, "job", path)
    primary = values.get("repository")
    if primary is not None and primary not in known:
        r.bad((*path, "repository"), _("no repository or media set is named {name}").format(
            name=repr(primary)) + _did_you_mean(primary, known))
    seen = set()
    for i, copy in enumerate(values.get("copies", ())):
        where = (*path, "copies", i)
        if copy == primary:
            r.bad(where, _("{name} is the job's own repository: a copy goes elsewhere").format(
                name=repr(copy)))
        elif copy in seen:
            r.bad(where, _("{name} is named twice").format(name=repr(copy)))
        elif copy not in known:
            r.bad(where, _("no repository or media set is named {name}").format(name=repr(copy))
                  + _did_you_mean(copy, known))
        seen.add(copy)
    sources = ("paths", "postgres", "mysql", "sqlite")
    if not any(values.get(k) for k in sources) and not any(k in table and k not in values for k in sources):
        r.bad(path, _("nothing to back up: give paths, or a database (postgres, mysql, sqlite)"))
    sub: dict[str, Any] = {}
    for section, cls in (("schedule", model.Schedule), ("retention", model.Retention),
                         ("verification", model.Verification)):
        if section in values:
            inner = r.table(values.pop(section), (*path, section))
            if inner is not None:
                sub[section] = cls(**r.fields(inner, section, (*path, section)))
    schedule = sub.get("schedule")
    if schedule is not None and schedule.realtime and not values.get("paths"):
        r.bad((*path, "schedule", "realtime"), _("real time watches the job's paths, and it has none"))
    if primary is None:
        return None
    return model.Job(name=name, **values, **sub)


def _continuity(r: _Reader, raw: Mapping[str, Any], repositories: dict[str, model.Repository],
                known: set[str], media_sets: set[str]) -> dict[str, model.Continuity]:
    """The [continuity.NAME] entries: each names a repository of the file (one with a problem
    of its own is not reported again here), has a spool, a standby, or both, and no two
    entries share a spool or a standby."""
    out: dict[str, model.Continuity] = {}
    spools: dict[str, tuple[str, str]] = {}  # a folder (a server): the entry and key that have it
    standbys: dict[str, tuple[str, str]] = {}
    targets: dict[str, tuple[str, str]] = {}
    sqlites: dict[str, tuple[str, str]] = {}
    servers: dict[str, tuple[str, str]] = {}
    for name, table in _named(r, raw, "continuity"):
        path: KeyPath = ("continuity", name)
        values = r.fields(table, "continuity", path)
        repo = values.get("repository")
        if repo is not None and repo not in known:
            if repo in media_sets:
                r.bad((*path, "repository"), _("{name} is a set of removable disks, which come and go: "
                                                "continuous capture goes to a repository (the NAS, off "
                                                "site)").format(name=repr(repo)))
            else:
                r.bad((*path, "repository"), _("no repository is named {name}").format(name=repr(repo))
                      + _did_you_mean(repo, known))
        standby_keys = [k for k in STANDBY_KEYS if k in table]
        if "spool" not in table and not standby_keys and "files_target" not in table:
            r.bad(path, _("nothing to do: give spool (the folder 'coffre wal push' fills), or "
                          "standby_pgdata, standby_sqlite, standby_mysql or files_target on a standby "
                          "machine"))
        if len(standby_keys) > 1:
            r.bad((*path, standby_keys[1]), _("one standby per entry: give {key} its own "
                                              "[continuity.NAME]").format(key=standby_keys[1]))
        for key in ("sqlite", "mysql"):
            if values.get(key) is not None and "spool" not in table:
                r.bad((*path, key), _("{key} is captured into a spool: give spool too").format(key=key))
        if "max_lag" in table and not standby_keys and "files_target" not in table:
            r.bad((*path, "max_lag"), _("max_lag is for a standby: give standby_pgdata, standby_sqlite, "
                                        "standby_mysql or files_target too"))
        _files_keys(r, path, table, values, repositories.get(repo) if repo is not None else None)
        for key, seen in (("spool", spools), *((k, standbys) for k in STANDBY_KEYS),
                          ("files_target", targets), ("sqlite", sqlites), ("mysql", servers)):
            folder = values.get(key)
            if folder is None:
                continue
            folder = folder if key == "mysql" else os.path.normpath(folder)
            if folder in seen:
                other, other_key = seen[folder]
                r.bad((*path, key), _("{folder} is already the {key} of continuity.{other}").format(
                    folder=folder, key=other_key, other=other))
            seen[folder] = (name, key)
        every = values.get("every")
        if every is None and repo in repositories:
            every = REMOTE_EVERY if "://" in repositories[repo].url else LOCAL_EVERY
            values["every"] = every
        if every is not None and every < MIN_EVERY:
            r.bad((*path, "every"), _("a pass more often than every {least} s costs CPU for nothing").format(
                least=MIN_EVERY))
        for key in ("max_backlog", "max_lag"):
            if key == "max_lag" and not standby_keys and "files_target" not in table:
                continue
            limit = values.get(key, model_default(model.Continuity, key))
            if every is not None and limit <= every:
                r.bad((*path, key if key in values else "every"),
                      _("{key} ({limit}) must be longer than every ({every}), or every pass would "
                        "alert").format(key=key, limit=format_seconds(limit), every=format_seconds(every)))
        if repo is not None and repo in repositories:
            out[name] = model.Continuity(name=name, **values)
    return out


FILES_KEYS = ("files_paths", "files_host", "files_delete", "files_every")
STANDBY_KEYS = ("standby_pgdata", "standby_sqlite", "standby_mysql")


def _files_keys(r: _Reader, path: KeyPath, table: Mapping[str, Any], values: Mapping[str, Any],
                repository: model.Repository | None) -> None:
    """The files kept current (`files_target`): its other keys need it, its folder is no
    other part of the entry, and one that files_delete would empty is refused here, as
    `coffre restore --sync --delete` refuses it (a system or home folder, a repository...)."""
    from coffre.ops.sync import target_refusal
    from coffre.storage.url import is_url

    target = values.get("files_target")
    if "files_target" not in table:
        for key in FILES_KEYS:
            if key in table:
                r.bad((*path, key), _("{key} is for files kept current: give files_target too").format(
                    key=key))
        return
    if target is None:  # reported by its converter
        return
    folder = os.path.normpath(target)
    for key in ("spool", *STANDBY_KEYS):
        other = values.get(key)
        if other is not None and (folder == os.path.normpath(other)
                                  or folder.startswith(os.path.normpath(other).rstrip("/") + "/")
                                  or os.path.normpath(other).startswith(folder.rstrip("/") + "/")):
            r.bad((*path, "files_target"), _("{folder} overlaps the {key} of the same entry").format(
                folder=folder, key=key))
    if not values.get("files_delete", model_default(model.Continuity, "files_delete")):
        return
    local = repository.url if repository is not None and not is_url(repository.url) else None
    reason = target_refusal(folder, local)
    if reason is not None:
        r.bad((*path, "files_target"), _("files_delete would empty {folder}: {reason}; give the copy a "
                                         "folder of its own (or files_delete = false)").format(
            folder=folder, reason=reason))


def _alerts(r: _Reader, value: object) -> model.Alerts:
    table = r.table(value, ("alerts",))
    if table is None:
        return model.Alerts()
    values = r.fields(table, "alerts", ("alerts",))
    email = values.pop("email", None)
    if email is not None:
        path: KeyPath = ("alerts", "email")
        inner = r.table(email, path)
        email = None
        if inner is not None:
            fields = r.fields(inner, "email", path)
            r.one_password(inner, path, required=False)
            has_password = "password_file" in inner or "password_command" in inner
            if "username" in inner and not has_password:
                r.bad((*path, "username"), _("a login needs its password: add password_file (or "
                                              "password_command)"))
            elif has_password and "username" not in inner:
                r.bad(path, _("a password without a login: add username"))
            if "to" in fields and not fields["to"]:
                r.bad((*path, "to"), _("nobody to tell: give at least one address"))
            for key in ("to", "provider"):
                for i, address in enumerate(fields.get(key, ())):
                    if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
                        r.bad((*path, key, i), _("{address} is not an e-mail address").format(
                            address=repr(address)))
            if fields.get("security") == "none" and fields.get("server") not in LOOPBACK:
                r.bad((*path, "security"), _("\"none\" sends mail in clear: only for a relay on this machine "
                                              "(localhost); use starttls or tls"))
            try:
                email = model.Email(**fields)
            except TypeError:  # a required key was missing: already reported
                email = None
    webhooks = []
    raw_hooks = values.pop("webhooks", [])
    if not isinstance(raw_hooks, list):
        r.bad(("alerts", "webhooks"), _("expected [[alerts.webhooks]] tables"))
        raw_hooks = []
    for i, hook in enumerate(raw_hooks):
        inner = r.table(hook, ("alerts", "webhooks", i))
        if inner is not None:
            fields = r.fields(inner, "webhook", ("alerts", "webhooks", i))
            if "url" in fields:
                webhooks.append(model.Webhook(**fields))
    heartbeat = values.pop("heartbeat", None)
    if heartbeat is not None:
        inner = r.table(heartbeat, ("alerts", "heartbeat"))
        fields = r.fields(inner, "heartbeat", ("alerts", "heartbeat")) if inner is not None else {}
        heartbeat = model.Heartbeat(**fields) if "url" in fields else None
    return model.Alerts(email=email, webhooks=tuple(webhooks), heartbeat=heartbeat, **values)


def _server(r: _Reader, value: object) -> model.Server | None:
    """The [server] section: where the status of each run is posted (agent/report.py)."""
    if value is None:
        return None
    table = r.table(value, ("server",))
    if table is None:
        return None
    fields = r.fields(table, "server", ("server",))
    url = fields.get("url")
    if url is not None and url.lower().startswith("http://") and not fields.get("insecure_http"):
        r.bad(("server", "url"), _("http:// sends the token in clear: use https://, or set insecure_http = "
                                   "true for a test on this machine"))
    if "url" not in fields or "token_file" not in fields:
        return None
    return model.Server(**fields)


def _web(r: _Reader, value: object) -> model.Web:
    """The [web] section: the pharmacy's page served by `coffre agent`."""
    if value is None:
        return model.Web()
    table = r.table(value, ("web",))
    if table is None:
        return model.Web()
    fields = r.fields(table, "web", ("web",))
    tls = [k for k in ("tls_cert", "tls_key") if k in table]
    if len(tls) == 1:
        other = "tls_key" if tls[0] == "tls_cert" else "tls_cert"
        r.bad(("web", tls[0]), _("{given} needs {other}: give both, or neither").format(
            given=tls[0], other=other))
    listen = fields.get("listen")
    if listen is not None and not tls:
        host, _port = parse_listen(listen)
        if not is_loopback(host):
            r.bad(("web", "listen"), _("the page may listen on {host} only with TLS (the password would "
                                       "cross the network in clear): give tls_cert and tls_key, or listen on "
                                       "127.0.0.1").format(host=host))
    return model.Web(**fields)
