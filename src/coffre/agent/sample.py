"""The commented starting configuration `coffre config init` writes for a pharmacy, with the
databases found on this server filled in (`detect_databases`).

The comment on each key is its help text from `config.SCHEMA`, so the sample and the
validation describe the keys once. The sample's own sentences are here in French and English
(the file is written in the language asked for, not the one the command speaks).
Detection never fails: what cannot be found is left as a commented example.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coffre.agent import model
from coffre.agent.config import SCHEMA, STANDBY_KEYS, Key, model_default, toml_literal, toml_value
from coffre.core.posix import user_name

PG_SOCKET_DIRS = ("/var/run/postgresql",)
MYSQL_SOCKETS = ("/run/mysqld/mysqld.sock",)
_SYSTEM_DATABASES = {"postgres", "information_schema", "mysql", "performance_schema", "sys"}
_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,63}")  # names written into the file as they are
TIMEOUT = 5.0


@dataclass(frozen=True)
class PgCluster:
    port: int
    socket_dir: str
    version: str = ""
    name: str = ""
    owner: str = ""
    databases: tuple[str, ...] = ()  # empty when they could not be listed


@dataclass(frozen=True)
class MysqlServer:
    socket: str
    databases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Detected:
    postgres: tuple[PgCluster, ...] = ()
    mysql: tuple[MysqlServer, ...] = ()


# --------------------------------------------------------------------------- detection


def _run(argv: list[str], env: Mapping[str, str] | None = None) -> str | None:
    """The command's output, or None for any failure (missing, refused, slow)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env})
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_lsclusters(text: str) -> list[PgCluster]:
    """pg_lsclusters' lines: `Ver Cluster Port Status Owner Data-directory Log-file`."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if (len(fields) >= 5 and re.fullmatch(r"\d+(\.\d+)?", fields[0]) and fields[2].isdigit()
                and fields[3].startswith("online")):
            out.append(PgCluster(int(fields[2]), PG_SOCKET_DIRS[0], fields[0], fields[1], fields[4]))
    return out


def _pg_sockets(dirs: Iterable[str]) -> list[PgCluster]:
    out = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(r"\.s\.PGSQL\.(\d+)", name)
            if m and _is_socket(os.path.join(d, name)):
                out.append(PgCluster(int(m.group(1)), d, owner=_owner(os.path.join(d, name))))
    return out


def _owner(path: str) -> str:
    """The account that owns a server's socket: the cluster's owner, who may list its databases."""
    try:
        return user_name(os.stat(path).st_uid)
    except OSError:
        return ""


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _names(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return tuple(n for n in (line.strip() for line in text.splitlines())
                 if _PLAIN.fullmatch(n) and n not in _SYSTEM_DATABASES)


def _pg_databases(cluster: PgCluster) -> tuple[str, ...]:
    psql = shutil.which("psql")
    if psql is None:
        return ()
    argv = [psql, "-X", "-A", "-t", "-w", "-h", cluster.socket_dir, "-p", str(cluster.port), "-d", "postgres",
            "-c", "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"]
    runuser = shutil.which("runuser")
    if os.geteuid() == 0 and cluster.owner and runuser:  # root: the cluster's owner has peer access
        argv = [runuser, "-u", cluster.owner, "--", *argv]
    return _names(_run(argv, {"PGCONNECT_TIMEOUT": "3"}))


def _mysql_databases(socket: str) -> tuple[str, ...]:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        return ()
    return _names(_run([client, f"--socket={socket}", "--connect-timeout=3", "--batch", "--skip-column-names",
                        "-e", "SHOW DATABASES"]))


def detect_databases(pg_socket_dirs: Iterable[str] = PG_SOCKET_DIRS,
                     mysql_sockets: Iterable[str] = MYSQL_SOCKETS,
                     lsclusters: bool = True) -> Detected:
    """The local PostgreSQL clusters (pg_lsclusters, else the sockets in `pg_socket_dirs`) and
    MariaDB/MySQL servers (their sockets), with their databases when they can be listed.
    Never raises."""
    try:
        clusters: list[PgCluster] = []
        if lsclusters and shutil.which("pg_lsclusters"):
            clusters = parse_lsclusters(_run(["pg_lsclusters", "--no-header"]) or "")
        if not clusters:
            clusters = _pg_sockets(pg_socket_dirs)
        postgres = tuple(PgCluster(c.port, c.socket_dir, c.version, c.name, c.owner, _pg_databases(c))
                         for c in clusters)
        mysql = tuple(MysqlServer(s, _mysql_databases(s)) for s in mysql_sockets if _is_socket(s))
        return Detected(postgres, mysql)
    except Exception:  # detection is a convenience: a surprise must not stop `config init`
        return Detected()


# --------------------------------------------------------------------------- the sample

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Coffre — configuration de l'agent de sauvegarde de l'officine",
        "intro": """Écrit par « coffre config init ». Adaptez-le, puis vérifiez-le avec
