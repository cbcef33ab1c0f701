"""What the SSE `id:` lines (envoy/sse_event_ids.lua on the watch route) cost Envoy per event.

    .venv/bin/python bench/bench_sse.py [--watchers 50] [--writes 200] [--envoy-workers 2]

One replica (its watch server) behind two Envoys at once, rendered alike but for
EdgeConfig.sse_event_ids: "ids" runs the script on GET /api/v1/tasks:watch, "plain" has no
such filter at all. Each Envoy carries `--watchers` SSE streams of one user (asyncio HTTP/1.1
readers in this process); `--writes` CreateTasks go straight to the replica over gRPC (never
through either Envoy), so both Envoys stream the same events during the same seconds and
their CPU (utime+stime from /proc/<pid>/stat) differs by what the script does. Prints, per
Envoy, events received, events with an `id:` line, and Envoy CPU per event; then the
difference, the script's cost per event. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

from taskapi.server.app import App  # noqa: E402
from taskapi.server.edge import Envoy  # noqa: E402
from taskapi.v1 import task_pb2, task_pb2_grpc  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402


@dataclass
class Tally:
    events: int = 0
    with_id: int = 0


async def follow(port: int, token: str, tally: Tally, opened: asyncio.Event, stop: asyncio.Event) -> None:
    """One SSE stream: count events (blank-line ends) and `id:` lines until `stop`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/tasks:watch HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    await writer.drain()
    while (await reader.readline()) not in (b"\r\n", b""):  # the response's headers
        pass
    read = asyncio.ensure_future(reader.readline())
    stopped = asyncio.ensure_future(stop.wait())
    while True:
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped in done:
            read.cancel()
            break
        line = read.result()
        if not line:
            break
        if line.startswith(b"id: "):
            tally.with_id += 1
        elif line.startswith(b"data: "):
            tally.events += 1
            opened.set()
        read = asyncio.ensure_future(reader.readline())
    writer.close()


async def run(envoys: dict[str, Envoy], grpc_address: str, token: str, watchers: int, writes: int) -> None:
    tallies = {name: Tally() for name in envoys}
    stop = asyncio.Event()
    followers = []
    for name, envoy in envoys.items():
        for _ in range(watchers):
            opened = asyncio.Event()
            task = asyncio.ensure_future(follow(envoy.config.rest_port, token, tallies[name], opened, stop))
            followers.append(task)
            await asyncio.wait_for(opened.wait(), 10)  # its first heartbeat: the stream is up
    await asyncio.sleep(0.5)
    pids = {name: envoy.process.pid for name, envoy in envoys.items() if envoy.process is not None}
    before = {name: (support.proc_cpu_seconds(pid), tallies[name].events) for name, pid in pids.items()}
    wall = time.perf_counter()
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        for n in range(writes):
            await stub.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title=f"sse {n}")), metadata=metadata)
    expected = {name: before[name][1] + watchers * writes for name in envoys}
    deadline = time.monotonic() + 30
    while any(tallies[n].events < expected[n] for n in envoys) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - wall
    per_event = {}
    for name, pid in pids.items():
        cpu = support.proc_cpu_seconds(pid) - before[name][0]
        events = tallies[name].events - before[name][1]
        per_event[name] = cpu * 1e6 / max(events, 1)
        print(
            f"{name:<6} events {events:>6} (expected {watchers * writes}), with id: {tallies[name].with_id:>6} "
            f"of {tallies[name].events}, envoy CPU {cpu * 1000:.0f} ms = {per_event[name]:.1f} us/event"
        )
    print(f"the id script: {per_event['ids'] - per_event['plain']:+.1f} us of Envoy CPU per event ({wall:.1f} s wall)")
    stop.set()
    await asyncio.gather(*followers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=50, help="SSE streams per Envoy (one user)")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--envoy-workers", type=int, default=2)
    args = parser.parse_args()
    support.quiet_logging()
    with support.redis_url() as url, tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        settings = support.bench_settings(
            url, watchers_per_user=2 * args.watchers + 10, watchers_per_replica=2 * args.watchers + 10
        )
        app = App(settings)
        stack.callback(app.close, grace=0)
        replica = app.start_replica(0)
        assert replica.watch is not None
        (account,) = support.seed(replica.address, users=1, tasks_per_user=0)
        envoys: dict[str, Envoy] = {}
        for name, ids in (("ids", True), ("plain", False)):
            workdir = Path(tmp) / name
            workdir.mkdir()
            config = edge_config(
                [(settings.grpc_host, replica.port)],
                access_log=os.devnull,
                watch_upstreams=[(settings.grpc_host, replica.watch.port)],
                sse_event_ids=ids,
            )
            envoy = Envoy(
                config, workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, concurrency=args.envoy_workers
            )
            stack.enter_context(envoy)
            envoy.wait_healthy(replicas=1)
            envoys[name] = envoy
        print(f"watchers={args.watchers} per Envoy, writes={args.writes}, envoy workers={args.envoy_workers}")
        asyncio.run(run(envoys, replica.address, account.token, args.watchers, args.writes))


if __name__ == "__main__":
    main()
