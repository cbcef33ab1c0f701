"""The change feed: event latency across replicas, idle watchers per replica, and the read mix
with 1,000 idle watchers attached.

    .venv/bin/python bench/bench_watch.py [--watchers 1000] [--writes 200] [--seconds 5]

Two replicas of one App (one Redis). Latency: a watcher on replica B's watch server, writes
through replica A; the time from just before CreateTask is sent to the change arriving (so it
includes the write itself). Watchers: a child process opens `--watchers` streams (5 per user,
the default per-user limit) to replica A's watch server and holds them; the server's RSS
before and after gives memory per watcher. Read mix: bench/support.run_load (80/20
GetTask/ListTasks) against replica A, alone and with the watchers attached.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import support

from taskapi.server.app import App
from taskapi.v1 import task_pb2, task_pb2_grpc

PER_USER = 5


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def latency(app: App, writes: int) -> list[float]:
    a, b = app.replicas[0], app.replicas[1]
    (account,) = support.seed(a.address, users=1, tasks_per_user=0)
    metadata = (("authorization", f"Bearer {account.token}"),)
    arrived: dict[str, float] = {}
    ready = threading.Event()
    with grpc.insecure_channel(b.watch_address) as watch_channel, grpc.insecure_channel(a.address) as channel:
        watch = task_pb2_grpc.TaskServiceStub(watch_channel)
        stream = watch.WatchTasks(task_pb2.WatchTasksRequest(), metadata=metadata)

        def follow() -> None:
            try:
                for change in stream:
                    ready.set()
                    if change.kind:
                        arrived[change.task.id] = time.perf_counter()
            except grpc.RpcError:
                pass  # cancelled at the end

        threading.Thread(target=follow, daemon=True).start()
        ready.wait(10)
        tasks = task_pb2_grpc.TaskServiceStub(channel)
        sent: dict[str, float] = {}
        for n in range(writes):
            started = time.perf_counter()
            task = tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title=f"w{n}")), metadata=metadata)
            sent[task.id] = started
            time.sleep(0.01)
        deadline = time.time() + 5
        while len(arrived) < len(sent) and time.time() < deadline:
            time.sleep(0.01)
        stream.cancel()
    return sorted((arrived[i] - sent[i]) * 1000 for i in sent if i in arrived)


def hold_watchers(conn: Connection, address: str, tokens: list[str]) -> None:
    """Child process: one stream per token, each waiting for its first heartbeat; then hold."""
    support.quiet_logging()

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = task_pb2_grpc.TaskServiceStub(channel)
            calls = [
                stub.WatchTasks(task_pb2.WatchTasksRequest(), metadata=(("authorization", f"Bearer {t}"),))
                for t in tokens
            ]
            opened = 0
            for call in calls:
                try:
                    await call.read()
                    opened += 1
                except grpc.RpcError:
                    pass
            conn.send(opened)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
            for call in calls:
                call.cancel()

    asyncio.run(main())


def read_mix(address: str, accounts: list[support.Account], seconds: float) -> support.LoadResult:
    parent, child = multiprocessing.Pipe()
    options: support.LoadOptions = {"concurrency": 16, "seconds": seconds, "warmup": 0.5}
    process = multiprocessing.Process(target=support.load_in_process, args=(child, address, accounts, options))
    process.start()
    result: support.LoadResult = parent.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    support.quiet_logging()
    multiprocessing.set_start_method("spawn")
    with support.redis_url() as url:
        app = App(support.bench_settings(url, watchers_per_replica=args.watchers + 100))
        try:
            a = app.start_replica(0)
            app.start_replica(0)
            lat = latency(app, args.writes)
            print(
                f"event latency, write through A -> watcher on B ({len(lat)}/{args.writes} arrived): "
                f"p50 {support.percentile(lat, 50):.2f} ms, p99 {support.percentile(lat, 99):.2f} ms, "
                f"max {lat[-1]:.2f} ms"
            )
            readers = support.seed(a.address, users=4, tasks_per_user=20)
            alone = read_mix(a.address, readers, args.seconds)
            watchers = support.seed(a.address, users=(args.watchers + PER_USER - 1) // PER_USER, tasks_per_user=0)
            tokens = [w.token for w in watchers for _ in range(PER_USER)][: args.watchers]
            before = rss_kib()
            parent, child = multiprocessing.Pipe()
            holder = multiprocessing.Process(target=hold_watchers, args=(child, a.watch_address, tokens))
            holder.start()
            opened = parent.recv()
            time.sleep(1.0)
            after = rss_kib()
            assert a.watch is not None
            held = a.watch.servicer.watchers
            print(
                f"watchers held on replica A: {held} (opened {opened}/{len(tokens)}); server RSS +{after - before} KiB "
                f"= {(after - before) / max(held, 1):.1f} KiB per watcher"
            )
            attached = read_mix(a.address, readers, args.seconds)
            for name, result in (("no watchers", alone), (f"{held} idle watchers", attached)):
                lats = sorted(result.latencies_us)
                p50, p99 = support.percentile(lats, 50) / 1000, support.percentile(lats, 99) / 1000
                print(
                    f"read mix, {name}: {result.calls / result.seconds:.0f} calls/s, "
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                    f"errors {result.errors}"
                )
            parent.send("stop")
            holder.join(10)
        finally:
            app.close(grace=1.0)


if __name__ == "__main__":
    main()
