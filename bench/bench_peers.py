"""Task API beside the FastAPI peer (bench/peer_fastapi.py) on the same box, in the same run.

Issue 14 asks for Task API "at least as fast as the FastAPI peer despite the extra Envoy hop",
with figures for that peer measured on another machine. Absolute figures move with the box
(the same commit's mix ran 1,800-2,400 req/s on one machine and 3,500 on another), so this bench runs
both on this box and quotes them side by side, rounds alternated.

What runs
  Task API as bench_rest.py runs it: one replica in this process (real JWT auth, the rate
  limiter deciding every call in a private redis-server, the shared read cache, the embedded
  store, JSON call logs to /dev/null), behind a real Envoy (one worker) transcoding REST.
  The peer: uvicorn (one worker, uvloop, httptools) serving the same two REST paths with the
  same work per call (bench/peer_fastapi.py), its data the very tasks Task API serves (their
  REST JSON, fetched through Envoy), its cache and limits in the same redis-server.
  Placement as `taskapi dev` (--cpus dev): Task API's replica and the peer on the same CPU,
  Envoy, Redis and wrk on the other.

The load: bench_rest.py's mix (80 % GET /api/v1/tasks/{id}, 20 % GET /api/v1/tasks?pageSize=10,
cached, each with its owner's bearer token), wrk at `--connections`, `--seconds` a row, each
round running both services (which goes first alternates).

Columns: req/s, p50/p99, non-2xx as bench_rest.py; CPU per call (µs) of the service
(Task API: its replica plus Envoy; the peer: its process), of Redis, and of all of them (not
wrk, the load); box cores. The closing lines: medians over the rounds and Task API over the peer.

    .venv/bin/python bench/bench_peers.py [--rounds 3] [--seconds 5] [--connections 64]

Prints a table; asserts nothing. Exits 2 when wrk is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rest  # noqa: E402
import jwt  # noqa: E402
import peer_fastapi  # noqa: E402
import support  # noqa: E402

from taskapi.server.app import App  # noqa: E402
from taskapi.server.edge import Envoy  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402

HEADER = (
    f"{'service':<8} {'round':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}"
    f"  CPU us/call: {'service':>7} {'redis':>6} {'all':>6}  {'box cores':>9}"
)


def get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def peer_data(rest_url: str, accounts: list[support.Account]) -> dict[str, list[dict[str, Any]]]:
    """Each user's tasks as Task API's REST answers them, keyed by the user id in their token."""
    users = {}
    for account in accounts:
        user = jwt.decode(account.token, options={"verify_signature": False})["sub"]
        users[user] = [get_json(f"{rest_url}tasks/{task_id}", account.token) for task_id in account.task_ids]
    return users


def peer_accounts(
    users: dict[str, list[dict[str, Any]]], accounts: list[support.Account], secret: str
) -> list[support.Account]:
    """The same users and tasks (in the same order, so the load is the same), with peer tokens."""
    now = int(time.time())
    claims = {"iat": now, "exp": now + 3600, "iss": peer_fastapi.ISSUER, "aud": peer_fastapi.AUDIENCE}
    return [
        support.Account(jwt.encode({**claims, "sub": user}, secret, algorithm="HS256"), account.task_ids)
        for user, account in zip(users, accounts, strict=True)
    ]


def wait_up(url: str, process: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the peer exited ({process.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"the peer did not answer {url} within {seconds} s")


def service_us(name: str, row: bench_rest.Row) -> float:
    cpu = row.us_per_call
    return cpu["server"] + cpu["envoy"] if name == "taskapi" else cpu["peer"]


# The figures compared, each read off a row of the named service, with its unit.
FIGURES: dict[str, tuple[Callable[[str, bench_rest.Row], float], str]] = {
    "req/s": (lambda _, row: row.req_per_s, ""),
    "p99": (lambda _, row: row.p99_ms, " ms"),
    "service": (service_us, " us/call"),
    "all": (lambda name, row: service_us(name, row) + row.us_per_call["redis"], " us/call"),
}


def print_row(name: str, n: int, row: bench_rest.Row) -> None:
    service, everything = FIGURES["service"][0](name, row), FIGURES["all"][0](name, row)
    print(
        f"{name:<8} {n:>5} {row.req_per_s:>7.0f} {row.p50_ms:>7.2f} {row.p99_ms:>7.2f} {row.non_2xx:>7}"
        f"  {'':12} {service:>7.0f} {row.us_per_call['redis']:>6.0f} {everything:>6.0f}  {row.box_cores:>9.2f}",
        flush=True,
    )


def summary(rows: dict[str, list[bench_rest.Row]]) -> None:
    print(f"medians of {len(rows['taskapi'])} rounds, and Task API over the peer:")
    for figure, (read, unit) in FIGURES.items():
        ours, theirs = (statistics.median(read(name, row) for row in rows[name]) for name in ("taskapi", "fastapi"))
        print(f"  {figure:<8} taskapi {ours:>8.1f}{unit}  fastapi {theirs:>8.1f}{unit}  ratio {ours / theirs:.2f}")


def start_peer(
    workdir: Path, redis: str, users: dict[str, list[dict[str, Any]]]
) -> tuple[subprocess.Popen[bytes], str, str]:
    """The peer in its own process, from this thread (so on the serving CPU, as the replica):
    the process, its URL and the secret its tokens are signed with."""
    data = workdir / "peer.json"
    data.write_text(json.dumps(users))
    secret = os.urandom(32).hex()
    # Bound here on port 0 and handed over: no port is picked free and released meanwhile.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fd = listener.fileno()
        command = [sys.executable, str(Path(peer_fastapi.__file__)), "--fd", str(fd), "--data", str(data)]
        env = {**os.environ, "REDIS_URL": redis, "PEER_JWT_SECRET": secret}
        peer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(fd,))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    wait_up(f"{url}/healthz", peer)
    return peer, url, secret


# What one service's rows run against: its edge (None: wrk talks to it directly), the
# processes whose CPU is counted, its base URL and the accounts (tokens) of its load.
Target = tuple[Envoy | None, dict[str, int], str, list[support.Account]]


def run_rounds(targets: dict[str, Target], workdir: Path, rounds: int, connections: int, seconds: int) -> None:
    scripts = {}
    for name, (edge, pids, base, owners) in targets.items():
        scripts[name] = workdir / f"{name}.lua"
        scripts[name].write_text(bench_rest.lua_script(owners, 0.8))
        bench_rest.run_wrk("warmup", edge, pids, base, scripts[name], 8, 1)  # caches filled, connections up
    print(HEADER)
    rows: dict[str, list[bench_rest.Row]] = {name: [] for name in targets}
    for n in range(1, rounds + 1):
        for name in ("taskapi", "fastapi") if n % 2 else ("fastapi", "taskapi"):  # which goes first alternates
            edge, pids, base, _ = targets[name]
            row = bench_rest.run_wrk(name, edge, pids, base, scripts[name], connections, seconds)
            rows[name].append(row)
            print_row(name, n, row)
    summary(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per row (wrk takes whole seconds)")
    parser.add_argument("--connections", type=int, default=64)
    args, placement = support.start_wrk_bench(parser)
    with support.bench_workspace() as (settings, workdir):
        app = App(settings)
        peer: subprocess.Popen[bytes] | None = None
        try:
            replica = app.start_replica(0)
            accounts = support.seed(replica.address)
            config = edge_config([(settings.grpc_host, replica.port)], access_log=os.devnull)
            with open(workdir / "envoy.log", "wb") as envoy_log:
                envoy = Envoy(config, workdir, stdout=subprocess.DEVNULL, stderr=envoy_log, concurrency=1)
                with envoy:
                    envoy.wait_healthy(replicas=1)
                    users = peer_data(envoy.rest_url, accounts)
                    peer, peer_url, secret = start_peer(workdir, settings.redis_url, users)
                    theirs = peer_accounts(users, accounts, secret)
                    first = get_json(f"{peer_url}/api/v1/tasks/{accounts[0].task_ids[0]}", theirs[0].token)
                    print(
                        f"seconds={args.seconds} conns={args.connections} cores={os.cpu_count()} {placement} "
                        f"tasks={sum(len(a.task_ids) for a in accounts)} "
                        f"same task JSON from both: {first == next(iter(users.values()))[0]}",
                        flush=True,
                    )
                    assert envoy.process is not None and app.redis is not None  # both running by now
                    redis_pid = int(app.redis.info("server")["process_id"])
                    edge_pids = {"envoy": envoy.process.pid, "redis": redis_pid}
                    targets: dict[str, Target] = {
                        "taskapi": (envoy, edge_pids, envoy.rest_url.removesuffix("api/v1/"), accounts),
                        "fastapi": (None, {"peer": peer.pid, "redis": redis_pid}, peer_url, theirs),
                    }
                    run_rounds(targets, workdir, args.rounds, args.connections, args.seconds)
        finally:
            if peer is not None:
                peer.terminate()
                peer.wait(10)
            app.close(grace=0)


if __name__ == "__main__":
    main()
