"""Headers a client controls never reach a replica as gRPC control metadata, never answer
5xx, never take a replica out of rotation and never put a credential in a log (issue 9).

Why one client's header could hurt others: Envoy shares each HTTP/2 connection to a
replica among all its clients, and grpc's HPACK parser remembers a header it failed to
parse in that connection's header table, so every later header that refers to the entry
(a `grpc-timeout` with a new value, say) fails the same way, for other users' calls.

Hostile bytes are sent for real: http.client for HTTP/1.1 (any token character in a
name, raw bytes in a value) and a raw HTTP/2 client for native gRPC (grpcio refuses to
send them). Each test that breaks something on purpose has its own stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from taskapi.server.app import App
from taskapi.server.dev import free_port
from taskapi.v1 import auth_pb2, auth_pb2_grpc, user_pb2
from tests.conftest import GENEROUS, TEST_SECRET, make_settings, private_database, unique_email
from tests.e2e.conftest import LAYOUTS, PASSWORD, Account, Stack, assert_error, detail, register, running_stack
from tests.support.edge import Response, RestClient, cluster_stats, running_edge, upstream_requests
from tests.support.raw_grpc import raw_grpc_call

RATE_LIMITS = ("RATE_LIMIT_IP", "RATE_LIMIT_USER", "RATE_LIMIT_AUTH")

LOGIN = "/taskapi.v1.AuthService/Login"
CURRENT_USER = "/taskapi.v1.UserService/GetCurrentUser"
UNAUTHENTICATED = 16

# Legal in an HTTP header name, illegal in a gRPC metadata key ([0-9a-z-_.] only).
ILLEGAL_KEYS = [(f"x{char}y", "1") for char in "!#$%&'*+^`|~"]
# Legal names whose value grpc fails to parse (each poisons the connection's header table).
BAD_CONTROL_VALUES = [
    ("grpc-timeout", "garbage"),
    ("grpc-encoding", "bogus"),
    ("grpc-status", "x"),
    ("grpc-previous-rpc-attempts", "x"),
    ("grpc-retry-pushback-ms", "x"),
    ("grpc-internal-encoding-request", "bogus"),
    ("x-bin", "!!not base64!!"),
    ("grpc-trace-bin", "!!"),
]
HOSTILE = ILLEGAL_KEYS + BAD_CONTROL_VALUES
# Also sent to the REST edge, where a client has no business with them at all.
REST_ONLY = [("te", "gzip"), ("grpc-timeout", "1n"), ("grpc-timeout", "99999999H"), ("content-type", "text/plain")]


@pytest.fixture(scope="module", params=LAYOUTS)
def hostile(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A private stack: before the fix, these tests poisoned the connections they used."""
    workdir = tmp_path_factory.mktemp("hostile")
    with running_stack(make_settings(redis_url), workdir, layout=request.param) as stack:
        yield stack


@pytest.fixture(scope="module")
def someone(hostile: Stack) -> Account:
    return register(hostile.client)


def _login() -> auth_pb2.LoginRequest:
    return auth_pb2.LoginRequest(email=unique_email("nobody"), password=PASSWORD)


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}:{value}" for name, value in cases]


# ---- REST: client headers never become gRPC control metadata -----------------------------


@pytest.mark.parametrize(("name", "value"), HOSTILE + REST_ONLY, ids=_ids(HOSTILE + REST_ONLY))
def test_rest_drops_headers_a_replica_cannot_take(hostile: Stack, someone: Account, name: str, value: str) -> None:
    response = hostile.client.get("tasks", token=someone.token, headers={name: value})
    assert response.status == 200, response  # dropped at the edge; the deadline is the route's


def test_a_hostile_rest_call_breaks_no_other_call(hostile: Stack, someone: Account) -> None:
    for _ in range(4):  # anonymous, as in the report; enough to reach both replicas
        assert hostile.client.get("tasks", headers={"grpc-timeout": "garbage"}).status < 500
    _assert_others_unharmed(hostile, someone)


# ---- native gRPC (the gRPC port, and native gRPC on the REST port) -------------------------


@pytest.mark.parametrize("port", ["grpc_port", "rest_port"])
@pytest.mark.parametrize(("name", "value"), HOSTILE, ids=_ids(HOSTILE))
def test_native_grpc_drops_headers_a_replica_cannot_take(hostile: Stack, port: str, name: str, value: str) -> None:
    address = ("127.0.0.1", getattr(hostile.envoy.config, port))
    reply = raw_grpc_call(address, LOGIN, _login(), headers=[(name.encode(), value.encode())])
    # The server's own answer for an unknown account: the header never reached it.
    assert reply.code == grpc.StatusCode.UNAUTHENTICATED, reply


