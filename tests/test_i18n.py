"""French and English: the catalogue is complete and compiled, the language is chosen as
documented (docs/i18n.md), and key outputs of the real `coffre` process read in French.

The completeness test extracts the messages from the source as `./run catalog` does (Babel,
babel.cfg, keywords `_`, `N_`, `ngettext:1,2`): a message added without its French fails it
until `./run catalog` (or `./run catalog --merge FRAGMENTS`) and a translation fill the catalogue.
"""

from __future__ import annotations

import ast
import io
import re
import string
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from coffre.core import i18n
from coffre.core.human import human_duration, human_number, human_size, human_time
from coffre.core.i18n import language_from_environment, set_language

from conftest import Coffre, make_tree

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "src" / "coffre" / "locale" / "fr" / "LC_MESSAGES"
FR_MONTH = r"(janv\.|févr\.|mars|avr\.|mai|juin|juil\.|août|sept\.|oct\.|nov\.|déc\.)"
FR_DATE = re.compile(rf"\b\d{{1,2}} {FR_MONTH} \d{{4}} \d{{2}}:\d{{2}}\b")
FRENCH = {"LANG": "fr_FR.UTF-8"}


@pytest.fixture
def speak() -> Iterator[Any]:
    """set_language for the test, English again afterwards (the suite speaks English)."""
    yield set_language
    set_language("en")


def _ids(msg: Message) -> tuple[str, ...]:
    return tuple(msg.id) if isinstance(msg.id, (tuple, list)) else (msg.id,)


def _strings(msg: Message) -> tuple[str, ...]:
    return tuple(msg.string) if isinstance(msg.string, (tuple, list)) else (msg.string,)


def fields(text: str) -> set[str]:
    """The named fields of a str.format template."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def extracted(tmp_path: Path) -> Catalog:
    """The messages of the source, extracted with ./run catalog's command."""
    pot = tmp_path / "coffre.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "N_",
                                "-k", "ngettext:1,2", "--no-location", "-o", str(pot), str(ROOT)])
    with pot.open("rb") as f:
        return read_po(f)


def french() -> Catalog:
    with (LOCALE / "coffre.po").open("rb") as f:
        return read_po(f, locale="fr")


# -- the catalogue ----------------------------------------------------------------------------

