"""The agent as a systemd service: the unit `coffre agent install` writes, and its removal.

Hardening, and why each setting is where it is:
- `NoNewPrivileges`, `PrivateTmp`, `ProtectKernel*`, `ProtectControlGroups`, `ProtectClock`,
  `RestrictSUIDSGID`, `LockPersonality`, `RestrictRealtime`: nothing the agent does needs them.
- `ProtectSystem=true` (/usr and /boot read-only), not `full` or `strict`: the drills create
  their unprivileged account (`coffre-drill`, with useradd) on first use, which writes /etc;
  and a local repository may be anywhere (/srv, /mnt, /media).
- `ProtectHome=read-only`: the pharmacy's files under /home are read, never written; the
  caches and Coffre's state move to /var/cache/coffre and /var/lib/coffre (XDG variables).
- No capability bounding: reading every file of the pharmacy needs root's
  CAP_DAC_READ_SEARCH, and the drills drop to their own account.
- `Restart=on-failure`: systemd starts a crashed agent again; a stopped agent (SIGTERM) ends
  its running backup cleanly first (`TimeoutStopSec` gives it time).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.core.systemd import coffre_command, exec_word

UNIT_NAME = "coffre-agent.service"
SYSTEM_UNITS = "/etc/systemd/system"


def unit_text(config_path: str, command: list[str] | None = None) -> str:
    """The unit file, starting `coffre agent --config CONFIG`."""
    command = command or coffre_command()
    exec_start = " ".join(exec_word(a) for a in [*command, "agent", "--config", config_path])
    return f"""# Written by 'coffre agent install'; 'coffre agent uninstall' removes it.
[Unit]
Description=Coffre backup agent (scheduled and real-time backups, alerts)
Documentation=man:coffre(1)
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
Type=simple
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=30
TimeoutStopSec=300
Environment=XDG_CACHE_HOME=/var/cache/coffre XDG_STATE_HOME=/var/lib/coffre/state
StateDirectory=coffre
CacheDirectory=coffre
StateDirectoryMode=0700
CacheDirectoryMode=0700
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=true
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str, hint: str) -> None:
    try:
        subprocess.run(["systemctl", *args], check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CoffreError(_("systemctl {args} failed: {reason}").format(args=" ".join(args), reason=exc),
                          hint) from None


def install(config_path: str, unit_dir: str = SYSTEM_UNITS, enable: bool = True) -> Path:
    """Write the unit (atomically), then reload systemd and enable and start the agent; an
    agent already running under a different unit is restarted, so the new one is in force."""
    if not Path(config_path).is_absolute():
        config_path = os.path.abspath(config_path)
    target = Path(unit_dir) / UNIT_NAME
    text = unit_text(config_path)
    try:
        changed = target.read_text(encoding="utf-8") != text
    except OSError:
        changed = False  # a new unit: `enable --now` starts it
    tmp = target.with_name(target.name + ".tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    if enable:
        hint = _("is this machine run by systemd? The unit file is written; enable it by "
                 "hand with 'systemctl enable --now coffre-agent'")
        _systemctl("daemon-reload", hint=hint)
        _systemctl("enable", "--now", UNIT_NAME, hint=hint)
        if changed:
            _systemctl("try-restart", UNIT_NAME, hint=hint)
    return target


def uninstall(unit_dir: str = SYSTEM_UNITS, disable: bool = True) -> Path | None:
    """Stop and disable the agent, then remove its unit. None if it was not installed."""
    target = Path(unit_dir) / UNIT_NAME
    if not target.exists():
        return None
    hint = _("is this machine run by systemd? The unit file is left in place; stop the agent with "
             "'systemctl disable --now coffre-agent', or remove only the file with --no-enable")
    if disable:
        _systemctl("disable", "--now", UNIT_NAME, hint=hint)
    target.unlink()
    if disable:
        _systemctl("daemon-reload", hint=hint)
    return target
