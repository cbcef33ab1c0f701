"""Per-call overhead of the whole interceptor chain against a bare server.

1. Over gRPC: real servers on loopback, a real channel, real Redis (REDIS_URL, or a
   redis-server started here). The chain is build_chain's production order (metrics, call
   state, JSON logging to memory, errors, auth, rate limit, protovalidate) with the tests'
   token-free Authenticator, so JWT verification is not in the figure. Sequential unary
   GetTask calls, so the figure is latency added per call, not throughput.
2. In process, no transport: the same chain's composed handler called directly with a
   stand-in for the ServicerContext (only the methods the chain calls), still with the
   real Redis decision. CPU and wall time per call, best of rounds, for the chain as one
   InterceptorChain (production) and for the same layers registered one by one with
   grpc.server (what the server did before: every layer rebuilt its handler per call).
   Wall-clock latency on a shared 2-core box moves with the neighbours; this CPU figure
   is the steady one for "what does the chain cost".
3. For scale: one JWT verification (Tokens.verify), which the production chain adds.

Prints figures; asserts nothing.

    .venv/bin/python bench/bench_chain.py [calls]
"""

from __future__ import annotations

import io
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/support.py

import grpc  # noqa: E402
import jwt  # noqa: E402
from grpc import _interceptor  # noqa: E402 - bench only: grpcio's per-call interceptor pipeline
from prometheus_client import CollectorRegistry  # noqa: E402

try:  # the chain as one interceptor; absent in trees from before it (for before/after runs)
    from taskapi.interceptors.chain import InterceptorChain  # noqa: E402
except ImportError:  # pragma: no cover
    # A stand-in nothing is an instance of; mypy sees the real class, which this shadows.
    InterceptorChain = type("InterceptorChain", (), {})  # type: ignore[misc, assignment]  # noqa: N806

from support import redis_url  # noqa: E402

from taskapi.interceptors.logging import JsonFormatter, LoggingInterceptor  # noqa: E402
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor  # noqa: E402
from taskapi.interceptors.ratelimit import RateLimitInterceptor  # noqa: E402
from taskapi.server.app import tokens_from  # noqa: E402
from taskapi.server.cache.client import connect_redis  # noqa: E402
from taskapi.server.domain.limits import RateLimit  # noqa: E402
from taskapi.v1 import task_pb2, task_pb2_grpc  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.integration.chain_server import (  # noqa: E402
    GET_TASK,
    TASK_ID,
    CannedTasks,
    make_chain,
    run_server,
    stubs,
    unique_prefix,
)

ROUNDS = 7


def per_call_us(stub: task_pb2_grpc.TaskServiceStub, calls: int) -> float:
    request = task_pb2.GetTaskRequest(id=TASK_ID)
    start = time.perf_counter()
    # The bare server ignores the header; the chain's test Authenticator needs it.
    metadata = (("authorization", "Bearer user-1"),)
    for _ in range(calls):
        stub.GetTask(request, metadata=metadata)
    return (time.perf_counter() - start) / calls * 1e6


