"""The words of the fleet: each reason a site is at risk, the lights, and the provider's
notices, in French or English.

They live here in both languages rather than in the gettext catalogue, as the agent's alert
texts do (agent/alerts/texts.py): a notice is written in the language of the alerts file,
whatever the language of the server process that sends it; `coffre server fleet` uses the
same words in the language it speaks. Everything that came from an agent (site and job names)
goes through `clean` first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from coffre.notify.text import clean

if TYPE_CHECKING:
    from coffre.server.fleet import Reason, TenantRisk

LANGUAGES = ("fr", "en")
NS = 1_000_000_000

LIGHTS = {
    "fr": {"red": "EN ÉCHEC", "orange": "À VÉRIFIER", "green": "OK"},
    "en": {"red": "FAILING", "orange": "CHECK", "green": "OK"},
}

_REASONS: dict[str, dict[str, str | tuple[str, str]]] = {
    "fr": {
        "failing": "la sauvegarde « {job} » de {site} a échoué (compte rendu du {when}){steps}",
        "steps": " ; étapes en échec : {steps}",
        "late": "aucun compte rendu de la sauvegarde « {job} » de {site} depuis le {last} ; elle était "
                "attendue le {due}",
        "quota_full": "quota atteint : {used} sur {hard} ; les envois sont refusés",
        "quota_near": "quota presque plein : {used} sur {limit}",
        "scrub": ("{count} objet abîmé trouvé par le contrôle du serveur depuis le {when}",
                  "{count} objets abîmés trouvés par le contrôle du serveur depuis le {when}"),
        "copies_agent": "copie non conforme de la sauvegarde « {job} » de {site} : {copies}",
        "copies_replica": ("{count} écart avec le second site depuis le {when}",
                           "{count} écarts avec le second site depuis le {when}"),
        "never": "aucun compte rendu reçu depuis la création du client, le {when}",
    },
    "en": {
        "failing": "the backup \"{job}\" of {site} failed (report of {when}){steps}",
        "steps": "; failed steps: {steps}",
        "late": "no report of the backup \"{job}\" of {site} since {last}; it was due at {due}",
        "quota_full": "quota reached: {used} of {hard}; uploads are refused",
        "quota_near": "quota nearly full: {used} of {limit}",
        "scrub": ("{count} damaged object found by the server's scrub since {when}",
                  "{count} damaged objects found by the server's scrub since {when}"),
        "copies_agent": "a copy of the backup \"{job}\" of {site} differs from it: {copies}",
        "copies_replica": ("{count} difference with the second site since {when}",
                           "{count} differences with the second site since {when}"),
        "never": "no report ever received since the tenant was created, {when}",
    },
}

def _plural(forms: str | tuple[str, str], n: int, lang: str) -> str:
    if isinstance(forms, str):
        return forms
    many = n > 1 if lang == "fr" else n != 1
    return forms[1] if many else forms[0]


_NOTICES = {
    "fr": {
        "subject_problem": "Coffre : {name} en échec",
        "subject_reminder": "Coffre : {name} toujours en échec",
        "subject_resolved": "Coffre : {name} revenu à la normale",
        "subject_partly": "Coffre : {name} en partie rétabli",
        "problem": "Le client {name} est en échec depuis le {since}.",
        "reminder": "Rappel : le client {name} est toujours en échec, depuis le {since}.",
        "resolved": "Le client {name} est revenu à la normale.",
        "partly": "Une partie des problèmes du client {name} est réglée ; d'autres demeurent.",
        "wrong": "Ce qui ne va pas :",
        "fixed": "Réglé :",
        "contact": "Contact : {contact}",
        "command": "Le détail : coffre server fleet (sur le serveur {host}).",
        "what_fixed": {"failing": "les sauvegardes réussissent de nouveau",
                       "late": "les comptes rendus arrivent de nouveau",
                       "quota_full": "le quota n'est plus atteint", "scrub": "plus d'objet abîmé en attente",
                       "copies": "les copies sont de nouveau conformes"},
    },
    "en": {
        "subject_problem": "Coffre: {name} failing",
        "subject_reminder": "Coffre: {name} still failing",
        "subject_resolved": "Coffre: {name} back to normal",
        "subject_partly": "Coffre: {name} partly back to normal",
        "problem": "The tenant {name} has been failing since {since}.",
        "reminder": "Reminder: the tenant {name} is still failing, since {since}.",
        "resolved": "The tenant {name} is back to normal.",
        "partly": "Some of the tenant {name}'s problems are solved; others remain.",
        "wrong": "What is wrong:",
        "fixed": "Solved:",
        "contact": "Contact: {contact}",
        "command": "Details: coffre server fleet (on the server {host}).",
        "what_fixed": {"failing": "backups succeed again", "late": "reports arrive again",
                       "quota_full": "the quota is no longer reached", "scrub": "no damaged object left",
                       "copies": "the copies match again"},
    },
}


def _lang(language: str) -> str:
    return language if language in LANGUAGES else "en"


def when(ns: int, language: str, timezone: str | None = None) -> str:
    """A moment: « 28/05/2026 12:31 » / "2026-05-28 12:31", in `timezone` (None: the machine's)."""
    try:
        moment = datetime.fromtimestamp(ns / NS, ZoneInfo(timezone)) if timezone else \
            datetime.fromtimestamp(ns / NS).astimezone()
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return moment.strftime("%d/%m/%Y %H:%M" if _lang(language) == "fr" else "%Y-%m-%d %H:%M")


def size(n: int | None, language: str) -> str:
    """Bytes in binary multiples: « 9,1 Go » / "9.1 GiB"."""
    if n is None:
        return "-"
    fr = _lang(language) == "fr"
    units = ("octets", "Ko", "Mo", "Go", "To", "Po") if fr else ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    text = f"{value:.0f}" if unit == 0 or value >= 100 else f"{value:.1f}"
    return (text.replace(".", ",") if fr else text) + " " + units[unit]


def light_word(light: str, language: str) -> str:
    return LIGHTS[_lang(language)][light]


def reason_text(r: Reason, language: str, timezone: str | None = None) -> str:
    """One reason in plain words."""
    lang = _lang(language)
    forms = _REASONS[lang]

    def w(key: str, n: int = 1) -> str:
        return _plural(forms[key], n, lang)

    d: dict[str, Any] = r.detail
    count = int(d.get("count") or 0)
    site, job = clean(d.get("site", ""), 80), clean(d.get("job", ""), 64)
    if r.code == "failing":
        steps = [clean(s, 40) for s in d.get("steps") or [] if isinstance(s, str)]
        return w("failing").format(job=job, site=site, when=when(d["received_ns"], lang, timezone),
                                   steps=w("steps").format(steps=", ".join(steps)) if steps else "")
    if r.code == "late":
        return w("late").format(job=job, site=site, last=when(d["received_ns"], lang, timezone),
                                due=when(d["next_due_ns"], lang, timezone))
    if r.code in ("quota_full", "quota_near"):
        used = (d.get("stored") or 0) + (d.get("binned") or 0)
        limit = d.get("soft") if d.get("soft") is not None and used >= d["soft"] else d.get("hard")
        share = f" ({used / limit:.0%})" if limit else ""
        return w(r.code).format(used=size(used, lang), hard=size(d.get("hard"), lang),
                                limit=size(limit, lang) + share)
    if r.code == "scrub":
        return w("scrub", count).format(count=count, when=when(r.since_ns, lang, timezone))
    if r.code == "copies":
        if "copies" in d:
            return w("copies_agent").format(job=job, site=site,
                                            copies=", ".join(clean(c, 64) for c in d["copies"]))
        return w("copies_replica", count).format(count=count,
                                                                when=when(r.since_ns, lang, timezone))
    if r.code == "never":
        return w("never").format(when=when(r.since_ns, lang, timezone))
    return r.code


def notice(event: str, row: TenantRisk | None, name: str, contact: str, told: Sequence[Reason],
           solved: Sequence[str], since_ns: int | None, language: str, timezone: str, host: str
           ) -> tuple[str, str]:
    """Subject and plain-text body of a notice to the provider about one tenant. `event`:
    problem | reminder | resolved (all solved) | partly (some solved, others remain, none new);
    `told`: the red reasons it is about; `solved`: the codes that cleared."""
    lang = _lang(language)
    w: dict[str, Any] = _NOTICES[lang]
    name = clean(name, 120)
    since = when(since_ns, lang, timezone) if since_ns is not None else "-"
    subject = w[f"subject_{event}"].format(name=name)
    lines = [w[event].format(name=name, since=since)]
    if told:
        lines += ["", w["wrong"], *("- " + reason_text(r, lang, timezone) for r in told)]
    if solved:
        what: dict[str, str] = w["what_fixed"]
        lines += ["", w["fixed"], *("- " + what.get(code, code) for code in solved)]
    if row is not None and row.contact:
        lines += ["", w["contact"].format(contact=clean(row.contact, 320))]
    lines += ["", w["command"].format(host=clean(host, 80))]
    return clean(subject, 180), "\n".join(lines) + "\n"
