"""repair index, repair config."""

from __future__ import annotations

import argparse

from coffre.cli.context import add_repo_options, locked, open_repo
from coffre.cli.output import human_number, say, warn
from coffre.cli.watching import watch_storage
from coffre.core.i18n import _, ngettext
from coffre.ops.repair import repair_index
from coffre.ops.repair_config import repair_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("repair", help=_("repair the repository"))
    rs = r.add_subparsers(dest="what", required=True, metavar=_("WHAT"), title=_("what to repair"))
    ri = rs.add_parser("index", help=_("rebuild the index from the packs"))
    add_repo_options(ri)
    ri.set_defaults(func=cmd_repair_index)
    rc = rs.add_parser("config", help=_("write the config file again from the copy kept in the key files "
                                        "(opens with the password or the recovery key)"))
    add_repo_options(rc)
    rc.set_defaults(func=cmd_repair_config)


def cmd_repair_index(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with locked(repo, exclusive=True, command="repair index"):
        st = repair_index(repo, report=warn)
    watch_storage(repo, changed=True)  # old index files were removed: note which
    say(_("index rebuilt: {packs}, {blobs}; {old}").format(
        packs=ngettext("{n} pack", "{n} packs", st.packs).format(n=human_number(st.packs)),
        blobs=ngettext("{n} blob", "{n} blobs", st.blobs).format(n=human_number(st.blobs)),
        old=ngettext("{n} old index file removed", "{n} old index files removed",
                     st.old_index_files).format(n=human_number(st.old_index_files))))
    for u in st.unreadable:
        say(_("pack with an unreadable header, left in place: {pack}").format(pack=u))
    if st.kept_from_old_index or st.salvaged:
        say(ngettext("{kept} blob kept from the old index and {salvaged} salvaged from the body of such "
                     "packs",
                     "{kept} blobs kept from the old index and {salvaged} salvaged from the body of such "
                     "packs", st.kept_from_old_index).format(
            kept=human_number(st.kept_from_old_index), salvaged=human_number(st.salvaged)))
    if st.packs_gone:
        say(ngettext("{n} pack the old index listed is gone: what it held is missing ('coffre check' "
                     "names the files; the next backup stores again what the live files hold)",
                     "{n} packs the old index listed are gone: what they held is missing ('coffre check' "
                     "names the files; the next backup stores again what the live files hold)",
                     st.packs_gone).format(n=human_number(st.packs_gone)))
    for d in st.damaged_index_files:
        say(_("damaged index file replaced: {file}").format(file=d))
    if st.old_index_kept:
        say(_("the old index files were kept, as the rebuilt index does not cover them all"))
        return 1
    return 0


def cmd_repair_config(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with locked(repo, exclusive=True, command="repair config"):
        done = repair_config(repo, report=warn)
    say(done)
    return 0
