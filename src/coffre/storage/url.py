"""Repository locations: a local path, or a URL naming a remote storage.

    /srv/backup/coffre                        local disk, mounted NAS share, USB disk
    s3://HOST[:PORT]/BUCKET[/PREFIX]          S3-compatible storage over HTTPS
    s3+http://HOST[:PORT]/BUCKET[/PREFIX]     the same over plain HTTP (a LAN or loopback)
    sftp://[USER@]HOST[:PORT]/PATH            an SSH server; /~/PATH is in the login folder
    ftps://USER@HOST[:PORT]/PATH              FTP with explicit TLS; /~/PATH as above
    ftp://USER@HOST[:PORT]/PATH               plain FTP: only with allow_plain_ftp
    https://HOST[:PORT][/PREFIX]/REPO         a Coffre server (`coffre server`); REPO its name there
    http://HOST[:PORT][/PREFIX]/REPO          the same over plain HTTP: only with allow_insecure_http

A URL never carries a secret: S3 credentials come from the usual AWS variables and files,
SSH logins from the agent or key files, a Coffre server's token from COFFRE_SERVER_TOKEN or
COFFRE_SERVER_TOKEN_FILE.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.storage.base import Backend

if TYPE_CHECKING:  # botocore and paramiko are imported only when a remote repository is used
    from coffre.storage.ftp import FTPLocation
    from coffre.storage.s3 import S3Location
    from coffre.storage.server import ServerLocation
    from coffre.storage.sftp import SFTPLocation

SCHEMES = ("s3", "s3+http")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")  # S3 naming rules


def is_url(location: str) -> bool:
    return "://" in location


def open_backend(location: str, allow_plain_ftp: bool = False, allow_insecure_http: bool = False) -> Backend:
    """The backend a location names; a clear error for a malformed or unknown URL."""
    if not is_url(location):
        from coffre.storage.local import LocalBackend

        return LocalBackend(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme in ("s3", "s3+http", "s3+https"):
        from coffre.storage.s3 import S3Backend

        return S3Backend(parse_s3(location))
    if scheme == "sftp":
        from coffre.storage.sftp import SFTPBackend

        return SFTPBackend(parse_sftp(location))
    if scheme in ("ftp", "ftps"):
        from coffre.storage.ftp import FTPBackend

        if scheme == "ftp" and not allow_plain_ftp:
            raise UsageError(
                _("plain FTP sends the password and the login in clear over the network"),
                _("use ftps:// (FTP with TLS); if the server really offers nothing else, add --insecure-ftp"),
            )
        return FTPBackend(parse_ftp(location))
    if scheme in ("https", "http"):
        from coffre.storage.server import ServerBackend

        if scheme == "http" and not allow_insecure_http:
            raise UsageError(
                _("plain HTTP sends the server token in clear over the network"),
                _("use https://; only on loopback or a network you trust, add --insecure-http"),
            )
        return ServerBackend(parse_server(location))
    raise UsageError(
        _("{scheme}:// repositories are not supported").format(scheme=scheme),
        _("use a local path, s3://HOST/BUCKET/PREFIX (s3+http:// for plain HTTP), "
          "sftp://USER@HOST/PATH, ftps://USER@HOST/PATH or https://SERVER/REPO (a Coffre server)"),
    )


def parse_s3(location: str) -> S3Location:
    from coffre.storage.s3 import S3Location

    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    example = _("expected {form}, for example {example}").format(
        form="s3://HOST[:PORT]/BUCKET[/PREFIX]", example="s3://s3.fr-par.scw.cloud/pharmacie/coffre")
    if parts.username or parts.password:
        raise UsageError(_("credentials do not belong in the repository URL"),
                         _("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"))
    if parts.query or parts.fragment:
        raise UsageError(_("unexpected ?query or #fragment in {location}").format(location=location), example)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(_("invalid port in {location}").format(location=location), example) from None
    host = parts.hostname
    if not host:
        raise UsageError(_("no host in {location}").format(location=location), example)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise UsageError(_("no bucket in {location}").format(location=location), example)
    bucket, rest = segments[0], segments[1:]
    if not _BUCKET.match(bucket):
        raise UsageError(_("{bucket} is not a valid bucket name").format(bucket=repr(bucket)), example)
    if any(s in (".", "..") for s in rest):
        raise UsageError(_("'.' and '..' are not allowed in the prefix of {location}").format(
            location=location), example)
    http = "http" if scheme == "s3+http" else "https"
    netloc = f"[{host}]" if ":" in host else host
    endpoint = f"{http}://{netloc}" + (f":{port}" if port else "")
    prefix = "/".join(rest) + "/" if rest else ""
    return S3Location(endpoint, bucket, prefix)


def parse_server(location: str) -> ServerLocation:
    """https://HOST[:PORT][/PREFIX]/REPO: the last segment names the repository."""
    from coffre.storage.server import REPOSITORY_NAME, ServerLocation

    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    example = _("expected {form}, for example {example}").format(
        form="https://HOST[:PORT][/PREFIX]/REPO", example="https://sauvegarde.example.fr/officine")
    if parts.username or parts.password:
        raise UsageError(_("credentials do not belong in the repository URL"),
                         _("set COFFRE_SERVER_TOKEN_FILE to a file holding the token"))
    if parts.query or parts.fragment:  # not quoted: a token does not belong there either
        raise UsageError(_("unexpected ?query or #fragment in {location}").format(
            location=location.split("?")[0].split("#")[0]), example)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(_("invalid port in {location}").format(location=location), example) from None
    host = parts.hostname
    if not host:
        raise UsageError(_("no host in {location}").format(location=location), example)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise UsageError(_("no repository name in {location}").format(location=location), example)
    if any(s in (".", "..") or any(c in s for c in "\\\x00") for s in segments):
        raise UsageError(_("'.' and '..' are not allowed in {location}").format(location=location), example)
    repo, prefix = segments[-1], segments[:-1]
    if not REPOSITORY_NAME.match(repo):
        raise UsageError(_("{name} is not a valid repository name").format(name=repr(repo)),
                         _("use lower-case letters, digits, '.', '_' and '-', up to 63 characters"))
    from urllib.parse import quote

    path = "".join("/" + quote(s, safe="") for s in prefix)
    return ServerLocation(scheme, host, port or (443 if scheme == "https" else 80), path, repo)