def test_a_malformed_grpc_timeout_breaks_no_other_call(hostile: Stack, someone: Account) -> None:
    for _ in range(4):
        reply = raw_grpc_call(
            ("127.0.0.1", hostile.envoy.config.grpc_port), LOGIN, _login(), headers=[(b"grpc-timeout", b"garbage")]
        )
        assert reply.code == grpc.StatusCode.UNAUTHENTICATED, reply  # dropped: the route's deadline applies
    _assert_others_unharmed(hostile, someone)


def test_a_valid_grpc_timeout_is_still_honoured_on_the_grpc_port(hostile: Stack) -> None:
    # 1 ns: the call must end DEADLINE_EXCEEDED, except when the replica wins the race
    # against Envoy's timer (seen under load), or when the replica's grpc, past the deadline
    # itself, resets the stream (RST_STREAM after its headers: about one call in seven on a
    # loaded box); a dropped header never would give any of those but UNAUTHENTICATED.
    outcomes: set[grpc.StatusCode | str | None] = set()
    for _ in range(20):
        reply = raw_grpc_call(
            ("127.0.0.1", hostile.envoy.config.grpc_port), LOGIN, _login(), headers=[(b"grpc-timeout", b"1n")]
        )
        outcomes.add("reset" if reply.code is None and reply.reset is not None else reply.code)
        if grpc.StatusCode.DEADLINE_EXCEEDED in outcomes:
            break
    assert grpc.StatusCode.DEADLINE_EXCEEDED in outcomes and outcomes <= {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAUTHENTICATED,
        "reset",
    }, outcomes


def _assert_others_unharmed(stack: Stack, account: Account) -> None:
    """Other users' calls succeed: native gRPC with a deadline of its own (a new grpc-timeout
    value every call, the case a poisoned header table fails) and REST."""
    failures: list[tuple[grpc.StatusCode, str | None] | Response] = []  # gRPC errors, then REST replies
    with grpc.insecure_channel(stack.envoy.grpc_target) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        for i in range(20):
            try:
                auth.Login(_login(), timeout=5 + i / 7)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    failures.append((error.code(), error.details()))
    failures += [r for r in (stack.client.get("tasks", token=account.token) for _ in range(20)) if r.status != 200]
    assert failures == []


# ---- outlier detection: what a caller sends never ejects a replica -------------------------


def test_hostile_requests_eject_no_replica(hostile: Stack, someone: Account) -> None:
    before = cluster_stats(hostile.envoy)
    grpc_port = ("127.0.0.1", hostile.envoy.config.grpc_port)
    for _ in range(3):
        for name, value in HOSTILE + REST_ONLY:
            assert hostile.client.get("tasks", headers={name: value}).status < 500
        for name, value in HOSTILE:
            raw_grpc_call(grpc_port, LOGIN, _login(), headers=[(name.encode(), value.encode())])
    after = cluster_stats(hostile.envoy)
    for stat in ("ejections_total", "ejections_enforced_total", "ejections_detected_consecutive_5xx"):
        assert after[stat] == before[stat], (stat, before, after)
    assert after["ejections_active"] == 0
    start = upstream_requests(hostile.envoy)
    for _ in range(20):
        assert hostile.client.get("tasks", token=someone.token).status == 200
    served = {port: count - start.get(port, 0) for port, count in upstream_requests(hostile.envoy).items()}
    assert {port for port, count in served.items() if count > 0} == hostile.task_replica_ports, served


def test_tiny_client_deadlines_eject_no_replica(hostile: Stack) -> None:
    """A native client's 1-5 ms grpc-timeout makes replicas answer DEADLINE_EXCEEDED (a
    gateway error to Envoy) when they beat Envoy's own timer: what the caller sent."""
    before = cluster_stats(hostile.envoy)
    grpc_port = ("127.0.0.1", hostile.envoy.config.grpc_port)

    def calls(deadline: bytes) -> None:
        for _ in range(100):
            raw_grpc_call(grpc_port, LOGIN, _login(), headers=[(b"grpc-timeout", deadline)])

    with futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(calls, [b"1m", b"2m", b"3m", b"5m"]))
    after = cluster_stats(hostile.envoy)
    assert after["ejections_enforced_total"] == before["ejections_enforced_total"], (before, after)
    assert after["ejections_active"] == 0, after


def test_a_replica_answering_5xx_stays_in_rotation(redis_url: str, tmp_path: Path) -> None:
    """A 5xx answer is what a caller's input provokes (a malformed protobuf body answers
    INTERNAL today): only the replica's own health (its health check, connections that
    fail) takes it out of rotation. Stand-in: a real gRPC server that reports SERVING and
    answers INTERNAL to every call."""
    app = App(make_settings(redis_url))
    failing = _always_internal_server()
    try:
        replica = app.start_replica(0)
        upstreams = [("127.0.0.1", replica.port), ("127.0.0.1", failing.port)]
        with running_edge(upstreams, tmp_path) as envoy:
            client = RestClient(envoy.rest_url)
            statuses = [client.get("tasks").status for _ in range(40)]
            assert 500 in statuses and 401 in statuses  # both answered
            stats = cluster_stats(envoy)
            assert stats["ejections_enforced_total"] == 0 and stats["ejections_active"] == 0, stats
            assert envoy.healthy_upstreams() == 2
    finally:
        failing.server.stop(None)
        app.close(grace=0)


