"""The words of every alert, for a pharmacist (and for the IT provider once escalated): a
subject and a plain-text body saying what happened, what it means and what to do, in French
or English.

The texts live here in both languages rather than in the gettext catalogue: a mail is written
in the configured language (`agent.language`), whatever the language of the process that
sends it, and a body reads better as whole paragraphs than as scattered msgids.

Everything that comes from a configuration, a backup or an error message goes through
`clean` (one line, no control characters: safe in a mail header) and `redact` (no credentials
in URLs, no token in query strings), both from `coffre.notify.text` and re-exported here: a
notice never carries a secret."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from coffre.agent.alerts.decide import Notice
from coffre.agent.health import CONTINUITY_KINDS
from coffre.notify.text import clean, redact

LANGUAGES = ("fr", "en")

# kind -> (title, meaning, what to do). Placeholders: {job}, {target}, {name} (the job, or the
# target when the problem has no job), {disk}, {present}, {database}, {pct}, {usual}, {fill};
# for continuous capture ({job} is then the entry's name) {waiting}, {age}, {lag}, {gap}.
_KINDS: dict[str, dict[str, tuple[str, str, str]]] = {
    "fr": {
        "failed": (
            "Sauvegarde en échec : {name}",
            "la dernière sauvegarde « {job} » vers « {target} » n'a pas pu se faire. Les données "
            "enregistrées depuis la précédente sauvegarde réussie ne sont pas encore protégées.",
            "vérifiez que le serveur et la destination « {target} » (disque, NAS, connexion "
            "Internet) sont allumés et branchés. Coffre réessaiera tout seul. Si ce message "
            "revient, appelez votre prestataire informatique en lui transférant ce message."),
        "late": (
            "Sauvegarde en retard : {name}",
            "aucune sauvegarde « {job} » n'a réussi à l'heure prévue. Le serveur était peut-être "
            "éteint, ou l'agent de sauvegarde est arrêté.",
            "vérifiez que le serveur est allumé. Si ce message revient, appelez votre prestataire "
            "informatique en lui transférant ce message."),
        "no_disk": (
            "Aucun disque de sauvegarde branché : {target}",
            "la sauvegarde sur disque amovible ne peut pas se faire : aucun des disques de la "
            "rotation « {target} » n'est branché sur le serveur.",
            "branchez l'un des disques de sauvegarde sur le serveur. Coffre l'utilisera dès qu'il "
            "le verra."),
        "not_rotated": (
            "Changez de disque de sauvegarde : {target}",
            "le même disque{disk} est branché{present}. En cas d'incendie, de vol ou "
            "de virus dans la pharmacie, il serait perdu en même temps que le serveur.",
            "branchez l'autre disque et rangez celui-ci hors de la pharmacie."),
        "medium_full": (
            "Support de sauvegarde presque plein : {target}",
            "la destination « {target} » est presque pleine{fill}. Quand elle le sera, les "
            "sauvegardes s'arrêteront.",
            "prévenez votre prestataire informatique : il faut un support plus grand, ou garder "
            "moins d'anciennes sauvegardes."),
        "copy_diverges": (
            "Copie de sauvegarde non conforme : {name}",
            "la copie « {target} » ne correspond pas à la sauvegarde principale. Elle ne pourrait "
            "pas servir en cas de besoin.",
            "appelez votre prestataire informatique en lui transférant ce message."),
        "check_failed": (
            "Contrôle de la sauvegarde en échec : {name}",
            "le contrôle régulier de la sauvegarde « {target} » a trouvé des données abîmées ou "
            "illisibles, ou n'a pas pu se faire.",
            "appelez votre prestataire informatique en lui transférant ce message. Les "
            "sauvegardes continuent en attendant."),
        "drill_failed": (
            "Essai de restauration en échec : {name}",
            "l'essai régulier de restauration de la base de données à partir de la sauvegarde "
            "« {target} » n'a pas abouti : on n'est pas certain de pouvoir la récupérer.",
            "appelez votre prestataire informatique en lui transférant ce message."),
        "db_growth": (
            "Base de données en forte croissance : {name}",
            "la base de données{database} a grossi bien plus que d'habitude. Cela peut être "
            "normal (import, mise à jour du logiciel) ou le signe d'un problème.",
            "si rien de particulier n'a été fait dans le logiciel, signalez-le à votre "
            "prestataire informatique."),
        "many_changes": (
            "Beaucoup de fichiers modifiés d'un coup : {name}",
            "la dernière sauvegarde a trouvé{pct} des fichiers modifiés, bien plus que "
            "d'habitude{usual}. C'est l'un des signes d'un virus qui chiffre les fichiers "
            "(rançongiciel).",
            "vérifiez que vos documents s'ouvrent normalement. S'ils sont illisibles ou ont des "
            "noms étranges, débranchez le serveur du réseau et appelez tout de suite votre "
            "prestataire informatique. Les sauvegardes précédentes sont conservées."),
        "delivery_failed": (
            "Les alertes ne partent plus : {target}",
            "Coffre n'arrive pas à envoyer ses messages par « {target} » : vous pourriez ne pas "
            "être prévenu d'un problème de sauvegarde.",
            "prévenez votre prestataire informatique : il doit vérifier les réglages d'envoi "
            "(serveur de messagerie, identifiant, mot de passe)."),
        "capture_behind": (
            "Capture continue en retard : {name}",
            "les journaux de la base de données{waiting} n'arrivent plus à partir vers « {target} »"
            "{age}. Ils sont gardés sur ce serveur et partiront d'eux-mêmes, mais tant qu'ils ne "
            "sont pas arrivés, une panne de ce serveur ferait perdre les dernières opérations "
            "enregistrées.",
            "vérifiez que la destination « {target} » (NAS, disque, connexion Internet) est allumée "
            "et joignable, et que le serveur n'a pas été redémarré sans l'agent de sauvegarde. Si "
            "ce message revient, appelez votre prestataire informatique en lui transférant ce "
            "message."),
        "capture_gap": (
            "Trou dans la capture continue : {name}",
            "un morceau du journal de la base de données{gap} a été perdu avant d'avoir pu être mis "
            "à l'abri (le dossier d'attente était plein, ou le morceau abîmé). On ne peut plus "
            "restaurer la base à un moment situé après ce trou, tant qu'une nouvelle sauvegarde "
            "complète de la base n'a pas été faite.",
            "appelez votre prestataire informatique en lui transférant ce message : il faut faire "
            "tout de suite une nouvelle sauvegarde complète de la base (coffre backup "
            "--postgres-cluster), puis trouver pourquoi le morceau a été perdu."),
        "standby_behind": (
            "Poste de secours en retard : {name}",
            "le poste de secours est en retard sur le serveur principal{lag}. S'il devait prendre le "
            "relais maintenant, les opérations enregistrées depuis lui manqueraient.",
            "vérifiez que le serveur principal fonctionne, et que le poste de secours et la "
            "destination « {target} » sont allumés et joignables. Si ce message revient, appelez "
            "votre prestataire informatique en lui transférant ce message."),
        "standby_gap": (
            "Poste de secours arrêté : {name}",
            "le poste de secours ne peut pas aller plus loin que le morceau de journal{gap}, qui "
            "manque dans la sauvegarde : il ne suit plus le serveur principal.",
            "appelez votre prestataire informatique en lui transférant ce message : il faut "
            "préparer de nouveau le poste de secours à partir d'une sauvegarde complète plus "
            "récente (coffre standby init)."),
        "files_behind": (
            "Fichiers du poste de secours en retard : {name}",
            "les fichiers de la pharmacie gardés à jour sur le poste de secours sont en retard sur "
            "les sauvegardes{lag} : une sauvegarde plus récente n'a pas pu y être recopiée. S'il devait "
            "servir maintenant, les documents modifiés depuis y manqueraient ou seraient anciens.",
            "vérifiez que le poste de secours et la destination « {target} » sont allumés et "
            "joignables, et que son disque n'est pas plein. Si ce message revient, appelez votre "
            "prestataire informatique en lui transférant ce message."),
        "": (
            "Problème de sauvegarde : {name}",
            "Coffre a relevé un problème ({kind}) sur la sauvegarde « {job} ».",
            "appelez votre prestataire informatique en lui transférant ce message."),
    },
    "en": {
        "failed": (
            "Backup failed: {name}",
            "the last backup \"{job}\" to \"{target}\" could not be made. The data saved since "
            "the previous good backup is not protected yet.",
            "check that the server and the destination \"{target}\" (disk, NAS, Internet "
            "connection) are on and plugged in. Coffre will try again by itself. If this message "
            "comes back, call your IT provider and forward them this message."),
        "late": (
            "Backup late: {name}",
            "no backup \"{job}\" succeeded when it was due. The server may have been off, or the "
            "backup agent has stopped.",
            "check that the server is on. If this message comes back, call your IT provider and "
            "forward them this message."),
        "no_disk": (
            "No backup disk plugged in: {target}",
            "the backup to a removable disk cannot be made: none of the disks of the set "
            "\"{target}\" is plugged into the server.",
            "plug one of the backup disks into the server. Coffre will use it as soon as it "
            "sees it."),
        "not_rotated": (
            "Swap the backup disk: {target}",
            "the same disk{disk} has stayed plugged in{present}. A fire, a theft or a virus "
            "in the pharmacy would destroy it together with the server.",
            "plug in the other disk and store this one outside the pharmacy."),
        "medium_full": (
            "Backup storage nearly full: {target}",
            "the destination \"{target}\" is nearly full{fill}. When it is full, backups will "
            "stop.",
            "tell your IT provider: a larger medium is needed, or fewer old backups kept."),
        "copy_diverges": (
            "Backup copy does not match: {name}",
            "the copy \"{target}\" does not match the main backup. It could not be relied on "
            "when needed.",
            "call your IT provider and forward them this message."),
        "check_failed": (
            "Backup check failed: {name}",
            "the regular check of the backup \"{target}\" found damaged or unreadable data, or "
            "could not run.",
            "call your IT provider and forward them this message. Backups go on meanwhile."),
        "drill_failed": (
            "Restore drill failed: {name}",
            "the regular trial restore of the database from the backup \"{target}\" did not "
            "succeed: it is not certain that it could be recovered.",
            "call your IT provider and forward them this message."),
        "db_growth": (
            "Database growing fast: {name}",
            "the database{database} grew much more than usual. This may be normal (an import, a "
            "software update) or the sign of a problem.",
            "if nothing special was done in the software, tell your IT provider."),
        "many_changes": (
            "Many files changed at once: {name}",
            "the last backup found{pct} of the files changed, far more than usual{usual}. This is "
            "one of the signs of a virus that encrypts files (ransomware).",
            "check that your documents open normally. If they are unreadable or have strange "
            "names, unplug the server from the network and call your IT provider at once. The "
            "previous backups are kept."),
        "delivery_failed": (
            "Alerts are not getting through: {target}",
            "Coffre cannot send its messages through \"{target}\": you might not be told of a "
            "backup problem.",
            "tell your IT provider: the sending settings (mail server, user name, password) "
            "need checking."),
        "capture_behind": (
            "Continuous capture behind: {name}",
            "the database's logs{waiting} are not getting through to \"{target}\"{age}. They are "
            "kept on this server and will leave by themselves, but until they arrive, a failure "
            "of this server would lose the latest transactions.",
            "check that the destination \"{target}\" (NAS, disk, Internet connection) is on and "
            "reachable, and that the server was not restarted without the backup agent. If this "
            "message comes back, call your IT provider and forward them this message."),
        "capture_gap": (
            "Gap in the continuous capture: {name}",
            "a piece of the database's log{gap} was lost before it could be kept safe (the spool "
            "folder was full, or the piece damaged). The database cannot be restored to a moment "
            "after this gap until a new full backup of the database has been made.",
            "call your IT provider and forward them this message: a new full backup of the "
            "database is needed at once (coffre backup --postgres-cluster); then find out why the "
            "piece was lost."),
        "standby_behind": (
            "Standby behind: {name}",
            "the standby is behind the main server{lag}. If it had to take over now, the "
            "transactions recorded since would be missing.",
            "check that the main server is working, and that the standby and the destination "
            "\"{target}\" are on and reachable. If this message comes back, call your IT provider "
            "and forward them this message."),
        "standby_gap": (
            "Standby stopped: {name}",
            "the standby cannot go further than the log piece{gap}, which is missing from the "
            "backup: it no longer follows the main server.",
            "call your IT provider and forward them this message: the standby must be set up "
            "again from a newer full backup (coffre standby init)."),
        "files_behind": (
            "Standby files behind: {name}",
            "the pharmacy's files kept current on the standby machine are behind the backups{lag}: "
            "a newer backup could not be copied there. If it had to be used now, the "
            "documents changed since would be missing or old there.",
            "check that the standby machine and the destination \"{target}\" are on and reachable, "
            "and that its disk is not full. If this message comes back, call your IT provider and "
            "forward them this message."),
        "": (
            "Backup problem: {name}",
            "Coffre found a problem ({kind}) with the backup \"{job}\".",
            "call your IT provider and forward them this message."),
    },
}

_WORDS = {
    "fr": {
        "hello": "Bonjour,",
        "reminder_subject": "Rappel : {title}",
        "escalation_subject": "À traiter par le prestataire : {title}",
        "resolved_subject": "Retour à la normale – {title}",
        "reminder_intro": "Ce problème dure toujours (rappel).",
        "provider_reminder_intro": "Rappel pour le prestataire informatique de la pharmacie : ce "
                                   "problème n'est toujours pas réglé.",
        "escalation_intro": "Ce message est destiné au prestataire informatique de la pharmacie : "
                            "le problème ci-dessous dure depuis {duration} sans avoir été réglé.",
        "resolved_intro": "Bonne nouvelle : tout est revenu à la normale.",
        "resolved_line": "Le problème « {title} », signalé depuis le {since}, est réglé.",
        "nothing_to_do": "Il n'y a rien à faire.",
        "since": "Depuis le {since}.",
        "meaning": "Ce que cela veut dire : {text}",
        "action": "Ce qu'il faut faire : {text}",
        "detail": "Détail technique : {text}",
        "where": "Sauvegarde : {job} · Destination : {target} · Serveur : {host}",
        "where_continuity": "Capture continue : {job} · Destination : {target} · Serveur : {host}",
        "where_standby": "Poste de secours : {job} · Alimenté par : {target} · Serveur : {host}",
        "where_files": "Fichiers de secours : {job} · Depuis : {target} · Poste : {host}",
        "waiting": " ({n} en attente)",
        "age": " depuis {duration}",
        "lag": " de {duration}",
        "footer": "Message automatique de Coffre, la sauvegarde de la pharmacie. Tant que le "
                  "problème dure, un rappel est envoyé régulièrement ; un message vous dira quand "
                  "tout sera revenu à la normale.",
        "footer_resolved": "Message automatique de Coffre, la sauvegarde de la pharmacie.",
        "at": "{date} à {time}",
        "fill": " (remplie à {pct}{days})",
        "fill_days": ", pleine dans {days} environ",
        "usual": " ({pct} d'habitude)",
        "present": " depuis {duration}",
        "present_unknown": " depuis trop longtemps",
        "last_ok": "Dernière sauvegarde réussie : le {when}.",
        "never_ok": "Aucune sauvegarde réussie n'est connue.",
    },
    "en": {
        "hello": "Hello,",
        "reminder_subject": "Reminder: {title}",
        "escalation_subject": "For the IT provider: {title}",
        "resolved_subject": "Back to normal – {title}",
        "reminder_intro": "This problem is still there (reminder).",
        "provider_reminder_intro": "Reminder for the pharmacy's IT provider: this problem is not "
                                   "solved yet.",
        "escalation_intro": "This message is for the pharmacy's IT provider: the problem below has "
                            "lasted {duration} without being solved.",
        "resolved_intro": "Good news: everything is back to normal.",
        "resolved_line": "The problem \"{title}\", reported since {since}, is solved.",
        "nothing_to_do": "There is nothing to do.",
        "since": "Since {since}.",
        "meaning": "What it means: {text}",
        "action": "What to do: {text}",
        "detail": "Technical detail: {text}",
        "where": "Backup: {job} · Destination: {target} · Server: {host}",
        "where_continuity": "Continuous capture: {job} · Destination: {target} · Server: {host}",
        "where_standby": "Standby: {job} · Fed from: {target} · Server: {host}",
        "where_files": "Standby files: {job} · From: {target} · Machine: {host}",
        "waiting": " ({n} waiting)",
        "age": " for {duration}",
        "lag": " by {duration}",
        "footer": "An automatic message from Coffre, the pharmacy's backup. While the problem "
                  "lasts, a reminder is sent regularly; a message will tell you when everything "
                  "is back to normal.",
        "footer_resolved": "An automatic message from Coffre, the pharmacy's backup.",
        "at": "{date} at {time}",
        "fill": " ({pct} used{days})",
        "fill_days": ", full in about {days}",
        "usual": " ({pct} on a usual day)",
        "present": " for {duration}",
        "present_unknown": " for too long",
        "last_ok": "Last good backup: {when}.",
        "never_ok": "No good backup is known.",
    },
}

_UNITS = {
    "fr": {"day": ("{n} jour", "{n} jours"), "hour": ("{n} heure", "{n} heures"),
           "minute": ("{n} minute", "{n} minutes"), "second": ("{n} seconde", "{n} secondes")},
    "en": {"day": ("{n} day", "{n} days"), "hour": ("{n} hour", "{n} hours"),
           "minute": ("{n} minute", "{n} minutes"), "second": ("{n} second", "{n} seconds")},
}

def render(notice: Notice, language: str = "fr", timezone: str = "Europe/Paris",
           host: str = "") -> tuple[str, str]:
    """The subject and plain-text body of `notice`."""
    lang = language if language in LANGUAGES else "fr"
    w = _WORDS[lang]
    try:
        tz = ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):
        tz = ZoneInfo("UTC")
    job, target = clean(notice.job, 80), clean(notice.target, 80)
    values = _values(notice, lang, job, target)
    title_t, meaning_t, action_t = _KINDS[lang].get(notice.kind, _KINDS[lang][""])
    title = title_t.format(**values)
    since = _when(notice.since, lang, tz)
    host_c = clean(host, 80)

    if notice.event == "reminder":
        subject = w["reminder_subject"].format(title=title)
    elif notice.event == "escalation":
        subject = w["escalation_subject"].format(title=title)
    elif notice.event == "resolved":
        subject = w["resolved_subject"].format(title=title)
    else:
        subject = title
    if notice.audience == "provider" and host_c:
        subject += f" [{host_c}]"

    lines = [w["hello"], ""]
    if notice.event == "resolved":
        lines += [w["resolved_intro"], w["resolved_line"].format(since=since, title=title),
                  w["nothing_to_do"]]
    else:
        if notice.event == "reminder":
            lines += [w["provider_reminder_intro" if notice.audience == "provider" else "reminder_intro"], ""]
        elif notice.event == "escalation":
            duration = _duration(notice.at - notice.since, lang)
            lines += [w["escalation_intro"].format(duration=duration), ""]
        lines += [title + ".", w["since"].format(since=since), "",
                  w["meaning"].format(text=meaning_t.format(**values)), "",
                  w["action"].format(text=action_t.format(**values))]
        if notice.kind in ("failed", "late") and "last_ok" in notice.detail:
            last_ok = _number(notice.detail["last_ok"])
            lines += ["", w["never_ok"] if last_ok is None
                      else w["last_ok"].format(when=_when(last_ok, lang, tz))]
        error = notice.detail.get("error")
        if isinstance(error, str) and error.strip():
            lines += ["", w["detail"].format(text=clean(error, 500))]
    where = w["where_standby" if notice.kind.startswith("standby_") else
              "where_files" if notice.kind == "files_behind" else
              "where_continuity" if notice.kind in CONTINUITY_KINDS else "where"]
    lines += ["", where.format(job=job or "-", target=target or "-", host=host_c or "-"), "",
              "-- ", w["footer_resolved" if notice.event == "resolved" else "footer"]]
    return clean(subject, 180), "\n".join(lines) + "\n"


def with_text(notice: Notice, language: str = "fr", timezone: str = "Europe/Paris",
              host: str = "") -> Notice:
    """`notice` with its subject and text filled in."""
    subject, text = render(notice, language, timezone, host)
    return replace(notice, subject=subject, text=text)


def _values(notice: Notice, lang: str, job: str, target: str) -> dict[str, str]:
    w, d = _WORDS[lang], notice.detail
    values = {"job": job, "target": target, "name": job or target, "kind": clean(notice.kind, 40),
              "disk": "", "database": "", "pct": "", "usual": "", "fill": "",
              "present": w["present_unknown"], "waiting": "", "age": "", "lag": "", "gap": ""}
    waiting = _number(d.get("waiting"))
    if waiting:
        values["waiting"] = w["waiting"].format(n=int(waiting))
    for key in ("age", "lag"):
        seconds = _number(d.get(key))
        if seconds is not None and seconds >= 0:
            values[key] = w[key].format(duration=_duration(seconds, lang, seconds_unit=True))
    gaps = d.get("gaps")
    gap = d.get("gap") or (gaps[0] if isinstance(gaps, list | tuple) and gaps else None)
    if isinstance(gap, str) and gap:
        values["gap"] = f" « {clean(gap, 60)} »" if lang == "fr" else f" \"{clean(gap, 60)}\""
    disk = d.get("disk_name") or d.get("disk")
    if isinstance(disk, str) and disk:
        values["disk"] = f" « {clean(disk, 60)} »" if lang == "fr" else f" \"{clean(disk, 60)}\""
    days = _number(d.get("days"))
    if days is not None and days > 0:
        values["present"] = w["present"].format(duration=_duration(days * 86400.0, lang))
    names = _database_names(d.get("databases"))
    if names:
        quoted = [f"« {n} »" if lang == "fr" else f"\"{n}\"" for n in names]
        values["database"] = " " + ", ".join(quoted)
    share = _number(d.get("share"))
    if share is not None:
        values["pct"] = " " + _percent(share, lang)
    usual = _number(d.get("usual"))
    if usual is not None:
        values["usual"] = w["usual"].format(pct=_percent(usual, lang))
    used, total = _number(d.get("used")), _number(d.get("total"))
    if used is not None and total:
        days_left = _number(d.get("days_left"))
        full_in = "" if days_left is None else w["fill_days"].format(
            days=_duration(max(days_left, 0.0) * 86400.0, lang))
        values["fill"] = w["fill"].format(pct=_percent(used / total, lang), days=full_in)
    return values


def _database_names(value: object) -> list[str]:
    """The names in health's "databases" detail: names, or {"engine", "name"} mappings."""
    if not isinstance(value, list | tuple):
        return []
    names = []
    for v in value[:10]:
        name = v.get("name") if isinstance(v, dict) else v
        if isinstance(name, str) and name:
            names.append(clean(name, 60))
    return names


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if v == v and abs(v) != float("inf") else None


