"""Where an S3 client's keys, region and certificate authorities come from: the places every AWS
tool reads, in botocore's order. The plain cases are read here; botocore's credential chain is
imported for the others only.

Read here: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), then a
profile's keys in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)
or the config file (AWS_CONFIG_FILE, ~/.aws/config). The profile is the one the caller names
(the agent's `aws_profile`), else AWS_DEFAULT_PROFILE, AWS_PROFILE or `default`; a profile the
caller names makes the environment's keys ignored, as botocore does. The region is
AWS_DEFAULT_REGION, else the profile's `region`, else us-east-1 (botocore's for S3); the
certificate authorities AWS_CA_BUNDLE or the profile's `ca_bundle`.

Handed to botocore (`botocore.session`, ~0.1 s to import): a profile that assumes a role, uses
SSO, a web identity or a credential process, keys that expire (AWS_CREDENTIAL_EXPIRATION), a
profile named but found nowhere, half-given keys, files the standard parser refuses, and no
keys at all (botocore then asks the container's or the instance's role). Its credentials are
refreshed as it decides, and its errors are its own.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from typing import Any

from coffre.core.errors import UsageError
from coffre.core.i18n import _

DEFAULT_REGION = "us-east-1"
# Settings of a profile that botocore's chain honours before (or instead of) its plain keys.
_DYNAMIC = ("role_arn", "web_identity_token_file", "credential_process", "sso_session",
            "sso_start_url", "sso_account_id", "login_session")
_DYNAMIC_ENV = ("AWS_CREDENTIAL_EXPIRATION", "AWS_WEB_IDENTITY_TOKEN_FILE")


@dataclass(frozen=True)
class Keys:
    """One set of keys to sign with; the secret and the token appear in no repr."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


class NoCredentials(Exception):
    """No keys anywhere: neither the environment, the files nor botocore's chain has any."""


class ProfileNotFound(UsageError):
    """The profile named is in neither AWS file."""

    def __init__(self, profile: str) -> None:
        super().__init__(_("no credentials profile named {profile}").format(profile=repr(profile)),
                         _("add it to ~/.aws/credentials (or the file AWS_SHARED_CREDENTIALS_FILE names)"))
        self.profile = profile


class KeySource:
    """The keys of the next request: fixed ones, or botocore's, which it refreshes."""

    def __init__(self, keys: Keys | None = None, botocore_credentials: Any = None) -> None:
        self._keys, self._botocore = keys, botocore_credentials

    @property
    def from_botocore(self) -> bool:
        return self._botocore is not None

    def current(self) -> Keys:
        if self._keys is not None:
            return self._keys
        if self._botocore is None:
            raise NoCredentials
        frozen = self._botocore.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentials
        return Keys(frozen.access_key, frozen.secret_key, frozen.token or None)


@dataclass(frozen=True)
class S3Settings:
    keys: KeySource
    region: str
    ca_bundle: str | None


def _read(path_variable: str, default: str) -> configparser.RawConfigParser | None:
    """One of the AWS files, parsed; None if the standard parser refuses it (botocore then
    reads it and says what is wrong). A missing file is an empty one."""
    parser = configparser.RawConfigParser()
    path = os.path.expanduser(os.environ.get(path_variable) or default)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    return parser


def _section(parser: configparser.RawConfigParser, name: str) -> dict[str, str] | None:
    return dict(parser.items(name)) if parser.has_section(name) else None


def resolve(profile: str | None = None) -> S3Settings:
    """The keys, region and certificate authorities of an S3 client; `profile` as the caller
    names it (None: the environment's choice)."""
    explicit = profile is not None
    name = profile or os.environ.get("AWS_DEFAULT_PROFILE") or os.environ.get("AWS_PROFILE") or "default"
    credentials = _read("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    config = _read("AWS_CONFIG_FILE", "~/.aws/config")
    in_config = None
    if config is not None:
        in_config = _section(config, "default" if name == "default" else f"profile {name}")
    settings = in_config or {}
    region = os.environ.get("AWS_DEFAULT_REGION") or settings.get("region") or DEFAULT_REGION
    ca_bundle = os.environ.get("AWS_CA_BUNDLE") or settings.get("ca_bundle") or None
    keys = None if credentials is None or config is None else _plain_keys(
        explicit, _section(credentials, name), in_config)
    if keys is None:
        return S3Settings(KeySource(botocore_credentials=_botocore_credentials(profile)), region, ca_bundle)
    return S3Settings(KeySource(keys), region, ca_bundle)


def _plain_keys(explicit: bool, in_credentials: dict[str, str] | None,
                in_config: dict[str, str] | None) -> Keys | None:
    """The keys botocore's chain would find first, if they are plain ones; None otherwise."""
    environ = os.environ
    if not explicit:
        access, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if access or secret:
            if not (access and secret) or any(environ.get(v) for v in _DYNAMIC_ENV):
                return None
            return Keys(access, secret, environ.get("AWS_SESSION_TOKEN") or environ.get("AWS_SECURITY_TOKEN"))
        if any(environ.get(v) for v in _DYNAMIC_ENV):
            return None
    if explicit and in_credentials is None and in_config is None:
        return None  # botocore says that the profile does not exist
    for section in (in_config, in_credentials):
        if section is not None and any(section.get(s) for s in _DYNAMIC):
            return None
    for section in (in_credentials, in_config):
        if section is None:
            continue
        access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if access or secret:
            if not (access and secret):
                return None
            return Keys(access, secret, section.get("aws_session_token") or section.get("aws_security_token"))
    return None


def _botocore_credentials(profile: str | None) -> Any:
    """botocore's credentials for `profile` (None if its chain finds none); ProfileNotFound,
    and botocore's other errors (PartialCredentialsError...) as they are."""
    import botocore.exceptions
    import botocore.session

    try:
        return botocore.session.Session(profile=profile).get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise ProfileNotFound(profile or "") from None
