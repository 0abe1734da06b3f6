"""Messages in the reader's language: English (the source text) or French.

Every sentence a user reads goes through `_` (or `ngettext` when it depends on a count), with
named placeholders filled after translation: `_("{n} files restored to {target}").format(...)`,
never an f-string inside `_` (the extractor would not see it, the translator could not move the
words). Text fixed at import time (help strings, constants) is marked with `N_` and translated
where it is shown.

The catalogue is `coffre/locale/fr/LC_MESSAGES/coffre.po`, compiled to `coffre.mo` beside it
(`./run catalog` extracts, merges and compiles; the test suite checks both are complete and in
step). The language follows `--lang`, else the POSIX locale variables (`LC_ALL`, `LC_MESSAGES`,
`LANG`, with GNU's `LANGUAGE` list first when a locale is set), else English.
"""

from __future__ import annotations

import gettext
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

DOMAIN = "coffre"
LANGUAGES = ("en", "fr")
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"
_catalogues: dict[str, gettext.NullTranslations] = {}
_thread = threading.local()  # a web request's own language (`speaking`), else the process's


def language_from_environment(environ: Mapping[str, str] = os.environ) -> str:
    """The language the locale variables ask for, among those Coffre speaks ("en" otherwise)."""
    locale = next((environ[v] for v in ("LC_ALL", "LC_MESSAGES", "LANG") if environ.get(v)), "")
    wanted = []
    if locale not in ("", "C", "POSIX") and not locale.startswith(("C.", "POSIX.")):
        wanted = [w for w in environ.get("LANGUAGE", "").split(":") if w] + [locale]
    for w in wanted:
        code = w.split("_")[0].split(".")[0].split("@")[0].lower()
        if code in LANGUAGES:
            return code
    return "en"


def set_language(lang: str) -> None:
    """Speak `lang` ("en" or "fr") from now on."""
    global _translation, _language
    if lang not in LANGUAGES:
        raise ValueError(lang)
    _language = lang
    if lang == "en":
        _translation = gettext.NullTranslations()
    else:
        _translation = gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def _catalogue(lang: str) -> gettext.NullTranslations:
    if lang not in _catalogues:
        _catalogues[lang] = (gettext.NullTranslations() if lang == "en" else
                             gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True))
    return _catalogues[lang]


@contextmanager
def speaking(lang: str) -> Iterator[None]:
    """Speak `lang` in this thread only, while the block runs (a web page in the reader's
    language while the agent's log keeps its own)."""
    if lang not in LANGUAGES:
        raise ValueError(lang)
    before = getattr(_thread, "speaking", None)
    _thread.speaking = (lang, _catalogue(lang))
    try:
        yield
    finally:
        _thread.speaking = before


def language() -> str:
    own = getattr(_thread, "speaking", None)
    return _language if own is None else str(own[0])


def locale_name() -> str:
    """The Babel locale of the current language, for dates, numbers and sizes."""
    return "fr_FR" if language() == "fr" else "en_GB"


def _current() -> gettext.NullTranslations:
    own = getattr(_thread, "speaking", None)
    return _translation if own is None else own[1]


def _(message: str) -> str:
    return _current().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _current().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a message for extraction without translating it yet."""
    return message


set_language(language_from_environment())
