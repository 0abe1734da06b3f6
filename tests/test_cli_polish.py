"""The command line as a person meets it: each command's usage on its own mistakes, exit 2
for usage errors, help for every option, remote options under their own heading, shell
completion, manual pages, --log-file, --quiet/--verbose, COFFRE_PASSWORD refused, argparse's
own words in French."""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coffre.cli.parser import build_parser, subparsers, walk_actions
from coffre.core.errors import EXIT_NO_REPOSITORY, EXIT_USAGE, EXIT_WRONG_PASSWORD

from conftest import PASSWORD, Coffre

ROOT = Path(__file__).resolve().parent.parent

FR = {"LANG": "fr_FR.UTF-8"}


def src_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "ordonnance.txt").write_text("Doliprane 1000\n")
    return src


# ------------------------------------------------------------------ usage errors


def test_a_mistyped_option_shows_the_commands_own_usage(coffre: Coffre, tmp_path: Path) -> None:
    res = coffre("backup", "--exclde", "*.tmp", str(tmp_path))
    assert res.code == EXIT_USAGE, res
    assert res.err.startswith("usage: coffre backup "), res
    assert "coffre backup: error: unrecognized arguments: --exclde" in res.err
    res = coffre("key", "list", "--bogus")  # a nested command too
    assert res.code == EXIT_USAGE and res.err.startswith("usage: coffre key list "), res
    res = coffre("forget", "--keep-daily", "sept")
    assert res.code == EXIT_USAGE and res.err.startswith("usage: coffre forget "), res
    assert "argument --keep-daily: invalid int value: 'sept'" in res.err


def test_backup_without_a_path_is_a_usage_error(repo: Coffre) -> None:
    res = repo("backup")
    assert res.code == EXIT_USAGE, res
    assert res.err.startswith("usage: coffre backup ")
    assert "nothing to back up" in res.err
    assert "Traceback" not in res.err


