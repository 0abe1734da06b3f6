"""`coffre server` without an action: serve every tenant's repositories (docs/server.md).

    coffre server [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--insecure-http]
                  [--recycle-days N] [--trusted-proxy CIDR]... [--max-connections N]
"""

from __future__ import annotations

import argparse
import ipaddress
import os

from coffre.cli import server_fleet
from coffre.cli.server_common import settings_from_args
from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server.settings import DEFAULT_PORT


def add_serve_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(_("serving"))
    g.add_argument("--listen", metavar=_("HOST:PORT"),
                   help=_("address and port to serve on (or COFFRE_SERVER_LISTEN; default "
                          "127.0.0.1:{port}; 0.0.0.0:{port} for every address)").format(port=DEFAULT_PORT))
    g.add_argument("--tls-cert", metavar=_("FILE"),
                   help=_("the TLS certificate (PEM, with its chain; default: tls/cert.pem in the "
                          "server's folder)"))
    g.add_argument("--tls-key", metavar=_("FILE"),
                   help=_("the TLS certificate's private key (default: tls/key.pem in the server's folder)"))
    g.add_argument("--insecure-http", action="store_true",
                   help=_("serve plain HTTP, also on an address other than loopback: only behind a "
                          "reverse proxy that does TLS"))
    g.add_argument("--recycle-days", type=int, metavar="N",
                   help=_("days deleted objects stay in the recycle bin before they are purged "
                          "(default 30)"))
    g.add_argument("--trusted-proxy", action="append", metavar="CIDR", default=[],
                   help=_("a reverse proxy whose X-Forwarded-For header is believed (repeatable), "
                          "e.g. 127.0.0.1/32"))
    g.add_argument("--max-connections", type=int, metavar="N",
                   help=_("connections served at once; beyond, requests are answered 503 (default 500)"))
    g.add_argument("--no-console", action="store_true",
                   help=_("do not serve the provider's web console (/console)"))
    server_fleet.add_alerts_option(g)  # type: ignore[arg-type]


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT, [IPV6]:PORT, HOST or :PORT."""
    example = _("expected HOST:PORT, for example 0.0.0.0:8443 or [::1]:8443")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(_("invalid --listen address {value}").format(value=repr(text)), example)
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise UsageError(_("invalid --listen address {value}").format(value=repr(text)), example)
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        host = text  # a bare IPv6 address
    host = host or "0.0.0.0"  # noqa: S104 (":8443" asks for every address)
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise UsageError(_("invalid port in --listen {value}").format(value=repr(text)), example)
    if ":" in host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(_("invalid --listen address {value}").format(value=repr(text)),
                             example) from None
    return host, int(port_text) if port_text else DEFAULT_PORT


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coffre.server import serve

    overrides: dict[str, object] = {}
    listen = args.listen or os.environ.get("COFFRE_SERVER_LISTEN")
    if listen:
        overrides["host"], overrides["port"] = parse_listen(listen)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError(_("--tls-cert and --tls-key go together"))
    if args.tls_cert:
        overrides["tls_cert"], overrides["tls_key"] = Path(args.tls_cert), Path(args.tls_key)
    if args.insecure_http:
        overrides["insecure_http"] = True
    if args.recycle_days is not None:
        if args.recycle_days < 1:
            raise UsageError(_("--recycle-days must be at least 1"))
        overrides["recycle_days"] = args.recycle_days
    for cidr in args.trusted_proxy:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UsageError(_("invalid --trusted-proxy {value}: expected an address or a network "
                               "such as 10.0.0.0/8").format(value=repr(cidr))) from None
    if args.trusted_proxy:
        overrides["trusted_proxies"] = tuple(args.trusted_proxy)
    connections = args.max_connections or serve.MAX_CONNECTIONS
    if connections < 1:
        raise UsageError(_("--max-connections must be at least 1"))
    overrides["extra"] = server_fleet.alerts_extra(args)  # a broken alerts file stops the start
    settings = settings_from_args(args, **overrides)
    serve.configure_logging(bool(getattr(args, "verbose", False)))
    from coffre.cli.server_console import console_routes

    return serve.serve(settings, max_connections=connections,
                       extra=None if getattr(args, "no_console", False) else console_routes)
