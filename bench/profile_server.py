"""Where a call's server CPU goes: the real App under load, sampled with py-spy.

The real App (JWT auth, rate limiter on a private redis-server, embedded mongomock
store, JSON logs written to /dev/null) serves an 80/20 GetTask/ListTasks mix from a
client in a spawned process; py-spy samples this (server) process meanwhile and the
script prints the functions with the most samples, inclusive and self. Profiling tool
only: `.venv/bin/pip install py-spy` first (it is not a project dependency).

    .venv/bin/python bench/profile_server.py [seconds] [concurrency] [--native] [--all-threads]
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

from taskapi.server.app import App  # noqa: E402

TOP = 35
ALL_THREADS = "--all-threads" in sys.argv  # also gRPC's polling thread, Redis, metrics


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = float(args[0]) if args else 6.0
    concurrency = int(args[1]) if len(args) > 1 else 8
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    support.log_like_production()
    with support.redis_url() as url:
        app = App(support.bench_settings(url))
        try:
            replica = app.start_replica(0)
            accounts = support.seed(replica.address)
            ctx = multiprocessing.get_context("spawn")
            receiver, sender = ctx.Pipe(duplex=False)
            kwargs: support.LoadOptions = {"concurrency": concurrency, "seconds": seconds + 1.0, "warmup": 1.0}
            client = ctx.Process(target=support.load_in_process, args=(sender, replica.address, accounts, kwargs))
            client.start()
            time.sleep(1.5)  # past the client's start-up and warm-up
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "stacks.txt"
                command = [
                    py_spy,
                    "record",
                    "--pid",
                    str(os.getpid()),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "500",
                    "--gil",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ]
                if "--native" in sys.argv:
                    command.remove("--nonblocking")
                    command.append("--native")
                cpu0 = time.process_time()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cpu = time.process_time() - cpu0
                stacks = out.read_text()
            result = receiver.recv()
            client.join()
        finally:
            app.close(grace=0)
    per_call = cpu / max(1, result.calls) * 1e6 * (result.seconds / seconds)
    print(
        f"client: {result.calls / result.seconds:.0f} calls/s at concurrency {concurrency}, "
        f"errors {result.errors}; server CPU {per_call:.0f} us/call (approx)"
    )
    report(stacks)


def report(stacks: str) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        # Only the gRPC worker threads' Python work: idle pollers and waits are not a call's cost.
        in_handler = any("_unary_response_in_pool" in f or "_stream_response_in_pool" in f for f in frames)
        if not ALL_THREADS and not in_handler:
            continue
        total += count
        for frame in set(_short(f) for f in frames):
            inclusive[frame] += count
        own[_short(frames[-1])] += count
    print(f"\n{total} samples holding the GIL in {'all threads' if ALL_THREADS else 'gRPC handler threads'}")
    print(f"\n-- inclusive (top {TOP}) --")
    for frame, count in inclusive.most_common(TOP):
        print(f"{100 * count / total:6.1f}%  {frame}")
    print(f"\n-- self (top {TOP}) --")
    for frame, count in own.most_common(TOP):
        print(f"{100 * count / total:6.1f}%  {frame}")


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`; lines merged."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


if __name__ == "__main__":
    main()