def _percent(share: float, lang: str) -> str:
    pct = share * 100
    text = f"{pct:.0f}" if pct >= 10 else f"{pct:.1f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") + " %" if lang == "fr" else text + "%"


def _when(t: float, lang: str, tz: ZoneInfo) -> str:
    try:
        d = datetime.fromtimestamp(t, tz)
    except (OverflowError, OSError, ValueError):
        return "?"
    date = d.strftime("%d/%m/%Y") if lang == "fr" else d.strftime("%Y-%m-%d")
    return _WORDS[lang]["at"].format(date=date, time=d.strftime("%H:%M"))


def _duration(seconds: float, lang: str, *, seconds_unit: bool = False) -> str:
    """The largest whole unit: "2 jours", "3 heures", "5 minutes" (with `seconds_unit`, a
    duration under a minute in seconds)."""
    units: tuple[tuple[str, float], ...] = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0))
    if seconds_unit:
        units += (("second", 1.0),)
    for unit, size in units:
        n = int(seconds // size)
        if n >= 1 or unit == units[-1][0]:
            one, many = _UNITS[lang][unit]
            plural = n > 1 if lang == "fr" else n != 1
            return (many if plural else one).format(n=max(n, 0))
    raise AssertionError("unreachable")


__all__ = ["LANGUAGES", "clean", "redact", "render", "with_text"]
