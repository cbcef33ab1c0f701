"""Throughput and latency of the real App under a GetTask/ListTasks mix; sync vs grpc.aio.

What runs
  One App in this process: real JWT auth, the rate limiter deciding in a private
  redis-server (limits huge, so it decides every call and never rejects), the shared read
  cache, the embedded mongomock store, JSON call logs formatted and written to /dev/null.
  Seeded through the API with 4 users x 20 tasks. The load comes from a grpc.aio client in
  a spawned process (its own GIL): `concurrency` calls always in flight, 80% GetTask of a
  random task and 20% ListTasks (page of 10 or 20), each with its user's bearer token.
  Warm-up 0.5 s, then `--seconds` measured per configuration.

What is compared (issue 3: choose the concurrency model by measurement)
  sync        `App.start_replica`: grpc.server on a ThreadPoolExecutor of W workers with
              the production InterceptorChain. This is what ships.
  aio+pool    bench-only adapter: grpc.aio.server, the same servicer instances and the
              same InterceptorChain object (all layers, same order), the composed sync
              handler run in a ThreadPoolExecutor of W workers via run_in_executor.
  bare:W      reference floor: grpc.server with W workers, no chain, a no-op TaskService
              (canned responses): what grpcio + the client cost before any of our code.
  aio-inline  the same adapter, the sync handler run directly on the event loop thread:
              no thread hand-off, but every blocking Redis round trip stalls the loop, so
              calls are served strictly one at a time.

Caveats
  * The domain code is synchronous (redis-py, mongoengine/mongomock), so neither aio
    variant is "asyncio all the way down": that would mean porting the store, the cache
    and the limiter to async clients. What this measures is the transport and
    scheduling model around the same handler code, which is the decision at hand.
  * The aio adapter serves unary-unary methods only (TaskService here; no health or
    reflection), and adapts the ServicerContext for the sync chain: initial metadata is
    collected and sent from the loop before the response, aborts are replayed with
    `await context.abort(...)`. That is a few microseconds per call of extra work for aio.
  * Two cores are shared by the server, the client process and redis-server (and by
    whatever else runs on the machine): calls/s is the whole box's throughput, not the
    server's alone. "srv CPU us/call" (this process's CPU time / calls) is the steadier
    figure for comparing server cost; "cli CPU" shows when the client itself saturates.
  * Mostly cache hits: after the first read of each entry, GetTask/ListTasks are served
    from the Redis read cache prefetched in the limiter's round trip (one round trip per
    call), as in production read-heavy traffic; misses go to mongomock.

    .venv/bin/python bench/bench_server.py [--seconds 3] [--concurrency 1,8,32]
        [--models bare:16,sync:1,sync:4,sync:16,aio-inline,aio:4,aio:16] [--rounds 1]

calls/s and latencies count successful calls only; "errors" are failed calls (the replica
itself sets no cap on calls in flight: over one connection, HTTP/2 holds back calls beyond
grpc.max_concurrent_streams, and Envoy queues the rest; see docs/api.md).

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc  # noqa: E402
import support  # noqa: E402

from taskapi.server.api.task_service import TaskServicer  # noqa: E402
from taskapi.server.app import App  # noqa: E402
from taskapi.v1 import task_pb2, task_pb2_grpc  # noqa: E402

# --- the bench-only grpc.aio adapter ----------------------------------------------------


class _Aborted(Exception):
    """Raised by the context shim where grpc's sync context would raise on abort."""


