"""Network addresses as Coffre judges them."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """Whether `host` is this machine only: 127.0.0.0/8, ::1 (bracketed or not), localhost.
    None counts as this machine (a relay or a listener with no host given)."""
    if host is None:
        return True
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
