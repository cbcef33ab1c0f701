"""Shared helpers for the bench scripts: Redis, settings, seed data, a load client.

Bench-only: nothing under server/ or interceptors/ imports this. The load client runs in
its own process (spawned, never forked: grpc does not survive a fork) so it does not share
the server's GIL; `time.process_time()` deltas of the server process give its CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repo root: server, interceptors, tests' helpers

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from taskapi.interceptors.logging import JsonFormatter  # noqa: E402
from taskapi.server import affinity  # noqa: E402
from taskapi.server.config import Settings  # noqa: E402
from taskapi.server.domain.limits import RateLimit  # noqa: E402
from taskapi.v1 import task_pb2_grpc  # noqa: E402
from tests.conftest import RedisProcess, make_settings  # noqa: E402

# The limiter still runs its Redis decision on every call, but never rejects.
HUGE = RateLimit(requests=10**9, window_seconds=900)


def add_cpus_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpus",
        choices=("dev", "any"),
        default="dev",
        help="dev: this process (the replicas, any no-op server) on one CPU, and Envoy, Redis and wrk on "
        "the others, as `taskapi dev` runs (server/affinity.py); any: wherever the OS puts them",
    )


def place_threads(cpus: str) -> str:
    """Pin this process as `taskapi dev` pins itself (`--cpus dev`), before any thread or child
    starts; returns what it did, for the banner."""
    serving = affinity.dev_serving() if cpus == "dev" else None
    if serving is None:
        return "cpus=any"
    affinity.pin_process(serving)
    here, rest, _ = affinity.described()
    return f"cpus=server on {here}, envoy/redis/wrk on {rest}"


@contextmanager
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server on a free port for the run."""
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


def bench_settings(url: str, **overrides: object) -> Settings:
    """The tests' settings (cheap bcrypt, fixed secret) with limits that never reject."""
    limits = {"rate_limit_ip": HUGE, "rate_limit_user": HUGE, "rate_limit_auth": HUGE}
    return make_settings(url, **(limits | overrides))


@contextmanager
def bench_workspace(**overrides: object) -> Iterator[tuple[Settings, Path]]:
    """bench_settings(overrides) on REDIS_URL or a private redis-server, and a scratch folder:
    both gone after the run."""
    with redis_url() as url, tempfile.TemporaryDirectory() as tmp:
        yield bench_settings(url, **overrides), Path(tmp)


def start_wrk_bench(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, str]:
    """How every wrk bench starts: `--cpus` added and the arguments parsed, wrk required, this
    process placed before any thread starts (place_threads: its banner text is returned with
    the arguments) and call logs formatted and written as in production."""
    add_cpus_option(parser)
    args = parser.parse_args()
    require_wrk()
    placement = place_threads(args.cpus)
    log_like_production()
    return args, placement