« coffre config check » (il dit ce que l'agent fera, et quand) avant « coffre agent install ».
Une ligne qui commence par # est un commentaire : enlevez le # pour utiliser une clé.
Durées : "90s", "10min", "2h", "7d", "1d12h". Parts : 0.3 ou "30%".
Aucun mot de passe dans ce fichier : un fichier qui le contient (chmod 600), ou une commande.""",
        "agent": "L'agent lui-même.",
        "nas": """Le NAS de l'officine, son partage monté sur /mnt/nas. Créez le dépôt une seule fois :
  coffre init --repo /mnt/nas/coffre --password-file /etc/coffre/mot-de-passe \\
              --recovery-sheet /root/fiche-nas.txt
puis imprimez la fiche de récupération et rangez-la hors de l'officine.""",
        "offsite": """La copie hors site, chez un hébergeur S3 (en France). Identifiants S3 dans
/root/.aws/credentials, profil [coffre]. Le débit est limité pendant les heures d'ouverture.""",
        "disks": """Deux disques USB (ou RDX) qui alternent : un branché, l'autre emporté hors de l'officine.
Chaque disque est un dépôt. Pour chacun : branchez-le, puis
  coffre init --repo /media/DISQUE/coffre --password-file /etc/coffre/mot-de-passe \\
              --recovery-sheet /root/fiche-disque-a.txt
et recopiez ci-dessous l'identifiant (32 caractères) de la ligne « Identifiant » de la fiche.""",
        "disk_ids": """REMPLACEZ ces deux identifiants d'exemple par ceux de vos disques
(tant que c'est un exemple, l'agent signale qu'aucun disque n'est branché).""",
        "job": """La sauvegarde de l'officine : la base de gestion, les documents et les ordonnances scannées,
sur le NAS, puis copiée hors site et sur le disque branché. Adaptez les dossiers.""",
        "pg_found": "Base PostgreSQL trouvée sur ce serveur. Le rôle coffre doit pouvoir lire toutes les "
                    "tables "
                    "(pg_read_all_data) ; son mot de passe va dans /root/.pgpass.",
        "pg_unlisted": "Serveur PostgreSQL trouvé (port {port}), mais ses bases n'ont pas pu être listées : "
                       "remplacez officine par le nom de la base de gestion.",
        "mysql_found": "Base MariaDB/MySQL trouvée sur ce serveur (connexion de root par le socket local).",
        "mysql_unlisted": "Serveur MariaDB/MySQL trouvé ({socket}), mais ses bases n'ont pas pu être "
                          "listées : "
                          "remplacez officine par le nom de la base de gestion.",
        "no_database": "Aucune base de données trouvée sur ce serveur : si le logiciel de l'officine en "
                       "utilise "
                       "une, décommentez la ligne qui lui correspond.",
        "schedule": "Deux sauvegardes par jour, à la pause de midi et le soir après la fermeture.",
        "retention": "Ce que l'on garde : 14 jours, 8 semaines, 24 mois, 10 ans.",
        "verification": ("Les vérifications après chaque sauvegarde, et un essai de restauration chaque "
                         "semaine."),
        "continuity": """Capture continue de PostgreSQL (facultatif) : chaque fichier WAL terminé est gardé
dans un dossier d'attente (dans postgresql.conf : archive_command = 'coffre wal push --spool
/var/lib/postgresql/coffre-spool %p %f', archive_mode = on, archive_timeout = 5), et l'agent
l'envoie au dépôt dans la seconde : on peut alors restaurer la base à n'importe quel moment.
Le dossier d'attente appartient à postgres, hors de /var/lib/coffre (réservé à l'agent).
Pour SQLite ou MariaDB, l'agent suit lui-même la base (sqlite, mysql) dans le même dossier.
Sur un poste de secours, standby_pgdata est le dossier préparé par « coffre standby init ».
Tout est expliqué dans docs/continuity.md.""",
        "alerts": "Qui est prévenu quand quelque chose ne va pas.",
        "email": """Par courriel : le pharmacien tout de suite, le prestataire si le problème dure.
Mettez le mot de passe du compte d'envoi dans /etc/coffre/smtp-mot-de-passe (chmod 600).""",
        "webhook": "Pour les outils de supervision du prestataire (facultatif).",
        "heartbeat": "Un service qui s'inquiète quand il ne reçoit plus de signal (facultatif).",
        "server": """Le serveur d'hébergement du prestataire (facultatif) : après chaque sauvegarde,
l'agent lui envoie son état (réussite, heures, tailles, vérifications ; jamais un nom de
fichier ni le contenu d'une base). Le jeton donné par le prestataire va dans
/etc/coffre/jeton-serveur (chmod 600).""",
        "web": """La page de la pharmacie, servie par l'agent : ouvrez http://127.0.0.1:8650 sur ce serveur.
On s'y connecte avec le mot de passe du dépôt (ou un mot de passe propre à la page :
« coffre agent web-password »). Indiquez dans contact qui appeler en cas de problème.""",
    },
    "en": {
        "title": "Coffre — the pharmacy's backup agent configuration",
        "intro": """Written by "coffre config init". Adapt it, then check it with "coffre config check"
(it says what the agent will do, and when) before "coffre agent install".
A line starting with # is a comment: remove the # to use a key.
Durations: "90s", "10min", "2h", "7d", "1d12h". Shares: 0.3 or "30%".
No password in this file: a file holding it (chmod 600), or a command.""",
        "agent": "The agent itself.",
        "nas": """The pharmacy's NAS, its share mounted on /mnt/nas. Create the repository once:
  coffre init --repo /mnt/nas/coffre --password-file /etc/coffre/mot-de-passe \\
              --recovery-sheet /root/sheet-nas.txt
then print the recovery sheet and keep it away from the pharmacy.""",
        "offsite": """The off-site copy, at an S3 hosting provider. S3 credentials in /root/.aws/credentials,
profile [coffre]. Bandwidth is limited during opening hours.""",
        "disks": """Two USB (or RDX) disks that alternate: one plugged in, the other taken away from the
pharmacy.
Each disk is a repository. For each one: plug it in, then
  coffre init --repo /media/DISK/coffre --password-file /etc/coffre/mot-de-passe \\
              --recovery-sheet /root/sheet-disk-a.txt
and copy below the id (32 characters) from the "Identifiant / id" line of the sheet.""",
        "disk_ids": """REPLACE these two example ids with your disks' ids
(while they are examples, the agent reports that no disk is plugged in).""",
        "job": """The pharmacy's backup: the management database, the documents and the scanned prescriptions,
to the NAS, then copied off site and to the plugged-in disk. Adapt the folders.""",
        "pg_found": "PostgreSQL database found on this server. The role coffre must read every table "
                    "(pg_read_all_data); its password goes in /root/.pgpass.",
        "pg_unlisted": "PostgreSQL server found (port {port}), but its databases could not be listed: "
                       "replace officine with the management database's name.",
        "mysql_found": ("MariaDB/MySQL database found on this server (root connects through the local "
                        "socket)."),
        "mysql_unlisted": "MariaDB/MySQL server found ({socket}), but its databases could not be listed: "
                          "replace officine with the management database's name.",
        "no_database": "No database found on this server: if the pharmacy's software uses one, uncomment "
                       "its line.",
        "schedule": "Two backups a day, at the lunch break and in the evening after closing.",
        "retention": "What is kept: 14 days, 8 weeks, 24 months, 10 years.",
        "verification": "Checks after each backup, and a restore drill every week.",
        "continuity": """Continuous capture of PostgreSQL (optional): each finished WAL file is kept in a
spool folder (in postgresql.conf: archive_command = 'coffre wal push --spool
/var/lib/postgresql/coffre-spool %p %f', archive_mode = on, archive_timeout = 5), and the agent
sends it to the repository within a second: the database can then be restored to any moment.
The spool folder belongs to postgres, outside /var/lib/coffre (the agent's own, private).
For SQLite or MariaDB, the agent follows the database itself (sqlite, mysql) into the same folder.
On a standby machine, standby_pgdata is the folder "coffre standby init" set up.
docs/continuity.md explains it all.""",
        "alerts": "Who is told when something is wrong.",
        "email": """By e-mail: the pharmacist at once, the IT provider if the problem lasts.
Put the sending account's password in /etc/coffre/smtp-mot-de-passe (chmod 600).""",
        "webhook": "For the IT provider's monitoring tools (optional).",
        "heartbeat": "A service that worries when it stops hearing from the agent (optional).",
        "server": """The IT provider's hosting server (optional): after each backup the agent sends it
the run's status (outcome, times, sizes, checks; never a file name nor a database's
content). The token the provider gives goes in /etc/coffre/jeton-serveur (chmod 600).""",
        "web": """The pharmacy's page, served by the agent: open http://127.0.0.1:8650 on this server.
Log in with the repository's password (or a password of the page's own:
"coffre agent web-password"). Say in contact whom to call when something is wrong.""",
    },
}

