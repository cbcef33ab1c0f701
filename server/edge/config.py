"""The edge's configuration: `EdgeConfig` (what varies between deployments) rendered into the
Jinja template `envoy/envoy.yaml.j2`, which holds everything else, every route and filter.

What the template gets from here is data only: ports, replicas, origins and timeouts from the
caller, and from the protos (taskapi_client.policy) which RPCs are repeatable and which carry
a request id, so Envoy's retry routes follow the contract's own declarations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2

from taskapi.interceptors.status import RETRY_SAFE_HEADER
from taskapi.server.edge import methods, strict_json
from taskapi_client.policy import rpc_policies

# The envoy/ folder ships inside the distribution as `taskapi.envoy` (pyproject package-dir),
# so an installed server (a container image) renders the same config as a checkout.
ENVOY_FILES = resources.files("taskapi.envoy")
TEMPLATE_NAME = "envoy.yaml.j2"
DESCRIPTOR = Path(str(ENVOY_FILES.joinpath("taskapi.binpb")))
CLUSTER = "taskapi_replicas"
SERVICES = ("taskapi.v1.AuthService", "taskapi.v1.TaskService", "taskapi.v1.UserService")
# The split layout (EdgeConfig.service_upstreams): each service has a cluster of its own,
# health-checked on that service's name and balanced on its own.
SERVICE_KEYS = {"auth": "taskapi.v1.AuthService", "tasks": "taskapi.v1.TaskService", "users": "taskapi.v1.UserService"}
SERVICE_CLUSTERS = {key: f"taskapi_{key}" for key in SERVICE_KEYS}
# Routed on the gRPC listener only: health checks and server reflection for operators' tools.
OPERATOR_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
# Declared repeatable in the protos (`idempotency_level`): retried after any failure.
IDEMPOTENT_METHODS = tuple(policy.path for policy in rpc_policies().values() if policy.repeatable)
# Repeatable when they carry a request id (AIP-155): over REST Envoy sees it in the query
# string; over native gRPC it is inside the body, where Envoy cannot look.
REQUEST_ID_METHODS = tuple(
    policy.path for policy in rpc_policies().values() if not policy.repeatable and policy.request_id_field
)
# Retries. Every RPC is retried when the request provably never reached a replica: the
# connection failed, the stream was refused (HTTP/2 REFUSED_STREAM, as a draining replica
# does for new streams), or it was reset before the request was sent. Never on UNAVAILABLE
# for other calls: the server answers that in the middle of a write too (a store failure
# after a partial write); a retried Refresh whose first attempt rotated the token would look
# like reuse, a retried Register answers 409 for the account its first attempt created. The
# one exception: the server marks a refusal that changed nothing (a Login shed while the
# password-hashing slots are full) with `x-retry-safe: true` (retriable-headers).
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request,retriable-headers"
# Repeatable calls are also retried after UNAVAILABLE (store down, call shed), a reset
# mid-call, or CANCELLED (a replica shutting down cancels calls it has accepted).
IDEMPOTENT_RETRY_ON = SAFE_RETRY_ON + ",unavailable,reset,cancelled"
WITH_REQUEST_ID = r"[^?]*\?(.*&)?(requestId|request_id)=[A-Za-z0-9_-]+(&.*)?"
# The REST API as clients send it, before the transcoder rewrites it to a gRPC path.
REST_PREFIX = "/api/v1/"

# Client headers that would break a replica's HTTP/2 connection (see the template's
# "Client headers"): grpc fails a call on a header it cannot parse and then every later
# header that refers to it in the connection's HPACK table. gRPC metadata keys are
# [0-9a-z_.-] (':' is for pseudo-headers); `-bin` values must be base64, which Envoy
# cannot check, and no call of ours takes binary metadata.
ILLEGAL_METADATA_KEY = r".*[^-0-9a-z_.:].*|.*-bin"
# What grpc parses, as the gRPC spec writes it: at most 8 digits and a unit. Envoy
# rewrites a well-formed one (capped by the route) and forwards anything else as is.
WELL_FORMED_GRPC_TIMEOUT = r"[0-9]{1,8}[HMSmun]"
SUPPORTED_GRPC_ENCODING = r"identity|gzip|deflate"
# gRPC's ASCII-Value: grpc's Python layer logs a value it cannot decode, verbatim.
PRINTABLE_ASCII = r"[ -~]*"

# Envoy's own replies, by HTTP status → the gRPC code the JSON body carries (the
# same numbers the transcoder puts in `code` for errors from the server).
LOCAL_REPLY_CODES = {
    400: 3,  # INVALID_ARGUMENT: unknown query parameter, malformed request
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: a path that maps to no RPC
    405: 12,  # UNIMPLEMENTED: a method the path does not serve (see METHOD_NOT_ALLOWED_CODE)
    408: 4,  # DEADLINE_EXCEEDED: request headers too slow
    413: 8,  # RESOURCE_EXHAUSTED: body above the limit (gRPC's own code for a too-large message)
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: headers too large
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: no healthy replica, circuit breaker open
    504: 4,  # DEADLINE_EXCEEDED: the route timeout
}

# A known path's other methods: 405 + Allow, with the code gRPC gives a method it does not have.
METHOD_NOT_ALLOWED_CODE = 12  # UNIMPLEMENTED


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """What varies between deployments of the edge; everything else is in the template."""

    rest_port: int
    grpc_port: int
    admin_port: int
    # The single layout: every service on these replicas (one cluster, `taskapi_replicas`):
    # (host, port) per replica; with `upstream_dns`, (name, port): every address the name
    # resolves to is a replica.
    upstreams: Sequence[tuple[str, int]] = ()
    # The split layout, when set: service ("auth", "tasks", "users") -> the replicas serving it,
    # one cluster each (`taskapi_auth`, ...); every service needs at least one. `upstreams` is unused.
    service_upstreams: Mapping[str, Sequence[tuple[str, int]]] = field(default_factory=dict)
    # The replicas' watch servers (TASKAPI_WATCH_PORT): WatchTasks streams, gRPC and SSE, go
    # there (cluster `taskapi_watch`); empty: WatchTasks is not routed (404 over REST).
    watch_upstreams: Sequence[tuple[str, int]] = ()
    # Streams per watch-server connection (idle watchers are cheap there), and how long a
    # stream may stay silent (the server sends heartbeats well within it).
    watch_concurrency: int = 10_000
    watch_idle_timeout_seconds: float = 120.0
    # HTTP/2 flow-control windows toward the watch servers (Envoy's defaults are 256 MiB a
    # stream): a client that stops reading holds at most a stream window here, plus the
    # listener's connection buffer, before the replica's writes wait (WATCH_WRITE_TIMEOUT_SECONDS).
    watch_stream_window_bytes: int = 64 << 10
    watch_connection_window_bytes: int = 1 << 20
    # Over REST, an SSE `id:` line per WatchTasks event (its resume token; envoy/sse_event_ids.lua).
    # False: no such filter at all, for measuring what it costs.
    sse_event_ids: bool = True
    listen_address: str = "127.0.0.1"
    # Discover replicas through DNS (Envoy's STRICT_DNS): a Kubernetes headless Service or a
    # compose service name resolves to one address per ready replica, re-resolved every
    # `dns_refresh_seconds`. False: the upstreams are fixed IP addresses (STATIC).
    upstream_dns: bool = False
    dns_refresh_seconds: float = 5.0
    # Exact origins allowed by CORS; "*" allows any origin.
    cors_origins: Sequence[str] = ("http://localhost:3000", "http://127.0.0.1:3000")
    descriptor: Path = DESCRIPTOR
    # Where Envoy opens the descriptor when it runs elsewhere than this renderer (a container
    # image, see deploy/); empty: `descriptor` itself. The renderer always reads `descriptor`.
    descriptor_at: str = ""
    route_timeout_seconds: float = 15.0
    health_check_interval_seconds: float = 2.0
    max_request_bytes: int = 1 << 20
    max_connections: int = 10_000
    # "stdout", or a file path for the JSON access log.
    access_log: str = "stdout"
    # Calls in flight per replica, twice its worker threads (Settings.replica_concurrency
    # of TASKAPI_WORKERS's default; a test keeps the two equal); more wait at the edge.
    replica_concurrency: int = 8
    # Calls waiting at the edge for a replica, all replicas together; more are shed (503).
    queue_size: int = 2048
    overload_retry_seconds: int = 1
    # Tracing: Envoy always continues a client's W3C traceparent, or starts one (so every
    # call a replica logs has a trace id, also in the access log). Its own spans are
    # exported only with an OTLP/gRPC collector here (host, port); else they are dropped.
    otlp_endpoint: tuple[str, int] | None = None
    # False: no tracer at all; Envoy then neither starts nor continues trace contexts (a
    # client's traceparent passes through as is). For measuring what the default costs.
    trace_context: bool = True
    trace_service_name: str = "taskapi-edge"
    # Of requests that arrive without a sampling decision, the share Envoy samples (None:
    # 100 with a collector, else 0: ids are still generated and propagated, so logs and the
    # access log carry a trace id, but nothing is recorded).
    trace_sampling_percent: float | None = None


@dataclass(frozen=True)
class Cluster:
    name: str
    upstreams: Sequence[tuple[str, int]]
    health_service: str  # what the gRPC health check asks about ("": the whole server)
    streams: int = 0  # calls in flight per connection; 0: the replicas' concurrency
    windows: tuple[int, int] | None = None  # HTTP/2 (stream, connection) windows; None: Envoy's


WATCH_CLUSTER = "taskapi_watch"
WATCH_METHOD = "/taskapi.v1.TaskService/WatchTasks"
# The watch route's response script over REST: an SSE `id:` line per event (its resume token).
SSE_EVENT_IDS = ENVOY_FILES.joinpath("sse_event_ids.lua")


def clusters(config: EdgeConfig) -> list[Cluster]:
    """The upstream clusters `config` describes: one for the single layout, one per service split."""
    if not config.service_upstreams:
        if not config.upstreams:
            raise ValueError("the edge needs at least one upstream replica")
        return [Cluster(CLUSTER, list(config.upstreams), "")]
    unknown = set(config.service_upstreams) - set(SERVICE_KEYS)
    missing = [key for key in SERVICE_KEYS if not config.service_upstreams.get(key)]
    if unknown or missing:
        raise ValueError(f"service_upstreams needs replicas for each of {', '.join(SERVICE_KEYS)} and nothing else")
    return [
        Cluster(SERVICE_CLUSTERS[key], list(config.service_upstreams[key]), SERVICE_KEYS[key]) for key in SERVICE_KEYS
    ]


def cluster_of(config: EdgeConfig, path: str) -> str:
    """The cluster a gRPC path (`/taskapi.v1.TaskService/GetTask`) or service name routes to."""
    if not config.service_upstreams:
        return CLUSTER
    service = path.strip("/").split("/")[0]
    for key, name in SERVICE_KEYS.items():
        if name == service:
            return SERVICE_CLUSTERS[key]
    return SERVICE_CLUSTERS["auth"]  # health and the REST catch-all: any replica answers those


@cache
def template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: ENVOY_FILES.joinpath(name).read_text(encoding="utf-8")),
        undefined=jinja2.StrictUndefined,  # a missing value is an error, never an empty string
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML  # noqa: S701
    )
    return environment.get_template(TEMPLATE_NAME)


def render(config: EdgeConfig) -> str:
    """The Envoy YAML for `config`."""
    if config.upstream_dns and config.dns_refresh_seconds <= 0:
        raise ValueError("dns_refresh_seconds must be positive with upstream_dns")
    upstream_clusters = clusters(config)
    paths = methods.path_methods(config.descriptor)
    shadows = methods.shadowed(paths)
    return template().render(
        admin_port=config.admin_port,
        rest_port=config.rest_port,
        grpc_port=config.grpc_port,
        listen_address=config.listen_address,
        clusters=upstream_clusters
        + (
            [
                Cluster(
                    WATCH_CLUSTER,
                    list(config.watch_upstreams),
                    "",
                    streams=config.watch_concurrency,
                    windows=(config.watch_stream_window_bytes, config.watch_connection_window_bytes),
                )
            ]
            if config.watch_upstreams
            else []
        ),
        watch_method=WATCH_METHOD if config.watch_upstreams else "",
        watch_cluster=WATCH_CLUSTER,
        watch_idle_timeout=_duration(config.watch_idle_timeout_seconds),
        sse_event_ids=config.sse_event_ids,
        sse_event_ids_lua=SSE_EVENT_IDS.read_text(encoding="utf-8"),
        # Every route names its cluster: the one cluster, or its service's.
        service_routes=[(service, cluster_of(config, service)) for service in SERVICES],
        # Split, health and reflection go to any replica (each reflects the whole API).
        operator_routes=[(service, cluster_of(config, service)) for service in OPERATOR_SERVICES],
        catch_all_cluster=cluster_of(config, ""),
        upstream_dns=config.upstream_dns,
        dns_refresh_rate=_duration(config.dns_refresh_seconds),
        cors_origins=[{"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in config.cors_origins],
        # The generated descriptor set, as is. Envoy 1.40's transcoder refuses a
        # `response_body` naming a message field (envoyproxy/envoy#11136): RPCs return the
        # resource itself instead, and `envoy --mode validate` (a test) catches any rule
        # Envoy cannot load.
        descriptor_path=config.descriptor_at or str(Path(config.descriptor).resolve()),
        services=list(SERVICES),
        repeatable_methods=[(method, cluster_of(config, method)) for method in IDEMPOTENT_METHODS],
        request_id_methods=[(method, cluster_of(config, method)) for method in REQUEST_ID_METHODS],
        with_request_id=WITH_REQUEST_ID,
        rest_prefix=REST_PREFIX,
        retry_safe_header=RETRY_SAFE_HEADER,
        safe_retry_on=SAFE_RETRY_ON,
        idempotent_retry_on=IDEMPOTENT_RETRY_ON,
        route_timeout=_duration(config.route_timeout_seconds),
        deadline_ms=int(config.route_timeout_seconds * 1000),
        request_timeout=_duration(config.route_timeout_seconds + 15),
        health_check_interval=_duration(config.health_check_interval_seconds),
        # Headroom over the body limit for headers and framing.
        connection_buffer_bytes=config.max_request_bytes + (64 << 10),
        max_request_bytes=config.max_request_bytes,
        max_connections=config.max_connections,
        illegal_metadata_key=ILLEGAL_METADATA_KEY,
        well_formed_grpc_timeout=WELL_FORMED_GRPC_TIMEOUT,
        supported_grpc_encoding=SUPPORTED_GRPC_ENCODING,
        printable_ascii=PRINTABLE_ASCII,
        local_reply_codes=LOCAL_REPLY_CODES,
        # The strict-body filter with its allow-list, from the same descriptor.
        strict_json_lua=strict_json.lua_source(config.descriptor),
        access_log_path=config.access_log,
        replica_concurrency=config.replica_concurrency,
        queue_size=config.queue_size,
        overload_retry_seconds=config.overload_retry_seconds,
        trace_context=config.trace_context,
        otlp_endpoint=list(config.otlp_endpoint) if config.otlp_endpoint is not None else None,
        trace_service_name=config.trace_service_name,
        trace_sampling_percent=(
            config.trace_sampling_percent
            if config.trace_sampling_percent is not None
            else (100.0 if config.otlp_endpoint is not None else 0.0)
        ),
        # 405 + Allow for the methods a known path does not serve (taskapi.server.edge.methods).
        path_methods=paths,
        shadowed_methods=shadows,
        shadowed_lua=_shadowed_lua(shadows),
        method_not_allowed_code=METHOD_NOT_ALLOWED_CODE,
    )


def _shadowed_lua(shadows: list[tuple[methods.PathMethods, tuple[str, ...]]]) -> str:
    """The filter's whole script: it runs only for a shadowed (path, method) pair (its matcher),
    and answers 405 with the literal path's methods; the local reply mapper renders the body."""
    table = ", ".join(f'["{path.template}"] = "{path.allow}"' for path, _ in shadows)
    return (
        f"local allow = {{{table}}}\n"
        "function envoy_on_request(handle)\n"
        '  local path = string.gsub(handle:headers():get(":path"), "[?#].*", "")\n'
        '  local methods = allow[path] or ""\n'
        '  handle:respond({[":status"] = "405", ["allow"] = methods},\n'
        '    handle:headers():get(":method") .. " is not allowed on this path; it allows " .. methods)\n'
        "end\n"
    )


def write(config: EdgeConfig, directory: Path) -> Path:
    """Render `config` to `directory/envoy.yaml` and return the path."""
    path = Path(directory) / "envoy.yaml"
    path.write_text(render(config))
    return path


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"