class _SyncContext:
    """The slice of grpc.ServicerContext the chain and servicers use, over an aio context.

    The aio context's send_initial_metadata and abort are coroutines; the sync code cannot
    await them, so they are recorded here and replayed on the loop after the handler.
    """

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self.initial_metadata: tuple[tuple[str, str], ...] | None = None
        self.abort_status: tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]] | None = None

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def code(self) -> grpc.StatusCode | None:
        return self.abort_status[0] if self.abort_status else None

    def send_initial_metadata(self, metadata: Any) -> None:
        self.initial_metadata = tuple(metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.abort_status = (code, details, ())
        raise _Aborted()

    def abort_with_status(self, status: grpc.Status) -> None:
        self.abort_status = (status.code, status.details, tuple(status.trailing_metadata or ()))
        raise _Aborted()


class AioChainAdapter(grpc.aio.ServerInterceptor):
    """Runs the production (sync) InterceptorChain around the sync servicer methods."""

    def __init__(self, chain: grpc.ServerInterceptor, pool: futures.Executor | None) -> None:
        self._chain = chain
        self._pool = pool
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._handlers.get(details.method)
        if handler is None:
            inner = await continuation(details)
            if inner is None or not inner.unary_unary or inner.request_streaming or inner.response_streaming:
                return inner  # unary-unary only: see the module docstring
            composed = self._chain.intercept_service(lambda _d: inner, details)
            assert composed is not None and composed.unary_unary is not None  # the chain wraps, never drops
            handler = self._handlers[details.method] = grpc.unary_unary_rpc_method_handler(
                self._behavior(composed.unary_unary),
                request_deserializer=inner.request_deserializer,
                response_serializer=inner.response_serializer,
            )
        return handler

    def _behavior(
        self, sync_behavior: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        pool = self._pool

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            shim = _SyncContext(context)
            # Duck-typed: the shim has the slice of grpc.ServicerContext the chain and the
            # servicers use, not the whole abstract class.
            sync_context = cast(grpc.ServicerContext, shim)
            try:
                if pool is None:
                    response = sync_behavior(request, sync_context)
                else:
                    loop = asyncio.get_running_loop()
                    response = await loop.run_in_executor(pool, sync_behavior, request, sync_context)
            except _Aborted:
                response = None
            if shim.initial_metadata is not None:
                await context.send_initial_metadata(shim.initial_metadata)
            if shim.abort_status is not None:
                code, message, trailing = shim.abort_status
                await context.abort(code, message, trailing)
            return response

        return behavior


@dataclass
class AioReplica:
    address: str
    stop: Callable[[], None]


def start_aio_replica(app: App, workers: int | None) -> AioReplica:
    """An aio server in its own loop thread; `workers` None runs handlers on the loop."""
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aio") if workers else None
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="aio-loop")
    thread.start()

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            interceptors=[AioChainAdapter(app.interceptors[0], pool)],
            options=[("grpc.so_reuseport", 0)],
        )
        task_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(app.tasks, app.task_cache, max_message_bytes=app.settings.max_message_bytes), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if pool is not None:
            pool.shutdown()

    return AioReplica(f"127.0.0.1:{port}", stop)


# --- the measurement --------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    model: str
    concurrency: int
    calls_per_s: float  # successful calls only
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    server_cpu_us: float
    client_cpu: float  # fraction of one core


def measure(address: str, accounts: list[support.Account], model: str, concurrency: int, seconds: float) -> Row:
    ctx = multiprocessing.get_context("spawn")  # grpc does not survive fork
    receiver, sender = ctx.Pipe(duplex=False)
    kwargs: support.LoadOptions = {"concurrency": concurrency, "seconds": seconds, "warmup": 0.5}
    client = ctx.Process(target=support.load_in_process, args=(sender, address, accounts, kwargs))
    client.start()
    sender.close()
    # CPU of this (server) process from just before the client could send its first call:
    # includes the warm-up, so it is divided by warm-up calls too (estimated at the same rate).
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result: support.LoadResult = receiver.recv()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    client.join()
    rate = result.calls / result.seconds
    # Failed calls cost the server CPU too (less): they count as calls for CPU per call.
    busy_calls = max(1.0, (result.calls + result.errors) / result.seconds * min(wall, seconds + 0.5))
    latencies = sorted(result.latencies_us)
    return Row(
        model=model,
        concurrency=concurrency,
        calls_per_s=rate,
        p50_ms=support.percentile(latencies, 50) / 1000,
        p90_ms=support.percentile(latencies, 90) / 1000,
        p99_ms=support.percentile(latencies, 99) / 1000,
        errors=result.errors,
        server_cpu_us=cpu / busy_calls * 1e6,
        client_cpu=result.client_cpu_seconds / result.seconds,
    )


