"""The agent's commands: `coffre config check|init`, `coffre run JOB`, `coffre agent` and
`coffre agent install|uninstall` (docs/agent.md)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from coffre.core.errors import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    CoffreError,
    UsageError,
)
from coffre.core.i18n import _


def add_config_option(p: argparse.ArgumentParser, inherited: bool = False) -> None:
    """--config; `inherited` on a subcommand of `coffre agent`, so that `coffre agent --config F
    install` keeps F (a subcommand's own default would replace it)."""
    p.add_argument("--config", metavar=_("FILE"), default=argparse.SUPPRESS if inherited else None,
                   help=_("the agent's configuration (or COFFRE_CONFIG; default /etc/coffre/coffre.toml)"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help=_("write or check the agent's configuration file"),
                       description=_("The agent's configuration is one TOML file: repositories, "
                                     "removable disk sets, jobs, schedules and alerts (docs/agent.md)."))
    what = p.add_subparsers(dest="what", required=True, metavar=_("ACTION"))
    c = what.add_parser("check", help=_("validate the file and show what the agent would do, and when"))
    add_config_option(c)
    c.set_defaults(func=cmd_config_check)
    i = what.add_parser("init", help=_("write a commented starting file for a pharmacy"),
                        description=_("Writes a starting configuration for a typical pharmacy, with the "
                                      "databases found on this machine. It never replaces an existing file."))
    add_config_option(i)
    i.add_argument("--stdout", action="store_true", help=_("print it instead of writing the file"))
    i.set_defaults(func=cmd_config_init)

    r = sub.add_parser("run", help=_("run one job of the configuration now, exactly as the agent does"),
                       description=_("Backup, retention, copies, verification, status record and alerts, "
                                     "as the agent runs them. Exit status 0 when the job succeeded, 3 when "
                                     "some files could not be read, 1 when it failed, 11 when it is already "
                                     "running."))
    r.add_argument("job", help=_("the job's name in the configuration"))
    add_config_option(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("agent", help=_("the service that runs the jobs on schedule and in real time"),
                       description=_("Runs the jobs of the configuration on schedule and in real time, "
                                     "sends the alerts and records every run. SIGHUP reloads the "
                                     "configuration; SIGTERM stops it cleanly (a running backup is "
                                     "interrupted: no snapshot, no damage)."))
    add_config_option(a)
    a.set_defaults(func=cmd_agent, service_action=None)
    actions = a.add_subparsers(dest="service_action", metavar=_("ACTION"))
    inst = actions.add_parser("install", help=_("install and start the agent as a systemd service"))
    add_config_option(inst, inherited=True)
    inst.add_argument("--unit-dir", default=None, metavar=_("DIR"),
                      help=_("where to write the unit (default /etc/systemd/system)"))
    inst.add_argument("--no-enable", action="store_true",
                      help=_("only write the unit; do not enable or start it"))
    inst.set_defaults(func=cmd_agent_install)
    uni = actions.add_parser("uninstall", help=_("stop the agent's service and remove it"))
    uni.add_argument("--unit-dir", default=None, metavar=_("DIR"),
                     help=_("where the unit is (default /etc/systemd/system)"))
    uni.add_argument("--no-enable", action="store_true", help=_("only remove the unit file"))
    uni.set_defaults(func=cmd_agent_uninstall)


def config_path(args: argparse.Namespace) -> str:
    from coffre.agent.config import default_config_path

    return default_config_path(getattr(args, "config", None))


def log_line(text: str) -> None:
    """One line per event, on standard error (the journal under systemd, the terminal, and
    --log-file)."""
    print(text, file=sys.stderr, flush=True)


def cmd_config_check(args: argparse.Namespace) -> int:
    from coffre.agent.config import load_config
    from coffre.agent.plan import describe

    config = load_config(config_path(args))
    for line in describe(config, time.time()):
        print(line)
    return EXIT_OK


def sample_language(flag: str | None) -> str:
    """The starting file's language, which is also its alerts' language: French, unless English
    is asked for (`--lang en`, or an English locale). A server's C/POSIX locale says nothing of
    who reads the mails: the pharmacist reads French."""
    if flag:
        return flag
    locale = next((os.environ[v] for v in ("LC_ALL", "LC_MESSAGES", "LANG") if os.environ.get(v)), "")
    return "en" if locale.lower().startswith("en") else "fr"


def cmd_config_init(args: argparse.Namespace) -> int:
    from coffre.agent.sample import detect_databases, sample_config

    text = sample_config(detect_databases(), language=sample_language(getattr(args, "lang", None)))
    if args.stdout:
        sys.stdout.write(text)
        return EXIT_OK
    path = config_path(args)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(_("{path} exists already: it is not replaced").format(path=path),
                         _("edit it, or give another file with --config")) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    print(_("written: {path}. Edit it, then run 'coffre config check'.").format(path=path))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from coffre.agent.config import load_config
    from coffre.agent.scheduler import Runner, open_store

    config = load_config(config_path(args))
    if args.job not in config.jobs:
        raise UsageError(_("no job named {job} in {path}").format(job=args.job, path=config.path),
                         _("the jobs are: {names}").format(names=", ".join(sorted(config.jobs)) or "-"))
    cancel = threading.Event()
    runner = Runner(config, open_store(config), log_line)
    try:
        record = runner.run(args.job, "manual", None, cancel, wait=False)
    except KeyboardInterrupt:
        cancel.set()
        raise
    if record is None:
        return EXIT_LOCKED
    return {"ok": EXIT_OK, "warning": EXIT_PARTIAL, "interrupted": EXIT_INTERRUPTED}.get(
        record.outcome, EXIT_FATAL)


def cmd_agent(args: argparse.Namespace) -> int:
    from coffre.agent.scheduler import Agent

    return Agent(config_path(args), log_line).serve()


def cmd_agent_install(args: argparse.Namespace) -> int:
    from coffre.agent import service
    from coffre.agent.config import load_config

    path = config_path(args)
    load_config(path)  # a service started on a broken file would only fail in the journal
    unit = service.install(path, args.unit_dir or service.SYSTEM_UNITS, enable=not args.no_enable)
    print(_("installed: {unit}").format(unit=unit))
    if not args.no_enable:
        print(_("the agent is running; 'coffre status' shows the jobs, 'journalctl -u coffre-agent' its log"))
    return EXIT_OK


def cmd_agent_uninstall(args: argparse.Namespace) -> int:
    from coffre.agent import service

    removed = service.uninstall(args.unit_dir or service.SYSTEM_UNITS, disable=not args.no_enable)
    if removed is None:
        raise CoffreError(_("the agent's service is not installed"))
    print(_("removed: {unit}").format(unit=removed))
    return EXIT_OK