PLACEHOLDER_DISKS = {"disque-a": "0" * 31 + "a", "disque-b": "0" * 31 + "b"}
_MODELS: dict[str, type] = {
    "agent": model.Agent, "repository": model.Repository, "media_set": model.MediaSet, "job": model.Job,
    "schedule": model.Schedule, "retention": model.Retention, "verification": model.Verification,
    "alerts": model.Alerts, "email": model.Email, "webhook": model.Webhook, "heartbeat": model.Heartbeat,
    "server": model.Server, "web": model.Web,
}


class _Writer:
    def __init__(self, language: str) -> None:
        self.lang = language
        self.texts = TEXTS[language]
        self.lines: list[str] = []

    def comment(self, text: str) -> None:
        for line in text.splitlines():
            wrapped = textwrap.wrap(line, 96, break_on_hyphens=False) if not line.startswith(" ") else [line]
            self.lines += [f"# {part}".rstrip() for part in wrapped or [""]]

    def section(self, header: str, schema: str, values: Mapping[str, Any], intro: str = "",
                notes: Mapping[str, str] | None = None) -> None:
        """A table: the keys in `values` set, every other key commented out with its default
        (or an example), each under its help text."""
        self.lines.append("")
        if intro:
            self.comment(self.texts[intro])
        self.lines.append(f"[{header}]")
        for key in SCHEMA[schema]:
            if isinstance(key.convert, str):
                continue  # a sub-table, written as its own section
            self.comment(key.fr if self.lang == "fr" else key.en)
            if notes and key.name in notes:
                self.comment(notes[key.name])
            if key.name in values:
                self.lines.append(f"{key.name} = {toml_literal(values[key.name])}")
            else:
                shown = _default(key, _MODELS[schema])
                if shown is not None:
                    self.lines.append(f"# {key.name} = {shown}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_INSTEAD_FR = "{key}, à la place de {other} : {text} ; par exemple {value}"
_INSTEAD_EN = "{key}, instead of {other}: {text}; e.g. {value}"


def _default(key: Key, cls: type) -> str | None:
    value = model_default(cls, key.name)
    if value is None or (value in ((), "") and key.example):
        return key.example
    return toml_value(key, value)


def _databases(texts: Mapping[str, str], detected: Detected) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The job's database keys for what was found, and the notes saying how sure they are."""
    values: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for c in detected.postgres:
        if not _PLAIN.fullmatch(c.socket_dir.replace("/", "")):
            continue
        where = f"host={c.socket_dir} port={c.port}"
        if c.databases:
            notes.setdefault("postgres", []).append(texts["pg_found"])
            values.setdefault("postgres", []).extend(f"{where} dbname={d} user=coffre" for d in c.databases)
        else:
            notes.setdefault("postgres", []).append(texts["pg_unlisted"].format(port=c.port))
            values.setdefault("postgres", []).append(f"{where} dbname=officine user=coffre")
    for s in detected.mysql:
        if not _PLAIN.fullmatch(s.socket.replace("/", "")):
            continue
        if s.databases:
            notes.setdefault("mysql", []).append(texts["mysql_found"])
            values.setdefault("mysql", []).extend(f"mysql://root@localhost/{d}?socket={s.socket}"
                                                  for d in s.databases)
        else:
            notes.setdefault("mysql", []).append(texts["mysql_unlisted"].format(socket=s.socket))
            values.setdefault("mysql", []).append(f"mysql://root@localhost/officine?socket={s.socket}")
    if not values:
        notes["postgres"] = [texts["no_database"]]
    return values, {k: "\n".join(dict.fromkeys(v)) for k, v in notes.items()}


def sample_config(detected: Detected, language: str = "fr") -> str:
    """The commented starting file for a typical pharmacy, in `language` ("fr" or "en")."""
    w = _Writer(language if language in TEXTS else "en")
    w.comment(w.texts["title"])
    w.comment("")
    w.comment(w.texts["intro"])
    w.section("agent", "agent", {"timezone": "Europe/Paris", "language": w.lang}, intro="agent")

    key_file = "/etc/coffre/mot-de-passe"
    w.section("repositories.nas", "repository", {"url": "/mnt/nas/coffre", "password_file": key_file},
              intro="nas")
    w.section("repositories.hors-site", "repository", {
        "url": "s3://s3.fr-par.scw.cloud/pharmacie-exemple/coffre", "password_file": key_file,
        "aws_profile": "coffre", "limit_upload": "08:30-19:30=1MiB/s,*=unlimited"}, intro="offsite")
    w.section("media_sets.disques", "media_set", {"password_file": key_file, "rotate_after": "7d"},
              intro="disks")
    w.lines.append("")
    w.comment(w.texts["disk_ids"])
    w.lines.append("[media_sets.disques.disks]")
    w.lines += [f"{name} = {toml_literal(disk_id)}" for name, disk_id in PLACEHOLDER_DISKS.items()]

    job: dict[str, Any] = {"repository": "nas",
                           "paths": ["/srv/officine/documents", "/srv/officine/scans"],
                           "exclude": ["*.tmp", "~$*"], "copies": ["hors-site", "disques"]}
    databases, notes = _databases(w.texts, detected)
    w.section("jobs.officine", "job", {**job, **databases}, intro="job", notes=notes)
    w.section("jobs.officine.schedule", "schedule", {"times": ["12:30", "19:30"]}, intro="schedule")
    w.section("jobs.officine.retention", "retention", {
        "keep_daily": 14, "keep_weekly": 8, "keep_monthly": 24, "keep_yearly": 10}, intro="retention")
    w.section("jobs.officine.verification", "verification", {
        "check_subset": "5%", "verify_sample": "2%", "drill_every": "7d"}, intro="verification")

    w.lines.append("")
    w.comment(w.texts["continuity"])
    w.lines.append("# [continuity.officine]")
    shown = {"repository": '"nas"'}
    instead = {k: STANDBY_KEYS[0] for k in STANDBY_KEYS[1:]}  # one standby an entry: the first is shown
    for key in SCHEMA["continuity"]:
        value = shown.get(key.name) or _default(key, model.Continuity)
        if key.name in instead:  # described, not a line to uncomment beside the one it replaces
            text = (_INSTEAD_FR if w.lang == "fr" else _INSTEAD_EN).format(
                key=key.name, other=instead[key.name], text=key.fr if w.lang == "fr" else key.en, value=value)
            w.comment(text)
            continue
        w.comment(key.fr if w.lang == "fr" else key.en)
        w.lines.append(f"# {key.name} = {value}")

    w.section("alerts", "alerts", {"reminder_every": "1d", "changed_files_share": "30%"}, intro="alerts")
    w.section("alerts.email", "email", {
        "server": "smtp.example.fr", "port": 587, "security": "starttls", "username": "pharmacie@example.fr",
        "password_file": "/etc/coffre/smtp-mot-de-passe", "sender": "coffre@pharmacie.example.fr",
        "to": ["pharmacien@pharmacie.example.fr"], "provider": ["support@prestataire.example.fr"],
        "escalate_after": "2d"}, intro="email")
    w.lines.append("")
    w.comment(w.texts["webhook"])
    w.lines += ["# [[alerts.webhooks]]", '# url = "https://supervision.prestataire.example/coffre"',
                '# secret_file = "/etc/coffre/webhook.key"']
    w.lines.append("")
    w.comment(w.texts["heartbeat"])
    w.lines += ["# [alerts.heartbeat]", '# url = "https://hc-ping.com/VOTRE-IDENTIFIANT"']
    w.section("web", "web", {"listen": "127.0.0.1:8650"}, intro="web")
    w.lines.append("")
    w.comment(w.texts["server"])
    w.lines.append("# [server]")
    for key in SCHEMA["server"]:
        w.comment(key.fr if w.lang == "fr" else key.en)
        w.lines.append(f"# {key.name} = {_default(key, model.Server)}")
    return w.text()