class _NoOpTasks(task_pb2_grpc.TaskServiceServicer):
    """The floor: what grpcio's sync server costs per call with no chain and no work."""

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        return task_pb2.Task(id=request.id, title="canned")

    def ListTasks(self, request: Any, context: grpc.ServicerContext) -> Any:
        return task_pb2.ListTasksResponse()


def start(app: App, model: str) -> tuple[str, Callable[[], object]]:
    kind, _, workers = model.partition(":")
    if kind == "bare":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=int(workers or 16)))
        # The stubs mark every RPC abstract; the real base class answers UNIMPLEMENTED for the rest.
        task_pb2_grpc.add_TaskServiceServicer_to_server(_NoOpTasks(), server)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return f"127.0.0.1:{port}", lambda: server.stop(0).wait()
    if kind == "sync":
        # Bench-only: the replica reads its pool size from the settings.
        app.settings = dataclasses.replace(app.settings, workers=int(workers))
        replica = app.start_replica(0)

        def stop() -> None:
            replica.stop(0)
            app.replicas.remove(replica)

        return replica.address, stop
    if kind == "aio":
        aio = start_aio_replica(app, int(workers))
        return aio.address, aio.stop
    if kind == "aio-inline":
        aio = start_aio_replica(app, None)
        return aio.address, aio.stop
    raise SystemExit(f"unknown model {model!r}")


def median_row(rows: list[Row]) -> Row:
    by_rate = sorted(rows, key=lambda r: r.calls_per_s)
    return by_rate[len(by_rate) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="bare:16,sync:1,sync:4,sync:16,aio-inline,aio:4,aio:16")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per configuration; the median row is shown")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")

    support.log_like_production()
    rows: list[Row] = []
    with support.redis_url() as url:
        app = App(support.bench_settings(url))
        try:
            seeder = app.start_replica(0)
            accounts = support.seed(seeder.address)
            seeder.stop(0)
            app.replicas.remove(seeder)
            for model in models:
                address, stop = start(app, model)
                try:
                    for concurrency in levels:
                        runs = [
                            measure(address, accounts, model, concurrency, args.seconds) for _ in range(args.rounds)
                        ]
                        rows.append(median_row(runs))
                        print_row(rows[-1], header=len(rows) == 1)
                finally:
                    stop()
        finally:
            app.close(grace=0)
    print()
    print_summary(rows, levels)


def print_row(row: Row, *, header: bool) -> None:
    if header:
        print(
            f"{'model':<11} {'conc':>4} {'calls/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
            f"{'errors':>6} {'srv CPU us/call':>15} {'cli CPU':>7}"
        )
    print(
        f"{row.model:<11} {row.concurrency:>4} {row.calls_per_s:>8.0f} {row.p50_ms:>7.2f} "
        f"{row.p90_ms:>7.2f} "
        f"{row.p99_ms:>7.2f} {row.errors:>6} {row.server_cpu_us:>15.0f} {row.client_cpu:>7.0%}",
        flush=True,
    )


def print_summary(rows: list[Row], levels: list[int]) -> None:
    """calls/s (p99 ms) per model and concurrency: the comparison at a glance."""
    models = list(dict.fromkeys(r.model for r in rows))
    cells = {(r.model, r.concurrency): r for r in rows}
    print(f"{'calls/s (p99 ms)':<17}" + "".join(f"{f'c={c}':>18}" for c in levels))
    for model in models:
        line = f"{model:<17}"
        for c in levels:
            r = cells.get((model, c))
            line += f"{f'{r.calls_per_s:.0f} ({r.p99_ms:.1f})':>18}" if r else f"{'-':>18}"
        print(line)
    if len(rows) > 1:
        median = statistics.median(r.server_cpu_us for r in rows)
        print(f"median server CPU per call over all rows: {median:.0f} us")


if __name__ == "__main__":
    main()
