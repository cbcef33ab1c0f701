"""Settings: read once from the environment into one typed object.

Nothing else in the code base touches os.environ. Every variable is listed in
the README's configuration table; `Settings.from_env()` fails fast on a bad value
with a ConfigError, which the `taskapi` command prints as one line (exit status 2).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import TypeVar

from taskapi.server import affinity
from taskapi.server.domain.limits import DEFAULT_AUTH, DEFAULT_IP, DEFAULT_LOGIN, DEFAULT_USER, LoginThrottle, RateLimit

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_T = TypeVar("_T")

READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
MIN_JWT_SECRET_CHARS = 32


SMTP_SECURITY = ("none", "starttls", "tls")
# The services a replica can serve (`taskapi serve --services`, TASKAPI_SERVICES): auth and
# users are the account services (one store), tasks the task service (a store of its own).
SERVICES = ("auth", "tasks", "users")
ACCOUNT_SERVICES = ("auth", "users")
# What the task service does with a call whose session state it cannot read (Redis down):
# "token" serves it as the access token says until the token expires; "refuse" answers UNAVAILABLE.
SESSION_FALLBACKS = ("token", "refuse")


class ConfigError(ValueError):
    """A bad environment value. The message names the variable, what it accepts and what
    it got (never a secret's value): it is shown to the user as is.

    A ValueError, so callers that caught the ValueError raised before it still do.
    """


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """Where email goes: SMTP_URL, `smtp://[user:pass@]host[:port][?starttls=true]` (port 25 by
    default; STARTTLS only when asked for), or `smtps://...` (TLS from the first byte, port 465)."""

    host: str
    port: int = 25
    username: str = ""
    password: str = field(default="", repr=False)
    security: str = "none"  # one of SMTP_SECURITY

    @property
    def url(self) -> str:
        """The URL without its credentials, for banners and logs."""
        scheme = "smtps" if self.security == "tls" else "smtp"
        query = "?starttls=true" if self.security == "starttls" else ""
        return f"{scheme}://{self.host}:{self.port}{query}"


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
OTLP_FORM = "an http:// or https:// URL of an OTLP/gRPC collector, e.g. http://127.0.0.1:4317"


@dataclass(frozen=True, kw_only=True)
class TracingSettings:
    """OpenTelemetry tracing, read from the standard OTEL_* variables (docs/operations.md).
    Present only when an OTLP endpoint is set: tracing is off by default."""

    endpoint: str  # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
    insecure: bool = True  # plaintext gRPC: an http:// endpoint, or OTEL_EXPORTER_OTLP_INSECURE=true
    # OTEL_EXPORTER_OTLP_HEADERS: often an API key; never logged, never in repr.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout_seconds: float = 10.0  # OTEL_EXPORTER_OTLP_TIMEOUT (ms in the variable)
    service_name: str = "taskapi"  # OTEL_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()  # OTEL_RESOURCE_ATTRIBUTES
    sampler: str = "parentbased_always_on"  # OTEL_TRACES_SAMPLER
    sampler_ratio: float = 1.0  # OTEL_TRACES_SAMPLER_ARG, for the *traceidratio samplers
    export_delay_ms: int = 5000  # OTEL_BSP_SCHEDULE_DELAY: how often finished spans are sent

    @property
    def host_port(self) -> tuple[str, int]:
        """The endpoint's host and port (4317 when it names none), for Envoy's OTLP cluster."""
        url = urllib.parse.urlsplit(self.endpoint)
        return url.hostname or "127.0.0.1", url.port or 4317


# Calls in flight per worker thread. Two: while a thread runs a call, the replica already holds
# the next one, so no thread idles between its response and Envoy's next stream. Measured
# (bench/README.md "Worker threads"): 4 threads with 8 calls in flight served the cached mix
# ~1.2x the req/s of 4 in flight, at ~0.85x the server CPU per call; 16 in flight no better.
CALLS_PER_WORKER = 2
MAX_WORKERS = 1024


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Serving
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9464  # 0: any free port (tests)
    # Thread-pool size of the sync gRPC server; Envoy sends a replica twice as many calls at
    # once (replica_concurrency). Measured on 2 cores (bench/README.md "Worker threads"): 4
    # threads serve the cached mix faster than 8 at less CPU a call (fewer threads contending
    # for one GIL), and as many reads during a login storm once password checks are held to
    # half the threads.
    workers: int = 4
    # TASKAPI_CPUS: the CPUs a replica's threads run on (server/affinity.py); None: wherever the
    # OS puts them. `taskapi dev` picks one itself on a machine with two or more.
    cpus: frozenset[int] | None = None
    max_message_bytes: int = 1 << 20
    shutdown_grace_seconds: float = 10.0
    # NOT_SERVING this long before refusing calls, so balancers' health checks notice first.
    drain_seconds: float = 5.0
    log_level: str = "INFO"
    # "json" or "text"; empty: the command's own (`taskapi serve` json, `taskapi dev` text).
    log_format: str = ""
    # The services this replica serves (any of SERVICES; all by default: the single layout).
    services: tuple[str, ...] = SERVICES
    # Store: empty URI selects the embedded in-memory store (mongomock).
    mongodb_uri: str = ""
    mongodb_db: str = "taskapi"
    mongodb_pool_size: int = 100
    mongodb_timeout_ms: int = 2000
    mongodb_read_preference: str = "primary"
    # Each side's own store; empty: MONGODB_URI (empty too: each side's own embedded store).
    tasks_mongodb_uri: str = ""
    accounts_mongodb_uri: str = ""
    # Redis: empty URL runs without it (per-process rate limits, no cache).
    redis_url: str = ""
    # High availability (docs/scaling.md): Sentinel-managed primary, or a Redis Cluster. At most one
    # of redis_url, redis_sentinels, redis_cluster is set (from_env refuses more).
    redis_sentinels: tuple[tuple[str, int], ...] = ()  # REDIS_SENTINELS: host:port of each sentinel
    redis_sentinel_master: str = "taskapi"  # the master name the sentinels monitor
    redis_cluster: tuple[tuple[str, int], ...] = ()  # REDIS_CLUSTER: seed nodes (any subset)
    redis_username: str = ""  # ACL user for the data nodes (sentinel and cluster; in REDIS_URL otherwise)
    redis_password: str = field(default="", repr=False)
    redis_timeout_ms: int = 250
    cache_ttl_seconds: int = 300
    # The change feed (WatchTasks, ListTaskChanges; docs/api.md "Live changes"), in Redis.
    watch_port: int = 50052  # the replica's streaming server (asyncio: watchers hold no worker thread); 0: free
    changes_retention: int = 1000  # changes kept per user (MAXLEN ~); an older token answers RESYNC_REQUIRED
    changes_ttl_seconds: int = 7 * 24 * 3600  # a user's log expires this long after their last write
    changes_gap_grace_seconds: float = 2.0  # a hole in the numbers this old is a lost change: resync
    watch_heartbeat_seconds: float = 15.0  # an idle stream sends a heartbeat this often (proxies keep it)
    watchers_per_user: int = 5  # across every replica (leases in Redis)
    watch_lease_seconds: float = 30.0  # a crashed replica's watchers stop counting this long after
    watchers_per_replica: int = 2000
    watch_buffer: int = 256  # changes queued for one watcher; a slower one is ended with its token
    watch_write_timeout_seconds: float = 5.0  # a message the client's window has not taken by then: dropped
    # Auth
    jwt_secret: str = field(default="", repr=False)
    jwt_issuer: str = "taskapi"
    jwt_audience: str = "taskapi"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    # A just-rotated refresh token presented again this soon returns the same new pair (two tabs).
    refresh_reuse_grace_seconds: int = 10
    bcrypt_rounds: int = 12
    bcrypt_concurrency: int = 2  # hashes at once, so bcrypt cannot starve other calls
    admin_password: str = field(default="", repr=False)  # create-admin, dev --admin-email only
    # Rate limits (API.md defaults)
    rate_limit_ip: RateLimit = DEFAULT_IP
    rate_limit_user: RateLimit = DEFAULT_USER
    rate_limit_auth: RateLimit = DEFAULT_AUTH  # Login/Register per IP, Register per email
    login_throttle: LoginThrottle = DEFAULT_LOGIN  # failed sign-ins: per (email, IP) and per email
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    ephemeral_secret: bool = False
    # Background work (docs/background-work.md): `taskapi worker`, the outbox relay, email.
    smtp: SmtpSettings | None = None  # SMTP_URL; None: no mail server (`taskapi dev` runs a local sink)
    mail_from: str = "Task API <no-reply@localhost>"
    jobs_redis_url: str = ""  # the job queue's Redis; empty: REDIS_URL (see the README on persistence)
    jobs_namespace: str = "taskapi-jobs"  # prefix of the queue's Redis keys
    jobs_worker_threads: int = 4
    jobs_max_retries: int = 10  # then the job is dead-lettered (`taskapi jobs dead`)
    jobs_min_backoff_ms: int = 15_000  # first retry after 15-30 s, doubling (with jitter) ...
    jobs_max_backoff_ms: int = 3_600_000  # ... up to an hour: ten retries span about 2 to 4 hours
    jobs_time_limit_ms: int = 60_000  # a job running longer is interrupted and retried
    jobs_heartbeat_timeout_ms: int = 60_000  # a worker silent this long is dead: its jobs run elsewhere
    tasks_session_fallback: str = "token"  # one of SESSION_FALLBACKS (docs/services.md)
    outbox_relay: bool = True  # servers queue their own events (false: leave it to `taskapi worker`)
    outbox_poll_seconds: float = 5.0  # the relay's sweep; writes in this process wake it at once
    worker_metrics_port: int = 9465  # `taskapi worker`'s /metrics (0: any free port)
    # OpenTelemetry tracing (OTEL_*); None: off, and the request path pays nothing for it.
    tracing: TracingSettings | None = None

    @property
    def replica_concurrency(self) -> int:
        """Calls Envoy sends this replica at once (the rest wait in Envoy's bounded queue)."""
        return self.workers * CALLS_PER_WORKER

    @property
    def queue_redis_url(self) -> str:
        return self.jobs_redis_url or self.redis_url

    @property
    def tasks_store_uri(self) -> str:
        return self.tasks_mongodb_uri or self.mongodb_uri

    @property
    def accounts_store_uri(self) -> str:
        return self.accounts_mongodb_uri or self.mongodb_uri

    @property
    def serves_tasks(self) -> bool:
        return "tasks" in self.services

    @property
    def serves_accounts(self) -> bool:
        return any(service in self.services for service in ACCOUNT_SERVICES)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        secret = env.get("JWT_SECRET", "")
        ephemeral = not secret
        if ephemeral:
            secret = secrets.token_urlsafe(48)
        elif len(secret) < MIN_JWT_SECRET_CHARS:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_JWT_SECRET_CHARS} characters, got {len(secret)}")
        settings = cls(
            grpc_host=reader.text("TASKAPI_GRPC_HOST", cls.grpc_host),
            grpc_port=reader.port("TASKAPI_GRPC_PORT", cls.grpc_port),
            metrics_port=reader.port("TASKAPI_METRICS_PORT", cls.metrics_port),
            # At most MAX_WORKERS: threads of one process share one GIL, and grpc's and Envoy's
            # stream limits derived from it are 32-bit (a huge value failed start-up with a trace).
            workers=reader.integer("TASKAPI_WORKERS", cls.workers, minimum=1, maximum=MAX_WORKERS),
            cpus=reader.cpus("TASKAPI_CPUS"),
            max_message_bytes=reader.integer("TASKAPI_MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024),
            shutdown_grace_seconds=reader.seconds("TASKAPI_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
            drain_seconds=reader.seconds("TASKAPI_DRAIN_SECONDS", cls.drain_seconds),
            log_level=reader.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS, upper=True),
            log_format=reader.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS),
            services=reader.services("TASKAPI_SERVICES", cls.services),
            mongodb_uri=reader.text("MONGODB_URI", ""),
            mongodb_db=reader.text("MONGODB_DB", cls.mongodb_db),
            mongodb_pool_size=reader.integer("MONGODB_POOL_SIZE", cls.mongodb_pool_size, minimum=1),
            mongodb_timeout_ms=reader.integer("MONGODB_TIMEOUT_MS", cls.mongodb_timeout_ms, minimum=1),
            mongodb_read_preference=reader.choice(
                "MONGODB_READ_PREFERENCE", cls.mongodb_read_preference, READ_PREFERENCES
            ),
            tasks_mongodb_uri=reader.text("TASKS_MONGODB_URI", ""),
            accounts_mongodb_uri=reader.text("ACCOUNTS_MONGODB_URI", ""),
            redis_url=reader.text("REDIS_URL", ""),
            redis_sentinels=reader.addresses("REDIS_SENTINELS"),
            redis_sentinel_master=reader.text("REDIS_SENTINEL_MASTER", cls.redis_sentinel_master),
            redis_cluster=reader.addresses("REDIS_CLUSTER"),
            redis_username=reader.text("REDIS_USERNAME", ""),
            redis_password=reader.text("REDIS_PASSWORD", ""),
            redis_timeout_ms=reader.integer("REDIS_TIMEOUT_MS", cls.redis_timeout_ms, minimum=1),
            cache_ttl_seconds=reader.integer("CACHE_TTL_SECONDS", cls.cache_ttl_seconds, minimum=1),
            watch_port=reader.port("TASKAPI_WATCH_PORT", cls.watch_port),
            changes_retention=reader.integer("CHANGES_RETENTION", cls.changes_retention, minimum=1),
            changes_ttl_seconds=reader.integer("CHANGES_TTL_SECONDS", cls.changes_ttl_seconds, minimum=1),
            changes_gap_grace_seconds=reader.seconds("CHANGES_GAP_GRACE_SECONDS", cls.changes_gap_grace_seconds),
            watch_heartbeat_seconds=reader.seconds("WATCH_HEARTBEAT_SECONDS", cls.watch_heartbeat_seconds),
            watchers_per_user=reader.integer("WATCHERS_PER_USER", cls.watchers_per_user, minimum=1),
            watch_lease_seconds=reader.seconds("WATCH_LEASE_SECONDS", cls.watch_lease_seconds),
            watchers_per_replica=reader.integer("WATCHERS_PER_REPLICA", cls.watchers_per_replica, minimum=1),
            watch_buffer=reader.integer("WATCH_BUFFER", cls.watch_buffer, minimum=1),
            watch_write_timeout_seconds=reader.seconds("WATCH_WRITE_TIMEOUT_SECONDS", cls.watch_write_timeout_seconds),
            jwt_secret=secret,
            jwt_issuer=reader.text("JWT_ISSUER", cls.jwt_issuer),
            jwt_audience=reader.text("JWT_AUDIENCE", cls.jwt_audience),
            access_token_ttl_seconds=reader.integer(
                "ACCESS_TOKEN_TTL_SECONDS", cls.access_token_ttl_seconds, minimum=1
            ),
            refresh_token_ttl_seconds=reader.integer(
                "REFRESH_TOKEN_TTL_SECONDS", cls.refresh_token_ttl_seconds, minimum=1
            ),
            refresh_reuse_grace_seconds=reader.integer(
                "REFRESH_REUSE_GRACE_SECONDS", cls.refresh_reuse_grace_seconds, minimum=0
            ),
            bcrypt_rounds=reader.integer("BCRYPT_ROUNDS", cls.bcrypt_rounds, minimum=4, maximum=31),  # bcrypt's range
            bcrypt_concurrency=reader.integer("BCRYPT_CONCURRENCY", cls.bcrypt_concurrency, minimum=1),
            admin_password=reader.text("TASKAPI_ADMIN_PASSWORD", ""),
            rate_limit_ip=reader.rate("RATE_LIMIT_IP", cls.rate_limit_ip),
            rate_limit_user=reader.rate("RATE_LIMIT_USER", cls.rate_limit_user),
            rate_limit_auth=reader.rate("RATE_LIMIT_AUTH", cls.rate_limit_auth),
            login_throttle=LoginThrottle(
                email_failures=reader.rate("LOGIN_FAILURES_PER_EMAIL", DEFAULT_LOGIN.email_failures),
                free_failures=reader.integer("LOGIN_FREE_FAILURES", DEFAULT_LOGIN.free_failures, minimum=0),
                backoff_seconds=reader.integer("LOGIN_BACKOFF_SECONDS", DEFAULT_LOGIN.backoff_seconds, minimum=1),
            ),
            trusted_proxies=reader.networks("TRUSTED_PROXIES", cls.trusted_proxies),
            ephemeral_secret=ephemeral,
            smtp=_smtp_settings(env.get("SMTP_URL", "")),
            mail_from=_mail_from(env.get("MAIL_FROM", cls.mail_from)),
            jobs_redis_url=reader.text("JOBS_REDIS_URL", ""),
            jobs_namespace=reader.text("JOBS_NAMESPACE", cls.jobs_namespace),
            jobs_worker_threads=reader.integer("JOBS_WORKER_THREADS", cls.jobs_worker_threads, minimum=1),
            jobs_max_retries=reader.integer("JOBS_MAX_RETRIES", cls.jobs_max_retries, minimum=0),
            jobs_min_backoff_ms=reader.integer("JOBS_MIN_BACKOFF_MS", cls.jobs_min_backoff_ms, minimum=1),
            jobs_max_backoff_ms=reader.integer("JOBS_MAX_BACKOFF_MS", cls.jobs_max_backoff_ms, minimum=1),
            jobs_time_limit_ms=reader.integer("JOBS_TIME_LIMIT_MS", cls.jobs_time_limit_ms, minimum=100),
            jobs_heartbeat_timeout_ms=reader.integer(
                "JOBS_HEARTBEAT_TIMEOUT_MS", cls.jobs_heartbeat_timeout_ms, minimum=500
            ),
            tasks_session_fallback=reader.choice(
                "TASKS_SESSION_FALLBACK", cls.tasks_session_fallback, SESSION_FALLBACKS
            ),
            outbox_relay=reader.choice("OUTBOX_RELAY", "true", ("true", "false")) == "true",
            outbox_poll_seconds=reader.seconds("OUTBOX_POLL_SECONDS", cls.outbox_poll_seconds),
            worker_metrics_port=reader.port("TASKAPI_WORKER_METRICS_PORT", cls.worker_metrics_port),
            tracing=_tracing_settings(env, reader),
        )
        _check_redis(settings)
        return settings

    @property
    def redis_configured(self) -> bool:
        """Whether any Redis (URL, sentinels or cluster) is set for the cache and the limiter."""
        return bool(self.redis_url or self.redis_sentinels or self.redis_cluster)

    @property
    def redis_shown(self) -> str:
        """Where the cache's Redis is, without credentials (banners, logs)."""
        if self.redis_sentinels:
            nodes = ",".join(f"{host}:{port}" for host, port in self.redis_sentinels)
            return f"sentinel {self.redis_sentinel_master} via {nodes}"
        if self.redis_cluster:
            return "cluster via " + ",".join(f"{host}:{port}" for host, port in self.redis_cluster)
        return self.redis_url.rpartition("@")[2] if "@" in self.redis_url else self.redis_url

    def warn_about_defaults(self) -> None:
        """Say loudly what the embedded default is not fit for (called once at start-up)."""
        if self.ephemeral_secret:
            log.warning(
                "JWT_SECRET is not set: using an ephemeral random secret. Tokens die with this "
                "process and only replicas in this process can verify them. Set JWT_SECRET in production."
            )
        if not (self.tasks_store_uri if self.serves_tasks else self.accounts_store_uri):
            log.warning("MONGODB_URI is not set: using the embedded in-memory store; data dies with this process.")


class _Reader:
    """Typed reads of environment variables; each raises ConfigError saying what it accepts."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name)
        return default if value is None else value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self._env.get(name)
        if raw is None:
            return default
        value = _parse(int, raw)
        if value is None or value < minimum or (maximum is not None and value > maximum):
            accepts = f"≥ {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise ConfigError(f"{name} must be an integer {accepts}, got {raw!r}")
        return value

    def port(self, name: str, default: int) -> int:
        """A TCP port; 0 asks the OS for any free one."""
        raw = self._env.get(name)
        if raw is None:
            return default
        value = _parse(int, raw)
        if value is None or not 0 <= value <= 65535:
            raise ConfigError(f"{name} must be a port number from 0 to 65535, got {raw!r}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self._env.get(name)
        if raw is None:
            return default
        value = _parse(float, raw)
        if value is None or not 0 <= value < float("inf"):  # also refuses nan
            raise ConfigError(f"{name} must be a number ≥ 0, got {raw!r}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
        raw = self._env.get(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    def rate(self, name: str, default: RateLimit) -> RateLimit:
        """`REQUESTS/WINDOW_SECONDS`, e.g. `100/900`."""
        raw = self._env.get(name)
        if raw is None:
            return default
        requests_text, _, window_text = raw.partition("/")
        requests, window = _parse(int, requests_text), _parse(int, window_text)
        if requests is None or window is None or requests < 1 or window < 1:
            raise ConfigError(f"{name} must be REQUESTS/SECONDS, both integers ≥ 1 (e.g. 100/900), got {raw!r}")
        return RateLimit(requests=requests, window_seconds=window)

    def addresses(self, name: str) -> tuple[tuple[str, int], ...]:
        """`host:port,host:port` (an IPv6 host in brackets); empty or unset: none."""
        raw = self._env.get(name, "")
        found = []
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            host, _, port_text = part.rpartition(":")
            port = _parse(int, port_text)
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not host or port is None or not 0 < port <= 65535:
                raise ConfigError(f"{name} must be host:port pairs separated by commas, got {raw!r}")
            found.append((host, port))
        return tuple(found)

    def cpus(self, name: str) -> frozenset[int] | None:
        """A CPU list (`1`, `0,2`, `0-3`) naming only CPUs this process may run on; unset or empty: None."""
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        if not affinity.supported():
            raise ConfigError(f"{name} needs Linux CPU affinity (sched_setaffinity), which this platform lacks")
        try:
            chosen = affinity.parse_cpu_list(raw)
        except ValueError as error:
            raise ConfigError(f"{name} must be a CPU list like 1, 0,2 or 0-3: {error}") from None
        usable = affinity.allowed()
        if not chosen <= usable:
            outside = affinity.text(frozenset(sorted(chosen - usable)[:8]))
            raise ConfigError(
                f"{name} names CPUs this process may not use ({outside}); it may use {affinity.text(usable)}"
            )
        return chosen

    def services(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._env.get(name)
        return default if raw is None else parse_services(raw, name)

    def networks(self, name: str, default: tuple[Network, ...]) -> tuple[Network, ...]:
        raw = self._env.get(name)
        if raw is None:
            return default
        try:
            return tuple(ipaddress.ip_network(part.strip()) for part in raw.split(",") if part.strip())
        except ValueError:
            raise ConfigError(
                f"{name} must be IP networks separated by commas (e.g. 10.0.0.0/8,::1/128), got {raw!r}"
            ) from None


def _check_redis(settings: Settings) -> None:
    chosen = [
        name
        for name, value in (
            ("REDIS_URL", settings.redis_url),
            ("REDIS_SENTINELS", settings.redis_sentinels),
            ("REDIS_CLUSTER", settings.redis_cluster),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ConfigError(f"set only one of REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER, got {' and '.join(chosen)}")
    if not settings.redis_sentinel_master:
        raise ConfigError("REDIS_SENTINEL_MASTER must be a master name, got ''")


_MAX_URL = 2048


def parse_services(raw: str, name: str = "--services") -> tuple[str, ...]:
    """`auth,users`, `tasks`, `all`: the services in SERVICES order; ConfigError naming `name`."""
    parts = {part.strip() for part in raw.split(",") if part.strip()}
    if parts == {"all"}:
        return SERVICES
    if not parts or parts - set(SERVICES):
        raise ConfigError(
            f"{name} must be 'all' or services from {', '.join(SERVICES)} separated by commas, got {raw!r}"
        )
    return tuple(service for service in SERVICES if service in parts)


SMTP_URL_FORM = "smtp://[user:password@]host[:port][?starttls=true|false] or smtps://[user:password@]host[:port]"


def _smtp_settings(raw: str) -> SmtpSettings | None:
    """SMTP_URL parsed; the error names the form and shows the URL without its password."""
    if not raw:
        return None
    if len(raw) > _MAX_URL:  # nothing this long is a mail server's address; not worth echoing either
        raise ConfigError(f"SMTP_URL must be {SMTP_URL_FORM}, at most {_MAX_URL} characters; got {len(raw)}")
    # Everything before the last "@" may be credentials, however malformed the rest is.
    shown = f"{raw.partition('://')[0]}://***@{raw.rpartition('@')[2]}" if "@" in raw else raw
    url = urllib.parse.urlsplit(raw)
    problem = ConfigError(f"SMTP_URL must be {SMTP_URL_FORM}, got {shown!r}")
    query = urllib.parse.parse_qs(url.query)
    try:
        port = url.port
    except ValueError:
        raise problem from None
    starttls = query.get("starttls", [""])[-1].lower()
    if url.scheme not in ("smtp", "smtps") or not url.hostname or len(url.hostname) > 253:
        raise problem
    if starttls not in ("", "true", "false"):
        raise problem
    if set(query) - {"starttls"} or (url.scheme == "smtps" and starttls == "true") or url.path not in ("", "/"):
        raise problem
    if url.scheme == "smtps":
        security, default_port = "tls", 465
    else:
        security, default_port = ("starttls" if starttls == "true" else "none"), 25
    return SmtpSettings(
        host=url.hostname,
        port=port or default_port,
        username=urllib.parse.unquote(url.username or ""),
        password=urllib.parse.unquote(url.password or ""),
        security=security,
    )


def _mail_from(raw: str) -> str:
    _, address = parseaddr(raw)
    if "@" not in address or any(ord(c) < 32 for c in raw):
        raise ConfigError(
            f"MAIL_FROM must be an address, optionally with a name (Tasks <no-reply@example.com>), got {raw!r}"
        )
    return raw


def _tracing_settings(env: Mapping[str, str], reader: _Reader) -> TracingSettings | None:
    """The standard OTEL_* variables the OpenTelemetry SDK would read, read here instead (the
    rule: configuration only through Settings) and handed to the SDK explicitly. Off unless an
    OTLP endpoint is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off too."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"  # the spec: case-insensitive
    exporter = reader.choice("OTEL_TRACES_EXPORTER", "otlp", ("otlp", "none"))
    if not endpoint or disabled or exporter == "none":
        return None
    url = urllib.parse.urlsplit(endpoint)
    try:
        url.port  # noqa: B018  # raises on a bad port
    except ValueError:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_ENDPOINT must be {OTLP_FORM}, got {endpoint!r}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_ENDPOINT must be {OTLP_FORM}, got {endpoint!r}")
    insecure_default = "true" if url.scheme == "http" else "false"
    insecure = reader.choice("OTEL_EXPORTER_OTLP_INSECURE", insecure_default, ("true", "false")) == "true"
    sampler = reader.choice("OTEL_TRACES_SAMPLER", TracingSettings.sampler, SAMPLERS)
    ratio_text = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
    ratio = _parse(float, ratio_text)
    if ratio is None or not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got {ratio_text!r}")
    return TracingSettings(
        endpoint=endpoint,
        insecure=insecure,
        # The values are not shown: a header here is usually a credential.
        headers=_key_values(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""), "OTEL_EXPORTER_OTLP_HEADERS", show=False),
        timeout_seconds=reader.integer("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, minimum=1) / 1000,
        service_name=reader.text("OTEL_SERVICE_NAME", "") or TracingSettings.service_name,
        resource_attributes=_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES"),
        sampler=sampler,
        sampler_ratio=ratio,
        export_delay_ms=reader.integer("OTEL_BSP_SCHEDULE_DELAY", TracingSettings.export_delay_ms, minimum=1),
    )


def _key_values(raw: str, name: str, *, show: bool = True) -> tuple[tuple[str, str], ...]:
    """`key1=value1,key2=value2` (the OTel spec's W3C-baggage-like list), values URL-decoded."""
    pairs = []
    for part in raw.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            shown = repr(raw) if show else "a value (not shown)"
            raise ConfigError(f"{name} must be key=value pairs separated by commas, got {shown}")
        pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(pairs)


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`: what a child `taskapi` process (the split
    `taskapi dev` starts some) reads its Settings from."""
    return dict(os.environ) | dict(overrides)


def _parse(kind: Callable[[str], _T], raw: str) -> _T | None:
    """`kind(raw)`, or None when `raw` is not one."""
    try:
        return kind(raw)
    except ValueError:
        return None
