"""grpcio's own floor: a no-op TaskService on the sync server vs grpc.aio, through Envoy and direct.

What runs (all in this process, one model loaded at a time)
  sync   grpc.server on a ThreadPoolExecutor of `--workers` threads (16), no interceptors:
         GetTask/ListTasks answer a canned message (bench_all.py's floor-noop server).
  aio    grpc.aio.server on an event loop in a thread of this process, the same canned
         answers from `async def` handlers, no interceptors.
  Each has the grpc health service (Envoy health-checks it) and its own Envoy in front,
  the edge configuration the product uses (tests/support/edge.py), access log to /dev/null.

Loads, per model, interleaved `--rounds` times (sync, aio, sync, aio, ...)
  envoy   wrk, `--connections` keep-alive HTTP/1.1 connections, GET /api/v1/tasks/{id}
          (transcoded to GetTask), one request in flight per connection
  direct  a grpc.aio client in a spawned process (bench/support.py's load client): 80 %
          GetTask, 20 % ListTasks, `--connections` calls in flight on one channel

"srv us/call" is this process's CPU (the server under test: the other one is idle) over the
calls; with Envoy also Envoy's CPU per call. What this answers (issue 14): what grpcio costs
per call before any of the project's code runs, in each serving model.

    .venv/bin/python bench/bench_floors.py [--seconds 4] [--connections 64] [--rounds 2]

Prints a table; asserts nothing. Exits 2 when wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_all  # noqa: E402
import bench_rest  # noqa: E402
import grpc  # noqa: E402
import support  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from taskapi.server.edge import Envoy  # noqa: E402
from taskapi.v1 import task_pb2, task_pb2_grpc  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402


class _AioNoOpTasks(task_pb2_grpc.TaskServiceServicer):
    async def GetTask(self, request: Any, context: Any) -> Any:
        return task_pb2.Task(id=request.id, title="canned")

    async def ListTasks(self, request: Any, context: Any) -> Any:
        return task_pb2.ListTasksResponse()


class AioNoOp:
    """A grpc.aio no-op server on its own loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        task_pb2_grpc.add_TaskServiceServicer_to_server(_AioNoOpTasks(), self.server)  # type: ignore[abstract]
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def direct(port: int, accounts: list[support.Account], conns: int, secs: float) -> tuple[float, float, float]:
    """(calls/s, server CPU us/call, p99 ms) from the spawned aio load client."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    options: support.LoadOptions = {"concurrency": conns, "seconds": secs, "warmup": 0.5}
    proc = ctx.Process(target=support.load_in_process, args=(child, f"127.0.0.1:{port}", accounts, options))
    cpu0 = time.process_time()  # the server is idle until the client connects
    proc.start()
    result = parent.recv()
    cpu = time.process_time() - cpu0
    proc.join()
    rate = result.calls / result.seconds
    lat = sorted(result.latencies_us)
    # The warm-up's calls are served too (not counted by the client): at the measured rate.
    return rate, cpu * 1e6 / max(1.0, rate * (result.seconds + 0.5)), support.percentile(lat, 99) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--envoy-workers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="the sync server's threads")
    args = parser.parse_args()
    support.require_wrk()
    support.quiet_logging()
    # Canned servers ignore tokens and ids: any will do.
    accounts = [support.Account("t", tuple(f"{n:024x}" for n in range(20)))]
    sync_server, sync_port = bench_all.start_noop(args.workers)
    aio = AioNoOp()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        lua = workdir / "get.lua"
        lua.write_text(bench_all.lua(["t"], [("GET", f"/api/v1/tasks/{t}", 1, "") for t in accounts[0].task_ids]))
        edges: dict[str, Envoy] = {}
        try:
            for name, port in (("sync", sync_port), ("aio", aio.port)):
                config = edge_config([("127.0.0.1", port)], access_log=os.devnull, health_check_interval_seconds=2.0)
                (workdir / name).mkdir()
                envoy = Envoy(
                    config,
                    workdir / name,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    concurrency=args.envoy_workers,
                )
                envoy.__enter__()
                edges[name] = envoy
                envoy.wait_healthy(replicas=1)
            ports = {"sync": sync_port, "aio": aio.port}
            print(f"seconds={args.seconds} conns={args.connections} sync workers={args.workers} cores={os.cpu_count()}")
            print(
                f"{'model':<6} {'load':<7} {'req/s':>7} {'p99 ms':>7} "
                f"{'srv us/call':>11} {'envoy us/call':>13} {'box':>5}"
            )
            for rnd in range(args.rounds):
                for name in ("sync", "aio"):
                    edge = edges[name]
                    assert edge.process is not None
                    rest = edge.rest_url.rstrip("/").removesuffix("/api/v1")
                    if rnd == 0:
                        bench_rest.run_wrk("warmup", edge, {"envoy": edge.process.pid}, rest, lua, 8, 1)
                    row = bench_rest.run_wrk(
                        "envoy", edge, {"envoy": edge.process.pid}, rest, lua, args.connections, args.seconds
                    )
                    print(
                        f"{name:<6} {'envoy':<7} {row.req_per_s:>7.0f} {row.p99_ms:>7.2f} "
                        f"{row.us_per_call['server']:>11.0f} {row.us_per_call['envoy']:>13.0f} {row.box_cores:>5.2f}"
                        f"  non-2xx {row.non_2xx}",
                        flush=True,
                    )
                    box0, t0 = support.machine_busy_seconds(), time.perf_counter()
                    rate, us, p99 = direct(ports[name], accounts, args.connections, args.seconds)
                    box = (support.machine_busy_seconds() - box0) / (time.perf_counter() - t0)
                    print(
                        f"{name:<6} {'direct':<7} {rate:>7.0f} {p99:>7.2f} {us:>11.0f} {'-':>13} {box:>5.2f}",
                        flush=True,
                    )
        finally:
            for envoy in edges.values():
                envoy.__exit__(None, None, None)
            sync_server.stop(0)
            aio.stop()


if __name__ == "__main__":
    main()
