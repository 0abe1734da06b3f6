"""The agent's commands: `coffre config check|init`, `coffre run JOB`, `coffre agent` and
`coffre agent install|uninstall` (docs/agent.md)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from coffre.cli.entry import take_deferred
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

if TYPE_CHECKING:
    from coffre.agent.records import RunRecord
    from coffre.agent.scheduler import Agent
    from coffre.web.serving import ThreadedServer


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
    wp = actions.add_parser("web-password", help=_("set the password of the pharmacy's page"),
                            description=_("Asks for a new password for the pharmacy's page (twice) and "
                                          "writes its Argon2id hash to [web].password_hash_file. From then "
                                          "on only that password opens the page; without the file, the "
                                          "repository's password does."))
    add_config_option(wp, inherited=True)
    wp.add_argument("--stdin", action="store_true",
                    help=_("read the password from standard input (one line), for scripts"))
    wp.set_defaults(func=cmd_agent_web_password)


def config_path(args: argparse.Namespace) -> str:
    from coffre.agent.config import default_config_path

    return default_config_path(getattr(args, "config", None))


def log_line(text: str) -> None:
    """One line per event, on standard error (the journal under systemd, the terminal, and
    --log-file). A line that cannot be written (the terminal closed) is lost, never the run's
    end, report or alerts."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


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
    done: list[RunRecord | None] = []
    # The run goes on in a thread: this one only waits for it, and takes the signals.
    worker = threading.Thread(target=lambda: done.append(runner.run(args.job, "manual", None, cancel)),
                              name=f"job-{args.job}", daemon=True)

    def stop(signum: int, frame: Any) -> None:
        # As the agent's stop: the step running gets SIGINT (in a session of its own, it is
        # not reached by Ctrl-C or a closed terminal), ends as Ctrl-C would, and the run is
        # recorded as interrupted. Raising here at once left the step backing up on its own
        # and the run "running" in the status. A second signal ends this command at once; a
        # step left then keeps the job's lock until it ends (agent/locks.py).
        if cancel.is_set():
            previous = before.get(signum)
            if not callable(previous):
                raise KeyboardInterrupt
            previous(signum, frame)  # the entry point's: ends the command (cli/entry.py)
            return
        log_line(_("stopping: the running step is interrupted (again to quit at once)"))
        cancel.set()

    # Not a signal the caller chose to ignore (nohup, a background job without job control).
    stops = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
             if s is not None and signal.getsignal(s) is not signal.SIG_IGN]
    before = {s: signal.signal(s, stop) for s in stops}
    if take_deferred() is not None:  # a signal that came as the command started: no run then
        log_line(_("stopped before the run started: nothing was done"))
        cancel.set()
    try:
        if not cancel.is_set():
            worker.start()
        while worker.is_alive():
            worker.join(0.5)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    record = done[0] if done else None
    if record is None:
        return EXIT_INTERRUPTED if cancel.is_set() else EXIT_LOCKED
    return {"ok": EXIT_OK, "warning": EXIT_PARTIAL, "interrupted": EXIT_INTERRUPTED}.get(
        record.outcome, EXIT_FATAL)


def cmd_agent(args: argparse.Namespace) -> int:
    from coffre.agent.scheduler import Agent

    agent = Agent(config_path(args), log_line)
    page = start_page(agent)
    try:
        return agent.serve()
    finally:
        if page is not None:
            page.stop()


def start_page(agent: Agent) -> ThreadedServer | None:
    """The pharmacy's page on a thread of the agent (`[web]`), or None when it is disabled or
    cannot listen: a page that cannot start is logged, and the backups run all the same."""
    web = agent.config.web
    if not web.enabled:
        log_line(_("the pharmacy's page is disabled ([web] enabled = false)"))
        return None
    try:
        server, url = build_page(agent)
        server.start()
    except Exception as exc:  # the schedule matters more than the page
        reason = getattr(exc, "message", None) or str(exc)
        hint = getattr(exc, "hint", None)
        log_line(_("the pharmacy's page could not start: {reason}").format(reason=reason)
                 + (f" ({hint})" if hint else "") + " " + _("the backups run all the same."))
        return None
    log_line(_("the pharmacy's page: {url}").format(url=url))
    return server


def build_page(agent: Agent) -> tuple[ThreadedServer, str]:
    """The page's server and its address, composed from the running agent (the agent knows
    nothing of the web: the command line puts them together)."""
    from coffre.agent.config import parse_listen
    from coffre.core.net import is_loopback
    from coffre.web.local.app import AgentView, create_app
    from coffre.web.local.login import authenticate_with
    from coffre.web.security import LOOPBACK_NAMES
    from coffre.web.serving import ThreadedServer

    web = agent.config.web
    host, port = parse_listen(web.listen)
    tls = (web.tls_cert, web.tls_key) if web.tls_cert and web.tls_key else None
    # The runner's own store: it is thread-safe (one connection behind a lock; reads are
    # short), and one connection per process keeps SQLite's POSIX locks whole.
    store = agent.runner.store
    view = AgentView(config=lambda: agent.config, store=lambda: store, run_now=agent.run_now,
                     running=agent.running, clock=agent.clock, step=agent.runner.activity,
                     pending=agent.pending, incarnation=agent.incarnation)
    app = create_app(view, authenticate_with(lambda: agent.config), secure=tls is not None,
                     hosts=LOOPBACK_NAMES if is_loopback(host) else None)
    server = ThreadedServer(app, host, port, tls)
    shown = f"[{host}]" if ":" in host else host
    return server, f"{'https' if tls else 'http'}://{shown}:{port}/"


def cmd_agent_web_password(args: argparse.Namespace) -> int:
    from coffre.agent.config import load_config
    from coffre.web.local.login import MIN_LENGTH, write_password_hash

    config = load_config(config_path(args))
    target = config.web.password_hash_file
    if not target:
        raise UsageError(_("the configuration names no password_hash_file in [web]"),
                         _("add password_hash_file = \"/etc/coffre/page.argon2\" to the [web] section, then "
                           "run this command again"))
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        if not sys.stdin.isatty():
            raise UsageError(_("there is no terminal to ask the password on"), _("use --stdin in a script"))
        password = getpass.getpass(_("New password of the page: "))
        if getpass.getpass(_("Repeat it: ")) != password:
            raise UsageError(_("the two passwords differ; nothing was done"))
    if len(password) < MIN_LENGTH:
        raise UsageError(_("the password is too short: at least {n} characters").format(n=MIN_LENGTH))
    write_password_hash(target, password)
    print(_("written: {path}. The page now asks for this password (the running agent reads it at each "
            "login).").format(path=target))
    return EXIT_OK


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

