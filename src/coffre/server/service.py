"""The server as a systemd service: the unit `coffre server install` writes, its environment
file, the account it runs as, and their removal (`coffre server uninstall`).

The server runs as its own unprivileged account (`coffre-server`, created if missing), owning
only the server's folder. Hardening, and why:
- `ProtectSystem=strict` with `ReadWritePaths=` the server's folder: it writes nowhere else
  (objects elsewhere are in S3, metadata elsewhere in PostgreSQL, both over the network).
- `ProtectHome`, `PrivateTmp`, `PrivateDevices`, `ProtectKernel*`, `ProtectControlGroups`,
  `ProtectClock`, `ProtectHostname`, `ProtectProc=invisible`, `RestrictNamespaces`,
  `RestrictSUIDSGID`, `RestrictRealtime`, `LockPersonality`, `NoNewPrivileges`: nothing the
  server does needs them.
- `RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX` (clients, S3, PostgreSQL and its
  socket), `SystemCallFilter=@system-service`, `SystemCallArchitectures=native`.
- `CapabilityBoundingSet=CAP_NET_BIND_SERVICE` and the same ambient capability: it may listen
  on port 443 without root, and can do nothing else a normal account cannot.
- Not `MemoryDenyWriteExecute`: the database drivers' C extensions may need executable memory
  for callbacks, and a refused mapping would crash the server at the first request.
- `UMask=0077`: every file it writes (objects, database) is its own only.
- `Restart=on-failure`; SIGTERM stops it cleanly (uploads in flight are answered or cut
  before an acknowledgement, never half stored).

The environment file (`/etc/coffre/server.env`, root's only, read by systemd) holds what may
be secret or machine-specific: `COFFRE_SERVER_DB` (a PostgreSQL URL with its password),
`COFFRE_SERVER_OBJECTS`, S3 credentials, and `COFFRE_SERVER_OPTIONS` (serving options).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from coffre.core import posix
from coffre.core.errors import CoffreError
from coffre.core.files import write_atomic
from coffre.core.i18n import _
from coffre.core.systemd import coffre_command, exec_word

UNIT_NAME = "coffre-server.service"
SYSTEM_UNITS = "/etc/systemd/system"
ENV_FILE = "/etc/coffre/server.env"
SERVICE_USER = "coffre-server"


def unit_text(data_dir: str, user: str, env_file: str, command: list[str] | None = None) -> str:
    """The unit file, starting `coffre server --data DATA $COFFRE_SERVER_OPTIONS` as `user`."""
    command = command or coffre_command()
    exec_start = " ".join(exec_word(a) for a in [*command, "server", "--data", data_dir])
    state = ""
    parent, name = os.path.split(data_dir.rstrip("/"))
    if parent == "/var/lib" and re.fullmatch(r"[A-Za-z0-9._-]+", name):
        state = f"StateDirectory={name}\nStateDirectoryMode=0700\n"
    return f"""# Written by 'coffre server install'; 'coffre server uninstall' removes it.
# Settings (database, object store, serving options): {env_file}
[Unit]
Description=Coffre hosting server (pharmacies' off-site backups, without their keys)
Documentation=man:coffre(1)
Wants=network-online.target
After=network-online.target local-fs.target postgresql.service

[Service]
Type=simple
User={user}
Group={user}
EnvironmentFile=-{env_file}
ExecStart={exec_start} $COFFRE_SERVER_OPTIONS
Restart=on-failure
RestartSec=5
TimeoutStopSec=90
LimitNOFILE=65536
UMask=0077
{state}ReadWritePaths={data_dir}
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
"""


def env_text(data_dir: str) -> str:
    """The environment file's first contents: every setting commented out, with an example."""
    return f"""# Settings of the Coffre server's service (coffre-server.service), read by systemd.
# This file may hold passwords: it stays readable by root only. After a change:
#   systemctl restart coffre-server
#
# The server's folder is {data_dir} (given in the unit; 'coffre server install --data' changes it).
#
# Metadata in PostgreSQL (several instances), instead of SQLite in the server's folder:
#COFFRE_SERVER_DB=postgresql://coffre:PASSWORD@db.example.fr/coffre
#
# Objects in S3 (a SeaweedFS cluster...), instead of objects/ in the server's folder:
#COFFRE_SERVER_OBJECTS=s3://s3.example.fr/coffre-objects
#AWS_ACCESS_KEY_ID=...
#AWS_SECRET_ACCESS_KEY=...
#
# Serving options of 'coffre server' (see 'coffre server --help'), e.g. the address to listen on:
#COFFRE_SERVER_OPTIONS=
"""


_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_+=:,./-]*")