def parse_sftp(location: str) -> SFTPLocation:
    from coffre.storage.sftp import SFTPLocation

    user, host, port, path = _login_url(
        location, 22, ("sftp://USER@HOST[:PORT]/PATH", "sftp://coffre@nas.local/volume1/coffre"),
        _("log in with an SSH key: the agent, ~/.ssh/id_*, or COFFRE_SSH_KEY"))
    return SFTPLocation(user, host, port, path)


def parse_ftp(location: str) -> FTPLocation:
    from coffre.storage.ftp import FTPLocation

    user, host, port, path = _login_url(
        location, 21, ("ftps://USER@HOST[:PORT]/PATH", "ftps://pharmacie@ftp.example.fr/coffre"),
        _("give it in COFFRE_FTP_PASSWORD or ~/.netrc"))
    return FTPLocation(user, host, port, path, tls=location.lower().startswith("ftps:"))


def _login_url(
    location: str, default_port: int, form_and_example: tuple[str, str], password_hint: str
) -> tuple[str, str, int, str]:
    """(user, host, port, path) of a USER@HOST[:PORT]/PATH URL; /~/PATH is relative to the
    login folder."""
    import getpass

    parts = urlsplit(location)
    form, sample = form_and_example
    example = _("expected {form}, for example {example}").format(form=form, example=sample)
    if parts.password is not None:
        raise UsageError(_("a password does not belong in the repository URL"), password_hint)
    if parts.query or parts.fragment:
        raise UsageError(_("unexpected ?query or #fragment in {location}").format(location=location), example)
    try:
        port = parts.port or default_port
    except ValueError:
        raise UsageError(_("invalid port in {location}").format(location=location), example) from None
    if not parts.hostname:
        raise UsageError(_("no host in {location}").format(location=location), example)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise UsageError(_("no folder in {location}").format(location=location), example)
    if any(s in (".", "..") for s in segments):
        raise UsageError(_("'.' and '..' are not allowed in {location}").format(location=location), example)
    relative = segments[0] == "~"
    path = "/".join(segments[1:]) if relative else "/" + "/".join(segments)
    if relative and not path:
        raise UsageError(_("no folder under the login folder in {location}").format(location=location),
                         example)
    user = unquote(parts.username) if parts.username else getpass.getuser()
    return user, parts.hostname, port, path