def test_exit_codes_the_readme_promises(coffre: Coffre, tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "2 usage" in readme and "10 no repository" in readme and "12 wrong password" in readme
    assert coffre("nosuchcommand", repo=False).code == EXIT_USAGE
    assert coffre("restore", "latest").code == EXIT_USAGE  # --target is required
    assert coffre("snapshots", "--repo", "", repo=False).code == EXIT_USAGE  # an empty option
    assert coffre("snapshots", "--lang", "de").code == EXIT_USAGE
    assert coffre("snapshots").code == EXIT_NO_REPOSITORY
    coffre.ok("init")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    assert coffre("snapshots", "--password-file", str(wrong), repo=False,
                  env={"COFFRE_REPOSITORY": str(coffre.repo)}).code == EXIT_WRONG_PASSWORD
    assert coffre.ok("--help", repo=False).out.startswith("usage: coffre")
    assert coffre.ok("backup", "--help").out.startswith("usage: coffre backup")


# ------------------------------------------------------------- one command's parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _shape(parser: argparse.ArgumentParser) -> list[tuple[str, tuple[str, ...], object]]:
    return [(prog, tuple(a.option_strings), a.default) for prog, a in walk_actions(parser)
            if not isinstance(a, argparse._SubParsersAction)]


def test_a_command_named_on_the_line_gets_the_same_parser_as_in_the_whole_one() -> None:
    """A command line naming a command builds the parser with that command's module alone
    (cli/parser.py COMMAND_MODULES): the table must name every command, each once, and the
    command's parser must be the one the whole command line has."""
    from coffre.cli.parser import MODULE_OF, named_command

    whole = _commands(build_parser())
    assert set(MODULE_OF) == set(whole)
    for name, module in MODULE_OF.items():
        alone = _commands(build_parser(name))
        assert name in alone, (name, module)
        assert _shape(alone[name]) == _shape(whole[name]), name
    assert named_command(["--lang", "fr", "-v", "backup", "/srv"]) == "backup"
    assert named_command(["--log-file", "prune", "check"]) == "check"  # a log file named prune
    assert named_command(["--lang=fr", "restore-db", "x"]) == "restore-db"
    for line in (["bakcup"], ["--help"], [], ["--version"], ["--", "backup"], ["completion", "bash"],
                 ["manpage"]):
        assert named_command(line) is None, line


def test_a_backup_does_not_load_the_modules_of_the_other_commands(coffre: Coffre, tmp_path: Path) -> None:
    code = ("import sys; from coffre.cli.main import main; code = main(sys.argv[1:]);"
            "print(sorted(m for m in sys.modules if m.startswith(('coffre.cli.cmd_', 'coffre.agent.'))))")
    out = subprocess.run([sys.executable, "-c", code, *coffre.argv("backup", str(src_tree(tmp_path)))[3:]],
                         env={**coffre.env}, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['coffre.cli.cmd_backup']", out.stdout


# -------------------------------------------------------------------------- help


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    bare = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in walk_actions(parser)
            if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert bare == []
    for p in [parser, *subparsers(parser)]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(c.help for c in action._choices_actions), p.prog
    assert len(list(subparsers(parser))) > 20


def help_sections(text: str) -> dict[str, str]:
    """--help's sections: heading -> its lines."""
    sections: dict[str, str] = {}
    heading = ""
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
        else:
            sections[heading] = sections.get(heading, "") + line + "\n"
    return sections


def test_remote_options_are_under_their_own_heading(coffre: Coffre) -> None:
    for command in ("backup", "restore", "snapshots", "forget", "copy", "check"):
        sections = help_sections(coffre.ok(command, "--help", repo=False).out)
        remote = sections["remote storage"]
        for option in ("--insecure-ftp", "--limit-upload", "--limit-download"):
            assert option in remote, command
            assert option not in sections["options"], command
        repo_help = " ".join(sections["repository"].split())
        for kind in ("a path", "s3://", "s3+http://", "sftp://", "ftps://", "ftp://"):
            assert kind in repo_help, (command, kind)
    assert "remote storage" not in coffre.ok("demo", "--help", repo=False).out
    sections = help_sections(coffre.ok("forget", "--help", repo=False).out)
    keep = next(v for k, v in sections.items() if k.startswith("retention policy"))
    assert "--keep-daily N" in keep and "keep the newest snapshot of each of the last N days" in keep


def test_global_options_before_or_after_the_command(repo: Coffre, tmp_path: Path) -> None:
    src = src_tree(tmp_path)
    before = repo("-q", "backup", str(src), repo=False, env={
        "COFFRE_REPOSITORY": str(repo.repo), "COFFRE_PASSWORD_FILE": str(repo.pwfile)})
    after = repo("backup", str(src), "-q")
    assert before.code == after.code == 0 and before.out == after.out == "", (before, after)
    assert "snapshot" in repo.ok("backup", str(src)).out  # not quiet by default


# ----------------------------------------------------------- quiet, verbose, logs


def test_quiet_keeps_warnings_and_what_is_asked(repo: Coffre, tmp_path: Path) -> None:
    src = src_tree(tmp_path)
    res = repo.ok("backup", str(src), "--quiet", "--limit-upload", "500")
    assert res.out == "" and "warning: --limit-upload 500" in res.err, res
    assert "ordonnance" in repo.ok("ls", "latest", "--quiet").out  # a listing is what was asked
    assert repo.ok("snapshots", "-q").out.count("\n") >= 3
    assert repo.ok("backup", str(src), "-q", "--json").json()["snapshot"]  # --json stays
    with pytest.raises(AssertionError):
        repo.ok("backup", str(src), "-q", "-v")  # one or the other


def test_quiet_init_still_shows_the_recovery_key(coffre: Coffre) -> None:
    out = coffre.ok("init", "--quiet").out
    assert "created Coffre repository" not in out
    assert re.search(r"^    \S+-\S+-\S+", out, re.M) and "Recovery key" in out


def test_verbose_says_how_the_command_ended(repo: Coffre, tmp_path: Path) -> None:
    res = repo.ok("backup", str(src_tree(tmp_path)), "--verbose")
    assert re.search(r"ended with exit status 0 after \d+\.\d s", res.err), res


def test_log_file_records_the_output_with_timestamps_and_no_secret(
        coffre: Coffre, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "coffre.log"
    log.parent.mkdir()
    init = coffre.ok("init", "--log-file", str(log))
    key = re.search(r"^    (\S+-\S+)$", init.out, re.M)
    assert key is not None, init
    src = src_tree(tmp_path)
    coffre.ok("backup", str(src), "--limit-upload", "500", env={"COFFRE_LOG_FILE": str(log)})
    missing = tmp_path / "absent"
    res = coffre("backup", str(missing), env={"COFFRE_LOG_FILE": str(log)})
    assert res.code == 1, res
    coffre("backup", "--exclde", "x", env={"COFFRE_LOG_FILE": str(log)})
    text = log.read_text()
    assert key.group(1) not in text and key.group(1).replace("-", "") not in text
    assert "recovery key was shown on the terminal; it is not logged" in text
    assert PASSWORD not in text
    lines = text.splitlines()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} coffre\[\d+\] "
    assert all(re.match(stamp, line) for line in lines), lines
    assert any(re.match(stamp + r"init: created Coffre repository", line) for line in lines)
    assert any(re.match(stamp + r"backup: snapshot [0-9a-f]{8} saved", line) for line in lines)
    assert any("backup: warning: --limit-upload 500" in line for line in lines)
    assert any("backup: coffre: " in line and str(missing) in line for line in lines)  # the error
    assert any("ended with exit status 1" in line for line in lines)
    assert any("unrecognized arguments: --exclde" in line for line in lines)  # usage errors too
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    res = coffre("snapshots", "--log-file", str(tmp_path / "no" / "such" / "folder.log"))
    assert res.code == EXIT_USAGE and "cannot open the log file" in res.err, res


def test_log_file_leaves_out_redrawn_lines_and_binary_output(repo: Coffre, tmp_path: Path) -> None:
    from coffre.cli.logfile import Log, Stream

    log_path = tmp_path / "log"
    log = Log(str(log_path), "backup")
    sink = tmp_path / "shown"
    with open(sink, "w") as shown:
        stream = Stream(shown, log)  # type: ignore[arg-type]
        stream.write("12 % 3 files\r\x1b[2K40 % 9 files\rfiles: 9 new\n")
        stream.write("\x1b[1mbold\x1b[0m line\n")
        stream.write("\x1b[2K\x1b[1A\x1b[2K 50 % backup\n")  # a live display redrawn
        stream.finish()
    log.close()
    logged = [line.split(": ", 1)[1] for line in log_path.read_text().splitlines()]
    assert logged == ["files: 9 new", "bold line"]
    src = src_tree(tmp_path)
    repo.ok("backup", str(src))
    dump_log = tmp_path / "dump.log"
    res = repo.ok("dump", "latest", str(src / "ordonnance.txt"), "--log-file", str(dump_log))
    assert res.out == "Doliprane 1000\n"
    assert "Doliprane" not in dump_log.read_text()


# --------------------------------------------------------------------- passwords


def test_a_password_in_the_environment_is_refused(repo: Coffre) -> None:
    res = repo("snapshots", env={"COFFRE_PASSWORD": "s3cret-value"})
    assert res.code == EXIT_USAGE, res
    assert "COFFRE_PASSWORD is set" in res.err
    assert "COFFRE_PASSWORD_FILE" in res.err and "COFFRE_PASSWORD_COMMAND" in res.err
    assert "s3cret-value" not in res.err + res.out
    repo.ok("snapshots", env={"COFFRE_PASSWORD": ""})  # empty: unset
    res = repo("copy", "--from", str(repo.repo), "--to", str(repo.repo) + "2",
               env={"COFFRE_FROM_PASSWORD": "x"})
    assert res.code == EXIT_USAGE


def test_restic_variables_are_named_when_no_password_source_is_given(repo: Coffre) -> None:
    env = {"RESTIC_PASSWORD": "x", "RESTIC_REPOSITORY": "/srv/restic",
           "COFFRE_REPOSITORY": str(repo.repo)}
    res = repo("snapshots", repo=False, env=env)
    assert res.code == EXIT_USAGE, res
    assert "RESTIC_PASSWORD is set, but Coffre does not read restic's variables" in res.err
    assert repo.ok("snapshots", env=env)  # with a Coffre password source, nothing to say
    res = repo("snapshots", repo=False, env={"RESTIC_REPOSITORY": "/srv/restic"})
    assert res.code == EXIT_USAGE and "RESTIC_REPOSITORY is set" in res.err, res


# ----------------------------------------------------------- completion and man


def test_shell_completion_scripts(coffre: Coffre, tmp_path: Path) -> None:
    bash = coffre.ok("completion", "bash", repo=False).out
    script = tmp_path / "coffre.bash"
    script.write_text(bash)
    out = subprocess.run(["bash", "-c", f"source {script} && complete -p coffre"],
                         capture_output=True, text=True, check=True).stdout
    assert "coffre" in out
    for command in ("backup", "restore-db", "forget", "completion", "manpage"):
        assert command in bash
    assert "--limit-upload" in bash and "--keep-daily" in bash
    assert "_shtab_compgen_files" in bash and "_shtab_compgen_dirs" in bash  # paths complete as paths
    assert coffre.ok("completion", "zsh", repo=False).out.startswith("#compdef coffre")
    assert "complete coffre" in coffre.ok("completion", "tcsh", repo=False).out
    assert coffre("completion", "fish", repo=False).code == EXIT_USAGE


def test_manual_pages_for_every_command(coffre: Coffre, tmp_path: Path) -> None:
    mandir = tmp_path / "man" / "man1"
    res = coffre.ok("manpage", "--dir", str(mandir), repo=False)
    assert "manual pages written" in res.out
    parser = build_parser()
    expected = {"coffre.1"} | {p.prog.replace(" ", "-") + ".1" for p in subparsers(parser)}
    assert {p.name for p in mandir.iterdir()} == expected
    assert {"coffre-backup.1", "coffre-key-list.1", "coffre-repair-index.1"} <= expected
    for page in mandir.iterdir():
        text = page.read_text()
        assert text.startswith('.TH "' + page.stem.upper().replace("-", "\\-") + '" "1"'), page
        for section in (".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS"):
            assert section in text, (page, section)
        assert stat.S_IMODE(page.stat().st_mode) == 0o644
    main = (mandir / "coffre.1").read_text()
    assert ".SH EXIT STATUS" in main and ".SH ENVIRONMENT" in main and "COFFRE_PASSWORD_FILE" in main
    backup = (mandir / "coffre-backup.1").read_text()
    assert "\\-\\-exclude" in backup and ".SS remote storage" in backup
    assert coffre.ok("manpage", "key", "list", repo=False).out == (mandir / "coffre-key-list.1").read_text()
    assert coffre("manpage", "nosuch", repo=False).code == EXIT_USAGE
    for page in sorted(mandir.iterdir()):
        shown = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                               env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"}, check=True)
        assert shown.stderr == "", (page, shown.stderr)
        assert "NAME" in shown.stdout and "OPTIONS" in shown.stdout
    shown = subprocess.run(["man", "-l", str(mandir / "coffre-check.1")], capture_output=True, text=True,
                           env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "200"}, check=True)
    assert "where the last stopped (10%)" in shown.stdout  # argparse's %% expanded


def test_run_install_puts_the_command_its_pages_and_completion_under_a_prefix(tmp_path: Path) -> None:
    """`./run install PREFIX`: what a packager or an administrator runs once."""
    prefix = tmp_path / "prefix"
    venv = Path(sys.executable).parent.parent
    res = subprocess.run([str(ROOT / "run"), "install", str(prefix)], capture_output=True, text=True,
                         env={**os.environ, "COFFRE_VENV": str(venv)}, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    version = subprocess.run([str(prefix / "bin" / "coffre"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "coffre" in version.stdout
    env = {**os.environ, "MANPATH": str(prefix / "share" / "man"), "MANPAGER": "cat", "MANWIDTH": "80"}
    found = subprocess.run(["man", "-w", "coffre-backup"], capture_output=True, text=True, env=env)
    assert found.stdout.strip() == str(prefix / "share" / "man" / "man1" / "coffre-backup.1")
    french = (prefix / "share" / "man" / "fr" / "man1" / "coffre-backup.1").read_text()
    assert ".SH NOM" in french and "instantané" in french
    completion = prefix / "share" / "bash-completion" / "completions" / "coffre"
    out = subprocess.run(["bash", "-c", f"source {completion} && complete -p coffre"],
                         capture_output=True, text=True, check=True).stdout
    assert "coffre" in out
    assert (prefix / "share" / "zsh" / "site-functions" / "_coffre").read_text().startswith("#compdef coffre")


# ------------------------------------------------------------------------ French


def test_argparse_speaks_french(coffre: Coffre) -> None:
    out = coffre.ok("--lang", "fr", "backup", "--help", repo=False).out
    assert out.startswith("utilisation : coffre backup")
    assert "afficher ce message d'aide et quitter" in out
    assert "stockage distant :" in out and "dépôt :" in out
    res = coffre("backup", "--exclde", "x", repo=False, env=FR)
    assert res.code == EXIT_USAGE
    assert "coffre backup : erreur : arguments non reconnus : --exclde" in res.err, res
    res = coffre("restore", "latest", repo=False, env=FR)
    assert "les arguments suivants sont obligatoires : --target" in res.err, res
    res = coffre("sauvegarde", repo=False, env=FR)
    assert "choix invalide" in res.err, res
    res = coffre("forget", "--max-size", "500", repo=False, env=FR)
    assert "500 quoi ? Par exemple 500MiB" in res.err, res


# -------------------------------------------------------------------------- docs


def documented_command_lines(text: str) -> list[list[str]]:
    """The `coffre ...` command lines of a document's sh blocks and systemd units, as
    arguments (without redirections and pipes)."""
    import shlex

    lines: list[list[str]] = []
    in_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = line.strip() in ("```sh", "```ini")
            continue
        if not in_block:
            continue
        line = line.removeprefix("ExecStart=")
        words = shlex.split(line, comments=True)
        starts = [i for i, w in enumerate(words) if w == "coffre" or w.endswith("bin/coffre")]
        starts = [i for i in starts if i + 1 < len(words) and words[i + 1] != "coffre"]
        if not starts:
            continue
        args = words[starts[0] + 1:]
        for stop in (">", "|", "&&"):
            if stop in args:
                args = args[:args.index(stop)]
        lines.append(args)
    return lines


def test_the_documented_command_lines_parse() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    lines = documented_command_lines(doc)
    assert len(lines) >= 9
    for args in lines:
        build_parser().parse_args(args)  # exits 2 (SystemExit) on a line the parser refuses
    assert "systemd-cat -t coffre coffre backup" in doc and "journalctl" in doc
    assert "COFFRE_PASSWORD_FILE" in doc and "COFFRE_PASSWORD_COMMAND" in doc


def test_a_full_log_file_is_rotated_and_the_oldest_dropped(tmp_path: Path) -> None:
    from coffre.cli.logfile import LOG_BACKUPS, Log

    path = tmp_path / "coffre.log"
    log = Log(str(path), "agent", max_bytes=1000)
    for i in range(400):
        log.line(f"event {i:04d} " + "x" * 40)
    log.close()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["coffre.log", *(f"coffre.log.{i}" for i in range(1, LOG_BACKUPS + 1))]
    assert all(p.stat().st_size < 1000 + 200 for p in tmp_path.iterdir())
    assert "event 0399" in path.read_text()  # the newest line is in the file itself
    assert "event 0000" not in "".join(p.read_text() for p in tmp_path.iterdir())  # the oldest went
