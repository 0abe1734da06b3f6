"""Rendering pages: one Jinja2 environment (autoescape on, `StrictUndefined`: a variable a
template misspells fails the page instead of showing a pharmacist a blank), the reader's
language per request, French typography, and the static files under content-hashed names.

Filters (the reader's language and the page's time zone):
- `size` « 1,5 Go » / "1.5 GiB"; `number` « 1 234 »; `duration` « 2 min 05 s »;
- `when` « 30 novembre 2026 à 12:31 »; `day` « 30 novembre 2026 »; `hour` « 12:31 »;
- `recent` « aujourd'hui à 12:31 », « hier à 19:30 », else `when`.
Instants are Unix seconds (float) or None (shown « — »). A name that is not UTF-8 is shown
with U+FFFD for its undecodable bytes (`displayable`).

In templates `_("…")` and `ngettext(…)` translate as the Python code does (the catalogue is
the same, extracted by `./run catalog`), then French typography is applied: a no-break space
before « : ; ! ? » and inside « ».
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from coffre.core import i18n
from coffre.core.human import human_duration, human_number, human_size
from coffre.web.urls import STATIC_PACKAGE, Urls, hashed_name

NBSP, NNBSP = "\u00a0", "\u202f"
DASH = "—"
_BEFORE_PUNCT = re.compile(r"[ \u00a0\u202f]([:;!?»])")
_AFTER_GUILLEMET = re.compile(r"«[ \u00a0\u202f]")
_MIME = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon", "txt": "text/plain"}


def typography(text: str) -> str:
    """French spacing: a space before « : ; ! ? » or inside guillemets becomes a no-break
    one (« Dernière sauvegarde : », « Restaurations »). English text is returned as it is."""
    if i18n.language() != "fr":
        return text
    text = _BEFORE_PUNCT.sub(lambda m: (NBSP if m.group(1) in ":»" else NNBSP) + m.group(1), text)
    return _AFTER_GUILLEMET.sub("«" + NBSP, text)


def translate(message: str) -> str:
    return typography(i18n._(message))


def translate_n(singular: str, plural: str, n: int) -> str:
    return typography(i18n.ngettext(singular, plural, n))


def _zone(ctx: jinja2.runtime.Context) -> ZoneInfo:
    return ZoneInfo(str(ctx.get("tz") or "Europe/Paris"))


def local_time(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(tz))


def format_day(moment: datetime) -> str:
    from babel.dates import format_date

    return str(format_date(moment.date(), format="d MMMM y", locale=i18n.locale_name()))


def format_hour(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def format_when(ts: float | None, tz: str) -> str:
    """« 30 novembre 2026 à 12:31 » / "30 November 2026 at 12:31"."""
    if ts is None:
        return DASH
    moment = local_time(ts, tz)
    return i18n._("{day} at {hour}").format(day=format_day(moment), hour=format_hour(moment))


def format_recent(ts: float | None, now: float, tz: str) -> str:
    """« aujourd'hui à 12:31 », « hier à 19:30 », else « 28 novembre 2026 à 08:00 »."""
    if ts is None:
        return DASH
    moment, today = local_time(ts, tz), local_time(now, tz).date()
    if moment.date() == today:
        return i18n._("today at {hour}").format(hour=format_hour(moment))
    if moment.date() == today - timedelta(days=1):
        return i18n._("yesterday at {hour}").format(hour=format_hour(moment))
    return format_when(ts, tz)


