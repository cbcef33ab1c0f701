"""What tracing costs per call: off (the default) and on.

The production chain (metrics, call state, JSON logging to memory, errors, auth, rate limit
over a real Redis, protovalidate) run in process, as bench_chain.py's "in process" figure:
the composed handler called directly, CPU and wall time per call, best of rounds. Variants:

  off                  tracing off: no tracing layer, a plain Redis client; log lines still
                       carry trace ids (from the caller's traceparent, sent here as Envoy does)
  off, no log ids      the same with the log formatter's trace-id lookup removed: the
                       difference is all that tracing-off adds per call to the tree before it
  on, not sampled      the tracing layer and traced Redis, every trace unsampled
                       (OTEL_TRACES_SAMPLER=always_off: spans are created and dropped)
  on, sampled          every call sampled: a server span and a Redis pipeline span per call,
                       batched and exported over OTLP/gRPC to a collector in another process
                       (`python -m tests.support.otlp`); the export thread's CPU is included

And, because the chain figures scatter by more than the difference on a shared box, the one
thing tracing-off adds to a call measured alone: the JSON formatter's trace-id lookup for the
call's log line (`trace_ids()` inside a bound call, with the caller's traceparent), in ns.

Prints figures; asserts nothing.

    .venv/bin/python bench/bench_tracing.py [calls]
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import timeit
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/support.py

import grpc  # noqa: E402
from bench_chain import ROUNDS, in_process_us  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from support import redis_url  # noqa: E402

from taskapi.interceptors import logging as rpc_logging  # noqa: E402
from taskapi.interceptors.context import CallState, bind_call, unbind_call  # noqa: E402
from taskapi.interceptors.logging import JsonFormatter, LoggingInterceptor  # noqa: E402
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor  # noqa: E402
from taskapi.interceptors.ratelimit import RateLimitInterceptor  # noqa: E402
from taskapi.interceptors.tracing import TracingInterceptor  # noqa: E402
from taskapi.server.cache.client import connect_redis  # noqa: E402
from taskapi.server.config import TracingSettings  # noqa: E402
from taskapi.server.domain.limits import RateLimit  # noqa: E402
from taskapi.server.tracing import Tracing  # noqa: E402
from tests.integration.chain_server import make_chain, unique_prefix  # noqa: E402

# What Envoy sends every replica: its span's context (sampled when Envoy exports spans).
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ALTERNATIONS = 3


@contextmanager
def collector() -> Iterator[str]:
    """A local OTLP collector in its own process (its CPU is not this process's); its endpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.otlp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def trace_ids_ns(calls: int = 200_000) -> tuple[float, float]:
    """ns per `trace_ids()` inside a call (tracing off), and per JSON-formatted call log line."""
    state = CallState(method="/taskapi.v1.TaskService/GetTask", client_ip="127.0.0.1", request_id="r" * 32)
    state.traceparent = TRACEPARENT
    token = bind_call(state)
    formatter = JsonFormatter()
    record = logging.LogRecord("taskapi.interceptors.logging", logging.INFO, __file__, 0, "%s", ("x",), None)
    try:
        lookup = min(timeit.repeat(rpc_logging.trace_ids, number=calls, repeat=ROUNDS)) / calls * 1e9
        line = min(timeit.repeat(lambda: formatter.format(record), number=calls // 4, repeat=ROUNDS)) / (calls // 4)
    finally:
        unbind_call(token)
    return lookup, line * 1e9


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    handler = logging.StreamHandler(io.StringIO())  # formatted and written, as in production, to memory
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("taskapi.interceptors.logging")
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.INFO)
    rpc_log.propagate = False
    huge = RateLimit(requests=10**9, window_seconds=900)  # measure the decision, never reject
    metadata = (("authorization", "Bearer user-1"), ("user-agent", "grpc-python/bench"), ("traceparent", TRACEPARENT))

    with redis_url() as url, collector() as endpoint:
        tracings = {
            sampled: Tracing(
                TracingSettings(
                    endpoint=endpoint, sampler="always_on" if sampled else "always_off", export_delay_ms=200
                ),
                component="bench",
            )
            for sampled in (False, True)
        }

        def chain(tracing: Tracing | None) -> list[grpc.ServerInterceptor]:
            metrics = Metrics(CollectorRegistry())
            tracer = tracing.tracer if tracing is not None else None
            limiter = RateLimitInterceptor(
                connect_redis(url, 250, tracer), ip=huge, user=huge, key_prefix=unique_prefix(), metrics=metrics
            )
            return make_chain(
                metrics=MetricsInterceptor(metrics),
                logging=LoggingInterceptor(),
                ratelimit=limiter,
                tracing=TracingInterceptor(tracer) if tracer is not None else None,
            )

        rows: list[tuple[str, float, float]] = []
        for _ in range(ALTERNATIONS):  # interleaved: drift on a shared box hits every variant alike
            rows.append(("off", *in_process_us(chain(None), calls, metadata)))
            with mock.patch.object(rpc_logging, "trace_ids", lambda: (None, None)):
                rows.append(("off, no log ids", *in_process_us(chain(None), calls, metadata)))
            rows.append(("on, not sampled", *in_process_us(chain(tracings[False]), calls, metadata)))
            rows.append(("on, sampled (OTLP export)", *in_process_us(chain(tracings[True]), calls, metadata)))
        for tracing in tracings.values():
            tracing.shutdown()

    best: dict[str, tuple[float, float]] = {}
    for name, cpu, wall in rows:
        old = best.get(name)
        best[name] = (min(cpu, old[0]), min(wall, old[1])) if old else (cpu, wall)
    base_cpu = best["off, no log ids"][0]
    print(f"calls per round: {calls}, rounds: {ROUNDS} x {ALTERNATIONS} (best)")
    print(f"{'chain, in process':<28} {'CPU us/call':>12} {'wall us/call':>13} {'CPU vs no log ids':>18}")
    for name, (cpu, wall) in best.items():
        print(f"{name:<28} {cpu:12.1f} {wall:13.1f} {cpu - base_cpu:+15.1f} us")
    lookup, line = trace_ids_ns()
    print(f"\ntracing off, measured alone: trace_ids() {lookup:.0f} ns/call, one JSON call log line {line:.0f} ns")


if __name__ == "__main__":
    main()
