"""The web pages: the pharmacy's page (`coffre agent` serves `web.local` on loopback) and the
provider's console (`coffre server` serves `web.hosted`). Pages only render and dispatch: the
facts come from the agent (status store, configuration, `ops` for browsing and restoring)
or from the server's metadata (tenants, usage, tokens, bin, audit) — the console never sees a
key, a file name or a database (import-linter forbids `web.hosted` everything that reads a
repository).

Shared here: the one URL builder (`urls.py`), the Jinja2 environment with French filters and
hashed static files (`render.py`), sessions, CSRF, login throttling and security headers
(`security.py`), SVG plots drawn on the server (`plots.py`), one documented dataclass per page
(`contexts.py`), and serving an app on a thread of another process (`serving.py`).
Templates in `templates/` (`base.html`, `_*.html` partials, `local/`, `hosted/`), vendored
files in `static/` (htmx, the stylesheet): nothing is fetched from the internet at run time
and there is no build step.
"""
