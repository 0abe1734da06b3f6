"""Fill the French catalogue from translation fragments (`./run catalog --merge DIR`).

Helpers working on separate branches write their French into fragment files (plain gettext:
`msgid` / `msgstr` pairs, `msgid_plural` / `msgstr[N]` for plurals, no header needed) rather
than into the one catalogue. Once the branches are merged and `./run catalog` has extracted
every msgid into the catalogue, this fills each catalogue entry that is untranslated or fuzzy
from the fragments, writes the catalogue back, and reports:

- fragment msgids the catalogue does not have (a message that changed or vanished since the
  fragment was written: translate its new wording in the catalogue);
- fragment entries whose placeholders differ from their msgid's (not used);
- two fragments translating one msgid differently (the first, in file-name order, is used);
- catalogue entries still untranslated or fuzzy.

A translation already in the catalogue is kept (the catalogue is the reviewed text). Exit
status 0 when the catalogue is complete afterwards, 1 when entries are still untranslated.

    python tools/merge_catalog.py [--catalog PO] FRAGMENT_OR_DIR...
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po, write_po

CATALOG = Path(__file__).resolve().parent.parent / "src/coffre/locale/fr/LC_MESSAGES/coffre.po"


def placeholders(text: str) -> set[str]:
    """The named fields of a str.format template ({name}, {name:02d}, {name!r})."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:  # a lone brace: not a template
        return set()


def _ids(msg: Message) -> tuple[str, ...]:
    return tuple(msg.id) if isinstance(msg.id, (tuple, list)) else (msg.id,)


# Forms of a plural translation: the catalogue's header says 2 (« 0 fichier, 1 fichier,
# 2 fichiers »); Babel's own French data, which a fragment without a header gets, says 3.
PLURAL_FORMS = 2


def _strings(msg: Message) -> tuple[str, ...]:
    if isinstance(msg.string, (tuple, list)):
        return tuple(s or "" for s in msg.string)[:PLURAL_FORMS]
    return (msg.string or "",)


def translated(msg: Message) -> bool:
    """A usable translation: every form non-empty, not fuzzy."""
    forms = _strings(msg)
    return not msg.fuzzy and bool(forms) and all(forms)


def same_placeholders(msg: Message) -> bool:
    wanted = set().union(*(placeholders(i) for i in _ids(msg)))
    forms = _strings(msg)
    # A singular form may leave out its count ("un fichier"): only the union must match.
    return all(placeholders(s) <= wanted for s in forms) and set().union(
        *(placeholders(s) for s in forms)) == wanted


def fragment_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.po")) if p.is_dir() else [p])
    return out


def read(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale="fr", abort_invalid=False)


def merge(catalog: Catalog, fragments: list[Path], report: list[str]) -> int:
    """Fill `catalog` from the fragments; the number of entries filled."""
    chosen: dict[tuple[str, ...], tuple[Message, Path]] = {}
    for path in fragments:
        for msg in read(path):
            if not msg.id:
                continue  # a header
            if not translated(msg):
                report.append(f"{path.name}: untranslated in the fragment: {_ids(msg)[0]!r}")
                continue
            if not same_placeholders(msg):
                report.append(f"{path.name}: placeholders differ from the msgid, not used: {_ids(msg)[0]!r}")
                continue
            key = _ids(msg)
            if key in chosen:
                first, where = chosen[key]
                if _strings(first) != _strings(msg):
                    report.append(f"{path.name}: {_ids(msg)[0]!r} translated differently in {where.name}; "
                                  f"keeping {where.name}'s")
                continue
            chosen[key] = (msg, path)
            if catalog.get(msg.id if len(key) == 1 else key) is None:
                report.append(f"{path.name}: not in the catalogue (changed or removed?): {_ids(msg)[0]!r}")
    filled = 0
    for msg in catalog:
        if not msg.id or translated(msg) or _ids(msg) not in chosen:
            continue
        source = chosen[_ids(msg)][0]
        msg.string = _strings(source) if len(_ids(msg)) > 1 else source.string
        msg.flags.discard("fuzzy")
        filled += 1
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="the catalogue to fill (%(default)s)")
    parser.add_argument("fragments", nargs="+", type=Path, help="fragment files, or folders of *.po files")
    args = parser.parse_args(argv)
    catalog = read(args.catalog)
    if catalog.num_plurals != PLURAL_FORMS:
        parser.error(f"{args.catalog} has {catalog.num_plurals} plural forms, not {PLURAL_FORMS}")
    report: list[str] = []
    fragments = fragment_files(args.fragments)
    filled = merge(catalog, fragments, report)
    with args.catalog.open("wb") as f:
        write_po(f, catalog)  # pybabel update's layout: ./run catalog rewrites it the same
    missing = [_ids(m)[0] for m in catalog if m.id and not translated(m)]
    for line in report:
        print(line)
    for msgid in missing:
        print(f"still untranslated in the catalogue: {msgid!r}")
    print(f"{filled} entries filled from {len(fragments)} fragment(s); "
          f"{len(missing)} still untranslated")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
