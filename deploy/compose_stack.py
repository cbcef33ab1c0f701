"""The single-host compose file: server replicas, the worker, Envoy, Redis, a three-member
MongoDB replica set and a mail sink, from the same settings and timings as Kubernetes."""

from __future__ import annotations

from collections.abc import Sequence

from stack import (
    DRAIN_SECONDS,
    EDGE_GRPC_PORT,
    GRPC_PORT,
    REST_PORT,
    SETTINGS,
    SHUTDOWN_GRACE_SECONDS,
    STOP_MARGIN_SECONDS,
    WORKER_TERMINATION_SECONDS,
    Manifest,
)

COMPOSE_SUBNET = "172.28.0.0/24"
COMPOSE_REPLICAS = 3
MONGO_MEMBERS = ("mongo1", "mongo2", "mongo3")
COMPOSE_VALUES = {
    # The stack's own services; the only secret is JWT_SECRET, from the shell or an .env file.
    "MONGODB_URI": f"mongodb://{','.join(f'{m}:27017' for m in MONGO_MEMBERS)}/?replicaSet=rs0",
    "REDIS_URL": "redis://redis:6379/0",
    "JWT_SECRET": "${JWT_SECRET:?set JWT_SECRET to 32 or more random characters}",
    "SMTP_URL": "smtp://mailpit:1025",
    "TRUSTED_PROXIES": COMPOSE_SUBNET,  # Envoy's address on the stack's network
}
GRPC_HEALTH_CHECK = (
    "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; "
    f"c = grpc.insecure_channel('127.0.0.1:{GRPC_PORT}'); "
    "sys.exit(g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=2).status != h.HealthCheckResponse.SERVING)"
)


def compose_environment() -> dict[str, str]:
    values = {setting.name: setting.value for setting in SETTINGS if setting.value is not None}
    return {name: value for name, value in (values | COMPOSE_VALUES).items()}


def hardened(service: Manifest) -> Manifest:
    """Our image's containers: read-only root, no capabilities, no privilege escalation."""
    return {
        **service,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "tmpfs": ["/tmp"],
    }


def ours(command: Sequence[str] | None = None) -> Manifest:
    # The same build for each (the second and third come from the cache).
    service: Manifest = {"build": {"context": "..", "dockerfile": "deploy/Dockerfile"}}
    if command is not None:
        service["command"] = list(command)
    return service


def compose() -> Manifest:
    mongo_health = {
        "test": ["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"],
        "interval": "5s",
        "timeout": "5s",
        "retries": 12,
    }
    members = ", ".join(f"{{_id: {i}, host: '{m}:27017'}}" for i, m in enumerate(MONGO_MEMBERS))
    # Then wait for an election, so the servers find a primary when they start.
    initiate = (
        f"try {{ rs.status() }} catch (e) {{ rs.initiate({{_id: 'rs0', members: [{members}]}}) }} "
        "while (!db.hello().primary) { sleep(500) }"
    )
    services: Manifest = {
        member: {
            "image": "mongo:8.0",
            "command": ["mongod", "--replSet", "rs0", "--bind_ip_all"],
            "volumes": [f"{member}:/data/db"],
            "healthcheck": mongo_health,
            "restart": "unless-stopped",
        }
        for member in MONGO_MEMBERS
    }
    services["mongo-init"] = {
        "image": "mongo:8.0",
        # Once: make the three members a replica set (a no-op when it already is one).
        "command": ["mongosh", "--host", MONGO_MEMBERS[0], "--quiet", "--eval", initiate],
        "depends_on": {member: {"condition": "service_healthy"} for member in MONGO_MEMBERS},
        "restart": "no",
    }
    services["redis"] = {
        "image": "redis:7.4",
        # Append-only: queued jobs survive a restart (docs/background-work.md).
        "command": ["redis-server", "--appendonly", "yes"],
        "volumes": ["redis:/data"],
        "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "5s", "timeout": "3s", "retries": 12},
        "restart": "unless-stopped",
    }
    services["mailpit"] = {
        "image": "axllent/mailpit:v1.21",  # a local SMTP sink with a web UI; use your relay in SMTP_URL
        "ports": ["127.0.0.1:8025:8025"],  # loopback: the mail UI is for you only
        "restart": "unless-stopped",
    }
    backing = {
        "mongo-init": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    env = compose_environment()
    services["server"] = hardened(
        {
            **ours(["serve"]),
            "environment": env,
            "depends_on": backing,
            # Docker's DNS answers the service name with every replica: Envoy's STRICT_DNS.
            "deploy": {"replicas": COMPOSE_REPLICAS},
            "healthcheck": {
                "test": ["CMD", "python", "-c", GRPC_HEALTH_CHECK],
                "interval": "5s",
                "timeout": "5s",
                "retries": 6,
            },
            # SIGTERM starts the drain: NOT_SERVING, then in-flight calls finish.
            "stop_grace_period": f"{DRAIN_SECONDS + SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS}s",
            "restart": "unless-stopped",
        }
    )
    services["worker"] = hardened(
        {
            **ours(["worker"]),
            "environment": env,
            "depends_on": {**backing, "mailpit": {"condition": "service_started"}},
            "stop_grace_period": f"{WORKER_TERMINATION_SECONDS}s",
            "restart": "unless-stopped",
        }
    )
    services["edge"] = hardened(
        {
            **ours(),
            "entrypoint": ["envoy"],
            "command": ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info", "--disable-hot-restart"],
            "volumes": ["./envoy/compose.yaml:/etc/envoy/envoy.yaml:ro"],
            # Loopback: Envoy speaks plain HTTP; put TLS in front before opening it wider.
            "ports": [f"127.0.0.1:{port}:{port}" for port in (REST_PORT, EDGE_GRPC_PORT)],
            "depends_on": {"server": {"condition": "service_healthy"}},
            "restart": "unless-stopped",
        }
    )
    return {
        "name": "taskapi",
        "services": {name: _compose_order(services[name]) for name in sorted(services)},
        "networks": {"default": {"ipam": {"config": [{"subnet": COMPOSE_SUBNET}]}}},
        "volumes": {name: {} for name in (*MONGO_MEMBERS, "redis")},
    }


# The order dclint (a test runs it) expects: the Compose documentation's, then the rest A-Z.
SERVICE_KEYS = (
    "image build container_name depends_on volumes volumes_from configs secrets environment env_file ports "
    "networks network_mode extra_hosts command entrypoint working_dir restart healthcheck logging labels user isolation"
).split()


class Quoted(str):
    """A string written in quotes (dclint wants port mappings quoted)."""


def _compose_order(service: Manifest) -> Manifest:
    def rank(key: str) -> tuple[int, str]:
        return (SERVICE_KEYS.index(key) if key in SERVICE_KEYS else len(SERVICE_KEYS), key)

    ordered = {key: service[key] for key in sorted(service, key=rank)}
    if "depends_on" in ordered:
        ordered["depends_on"] = dict(sorted(ordered["depends_on"].items()))
    if "ports" in ordered:
        ordered["ports"] = [Quoted(port) for port in ordered["ports"]]
    return ordered