class _Context:
    """The ServicerContext methods the chain calls, with no transport behind them."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata or (("authorization", "Bearer user-1"), ("user-agent", "grpc-python/bench"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def send_initial_metadata(self, metadata: object) -> None:
        pass

    def code(self) -> None:
        return None

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float:
        return 10.0


class _Details(grpc.HandlerCallDetails):
    method = GET_TASK
    invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


def in_process_us(
    interceptors: Sequence[grpc.ServerInterceptor], calls: int, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[float, float]:
    """(CPU, wall) us per call, best of ROUNDS, of resolving and running the handler as grpc does."""
    servicer = grpc.method_handlers_generic_handler(
        "taskapi.v1.TaskService",
        # The stubs mark every RPC abstract; only GetTask is called here.
        {"GetTask": grpc.unary_unary_rpc_method_handler(CannedTasks().GetTask)},  # type: ignore[abstract]
    )
    # grpcio's own per-call step: the registered interceptors' intercept_service, in order.
    pipeline = _interceptor.service_pipeline(interceptors)
    # Duck-typed: _Context has the ServicerContext methods the chain calls, not the whole class.
    request, context, details = (
        task_pb2.GetTaskRequest(id=TASK_ID),
        cast(grpc.ServicerContext, _Context(metadata)),
        _Details(),
    )

    resolve = pipeline.execute if pipeline is not None else lambda find, d: find(d)
    handler = resolve(servicer.service, details)
    assert handler is not None and handler.unary_unary is not None, "GetTask resolves to a unary handler"

    def run(n: int) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            # Checked above; an assert here would be timed with the call.
            resolve(servicer.service, details).unary_unary(request, context)  # type: ignore[misc]
        return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6

    run(200)
    rounds = [run(calls) for _ in range(ROUNDS)]
    return min(r[0] for r in rounds), min(r[1] for r in rounds)


def jwt_verify_us(calls: int) -> float:
    settings = make_settings("")
    tokens = tokens_from(settings)
    token = jwt.encode(
        {
            "sub": "0123456789abcdef01234567",
            "role": "USER",
            "sid": "s",
            "jti": "j",
            "iat": int(time.time()),
            "exp": int(time.time()) + 900,
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
        },
        settings.jwt_secret,
        algorithm="HS256",
    )
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(calls):
            tokens.verify(token)
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    # Log lines are formatted and written, as in production, but to memory.
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("taskapi.interceptors.logging")
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.INFO)
    rpc_log.propagate = False

    with redis_url() as url:
        metrics = Metrics(CollectorRegistry())
        huge = RateLimit(requests=10**9, window_seconds=900)  # measure the decision, never reject
        limiter = RateLimitInterceptor(
            connect_redis(url, 250),
            ip=huge,
            user=huge,
            key_prefix=unique_prefix(),
            metrics=metrics,
        )
        chain = make_chain(metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter)
        with run_server([]) as (_, bare_port), run_server(chain) as (_, chain_port):
            with stubs(bare_port) as (_, bare), stubs(chain_port) as (_, full):
                per_call_us(bare, 200)  # warm up channels, threads and the Lua script
                per_call_us(full, 200)
                bare_us, full_us = [], []
                for _ in range(ROUNDS):  # interleaved, so drift hits both alike
                    bare_us.append(per_call_us(bare, calls))
                    full_us.append(per_call_us(full, calls))
        one = make_chain(metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter)
        layers = list(one[0].layers) if isinstance(one[0], InterceptorChain) else one
        chain_cpu, chain_wall = in_process_us(one, calls)
        layered_cpu, layered_wall = in_process_us(layers, calls)
        none_cpu, none_wall = in_process_us([], calls)
        decided = metrics.registry.get_sample_value(
            "taskapi_ratelimit_decisions_total", {"decision": "allowed", "backend": "redis"}
        )

    bare_med, full_med = statistics.median(bare_us), statistics.median(full_us)
    # The best round is the one least disturbed by other work on the machine.
    bare_min, full_min = min(bare_us), min(full_us)
    print(f"calls per round: {calls}, rounds: {ROUNDS}, redis decisions: {decided:.0f}")
    print(f"bare server:     {bare_med:8.1f} us/call (median of rounds)   {bare_min:8.1f} (best round)")
    print(f"full chain:      {full_med:8.1f} us/call (median of rounds)   {full_min:8.1f} (best round)")
    print(
        f"chain overhead:  {full_med - bare_med:8.1f} us/call (medians)        {full_min - bare_min:8.1f} (best rounds)"
    )
    print("\nin process, no transport (best of rounds)       CPU us/call   wall us/call")
    print(f"  no interceptors                                {none_cpu:8.1f}      {none_wall:8.1f}")
    print(f"  chain as one InterceptorChain (production)     {chain_cpu:8.1f}      {chain_wall:8.1f}")
    label = f"same {len(layers)} layers registered one by one"
    print(f"  {label:<46} {layered_cpu:8.1f}      {layered_wall:8.1f}")
    jwt_us = jwt_verify_us(calls)
    print(f"\nJWT verification (Tokens.verify), not in the figures above: {jwt_us:.1f} us CPU/call")


if __name__ == "__main__":
    main()