def test_a_replica_that_is_down_is_still_ejected(redis_url: str, tmp_path: Path) -> None:
    """Connections that fail are the replica's own health: ejected at once (a health check
    60 s away cannot be what removes it here), and no call fails meanwhile (retried)."""
    app = App(make_settings(redis_url))
    try:
        replicas = [app.start_replica(0) for _ in range(2)]
        upstreams = [("127.0.0.1", r.port) for r in replicas]
        with running_edge(upstreams, tmp_path, health_check_interval_seconds=60) as envoy:
            client = RestClient(envoy.rest_url)
            account = register(client)
            replicas[0].stop(0)
            statuses = [client.get("tasks", token=account.token).status for _ in range(40)]
            assert set(statuses) == {200}, statuses
            stats = cluster_stats(envoy)
            assert stats["ejections_active"] == 1, stats
            assert stats["ejections_enforced_consecutive_local_origin_failure"] == 1, stats
    finally:
        app.close(grace=0)


class _Stub:
    def __init__(self, server: grpc.Server, port: int) -> None:
        self.server, self.port = server, port


def _always_internal_server() -> _Stub:
    def internal(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.INTERNAL, "stand-in replica: always INTERNAL")

    class Everything(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
            if details.method.startswith("/grpc.health."):
                return None  # the real health service below
            return grpc.unary_unary_rpc_method_handler(internal)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers((Everything(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return _Stub(server, port)


# ---- credentials never reach a log ---------------------------------------------------------


def test_a_token_with_a_byte_grpc_cannot_decode_is_never_logged(redis_url: str, tmp_path: Path) -> None:
    """grpc's Python layer logs a metadata value that is not UTF-8 verbatim, at ERROR. The
    real `taskapi serve` (its logging set up by the command), with everything it prints
    captured, gets such a token straight over gRPC and through both Envoy ports."""
    port = free_port()
    env = os.environ | {
        "TASKAPI_GRPC_PORT": str(port),
        "TASKAPI_WATCH_PORT": "0",  # any free one: a fixed port would collide between processes
        "TASKAPI_METRICS_PORT": "0",
        # A database of its own: this server runs the default limits, and its counters for
        # 127.0.0.1 (the same keys) would spend the session servers' budgets for the next minute.
        "REDIS_URL": private_database(redis_url),
        "BCRYPT_ROUNDS": "4",
        "JWT_SECRET": TEST_SECRET,
        "LOG_LEVEL": "DEBUG",
        # The limits every test server has (make_settings): the default Register budget would
        # push the shared Redis's counters for 127.0.0.1 far ahead, failing later tests' sign-ups.
        **{name: f"{GENEROUS.requests}/{GENEROUS.window_seconds}" for name in RATE_LIMITS},
    }
    output = tmp_path / "serve.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    token = ""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            session = auth_pb2_grpc.AuthServiceStub(channel).Register(
                auth_pb2.RegisterRequest(email=unique_email("leak"), password=PASSWORD, name="Leak"), timeout=10
            )
        token = session.access_token
        with running_edge([("127.0.0.1", port)], tmp_path / "edge") as envoy:
            for bad in (b"\xff", "é".encode("latin-1")):
                value = b"Bearer " + token[:40].encode() + bad + token[40:].encode()
                for target in (port, envoy.config.grpc_port):
                    reply = raw_grpc_call(
                        ("127.0.0.1", target),
                        CURRENT_USER,
                        user_pb2.GetCurrentUserRequest(),
                        headers=[(b"authorization", value)],
                    )
                    assert reply.code == grpc.StatusCode.UNAUTHENTICATED, (target, reply)
                    if target != port:  # Envoy dropped it: the replica saw no token at all
                        assert "bearer token is required" in reply.message, reply
                rest = RestClient(envoy.rest_url).get("users/me", headers={"authorization": value})
                body = assert_error(rest, 401, UNAUTHENTICATED)
                assert detail(body, "ErrorInfo")["reason"] == "TOKEN_MISSING", body
            # The same token without the stray byte works: the byte alone made it unusable.
            assert RestClient(envoy.rest_url).get("users/me", token=token).status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    printed = output.read_bytes()
    assert b"GetCurrentUser" in printed  # the calls were logged, so the log was really written
    # Still there at DEBUG (this server's level), never as an ERROR: the byte is the client's doing.
    dropped = [line for line in printed.splitlines() if b"Invalid encoding" in line]
    assert dropped, "grpc's record of the dropped value is gone even at DEBUG"
    assert not [line for line in dropped if b"ERROR" in line], dropped
    for part in token.split(".")[1:]:  # claims and signature: the secret parts
        for chunk in (part[:16], part[-16:]):
            assert chunk.encode() not in printed, f"token text {chunk!r} in the server's output"