def test_every_message_of_the_source_has_its_french_with_the_same_placeholders(tmp_path: Path) -> None:
    source = extracted(tmp_path)
    assert len([m for m in source if m.id]) > 200  # the extraction found the messages
    catalogue = french()
    problems = []
    for msg in source:
        if not msg.id:
            continue
        fr = catalogue.get(msg.id)
        if fr is None:
            problems.append(f"not in the catalogue: {_ids(msg)[0]!r}")
        elif fr.fuzzy or not all(_strings(fr)) or len(_strings(fr)) != (2 if msg.pluralizable else 1):
            problems.append(f"untranslated or fuzzy: {_ids(msg)[0]!r}")
        else:
            wanted = set().union(*(fields(i) for i in _ids(msg)))
            forms = [fields(s) for s in _strings(fr)]
            # A singular form may leave its count out ("une table"); together they say all.
            if set().union(*forms) != wanted or not all(f <= wanted for f in forms):
                problems.append(f"placeholders differ: {_ids(msg)[0]!r} -> {_strings(fr)!r}")
    # The extractor does not see an f-string, and the translator could not move its words.
    pattern = re.compile(r"""\b(?:_|N_|ngettext)\(\s*f["']""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "src").rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    # Plurals go through ngettext: "1 pack(s)" / « 1 gardé(s) » reads as a program, not a sentence.
    texts = [t for msg in source if msg.id for t in _ids(msg)]
    texts += [t for msg in catalogue if msg.id for t in _strings(msg)]
    hedged = [f"'(s)' in: {text!r}" for text in texts if "(s)" in text]
    assert not problems and not offenders and not hedged, "\n".join(problems + offenders + hedged)


# What users read goes through gettext: a literal with words given to these is a message left
# in English. The allowed ones are a damaged record's inner details (read by whoever debugs the
# format, inside a translated sentence), a test-only switch, and the program's name before a
# message already translated.
SHOWN = {"say", "warn", "report", "note", "print", "error", "CoffreError", "UsageError",
         "FormatError", "StorageError", "MarkUnavailable", "ConnectFailed", "StorageSetupError"}
LEFT_IN_ENGLISH = {
    ("cli/entry.py", "coffre: "), ("cli/main.py", "coffre: "),
    ("cli/cmd_wal.py", "coffre wal fetch: "), ("cli/wal_push.py", "coffre wal push: "),
    ("core/clock.py", "cannot read a number of seconds"), ("core/clock.py", "for the test suite only"),
    ("ops/common.py", "duplicate name"), ("repository/basecache.py", "does not match its id"),
    ("repository/locks.py", "unknown version"), ("repository/mark.py", "invalid text"),
    ("repository/mark.py", "invalid id"), ("repository/mark.py", "invalid flag"),
    ("repository/mark.py", "unknown kind"), ("repository/salvage.py", "implausible size"),
    ("repository/salvage.py", "not a zstd frame"), ("storage/memory.py", "is not empty"),
}


def _has_words(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.search(r"[A-Za-z]{3,}", node.value) is not None
    if isinstance(node, ast.JoinedStr):
        return any(_has_words(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _has_words(node.left) or _has_words(node.right)
    if isinstance(node, ast.IfExp):
        return _has_words(node.body) or _has_words(node.orelse)
    return False


def test_every_message_shown_goes_through_gettext() -> None:
    left = []
    for path in sorted((ROOT / "src" / "coffre").rglob("*.py")):
        module = path.relative_to(ROOT / "src" / "coffre").as_posix()
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = (func.id if isinstance(func, ast.Name)
                    else func.attr if isinstance(func, ast.Attribute) else "")
            if name not in SHOWN:
                continue
            for arg in [*call.args[:2], *(k.value for k in call.keywords if k.arg == "hint")]:
                text = ast.unparse(arg)
                if _has_words(arg) and not any(m == module and w in text for m, w in LEFT_IN_ENGLISH):
                    left.append(f"{module}:{call.lineno}: {text[:100]}")
    assert not left, "messages not through _():\n" + "\n".join(left)


def test_the_committed_mo_is_the_po_compiled() -> None:
    po = french()
    compiled = io.BytesIO()
    write_mo(compiled, po)
    compiled.seek(0)
    with (LOCALE / "coffre.mo").open("rb") as f:
        committed = read_mo(f)

    def messages(cat: Catalog) -> dict[Any, Any]:
        return {m.id if isinstance(m.id, str) else tuple(m.id): m.string if isinstance(m.string, str)
                else tuple(m.string) for m in cat if m.id}

    assert messages(committed) == messages(read_mo(compiled))
    assert len(messages(committed)) > 200


# -- which language ---------------------------------------------------------------------------

LOCALES: list[tuple[dict[str, str], str]] = [
    ({}, "en"),
    ({"LANG": "fr_FR.UTF-8"}, "fr"),
    ({"LANG": "fr_BE@euro"}, "fr"),
    ({"LANG": "fr"}, "fr"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "C"}, "en"),
    ({"LANG": "POSIX"}, "en"),
    ({"LC_MESSAGES": "fr_FR.UTF-8", "LANG": "en_GB.UTF-8"}, "fr"),
    ({"LC_MESSAGES": "en_GB.UTF-8", "LANG": "fr_FR.UTF-8"}, "en"),
    ({"LC_ALL": "fr_FR.UTF-8", "LC_MESSAGES": "en_GB.UTF-8", "LANG": "en_GB.UTF-8"}, "fr"),
    ({"LC_ALL": "C", "LANG": "fr_FR.UTF-8"}, "en"),  # LC_ALL wins, even as C
    ({"LC_ALL": "", "LANG": "fr_FR.UTF-8"}, "fr"),  # an empty variable is unset
    ({"LANGUAGE": "fr:en", "LANG": "en_GB.UTF-8"}, "fr"),  # GNU's list comes first...
    ({"LANGUAGE": "de:fr", "LANG": "en_GB.UTF-8"}, "fr"),  # ... the first language spoken
    ({"LANGUAGE": "fr", "LANG": "C.UTF-8"}, "en"),  # ... but not under the C locale
    ({"LANGUAGE": "fr"}, "en"),
]


def test_the_language_follows_the_locale_variables() -> None:
    chosen = [(environ, language_from_environment(environ)) for environ, _ in LOCALES]
    assert chosen == LOCALES


def test_lang_option_wins_over_the_environment(coffre: Coffre, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing-here")
    french_env = coffre("--lang=fr", "snapshots", "--repo", missing, repo=False)
    assert french_env.code == 10 and "n'est pas un dépôt Coffre" in french_env.err, french_env
    spaced = coffre("--lang", "fr", "snapshots", "--repo", missing, repo=False)
    assert "n'est pas un dépôt Coffre" in spaced.err, spaced
    english = coffre("--lang", "en", "snapshots", "--repo", missing, repo=False, env=FRENCH)
    assert "is not a Coffre repository" in english.err and "dépôt" not in english.err, english
    by_locale = coffre("snapshots", "--repo", missing, repo=False, env=FRENCH)
    assert "n'est pas un dépôt Coffre" in by_locale.err, by_locale
    c_locale = coffre("snapshots", "--repo", missing, repo=False, env={"LANG": "C", "LANGUAGE": "fr"})
    assert "is not a Coffre repository" in c_locale.err, c_locale


def test_help_is_translated(coffre: Coffre) -> None:
    res = coffre("--lang", "fr", "--help", repo=False)
    assert res.code == 0 and "langue des messages" in res.out, res


# -- what a French reader reads ---------------------------------------------------------------

def test_wrong_password_in_french(repo: Coffre, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    res = Coffre(repo.repo, wrong, tmp_path / "other-cache")("snapshots", env=FRENCH)
    assert res.code == 12, res
    assert "coffre: mot de passe ou clé de secours incorrect" in res.err, res
    assert "conseil : vérifiez le fichier du mot de passe" in res.err, res
    assert "wrong password" not in res.err and "hint:" not in res.err, res


def test_alarm_with_its_date_in_french(repo: Coffre, tmp_path: Path) -> None:
    """A snapshot the storage lost: the warning, its date and the hint read in French."""
    src = make_tree(tmp_path / "src", big=100_000)
    repo.ok("backup", str(src))
    (snapshot,) = (Path(repo.repo) / "snapshots").iterdir()
    snapshot.unlink()
    res = repo("snapshots", env=FRENCH)
    assert res.code == 0, res
    line = next(x for x in res.err.splitlines() if snapshot.name[:8] in x)
    assert line.startswith(f"attention : l'instantané {snapshot.name[:8]} ("), line
    assert FR_DATE.search(line), line
    assert "a disparu du stockage" in line, line
    assert "conseil : cherchez ce qui est arrivé au stockage" in res.err, res
    english = repo("snapshots")
    assert "vanished from the storage" in english.err and "attention" not in english.err, english


def test_backup_summary_sizes_in_french(repo: Coffre, tmp_path: Path) -> None:
    """The backup's summary in French. For the coordinator: the summary's wording is being
    rewritten ("read 42.7 MiB, 3 files changed, 271 KiB sent"); extend this test with its
    French (« lu 42,7 Mo, ... ») once merged. Here: sizes in French units, decimal comma."""
    src = make_tree(tmp_path / "src", big=300_000)
    res = repo("backup", str(src), env=FRENCH)
    assert res.code == 0, res
    sizes = re.findall(r"\b\d+(?:,\d+)? (?:octets?|Ko|Mo|Go)\b", res.out)
    assert sizes, res.out
    assert not re.search(r"\b[KMG]iB\b", res.out), res.out
    english = repo.ok("backup", str(src))
    assert re.search(r"\b\d+(?:\.\d+)? (?:B|KiB|MiB)\b", english.out), english.out


def test_interruption_line_in_french(speak: Any) -> None:
    from coffre.cli.entry import _interrupted_message

    speak("fr")
    assert _interrupted_message(15) == ("interrompu par SIGTERM ; le dépôt est cohérent "
                                        "(une nouvelle exécution reprend le travail)")
    speak("en")
    assert _interrupted_message(2) == "interrupted; the repository is consistent (a new run resumes)"


# -- sizes, numbers, dates, durations ---------------------------------------------------------

@pytest.mark.parametrize(("n", "en", "fr"), [
    (0, "0 B", "0 octet"),
    (1, "1 B", "1 octet"),
    (12, "12 B", "12 octets"),
    (1023, "1,023 B", "1 023 octets"),
    (1536, "1.5 KiB", "1,5 Ko"),
    (277_676, "271 KiB", "271 Ko"),
    (44_740_000, "42.7 MiB", "42,7 Mo"),
    (int(1.5 * 2**30), "1.5 GiB", "1,5 Go"),
    (1024**3 - 1, "1 GiB", "1 Go"),  # rounds up into the next unit, never "1024 MiB"
    (5 * 2**40, "5 TiB", "5 To"),
    (3000 * 2**40, "3,000 TiB", "3 000 To"),
    (-2048, "-2 KiB", "-2 Ko"),
])
def test_human_size(speak: Any, n: int, en: str, fr: str) -> None:
    speak("en")
    assert human_size(n) == en
    speak("fr")
    assert human_size(n) == fr


def test_numbers_and_durations(speak: Any) -> None:
    speak("fr")
    assert human_number(1234567) == "1 234 567"  # a plain space: logs and old consoles read it
    assert human_number(1234.56, 1) == "1 234,6"
    assert human_duration(12.34) == "12,3 s"
    assert human_duration(245) == "4 min 05 s"
    assert human_duration(7700) == "2 h 08 min"
    speak("en")
    assert human_number(1234567) == "1,234,567"
    assert human_duration(12.34) == "12.3 s"


def test_dates(speak: Any) -> None:
    moment = datetime(2026, 11, 30, 12, 31, 5)  # naive: local time
    ns = int(moment.timestamp()) * 1_000_000_000
    speak("fr")
    assert human_time(moment) == "30 nov. 2026 12:31"
    assert human_time(ns) == "30 nov. 2026 12:31"
    speak("en")
    assert human_time(ns) == "2026-11-30 12:31:05"
    assert human_time(moment) == "2026-11-30 12:31:05"
    speak("fr")
    assert human_time(10**21).endswith(" UTC")  # year 33658: beyond the local calendar, in UTC


def test_retention_reasons_stay_english_for_json_and_read_in_french(speak: Any) -> None:
    from coffre.policy.retention import (
        REASON_LAST,
        Policy,
        SnapInfo,
        apply_policy,
        apply_size_budget,
        reason_text,
    )

    day = 86_400 * 10**9
    snaps = [SnapInfo(f"s{i}", i * day, "h", ("/p",), ()) for i in range(3)]
    decisions = apply_size_budget(apply_policy(snaps, Policy(keep_last=2), 3 * day), lambda ids: 3 * 2**20,
                                  2**20)
    speak("fr")
    over = next(d for d in decisions if not d.keep and "over the size budget" in d.reasons[0])
    assert over.reasons[0].startswith("over the size budget (repository would be 3145728 bytes")
    assert reason_text(over.reasons[0]) == ("au-delà de la taille maximale (le dépôt ferait 3 Mo, "
                                            "maximum 1 Mo)")
    assert reason_text(REASON_LAST) == "dernier instantané" and REASON_LAST == "last snapshot"
    assert reason_text("named on the command line") == "named on the command line"


def test_messages_are_translated_when_shown_not_when_imported(speak: Any) -> None:
    """A module-level message (N_) follows the language chosen after the import."""
    from coffre.cli import watching

    speak("fr")
    assert i18n._(watching.HINT).startswith("conseil : ")
    speak("en")
    assert i18n._(watching.HINT).startswith("hint: ")



# -- merging the helpers' fragments (./run catalog --merge) ------------------------------------

def test_merge_fills_untranslated_entries_from_fragments_and_reports_the_rest(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_catalog", ROOT / "tools" / "merge_catalog.py")
    assert spec is not None and spec.loader is not None
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    po = tmp_path / "coffre.po"
    po.write_text('msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=2; plural=(n > 1);\\n"\n\n'
                  'msgid "kept {n}"\nmsgstr "gardé {n}"\n\n'
                  'msgid "new {name}"\nmsgstr ""\n\n'
                  'msgid "{n} file"\nmsgid_plural "{n} files"\nmsgstr[0] ""\nmsgstr[1] ""\n\n'
                  'msgid "left"\nmsgstr ""\n', encoding="utf-8")
    fragments = tmp_path / "fr"
    fragments.mkdir()
    (fragments / "a.po").write_text('msgid "new {name}"\nmsgstr "nouveau {name}"\n\n'
                                    'msgid "kept {n}"\nmsgstr "autre {n}"\n\n'
                                    'msgid "{n} file"\nmsgid_plural "{n} files"\n'
                                    'msgstr[0] "{n} fichier"\nmsgstr[1] "{n} fichiers"\n\n'
                                    'msgid "gone"\nmsgstr "parti"\n', encoding="utf-8")
    (fragments / "b.po").write_text('msgid "left"\nmsgstr "reste {oops}"\n', encoding="utf-8")
    report: list[str] = []
    with po.open("rb") as f:
        catalogue = read_po(f, locale="fr")
    assert merge.merge(catalogue, merge.fragment_files([fragments]), report) == 2
    assert catalogue.get("new {name}").string == "nouveau {name}"
    assert catalogue.get("kept {n}").string == "gardé {n}"  # the catalogue's own is kept
    assert tuple(catalogue.get(("{n} file", "{n} files")).string) == ("{n} fichier", "{n} fichiers")
    assert catalogue.get("left").string == ""  # wrong placeholders: not used
    assert any("not in the catalogue" in r and "gone" in r for r in report), report
    assert any("placeholders differ" in r and "left" in r for r in report), report
    assert merge.main(["--catalog", str(po), str(fragments)]) == 1  # "left" is still untranslated
