"""The agent's configuration as typed values: what `config.py` builds from the TOML file and
every other part of the agent reads. Durations are seconds (float), sizes bytes, times of day
"HH:MM" strings in the configured time zone. Nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Repository:
    """A destination: a path (local disk, mounted NAS), s3://, s3+http://, sftp://, ftps://,
    or a Coffre hosting server (https://HOST/REPO).
    The password is never in the file: a file holding it, or a command printing it."""

    name: str
    url: str
    password_file: str | None = None
    password_command: str | None = None
    limit_upload: str | None = None  # the CLI's --limit-upload form, schedules by time of day
    limit_download: str | None = None
    aws_profile: str | None = None  # S3 credentials: a profile of ~/.aws/credentials
    insecure_ftp: bool = False
    token_file: str | None = None  # a hosting server's bearer token (https://HOST/REPO)
    insecure_http: bool = False


@dataclass(frozen=True)
class MediaSet:
    """Removable disks that alternate (USB, RDX). Each disk is its own repository; a disk is
    recognised by its repository id wherever it is mounted. The job writes to whichever disk
    of the set is present."""

    name: str
    disks: dict[str, str]  # a name people use ("lundi", "A") -> repository id (32 hex)
    search: tuple[str, ...] = ("/media", "/mnt", "/run/media")  # where disks get mounted
    path: str = "coffre"  # the repository's folder on a disk ("" = the disk's root)
    password_file: str | None = None
    password_command: str | None = None
    rotate_after: float = 7 * 86400.0  # the same disk present longer: "changez de disque"


@dataclass(frozen=True)
class Schedule:
    """When a job runs: at times of day on some days, and/or every N seconds (a shortened
    schedule for tests and busy sites), and/or in real time (on changes, debounced)."""

    times: tuple[str, ...] = ("12:30", "19:30")
    days: tuple[str, ...] = DAYS
    every: float | None = None  # seconds between runs, instead of (or besides) times
    realtime: bool = False
    debounce: float = 60.0  # real time: quiet needed after the last change
    min_interval: float = 600.0  # real time: at most one run per this many seconds
    window: float = 2 * 3600.0  # retries happen within it; late after it (staleness grace)


@dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: str | None = None  # the CLI's duration form: "30d"
    max_size: str | None = None  # the CLI's size form: "400GiB"
    prune: bool = True

    def is_empty(self) -> bool:
        return all(v is None for k, v in vars(self).items() if k != "prune")


@dataclass(frozen=True)
class Verification:
    check_subset: str | None = "5%"  # check --read-data-subset after each run; None = structure only
    verify_sample: float = 0.0  # share (0..1) of the snapshot's files compared with the live ones
    drill_every: float | None = 7 * 86400.0  # seconds between drills (databases); None = never
    check_copies: bool = True  # check --against each copy after copying


@dataclass(frozen=True)
class Job:
    name: str
    repository: str  # a Repository or a MediaSet name
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    one_file_system: bool = False
    postgres: tuple[str, ...] = ()
    mysql: tuple[str, ...] = ()
    sqlite: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    host: str | None = None
    copies: tuple[str, ...] = ()  # Repository or MediaSet names, copied in this order
    schedule: Schedule = field(default_factory=Schedule)
    retention: Retention = field(default_factory=Retention)
    verification: Verification = field(default_factory=Verification)
    retries: int = 3  # attempts after the first when a destination is unreachable
    retry_pause: float = 60.0  # the first pause before a retry; each next one is 4 times longer


@dataclass(frozen=True)
class Continuity:
    """Continuous capture (`[continuity.NAME]`), run by the agent itself rather than on a
    schedule: every `every` seconds, what waits in `spool` (filled by `coffre wal push`, or by
    the agent's own capture of `sqlite` and `mysql`) is shipped to `repository`; on a standby
    machine, one standby (`standby_pgdata` set up by `coffre standby init`, `standby_sqlite` by
    `standby sqlite-init`, `standby_mysql`, the state file of `standby mysql-init`) is fed what
    the repository holds; with `files_target`, the newest snapshot (of `files_host`) is
    restored there as `coffre restore --sync [--delete]` does, at most every `files_every`. An
    entry has a spool, a standby, files kept current, or several of them."""

    name: str
    repository: str  # a Repository name (never a media set: a disk that rotates is no log)
    spool: str | None = None
    sqlite: str | None = None  # a SQLite database (WAL mode) followed into the spool
    mysql: str | None = None  # a MariaDB server (mysql://USER@HOST) whose binary log goes into the spool
    every: float = 1.0  # seconds between passes; config.py: 1 for a local path, 10 for a URL
    max_backlog: float = 300.0  # a piece waiting longer than this: "capture behind"
    standby_pgdata: str | None = None
    standby_sqlite: str | None = None
    standby_mysql: str | None = None  # the standby's state file (mysql-standby/DB.json)
    max_lag: float = 300.0  # the standby's newest piece older than this: "standby behind"
    files_target: str | None = None  # a folder the newest snapshot is synced into
    files_paths: tuple[str, ...] = ()  # the snapshot paths kept there (empty: all of them)
    files_host: str | None = None  # only snapshots of this host
    files_delete: bool = True  # what the snapshot no longer holds is removed (restore --delete)
    files_every: float = 300.0  # the repository is looked at for a newer snapshot this often

    @property
    def standby(self) -> str | None:
        """The standby fed: its data folder, file or state file (None: none)."""
        return self.standby_pgdata or self.standby_sqlite or self.standby_mysql


@dataclass(frozen=True)
class Email:
    server: str
    port: int = 587
    security: str = "starttls"  # "starttls" | "tls" | "none" (loopback relays only)
    username: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    sender: str = "coffre@localhost"
    to: tuple[str, ...] = ()  # the pharmacist
    provider: tuple[str, ...] = ()  # the IT provider, told after escalate_after
    escalate_after: float = 2 * 86400.0
    timeout: float = 30.0
    ca_file: str | None = None  # a private authority (tests, a provider's relay)


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_file: str | None = None  # HMAC-SHA256 of the body in X-Coffre-Signature
    timeout: float = 10.0


@dataclass(frozen=True)
class Heartbeat:
    """healthchecks.io-style pings: URL at start and success, URL + "/fail" on failure."""

    url: str
    timeout: float = 10.0


@dataclass(frozen=True)
class Alerts:
    email: Email | None = None
    webhooks: tuple[Webhook, ...] = ()
    heartbeat: Heartbeat | None = None
    reminder_every: float = 86400.0  # a problem that lasts is mailed again this often
    changed_files_share: float = 0.30  # ransomware signal: more changed files than this share
    medium_full_share: float = 0.90  # "nearly full" above this share of the medium
    medium_full_days: float = 14.0  # or when the growth forecast fills it within this many days


@dataclass(frozen=True)
class Server:
    """The provider's hosting server (`coffre server`), told the status of each run: its
    address (with the prefix of a reverse proxy, without a repository name) and the file
    holding the tenant's token."""

    url: str
    token_file: str
    ca_file: str | None = None  # the server's self-signed certificate, or a private authority
    insecure_http: bool = False  # allow http:// (a test on this machine, a TLS proxy on it)
    timeout: float = 30.0


@dataclass(frozen=True)
class Web:
    """The pharmacy's page (`[web]`), served by `coffre agent`: where it listens (loopback by
    default; any other address needs TLS), how a person logs in (the repository password, or
    a separate local password whose Argon2id hash is in `password_hash_file`), how long an
    idle session lasts, where restored files go, and whom to call when something is wrong."""

    enabled: bool = True
    listen: str = "127.0.0.1:8650"
    tls_cert: str | None = None
    tls_key: str | None = None
    password_hash_file: str | None = None  # None: log in with the repository's password
    idle_timeout: float = 900.0
    restore_area: str | None = None  # None: <state_dir>/Restaurations
    contact: str = ""  # the provider's name and phone, shown on every non-green light


@dataclass(frozen=True)
class Agent:
    state_dir: str = "/var/lib/coffre"
    timezone: str = "Europe/Paris"
    language: str = "fr"
    nice: int = 10
    ionice: str = "idle"  # "idle" | "best-effort:0..7" | "none"
    history_days: int = 400


@dataclass(frozen=True)
class Config:
    path: str  # the file it was read from
    agent: Agent = field(default_factory=Agent)
    repositories: dict[str, Repository] = field(default_factory=dict)
    media_sets: dict[str, MediaSet] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    continuity: dict[str, Continuity] = field(default_factory=dict)
    alerts: Alerts = field(default_factory=Alerts)
    server: Server | None = None
    web: Web = field(default_factory=Web)
