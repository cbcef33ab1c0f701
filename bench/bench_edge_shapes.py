"""What Envoy's CPU per GetTask depends on: the response's body, its headers, or neither.

A cached GetTask through the edge costs Envoy more than the no-op floor's GetTask through the
same configuration. This replays, with no work on the server side, what the real replica sends
(its Task message and its response headers, captured from one real call) in four shapes, each
from a no-op gRPC server behind an Envoy of its own, and the real replica behind a fifth:

  bare     Task(id, title) and no response headers (bench_all.py's floor-noop)
  body     the real Task message, no response headers
  headers  Task(id, title) with the real response headers (request id, RateLimit, ...)
  both     the real Task and the real headers: the real response, no work behind it
  paced    bare, but each call waits (sleeping, no CPU) so it runs at about the real
           replica's rate: Envoy's cost per call also depends on how many calls each
           wake-up of its event loop finds, which this separates from the response's shape
  real     the App's replica (auth, the rate limiter in Redis, the cache)

The shapes run `--rounds` times, interleaved; Envoy's CPU per call is printed per round, then
each shape's median beside the bare floor's. wrk as bench_rest.py runs it (keep-alive
HTTP/1.1, `--connections`); prints a table, asserts nothing.

    .venv/bin/python bench/bench_edge_shapes.py [--seconds 4] [--connections 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rest  # noqa: E402
import grpc  # noqa: E402
import support  # noqa: E402

from taskapi.server.app import App  # noqa: E402
from taskapi.server.edge import Envoy  # noqa: E402
from taskapi.v1 import task_pb2, task_pb2_grpc  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402

SHAPES = ("bare", "body", "headers", "both", "paced", "real")


class _Replay(task_pb2_grpc.TaskServiceServicer):
    """GetTask answered with a fixed message and fixed initial metadata, no interceptors."""

    def __init__(self, task: Any | None, headers: tuple[tuple[str, str], ...]) -> None:
        self.task, self.headers = task, headers
        self.delay = 0.0  # seconds each call sleeps (the paced shape)

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.delay:
            time.sleep(self.delay)
        if self.headers:
            context.send_initial_metadata(self.headers)
        return self.task if self.task is not None else task_pb2.Task(id=request.id, title="canned")


def replay_of(task: Any | None, headers: tuple[tuple[str, str], ...]) -> _Replay:
    # The stubs mark every RPC abstract; the real base class answers UNIMPLEMENTED for the rest.
    return _Replay(task, headers)  # type: ignore[abstract]


def capture(address: str, account: support.Account) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """One real GetTask's message and initial metadata (what Envoy turns into REST headers)."""
    with grpc.insecure_channel(address) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        task, call = stub.GetTask.with_call(
            task_pb2.GetTaskRequest(id=account.task_ids[0]),
            metadata=(("authorization", f"Bearer {account.token}"),),
            timeout=10,
        )
        headers = tuple((k, v) for k, v in call.initial_metadata() if isinstance(v, str))
    return task, headers


def envoy_pid(envoy: Envoy) -> int:
    assert envoy.process is not None
    return envoy.process.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="TASKAPI_WORKERS of the replica and each replay")
    args, placement = support.start_wrk_bench(parser)
    with support.bench_workspace(workers=args.workers) as (settings, workdir):
        app = App(settings)
        servers: list[grpc.Server] = []
        envoys: dict[str, Envoy] = {}
        try:
            replica = app.start_replica(0)
            accounts = support.seed(replica.address)
            task, headers = capture(replica.address, accounts[0])
            print(f"captured: a {task.ByteSize()}-byte Task, headers {[k for k, _ in headers]}")
            ports = {"real": replica.port}
            replays = {
                "bare": replay_of(None, ()),
                "body": replay_of(task, ()),
                "headers": replay_of(None, headers),
                "both": replay_of(task, headers),
                "paced": replay_of(None, ()),
            }
            for shape, replay in replays.items():
                server, ports[shape] = support.start_tasks_server(replay, args.workers)
                servers.append(server)
            for shape in SHAPES:
                config = edge_config(
                    [("127.0.0.1", ports[shape])],
                    access_log=os.devnull,
                    health_check_interval_seconds=2.0,
                    replica_concurrency=settings.replica_concurrency,
                )
                (workdir / shape).mkdir()
                envoy = Envoy(config, workdir / shape, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                envoy.__enter__()
                envoys[shape] = envoy
                envoy.wait_healthy(replicas=1)
            # Every shape GETs the same task ids with the same tokens; only the real one reads them.
            script = workdir / "get.lua"
            script.write_text(bench_rest.lua_script(accounts, 1.0))
            assert app.redis is not None
            redis_pid = int(app.redis.info("server")["process_id"])
            print(f"conns={args.connections} seconds={args.seconds} rounds={args.rounds} {placement}")
            print(f"{'round':<6} " + " ".join(f"{s:>16}" for s in SHAPES) + "   (req/s, Envoy CPU us/call)")
            results: dict[str, list[bench_rest.Row]] = {s: [] for s in SHAPES}
            for shape in SHAPES:  # warm every Envoy and server once
                envoy = envoys[shape]
                rest = envoy.rest_url.rstrip("/").removesuffix("/api/v1")
                bench_rest.run_wrk("warmup", envoy, {"envoy": envoy_pid(envoy)}, rest, script, 8, 1)
            # A first guess; then each round paces to the real replica's last rate. Each worker
            # holds a call for 1/rate per worker in all, of which the bare call's own time is
            # the rest.
            replays["paced"].delay = 0.001
            for number in range(1, args.rounds + 1):
                cells = []
                if number > 1:
                    real_s, bare_s = results["real"][-1].req_per_s, results["bare"][-1].req_per_s
                    replays["paced"].delay = max(0.0, args.workers / real_s - args.workers / bare_s)
                for shape in SHAPES:
                    envoy = envoys[shape]
                    rest = envoy.rest_url.rstrip("/").removesuffix("/api/v1")
                    pids = {"envoy": envoy_pid(envoy), "redis": redis_pid}
                    row = bench_rest.run_wrk(shape, envoy, pids, rest, script, args.connections, args.seconds)
                    if row.non_2xx:
                        print(f"  {shape}: {row.non_2xx} non-2xx", flush=True)
                    results[shape].append(row)
                    cells.append(f"{row.req_per_s:7.0f} {row.us_per_call['envoy']:5.0f} us")
                print(f"{number:<6} " + " ".join(f"{c:>16}" for c in cells), flush=True)
            bare = statistics.median(r.us_per_call["envoy"] for r in results["bare"])
            print("\nmedian Envoy CPU per call, and over the bare floor's:")
            for shape in SHAPES:
                envoy_us = statistics.median(r.us_per_call["envoy"] for r in results[shape])
                req_s = statistics.median(r.req_per_s for r in results[shape])
                print(f"  {shape:<8} {envoy_us:5.0f} us  x bare {envoy_us / bare:4.2f}  ({req_s:,.0f} req/s)")
        finally:
            for envoy in envoys.values():
                envoy.__exit__(None, None, None)
            for server in servers:
                server.stop(0)
            app.close(grace=0)


if __name__ == "__main__":
    main()
