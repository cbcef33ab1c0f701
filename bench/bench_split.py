"""GetTask during a login storm: the single layout against the split (docs/services.md).

What runs, per layout, in the same run (alternated `--rounds` times)
  single  one `taskapi serve` process serving every service (one replica: the task reads and
          the logins share its worker threads, its GIL and its password-hashing slots)
  split   `taskapi serve --services auth,users` and `taskapi serve --services tasks`, two
          processes (each its own embedded store)
  Both behind a real Envoy (tests.support.edge: one cluster, or one per service), a private
  redis-server, real JWT auth and rate limiting (limits that never reject), JSON call logs to
  /dev/null, bcrypt at BCRYPT_ROUNDS (12 by default: ~230 ms of CPU per login here).

The load, through Envoy's gRPC port, each client in a spawned process of its own
  reads   `--readers` GetTask calls in flight (grpc.aio; tasks.support.run_load, 100 % GetTask
          of 4 users x 20 tasks)
  storm   `--storm` Login calls in flight with a correct password, in a loop: enough to keep
          every bcrypt slot busy (BCRYPT_CONCURRENCY=2 per process, as the default)
  Phases: `quiet` (reads alone), then `storm` (reads while the storm runs), `--seconds` each.

Cores: the split's promise is that a login storm lands on the account services' machines.
On one box that is emulated by CPU affinity (`--pin`, the default): both layouts' server
processes get the same cores in total, all of them for the single process; split, the
last core for the account process and the rest for the task process. Envoy, Redis and the
load clients run unpinned on all cores, as does anything else on the machine.

Columns: GetTask req/s, p50 and p99 (ms), GetTask errors; logins/s completed and refused
(shed as UNAVAILABLE when the hashing queue is full) during the storm.

    .venv/bin/python bench/bench_split.py [--seconds 5] [--readers 8] [--storm 16] [--rounds 3] [--no-pin]

Prints a table; asserts nothing.
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

from tests.conftest import TEST_SECRET  # noqa: E402
from tests.support.dev_process import TASKAPI  # noqa: E402
from tests.support.edge import running_edge  # noqa: E402

STORM_PASSWORD = "bench storm password"


@dataclass(frozen=True)
class StormResult:
    logins: int
    refused: int
    seconds: float


def storm(address: str, email: str, concurrency: int, seconds: float) -> StormResult:
    return asyncio.run(_storm(address, email, concurrency, seconds))


async def _storm(address: str, email: str, concurrency: int, seconds: float) -> StormResult:
    import grpc

    from taskapi.v1 import auth_pb2, auth_pb2_grpc

    counts = [0, 0]
    request = auth_pb2.LoginRequest(email=email, password=STORM_PASSWORD)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await channel.channel_ready()
        start = time.perf_counter()
        stop_at = start + seconds

        async def one() -> None:
            while time.perf_counter() < stop_at:
                try:
                    await stub.Login(request, timeout=15)
                    counts[0] += 1
                except grpc.RpcError:
                    counts[1] += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
        return StormResult(counts[0], counts[1], time.perf_counter() - start)


def storm_in_process(conn: Connection, address: str, email: str, concurrency: int, seconds: float) -> None:
    support.quiet_logging()
    try:
        conn.send(storm(address, email, concurrency, seconds))
    finally:
        conn.close()


def reads_in_process(
    conn: Connection, address: str, accounts: list[support.Account], seconds: float, readers: int
) -> None:
    support.quiet_logging()
    try:
        conn.send(support.run_load(address, accounts, concurrency=readers, seconds=seconds, get_share=1.0))
    finally:
        conn.close()


def _serve(services: str, env: dict[str, str], cpus: set[int] | None) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [str(TASKAPI), "serve", "--services", services],
        env=env | {"LOG_FORMAT": "text"},  # one line per call, formatted and written, as in production
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Before exec, so every thread of the server inherits it.
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "serving gRPC on" in line:
            port = int(line.split("serving gRPC on ")[1].split()[0].rsplit(":", 1)[1])
            # The rest of its output is the per-call log: read to nowhere on a thread.
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, port
    raise RuntimeError(f"taskapi serve --services {services} exited with {process.wait()}")


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


@contextmanager
def running_layout(layout: str, redis_url: str, workdir: Path, *, pin: bool) -> Iterator[str]:
    """The layout's service processes behind Envoy; yields Envoy's gRPC target.

    `pin` stands in for machines of their own on this one box: the server processes get the
    same cores in both layouts, all of them for the single process, and split one core for
    the account process, the others for the task process (Envoy, Redis and the clients are
    not pinned)."""
    cores = sorted(os.sched_getaffinity(0))
    pinned = pin and len(cores) >= 2
    huge = f"{support.HUGE.requests}/{support.HUGE.window_seconds}"
    env = dict(os.environ) | {
        "JWT_SECRET": TEST_SECRET,
        "REDIS_URL": redis_url,
        "JOBS_NAMESPACE": f"bench-split-{os.urandom(4).hex()}",
        "RATE_LIMIT_IP": huge,
        "RATE_LIMIT_USER": huge,
        "RATE_LIMIT_AUTH": huge,
        "TASKAPI_GRPC_PORT": "0",
        "TASKAPI_METRICS_PORT": "0",
        "TASKAPI_DRAIN_SECONDS": "0",
        "TASKAPI_SHUTDOWN_GRACE_SECONDS": "1",
    }
    with ExitStack() as stack:
        processes = []
        if layout == "single":
            process, port = _serve("all", env, set(cores) if pinned else None)
            processes.append(process)
            upstreams, by_service = [("127.0.0.1", port)], {}
        else:
            accounts, account_port = _serve("auth,users", env, set(cores[-1:]) if pinned else None)
            tasks, task_port = _serve("tasks", env, set(cores[:-1]) if pinned else None)
            processes += [accounts, tasks]
            account = [("127.0.0.1", account_port)]
            upstreams, by_service = [], {"auth": account, "users": account, "tasks": [("127.0.0.1", task_port)]}
        for process in processes:
            stack.callback(process.wait, 30)
            stack.callback(process.terminate)
        envoy = stack.enter_context(running_edge(upstreams, workdir / layout, service_upstreams=by_service))
        yield envoy.grpc_target


@dataclass(frozen=True)
class Row:
    layout: str
    phase: str
    reads: support.LoadResult
    storm: StormResult | None


def measure(layout: str, redis_url: str, workdir: Path, args: argparse.Namespace) -> list[Row]:
    import grpc

    from taskapi.v1 import auth_pb2, auth_pb2_grpc

    ctx = multiprocessing.get_context("spawn")  # grpc does not survive fork
    rows = []
    with running_layout(layout, redis_url, workdir, pin=args.pin) as address:
        accounts = support.seed(address)
        email = f"storm-{os.urandom(4).hex()}@example.com"
        with grpc.insecure_channel(address) as channel:
            auth_pb2_grpc.AuthServiceStub(channel).Register(
                auth_pb2.RegisterRequest(email=email, password=STORM_PASSWORD, name="Storm"), timeout=15
            )
        for phase in ("quiet", "storm"):
            receive, send = ctx.Pipe(duplex=False)
            reader = ctx.Process(target=reads_in_process, args=(send, address, accounts, args.seconds, args.readers))
            storm_result = None
            if phase == "storm":
                storm_receive, storm_send = ctx.Pipe(duplex=False)
                stormer = ctx.Process(
                    target=storm_in_process, args=(storm_send, address, email, args.storm, args.seconds + 2.0)
                )
                stormer.start()
                time.sleep(1.0)  # the storm is up before the reads' warm-up ends
            reader.start()
            reads = receive.recv()
            reader.join()
            if phase == "storm":
                storm_result = storm_receive.recv()
                stormer.join()
            rows.append(Row(layout, phase, reads, storm_result))
    return rows


def print_rows(rows: list[Row]) -> None:
    head = f"{'layout':<8} {'phase':<6} {'GetTask/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    print(f"{head} {'logins/s':>9} {'refused':>8}")
    for row in rows:
        latencies = sorted(row.reads.latencies_us)
        storm_cols = (
            f"{row.storm.logins / row.storm.seconds:>9.1f} {row.storm.refused:>8}"
            if row.storm
            else f"{'-':>9} {'-':>8}"
        )
        print(
            f"{row.layout:<8} {row.phase:<6} {row.reads.calls / row.reads.seconds:>10.0f} "
            f"{support.percentile(latencies, 50) / 1000:>8.1f} {support.percentile(latencies, 99) / 1000:>8.1f} "
            f"{row.reads.errors:>7} {storm_cols}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--readers", type=int, default=8, help="GetTask calls in flight")
    parser.add_argument("--storm", type=int, default=16, help="Login calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="single, split, alternated this many times")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split the server processes' cores as machines of their own would (default on)",
    )
    args = parser.parse_args()
    support.quiet_logging()
    print(f"BCRYPT_ROUNDS={os.environ.get('BCRYPT_ROUNDS', '12')}, {os.cpu_count()} cores", flush=True)
    rows: list[Row] = []
    with support.redis_url() as url, tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            for layout in ("single", "split"):
                rows += measure(layout, url, Path(workdir), args)
    print_rows(rows)
    print("\nmedian of the rounds:")
    print_rows(medians(rows))


def medians(rows: list[Row]) -> list[Row]:
    """Per layout and phase, the round with the median GetTask p99 (a whole row, not a mix)."""
    chosen = []
    for layout in ("single", "split"):
        for phase in ("quiet", "storm"):
            same = sorted(
                (r for r in rows if (r.layout, r.phase) == (layout, phase)),
                key=lambda r: support.percentile(sorted(r.reads.latencies_us), 99),
            )
            if same:
                chosen.append(same[len(same) // 2])
    return chosen


if __name__ == "__main__":
    main()