def format_duration(seconds: float | None) -> str:
    """« 45 s », « 2 min 05 s », « 1 h 02 min » (core.human), « 3 jours » from two days on."""
    if seconds is None:
        return DASH
    s = max(0, round(seconds))
    if s < 86400 * 2:
        return human_duration(s)
    return i18n.ngettext("{n} day", "{n} days", s // 86400).format(n=s // 86400)


@jinja2.pass_context
def _when(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    return format_when(ts, str(_zone(ctx)))


@jinja2.pass_context
def _recent(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    return format_recent(ts, float(ctx["now"]), str(_zone(ctx)))


@jinja2.pass_context
def _day(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    return DASH if ts is None else format_day(local_time(ts, str(_zone(ctx))))


@jinja2.pass_context
def _hour(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    return DASH if ts is None else format_hour(local_time(ts, str(_zone(ctx))))


def _size(n: float | None) -> str:
    return DASH if n is None else human_size(n)


def _number(n: float | None, decimals: int = 0) -> str:
    return DASH if n is None else human_number(n, decimals)


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def displayable(value: Any) -> Any:
    """What a template writes (Jinja2's `finalize`): a text holding a name that is not UTF-8
    (os.fsdecode keeps its bytes as lone surrogates, which no page can encode) shows U+FFFD for
    each such byte instead of failing the whole page. Markup (plots) is left as it is."""
    if type(value) is str and not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value):
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coffre.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=displayable,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(_=translate, ngettext=translate_n)
    env.filters.update(size=_size, number=_number, duration=format_duration, when=_when,
                       recent=_recent, day=_day, hour=_hour, iso=_iso, typo=typography)
    return env


_ENV: jinja2.Environment | None = None


def env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = environment()
    return _ENV


def as_mapping(page: object) -> dict[str, Any]:
    """A page's context dataclass (contexts.py) as the template's variables (shallow)."""
    if is_dataclass(page) and not isinstance(page, type):
        return {f.name: getattr(page, f.name) for f in fields(page)}
    if isinstance(page, Mapping):
        return dict(page)
    raise TypeError(type(page).__name__)


def render_text(template: str, variables: Mapping[str, Any], lang: str) -> str:
    with i18n.speaking(lang):
        return env().get_template(template).render(**variables)


def static_route(prefix_path: str = "/static/{name}") -> Route:
    """Serves `static/NAME` under its hashed name (immutable for a year) and, for a browser
    that kept an old page, its plain name (cached briefly)."""
    root = resources.files(STATIC_PACKAGE).joinpath("static")
    known = {p.name for p in root.iterdir() if p.is_file()}
    by_hashed = {hashed_name(n): n for n in known}

    async def serve(request: Request) -> Response:
        asked = request.path_params["name"]
        name = by_hashed.get(asked)
        immutable = name is not None
        if name is None and asked in known:
            name = asked
        if name is None:
            return Response("not found", status_code=404, media_type="text/plain")
        data = root.joinpath(name).read_bytes()
        cache = "public, max-age=31536000, immutable" if immutable else "public, max-age=300"
        mime = _MIME.get(name.rpartition(".")[2], "application/octet-stream")
        return Response(data, media_type=mime, headers={"Cache-Control": cache})

    return Route(prefix_path, serve, methods=["GET", "HEAD"])


Enricher = Callable[[Request], Mapping[str, Any]]


class Pages:
    """Renders one app's pages: every template gets `urls`, `lang`, `tz`, `now`, `csrf`,
    `user`, `flashes`, `request_path` besides its own context."""

    def __init__(self, urls: Urls, tz: Callable[[], str], clock: Callable[[], float],
                 common: Enricher | None = None) -> None:
        self.urls, self.tz, self.clock, self.common = urls, tz, clock, common

    def render(self, request: Request, template: str, page: object, status: int = 200,
               headers: Mapping[str, str] | None = None) -> HTMLResponse:
        from coffre.web.security import session_of

        session = session_of(request)
        lang = language_of(request)
        variables: dict[str, Any] = {
            "urls": self.urls, "lang": lang, "tz": self.tz(), "now": self.clock(),
            "csrf": session.csrf if session else "", "user": session.user if session else None,
            "role": session.role if session else None,
            "flashes": session.take_flashes() if session else [],
            "request_path": request.url.path,
        }
        if self.common is not None:
            variables.update(self.common(request))
        variables.update(as_mapping(page))
        body = render_text(template, variables, lang)
        return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


def language_of(request: Request) -> str:
    """French first: the `lang` cookie (the switch), else the browser's first language among
    French and English, else French."""
    chosen = request.cookies.get("lang")
    if chosen in i18n.LANGUAGES:
        return str(chosen)
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().split("-")[0].lower()
        if code in i18n.LANGUAGES:
            return code
    return "fr"


def svg(markup: str) -> Markup:
    """SVG built by plots.py (every text in it already escaped there)."""
    return Markup(markup)  # noqa: S704 - plots.py escapes every text it writes
