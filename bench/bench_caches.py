"""What each micro-cache on the hot path saves, per call: the cached path against the work it
skips, both measured here with timeit (best of 7 rounds).

    .venv/bin/python bench/bench_caches.py

Prints one line per cache; asserts nothing. bench/README.md keeps the latest figures: a
micro-cache stays only where this shows its gain.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import grpc
import jwt
import redis
from prometheus_client import CollectorRegistry

from taskapi.interceptors.call_state import CallStateInterceptor
from taskapi.interceptors.context import CallState, bind_call, unbind_call
from taskapi.interceptors.metrics import Metrics, call_code, final_code
from taskapi.interceptors.ratelimit import _policy_header
from taskapi.interceptors.ratelimit_redis import _undecorated
from taskapi.server.domain.limits import DEFAULT_AUTH, DEFAULT_IP, DEFAULT_USER
from taskapi.server.domain.tokens import Tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
import support  # noqa: E402

SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"


def best_us(run: Callable[[], object], number: int = 2000) -> float:
    return min(timeit.repeat(run, number=number, repeat=7)) / number * 1e6


def main() -> None:
    tokens = Tokens(secret=SECRET, issuer="taskapi", audience="taskapi", ttl_seconds=900)
    now = int(time.time())
    claims = {"sub": "0123456789abcdef01234567", "role": "USER", "sid": "s", "jti": "j", "iat": now, "exp": now + 900}
    token = jwt.encode({**claims, "iss": "taskapi", "aud": "taskapi"}, SECRET, algorithm="HS256")
    tokens.verify(token)
    rows = [
        (
            "verified access tokens (domain/tokens.py)",
            best_us(lambda: tokens.verify(token)),
            best_us(lambda: tokens._decode(token), number=500),
        )
    ]

    trust = CallStateInterceptor([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    trust._is_trusted("127.0.0.1")
    rows.append(
        (
            "trusted-proxy answers per peer (interceptors/call_state.py)",
            best_us(lambda: trust._is_trusted("127.0.0.1")),
            best_us(lambda: trust._check_trusted("127.0.0.1")),
        )
    )

    metrics = Metrics(CollectorRegistry())
    child = metrics.started.labels("unary", "taskapi.v1.TaskService", "GetTask")
    rows.append(
        (
            "metric label children per method (interceptors/metrics.py)",
            best_us(lambda: child.inc()),
            best_us(lambda: metrics.started.labels("unary", "taskapi.v1.TaskService", "GetTask").inc()),
        )
    )

    limits = (DEFAULT_IP, DEFAULT_USER, DEFAULT_AUTH)
    _policy_header(DEFAULT_AUTH, limits)
    rows.append(
        (
            "RateLimit-Policy header text (interceptors/ratelimit.py)",
            best_us(lambda: _policy_header(DEFAULT_AUTH, limits)),
            best_us(lambda: _policy_header.__wrapped__(DEFAULT_AUTH, limits)),
        )
    )

    rows.append(
        (
            "decision and cache counter children (interceptors/metrics.py)",
            best_us(lambda: metrics.ratelimit_decision(allowed=True, backend="redis")),
            best_us(lambda: metrics.ratelimit_decisions.labels("allowed", "redis").inc()),
        )
    )

    # A call's final status code, asked by Logging, Tracing and Metrics as the call ends.
    context = cast(grpc.ServicerContext, _EndedCall())
    state = CallState("/taskapi.v1.TaskService/GetTask", "127.0.0.1", "r")
    bound = bind_call(state)
    try:

        def three_asks_once() -> None:
            state.outcome = None  # a new call
            for _ in range(3):
                call_code(context, None)

        rows.append(
            (
                "a call's final status code, 3 asks (interceptors/metrics.py)",
                best_us(three_asks_once),
                best_us(lambda: [final_code(context, None) for _ in range(3)]),
            )
        )
    finally:
        unbind_call(bound)

    # The limiter's pooled connection (interceptors/ratelimit_redis.py), taken and given back.
    with support.redis_url() as url:
        pool = redis.Redis.from_url(url).connection_pool
        plain = _undecorated(pool.get_connection)

        def take(get: Callable[[], Any]) -> None:
            pool.release(get())

        rows.append(
            (
                "pool connection, no deprecated_args wrapper (ratelimit_redis.py)",
                best_us(lambda: take(plain)),
                best_us(lambda: take(pool.get_connection)),
            )
        )
        pool.disconnect()

    print(f"{'micro-cache':66} {'cached us':>10} {'uncached us':>12} {'saved us/call':>14}")
    for name, cached, uncached in rows:
        print(f"{name:66} {cached:10.3f} {uncached:12.3f} {uncached - cached:14.3f}")
    print("(the interceptor chain composed once per method: bench/bench_chain.py, 'one by one' vs 'InterceptorChain')")


class _EndedCall:
    """What final_code reads of a ServicerContext: grpcio's `code()` and `is_active()` (a lock)."""

    def __init__(self) -> None:
        import threading

        self._condition = threading.Condition()

    def code(self) -> grpc.StatusCode | None:
        return None

    def is_active(self) -> bool:
        with self._condition:  # as grpcio's _Context.is_active
            return True


if __name__ == "__main__":
    main()
