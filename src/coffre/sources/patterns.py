"""Include and exclude patterns: one glob grammar for backup, restore, verify and find.

The grammar (docs/patterns.md), that of restic's patterns:
- `*` matches any run of characters inside one path component, never `/`; `?` one character
  (one letter, `é` included, not one byte); `[abc]`, `[a-z]`, `[!abc]` or `[^abc]` one
  character of a set; `\\` takes the next character literally (`\\*`); `**` as a whole
  component matches any number of components (none included). A leading dot is matched like
  any other character.
- A pattern starting with `/` is anchored: it is matched against the whole absolute path.
  Any other pattern matches at any depth: `scans/*.tmp` is `**/scans/*.tmp`, and a pattern
  without `/` (`*.tmp`, `.cache`) is matched against the file name alone.
- A pattern that matches a folder matches everything under it. A trailing `/` is ignored.
- Matching is case-sensitive. Names that are not UTF-8 are matched with each odd byte as one
  character (Python's surrogateescape), so `?` and `*` match them too.
- A pattern starting with `!` (restic's "include again") is refused, not taken literally:
  write `\\!` for a name that starts with `!`.

Chosen: wcmatch translates every pattern (its `GLOBSTAR` is the `**` above, well tested); the
patterns of a file name alone, the common case, are compiled into one regular expression
matched against the name only (cheap), and those that name a path into another one matched
against the whole path.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from coffre.core.errors import UsageError
from coffre.core.i18n import _


class PathMatcher:
    """A set of patterns; `matches(path)` tells whether an absolute path matches one of them."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p.rstrip("/") or "/" for p in patterns if p.strip()]
        for p in self.patterns:
            if p.startswith("!"):
                raise UsageError(
                    _("the pattern {pattern!r} starts with '!': patterns that include again what "
                      "another one excludes are not supported").format(pattern=p),
                    _("for a name that starts with '!', write '\\!' (docs/patterns.md)"))
        if not self.patterns:
            self._names = self._paths = None
            return
        from wcmatch import fnmatch, glob  # ~10 ms to import: only when there are patterns

        names = [p for p in self.patterns if "/" not in p]
        paths = [p if p.startswith("/") else "**/" + p for p in self.patterns if "/" in p]
        translated: list[str] = []
        for p in names:
            translated += fnmatch.translate(p, flags=fnmatch.DOTMATCH | fnmatch.FORCEUNIX)[0]
        self._names = _one_regex(translated)
        translated = []
        for p in paths:
            translated += glob.translate(
                p, flags=glob.GLOBSTAR | glob.DOTGLOB | glob.FORCEUNIX | glob.NOUNIQUE)[0]
        self._paths = _one_regex(translated)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: bytes) -> bool:
        """Whether `path` itself matches (the walks stop at a matching folder)."""
        text = path.decode("utf-8", "surrogateescape")
        if self._names is not None and self._names(text[text.rfind("/") + 1 :]) is not None:
            return True
        return self._paths is not None and self._paths(text) is not None

    def matches_or_under(self, path: bytes) -> bool:
        """Whether `path` or one of the folders above it matches."""
        absolute = path.startswith(b"/")
        while path not in (b"", b"/"):
            if self.matches(path):
                return True
            path = path[: path.rfind(b"/")]
        return absolute and self.matches(b"/")


def escape(path: str) -> str:
    """A pattern that matches exactly this absolute path (its glob characters taken
    literally)."""
    from wcmatch import glob

    return glob.escape(path)


def _one_regex(regexes: list[str]) -> Callable[[str], re.Match[str] | None] | None:
    """One compiled alternation of the regexes, matched against the whole text (fullmatch: a
    name ending with a newline is not taken for one without it)."""
    if not regexes:
        return None
    return re.compile("|".join("(?:" + r + ")" for r in regexes)).fullmatch
