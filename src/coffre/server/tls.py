"""The server's own TLS certificate: self-signed, made by `coffre server init` for the host
names and addresses it is reached by, so that a new server speaks HTTPS from its first start.

The certificate is a leaf (CA:FALSE): a client told to trust it (`SSL_CERT_FILE`) trusts this
server and nothing else, since it can sign no other certificate. Its key is an ECDSA P-256 key
written 0600; both files are written atomically (a temporary file, fsync, rename, fsync of the
folder), the key first, so an interrupted init leaves either no certificate or a whole pair.
A provider with a real certificate gives it with the serving options instead (docs/server.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from coffre.core.errors import UsageError
from coffre.core.files import write_atomic
from coffre.core.i18n import _

VALID_DAYS = 5 * 365 + 1
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    names: tuple[str, ...]
    not_after_ns: int
    created: bool                      # False: an existing pair was kept


def default_names() -> list[str]:
    """localhost, the loopback addresses, and this machine's host name."""
    names = list(DEFAULT_NAMES)
    host = socket.gethostname().strip().lower()
    if host and host not in names:
        names.append(host)
    return names


def check_name(name: str) -> str:
    """A host name or an IP address a certificate can name; UsageError otherwise."""
    text = name.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    ok = bool(text) and len(text) <= 253 and all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels)
    if not ok:
        raise UsageError(_("{name} is neither a host name nor an IP address").format(name=repr(name)),
                         _("give --tls-name once per name the clients use, e.g. --tls-name "
                           "backup.example.fr --tls-name 192.0.2.10"))
    return text.rstrip(".")


def create(tls_dir: Path, names: list[str], now: datetime.datetime | None = None,
           valid_days: int = VALID_DAYS) -> Certificate:
    """The certificate and key in `tls_dir` (cert.pem, key.pem): kept if both exist, else made
    for `names` (host names and IP addresses, the first one also the subject's name)."""
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.exists() and key_path.exists():
        return describe(cert_path, key_path, created=False)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    checked = list(dict.fromkeys(check_name(n) for n in names))
    if not checked:
        raise UsageError(_("the certificate needs at least one host name or address"))
    alt: list[x509.GeneralName] = []
    for n in checked:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, checked[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Coffre server")])
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(hours=1)  # clock skew
    public = key.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return describe(cert_path, key_path, created=True)


def describe(cert_path: Path, key_path: Path, created: bool = False) -> Certificate:
    """What an existing certificate names and until when it is valid."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple([*alt.get_values_for_type(x509.DNSName),
                       *(str(a) for a in alt.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        names = ()
    not_after = int(cert.not_valid_after_utc.timestamp()) * 10**9
    return Certificate(cert_path, key_path, names, not_after, created)