def log_like_production() -> None:
    """Every call's JSON line is formatted and written, as `taskapi serve` does, but to /dev/null."""
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def quiet_logging() -> None:
    handler = logging.StreamHandler(io.StringIO())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def start_tasks_server(servicer: Any, workers: int) -> tuple[grpc.Server, int]:
    """A bare grpcio sync server (no interceptors) with `servicer` as its TaskService and a
    health service answering SERVING (Envoy's health checks), on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    task_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@dataclass(frozen=True)
class Account:
    token: str
    task_ids: tuple[str, ...]


def seed(address: str, *, users: int = 4, tasks_per_user: int = 20) -> list[Account]:
    """Register users and create their tasks through the API (so the data is what it serves)."""
    import grpc

    from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc

    accounts = []
    with grpc.insecure_channel(address) as channel:
        auth, tasks = auth_pb2_grpc.AuthServiceStub(channel), task_pb2_grpc.TaskServiceStub(channel)
        for n in range(users):
            email = f"bench-{n}-{os.urandom(4).hex()}@example.com"
            session = auth.Register(
                auth_pb2.RegisterRequest(email=email, password="bench password 123", name=f"Bench {n}"),
                timeout=10,
            )  # an AuthSession
            metadata = (("authorization", f"Bearer {session.access_token}"),)
            ids = []
            for i in range(tasks_per_user):
                task = task_pb2.Task(
                    title=f"task {i}",
                    description="a realistic-ish description " * 4,
                    status=task_pb2.PENDING,
                    priority=(task_pb2.LOW, task_pb2.MEDIUM, task_pb2.HIGH)[i % 3],
                    tags=["bench", f"t{i % 5}"],
                )
                request = task_pb2.CreateTaskRequest(task=task)
                created = tasks.CreateTask(request, metadata=metadata, timeout=10)
                ids.append(created.id)  # CreateTask returns the Task
            accounts.append(Account(session.access_token, tuple(ids)))
    return accounts


# --- the load client (runs in a spawned process) -----------------------------------------


@dataclass(frozen=True)
class LoadResult:
    calls: int  # successful calls
    errors: int  # failed calls, not in `calls` nor in the latencies
    seconds: float
    latencies_us: list[float]  # a sample, in microseconds
    client_cpu_seconds: float


def run_load(
    address: str,
    accounts: list[Account],
    *,
    concurrency: int,
    seconds: float,
    get_share: float = 0.8,
    warmup: float = 0.5,
) -> LoadResult:
    """`concurrency` calls in flight from one grpc.aio client (one process, one channel).

    An aio client keeps many calls in flight at ~one coroutine each, far cheaper than
    one thread per call; it is still Python, so its CPU is reported next to the figures.
    """
    return asyncio.run(_load(address, accounts, concurrency, seconds, get_share, warmup))


async def _load(
    address: str, accounts: list[Account], concurrency: int, seconds: float, get_share: float, warmup: float
) -> LoadResult:
    import grpc

    from taskapi.v1 import task_pb2, task_pb2_grpc

    # Prebuilt requests: the client's own per-call cost stays small and constant.
    gets = [
        (task_pb2.GetTaskRequest(id=task_id), (("authorization", f"Bearer {a.token}"),))
        for a in accounts
        for task_id in a.task_ids
    ]
    lists = [
        (task_pb2.ListTasksRequest(page_size=size), (("authorization", f"Bearer {a.token}"),))
        for a in accounts
        for size in (10, 20)
    ]
    latencies: list[float] = []
    counts = [0, 0]  # calls, errors
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        await channel.channel_ready()
        measuring = False
        stop_at = time.perf_counter() + warmup + seconds

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                call: Awaitable[object]
                if rng.random() < get_share:
                    get, metadata = rng.choice(gets)
                    call = stub.GetTask(get, metadata=metadata, timeout=10)
                else:
                    listing, metadata = rng.choice(lists)
                    call = stub.ListTasks(listing, metadata=metadata, timeout=10)
                try:
                    await call
                    ok = True
                except grpc.RpcError:
                    ok = False
                if measuring:  # failed calls (e.g. a deadline passed) apart
                    if ok:
                        counts[0] += 1
                        latencies.append((time.perf_counter() - now) * 1e6)
                    else:
                        counts[1] += 1

        tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return LoadResult(counts[0], counts[1], elapsed, latencies, cpu)


class LoadOptions(TypedDict):
    """run_load's keyword arguments, as load_in_process passes them on."""

    concurrency: int
    seconds: float
    warmup: float


def load_in_process(conn: Connection, address: str, accounts: list[Account], kwargs: LoadOptions) -> None:
    """multiprocessing target: run the load and send the LoadResult back."""
    quiet_logging()
    try:
        conn.send(run_load(address, accounts, **kwargs))
    finally:
        conn.close()


def require_wrk() -> None:
    """Exit with the install hint when Debian's wrk (the REST load generator) is missing."""
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        sys.exit(2)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc/<pid>/stat (no psutil needed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15 of stat(5)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat (every process, ours or not)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