def _run(argv: list[str], hint: str) -> None:
    try:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = str(exc)
        if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
            reason = exc.stderr.decode(errors="replace").strip()
        raise CoffreError(_("{command} failed: {reason}").format(command=" ".join(argv[:2]), reason=reason),
                          hint) from None


def _systemctl(*args: str, hint: str) -> None:
    _run(["systemctl", *args], hint)


def need_root() -> None:
    if not posix.is_root():
        raise CoffreError(_("installing or removing the server's service needs root"),
                          _("run it with sudo, e.g. 'sudo coffre server install'"))


@dataclass(frozen=True)
class Installed:
    unit: Path
    env_file: Path
    env_written: bool          # False: an existing file was kept
    user: str
    user_created: bool


def ensure_user(user: str, home: str) -> bool:
    """The service's account, created (system account, own group, no login) if missing."""
    if posix.uid_of(user) is not None:
        return False
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    _run(["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
          "--shell", shell, user],
         _("create the account by hand (useradd --system {user}), or give an existing one with "
           "--user").format(user=user))
    return True


def give_folder(data_dir: Path, user: str) -> None:
    """The server's folder (created 0700 if missing) and everything in it, owned by `user`:
    an `init` run as root left it root's."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    uid, gid = posix.uid_of(user), posix.gid_of(user)
    if uid is None:
        raise CoffreError(_("there is no account named {user}").format(user=user))
    if gid is None:
        gid = posix.account(user).pw_gid
    for folder, dirs, files in os.walk(data_dir):
        for name in ["", *dirs, *files]:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    os.chmod(data_dir, 0o700)


def install(data_dir: str, user: str = SERVICE_USER, unit_dir: str = SYSTEM_UNITS,
            env_file: str = ENV_FILE, enable: bool = True) -> Installed:
    """The account, the folder given to it, the environment file (kept if it exists), the unit
    (written atomically); then systemd reloaded, the service enabled and started, and restarted
    if it ran under a different unit."""
    need_root()
    data_dir = os.path.abspath(data_dir)
    for path in (data_dir, os.path.abspath(env_file)):
        if not _PLAIN_PATH.fullmatch(path):
            raise CoffreError(_("{path}: the service's paths must be plain (letters, digits, . _ - / "
                                "and no spaces), as a systemd unit reads them").format(path=path),
                              _("choose another folder, e.g. /var/lib/coffre-server"))
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise CoffreError(_("{user} is not a valid account name").format(user=repr(user)))
    created = ensure_user(user, data_dir)
    give_folder(Path(data_dir), user)
    env = Path(env_file)
    env_written = not env.exists()
    if env_written:
        env.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_atomic(env, env_text(data_dir).encode("utf-8"), 0o600)
    target = Path(unit_dir) / UNIT_NAME
    text = unit_text(data_dir, user, str(env.absolute()))
    try:
        changed = target.read_text(encoding="utf-8") != text
    except OSError:
        changed = False  # a new unit: `enable --now` starts it
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode("utf-8"), 0o644)
    if enable:
        hint = _("is this machine run by systemd? The unit file is written; enable it by hand with "
                 "'systemctl enable --now coffre-server'")
        _systemctl("daemon-reload", hint=hint)
        _systemctl("enable", "--now", UNIT_NAME, hint=hint)
        if changed:
            _systemctl("try-restart", UNIT_NAME, hint=hint)
    return Installed(target, env, env_written, user, created)


def uninstall(unit_dir: str = SYSTEM_UNITS, disable: bool = True) -> Path | None:
    """Stop and disable the service, then remove its unit; the account, the server's folder
    and the environment file stay. None if it was not installed."""
    need_root()
    target = Path(unit_dir) / UNIT_NAME
    if not target.exists():
        return None
    hint = _("is this machine run by systemd? The unit file is left in place; stop the server with "
             "'systemctl disable --now coffre-server', or remove only the file with --no-enable")
    if disable:
        _systemctl("disable", "--now", UNIT_NAME, hint=hint)
    target.unlink()
    posix.fsync_dir(target.parent)
    if disable:
        _systemctl("daemon-reload", hint=hint)
    return target
