"""What every deployment file shares: the image, the ports, the drain timings, every setting
and where it comes from, and the edge's config (rendered by taskapi.server.edge, the code that
renders it for `taskapi dev`). deploy/render.py writes the files from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskapi.server.config import Settings
from taskapi.server.edge import EdgeConfig

Manifest = dict[str, Any]

IMAGE = "registry.example.com/taskapi:0.1.0"  # retag and push the image there (deploy/README.md)
KUBERNETES_VERSION = "1.34.0"  # the oldest the manifests are checked against (preStop `sleep` is GA in 1.34)
CONFIG_MAP = "taskapi-config"
SECRET = "taskapi-secrets"  # created by the operator (deploy/README.md); never in the repository
# Where the image's venv (deploy/Dockerfile) holds the descriptor Envoy loads.
IMAGE_DESCRIPTOR = "/opt/taskapi/lib/python3.11/site-packages/taskapi/envoy/taskapi.binpb"
UID = 10001  # the image's user

GRPC_PORT = 50051
WATCH_PORT = 50052  # WatchTasks: each task-serving replica's streaming server (docs/api.md "Live changes")
METRICS_PORT = 9464
WORKER_METRICS_PORT = 9465
REST_PORT = 8080
EDGE_GRPC_PORT = 8081
ADMIN_PORT = 9901  # Envoy's, on loopback only
CORS_ORIGINS = ("https://tasks.example.com",)  # the browser app's origin: set yours and regenerate

# Termination, in order. The pod leaves the headless Service's DNS as it starts terminating
# and Envoy's next resolution (every DNS_REFRESH_SECONDS) drops it: preStop waits that long
# before SIGTERM. Then the server answers NOT_SERVING for DRAIN_SECONDS (Envoy's health
# checks, every 2 s with 2 failures to eject, notice), refuses new calls and gives those in
# flight SHUTDOWN_GRACE_SECONDS; the margin covers the outbox relay's last pass and closing.
DNS_REFRESH_SECONDS = 5
PRE_STOP_SECONDS = DNS_REFRESH_SECONDS
DRAIN_SECONDS = 5
SHUTDOWN_GRACE_SECONDS = 10
STOP_MARGIN_SECONDS = 5
SERVER_TERMINATION_SECONDS = PRE_STOP_SECONDS + DRAIN_SECONDS + SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS
# A stopping worker finishes the jobs in hand, each bounded by JOBS_TIME_LIMIT_MS (60 s).
JOBS_TIME_LIMIT_SECONDS = 60
WORKER_TERMINATION_SECONDS = JOBS_TIME_LIMIT_SECONDS + 2 * STOP_MARGIN_SECONDS
EDGE_PRE_STOP_SECONDS = 5  # the Service's endpoints drop a terminating Envoy pod meanwhile


@dataclass(frozen=True)
class Setting:
    """One environment variable Settings reads, and where a deployment takes it from."""

    name: str
    # In the ConfigMap (and compose) with this value; None: the code's default until an operator
    # adds the key to the ConfigMap (every container refers to every key, optionally).
    value: str | None = None
    secret: bool = False  # from the Secret, by name only
    required_by: tuple[str, ...] = ()  # processes that do not start without it: "server", "worker"


BOTH = ("server", "worker")
SETTINGS = (
    # Serving
    Setting("TASKAPI_GRPC_HOST", "0.0.0.0"),  # the image sets it too; explicit for readers
    Setting("TASKAPI_GRPC_PORT", str(GRPC_PORT)),
    Setting("TASKAPI_METRICS_PORT", str(METRICS_PORT)),
    Setting("TASKAPI_WORKERS"),
    # Left unset here: one ConfigMap value would put every pod on a node on the same CPUs. The
    # kubelet's static CPU manager policy gives a pod a CPU of its own instead (docs/scaling.md).
    Setting("TASKAPI_CPUS"),
    Setting("TASKAPI_MAX_MESSAGE_BYTES"),
    Setting("TASKAPI_SHUTDOWN_GRACE_SECONDS", str(SHUTDOWN_GRACE_SECONDS)),
    Setting("TASKAPI_DRAIN_SECONDS", str(DRAIN_SECONDS)),
    # Which services a pod serves: the split Deployments pass `--services` instead.
    Setting("TASKAPI_SERVICES"),
    # The task service when Redis cannot be read: serve by the access token, or refuse.
    Setting("TASKS_SESSION_FALLBACK"),
    Setting("LOG_LEVEL", "INFO"),
    Setting("LOG_FORMAT", "json"),
    # Store
    Setting("MONGODB_URI", secret=True, required_by=BOTH),  # may carry credentials
    # The split layout's database per side (docs/services.md); each falls back to MONGODB_URI.
    Setting("ACCOUNTS_MONGODB_URI", secret=True),
    Setting("TASKS_MONGODB_URI", secret=True),
    Setting("MONGODB_DB"),
    Setting("MONGODB_POOL_SIZE"),
    Setting("MONGODB_TIMEOUT_MS"),
    Setting("MONGODB_READ_PREFERENCE"),
    # Redis: shared rate limits, cache and sessions; the job queue's too unless JOBS_REDIS_URL.
    # One of the three: a single server, a Sentinel set, or a Cluster (docs/scaling.md).
    Setting("REDIS_URL", secret=True),  # may carry a password
    Setting("REDIS_SENTINELS"),
    Setting("REDIS_SENTINEL_MASTER"),
    Setting("REDIS_CLUSTER"),
    Setting("REDIS_USERNAME", secret=True),
    Setting("REDIS_PASSWORD", secret=True),
    Setting("REDIS_TIMEOUT_MS"),
    Setting("CACHE_TTL_SECONDS"),
    # The change feed (WatchTasks on its own port; docs/api.md "Live changes").
    Setting("TASKAPI_WATCH_PORT", str(WATCH_PORT)),
    Setting("CHANGES_RETENTION"),
    Setting("CHANGES_TTL_SECONDS"),
    Setting("CHANGES_GAP_GRACE_SECONDS"),
    Setting("WATCH_HEARTBEAT_SECONDS"),
    Setting("WATCHERS_PER_USER"),
    Setting("WATCHERS_PER_REPLICA"),
    Setting("WATCH_BUFFER"),
    Setting("WATCH_WRITE_TIMEOUT_SECONDS"),
    Setting("WATCH_LEASE_SECONDS"),
    # Auth
    Setting("JWT_SECRET", secret=True, required_by=BOTH),  # without it each replica signs with its own
    Setting("JWT_ISSUER"),
    Setting("JWT_AUDIENCE"),
    Setting("ACCESS_TOKEN_TTL_SECONDS"),
    Setting("REFRESH_TOKEN_TTL_SECONDS"),
    Setting("REFRESH_REUSE_GRACE_SECONDS"),
    Setting("BCRYPT_ROUNDS"),
    Setting("BCRYPT_CONCURRENCY"),
    Setting("TASKAPI_ADMIN_PASSWORD", secret=True),  # `taskapi create-admin` only
    # Rate limits
    Setting("RATE_LIMIT_IP"),
    Setting("RATE_LIMIT_USER"),
    Setting("RATE_LIMIT_AUTH"),
    Setting("LOGIN_FAILURES_PER_EMAIL"),
    Setting("LOGIN_FREE_FAILURES"),
    Setting("LOGIN_BACKOFF_SECONDS"),
    # The Envoy pods' addresses, whose X-Forwarded-For the servers believe: set your pod CIDR.
    Setting("TRUSTED_PROXIES", "10.0.0.0/8"),
    # Tracing (OpenTelemetry's standard variables; off while no endpoint is set)
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT"),
    Setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    Setting("OTEL_EXPORTER_OTLP_HEADERS", secret=True),  # often an API key
    Setting("OTEL_EXPORTER_OTLP_INSECURE"),
    Setting("OTEL_EXPORTER_OTLP_TIMEOUT"),
    Setting("OTEL_SERVICE_NAME"),
    Setting("OTEL_RESOURCE_ATTRIBUTES"),
    Setting("OTEL_TRACES_SAMPLER"),
    Setting("OTEL_TRACES_SAMPLER_ARG"),
    Setting("OTEL_TRACES_EXPORTER"),
    Setting("OTEL_SDK_DISABLED"),
    Setting("OTEL_BSP_SCHEDULE_DELAY"),
    # Background work
    Setting("SMTP_URL", secret=True, required_by=("worker",)),  # may carry credentials
    Setting("MAIL_FROM"),
    Setting("JOBS_REDIS_URL", secret=True),
    Setting("JOBS_NAMESPACE"),
    Setting("JOBS_WORKER_THREADS"),
    Setting("JOBS_MAX_RETRIES"),
    Setting("JOBS_MIN_BACKOFF_MS"),
    Setting("JOBS_MAX_BACKOFF_MS"),
    Setting("JOBS_TIME_LIMIT_MS", str(JOBS_TIME_LIMIT_SECONDS * 1000)),
    Setting("JOBS_HEARTBEAT_TIMEOUT_MS"),
    Setting("OUTBOX_RELAY"),
    Setting("OUTBOX_POLL_SECONDS"),
    Setting("TASKAPI_WORKER_METRICS_PORT", str(WORKER_METRICS_PORT)),
)


def edge_config(upstreams: Sequence[tuple[str, int]], watch: Sequence[tuple[str, int]]) -> EdgeConfig:
    """Envoy in a container (the image's own envoy): replicas found by name through DNS;
    `watch`: the task replicas' watch servers (cluster taskapi_watch)."""
    return EdgeConfig(
        rest_port=REST_PORT,
        grpc_port=EDGE_GRPC_PORT,
        admin_port=ADMIN_PORT,
        upstreams=list(upstreams),
        watch_upstreams=list(watch),
        upstream_dns=True,
        dns_refresh_seconds=DNS_REFRESH_SECONDS,
        listen_address="0.0.0.0",
        cors_origins=CORS_ORIGINS,
        descriptor_at=IMAGE_DESCRIPTOR,
        # Calls Envoy sends each pod at once: twice the pods' worker threads (TASKAPI_WORKERS
        # is left at its default above); more wait in Envoy's queue.
        replica_concurrency=Settings().replica_concurrency,
    )


# The split layout: each service (Envoy cluster taskapi_<service>) → the headless Service of
# the Deployment serving it (manifests.SPLIT).
SPLIT_UPSTREAMS: dict[str, list[tuple[str, int]]] = {
    "auth": [("taskapi-accounts", GRPC_PORT)],
    "users": [("taskapi-accounts", GRPC_PORT)],
    "tasks": [("taskapi-tasks", GRPC_PORT)],
}


def split_edge_config() -> EdgeConfig:
    """The split layout's Envoy config: each service routed to its own cluster, found by DNS."""
    watch = [(host, WATCH_PORT) for host, _ in SPLIT_UPSTREAMS["tasks"]]
    return dataclasses.replace(edge_config([], watch), service_upstreams=SPLIT_UPSTREAMS)
