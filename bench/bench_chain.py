"""Per-call overhead of the whole interceptor chain against a bare server.

Real servers on loopback, a real channel, real Redis (REDIS_URL, or a redis-server
started here). The chain is build_chain's production order (metrics, call state, JSON
logging to memory, errors, auth, rate limit, protovalidate) with the tests' token-free
Authenticator, so JWT verification is not in the figure. Sequential unary GetTask
calls, so the figure is latency added per call, not throughput. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_chain.py [calls]
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' helpers

from prometheus_client import CollectorRegistry  # noqa: E402

from interceptors.logging import JsonFormatter, LoggingInterceptor  # noqa: E402
from interceptors.metrics import Metrics, MetricsInterceptor  # noqa: E402
from interceptors.ratelimit import RateLimitInterceptor, redis_client  # noqa: E402
from interceptors.policy import RateLimit  # noqa: E402
from taskapi.v1 import task_pb2  # noqa: E402
from tests.conftest import RedisProcess  # noqa: E402
from tests.integration.chain_server import TASK_ID, make_chain, run_server, stubs, unique_prefix  # noqa: E402

ROUNDS = 5


@contextmanager
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server for the run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory() as workdir:
        process = RedisProcess(Path(workdir))
        process.start()
        try:
            yield process.url
        finally:
            process.stop()


def per_call_us(stub: object, calls: int) -> float:
    request = task_pb2.GetTaskRequest(id=TASK_ID)
    start = time.perf_counter()
    # The bare server ignores the header; the chain's test Authenticator needs it.
    metadata = [("authorization", "Bearer user-1")]
    for _ in range(calls):
        stub.GetTask(request, metadata=metadata)  # type: ignore[attr-defined]
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    # Log lines are formatted and written, as in production, but to memory.
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("interceptors.logging")
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.INFO)
    rpc_log.propagate = False

    with redis_url() as url:
        metrics = Metrics(CollectorRegistry())
        huge = RateLimit(requests=10**9, window_seconds=900)  # measure the decision, never reject
        limiter = RateLimitInterceptor(
            redis_client(url, timeout_seconds=0.25),
            ip=huge,
            user=huge,
            key_prefix=unique_prefix(),
            metrics=metrics,
        )
        chain = make_chain(
            metrics=MetricsInterceptor(metrics), logging=LoggingInterceptor(), ratelimit=limiter
        )
        with run_server([]) as (_, bare_port), run_server(chain) as (_, chain_port):
            with stubs(bare_port) as (_, bare), stubs(chain_port) as (_, full):
                per_call_us(bare, 200)  # warm up channels, threads and the Lua script
                per_call_us(full, 200)
                bare_us, full_us = [], []
                for _ in range(ROUNDS):  # interleaved, so drift hits both alike
                    bare_us.append(per_call_us(bare, calls))
                    full_us.append(per_call_us(full, calls))
        decided = metrics.registry.get_sample_value(
            "taskapi_ratelimit_decisions_total", {"decision": "allowed", "backend": "redis"}
        )

    bare_med, full_med = statistics.median(bare_us), statistics.median(full_us)
    print(f"calls per round: {calls}, rounds: {ROUNDS}, redis decisions: {decided:.0f}")
    print(f"bare server:     {bare_med:8.1f} us/call (median of rounds)")
    print(f"full chain:      {full_med:8.1f} us/call (median of rounds)")
    print(f"chain overhead:  {full_med - bare_med:8.1f} us/call")


if __name__ == "__main__":
    main()
