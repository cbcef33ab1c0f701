"""REST throughput and latency through the real Envoy edge, driven by `wrk`.

What runs
  One App in this process with `--replicas` sync gRPC replicas (they share this process's
  GIL), the same as `taskapi dev`: real JWT auth, the rate limiter deciding in a private
  redis-server (limits huge: it decides every call, never rejects), the shared read cache,
  the embedded mongomock store, JSON call logs formatted and written to /dev/null. In
  front, a real Envoy (server/edge.py, `--envoy-workers` threads, JSON access log to
  /dev/null) transcoding JSON REST to gRPC. Seeded through gRPC with 4 users x 20 tasks.

The load
  `wrk` (C, its own process) with a Lua script: 80% `GET /api/v1/tasks/{id}` of a random
  task, 20% `GET /api/v1/tasks?pageSize=10`, each with the owner's bearer token; keep-alive
  HTTP/1.1 connections, one request in flight per connection. A 1 s warm-up fills the
  read cache, then `--seconds` per connection count.

  floor   the same wrk against `GET /api/v1/no-such-thing`, which Envoy answers itself
          (404 from the transcoder, `reject_unknown_method`): Envoy's cost with no upstream.
          Every one of its responses is non-2xx by design.

Columns
  req/s, p50/p99 (wrk --latency), non-2xx (wrk's "Non-2xx or 3xx responses" + socket errors)
  CPU us/call   CPU time delta / requests, per process: server (this process: every replica
                and its Redis client work), envoy and redis (utime+stime from /proc/<pid>/stat;
                redis's pid from INFO), wrk (RUSAGE_CHILDREN once reaped)
  srv cores     this process's CPU / wall time: near 1.00, the shared GIL is the ceiling
  box cores     all cores' busy time / wall time (of os.cpu_count()): includes anything else
                running on the machine
  up/req        requests Envoy sent upstream / requests (1.00: no retries; a bit more when
                wrk stops with requests in flight; 0 for the floor)

    .venv/bin/python bench/bench_rest.py [--replicas 2] [--seconds 3] [--connections 1,8,32]
        [--envoy-workers 1] [--get-share 0.8] [--no-floor] [--burst 1000] [--edge-sse-ids none]

  burst   (--burst N) N connections opened at once, then one GetTask on each at the same
          instant: the count per status (only 200s and 503s with Retry-After expected; Envoy
          queues what the replicas cannot run at once and sheds what its queue cannot hold).

Prints a table; asserts nothing. Exits 2 when wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

from taskapi.server import affinity  # noqa: E402
from taskapi.server.app import App  # noqa: E402
from taskapi.server.edge import CLUSTER, Envoy  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402

# Formatted for one wrk thread in init(); `requests` (path, index into `tokens`) is filled in by lua_script().
LUA = """
local gets, lists = {}, {}
function init(args)
  for _, r in ipairs(requests) do
    local req = wrk.format("GET", r[1], {["Authorization"] = "Bearer " .. tokens[r[2]]})
    table.insert(r[1]:find("?", 1, true) and lists or gets, req)
  end
end
function request()
  if math.random() < get_share then return gets[math.random(#gets)] end
  return lists[math.random(#lists)]
end
"""


def lua_script(accounts: list[support.Account], get_share: float) -> str:
    """The mix: each user's tasks by id and their first page, with their token (Lua is 1-based)."""
    tokens = ", ".join(f'"{a.token}"' for a in accounts)
    pairs = [(f"/api/v1/tasks/{t}", n) for n, a in enumerate(accounts, 1) for t in a.task_ids]
    pairs += [("/api/v1/tasks?pageSize=10", n) for n in range(1, len(accounts) + 1)]
    rows = ",\n  ".join(f'{{"{path}", {n}}}' for path, n in pairs)
    return f"get_share = {get_share}\ntokens = {{{tokens}}}\nrequests = {{\n  {rows}\n}}\n" + LUA


@dataclass(frozen=True)
class Row:
    name: str
    connections: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    us_per_call: dict[str, float]  # CPU per request: server (this process), envoy, redis, wrk
    server_cores: float  # this process's CPU / wall time: ~1.0 is one GIL's worth
    box_cores: float
    upstream_per_req: float
    socket_errors: int = 0  # of non_2xx: responses wrk never got (its 2 s timeout) or failed connections


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _wrk_field(pattern: str, out: str) -> str:
    match = re.search(pattern, out, re.M)
    if match is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{out}")
    return match.group(1)


def upstream_total(envoy: Envoy | None) -> int:
    if envoy is None:  # a service with no edge in front (bench_peers.py's peer)
        return 0
    body = envoy.admin_get(f"/stats?filter=^cluster.{CLUSTER}.upstream_rq_total$")
    return int(body.split(":")[1]) if ":" in body else 0


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once reaped (Envoy is not, until the end)
    return {
        "server": time.process_time(),
        **{name: support.proc_cpu_seconds(pid) for name, pid in pids.items()},
        "wrk": children.ru_utime + children.ru_stime,
        "box": support.machine_busy_seconds(),
    }


def run_wrk(
    name: str, envoy: Envoy | None, pids: dict[str, int], url: str, lua: Path | None, conns: int, secs: int
) -> Row:
    cmd = ["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{secs}s", "--latency", url]
    if lua is not None:
        cmd[1:1] = ["-s", str(lua)]
    cpu0, up0, wall0 = _cpu(pids), upstream_total(envoy), time.perf_counter()
    with affinity.off_serving():  # off the server's CPU when it is pinned, like Envoy
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - wall0
    cpu = {k: v - cpu0[k] for k, v in _cpu(pids).items()}
    up = upstream_total(envoy) - up0
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out = done.stdout
    requests = int(_wrk_field(r"(\d+) requests in", out))
    non_2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    # Socket errors: wrk gives up on a response after its 2 s timeout, or a connection failed.
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Row(
        name=name,
        connections=conns,
        req_per_s=float(_wrk_field(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_wrk_field(r"^\s*50%\s+(\S+)", out)),
        p99_ms=_ms(_wrk_field(r"^\s*99%\s+(\S+)", out)),
        non_2xx=non_2xx + socket_errors,
        socket_errors=socket_errors,
        us_per_call={k: v * 1e6 / max(1, requests) for k, v in cpu.items() if k != "box"},
        server_cores=cpu["server"] / wall,
        box_cores=cpu["box"] / wall,
        upstream_per_req=up / max(1, requests),
    )


CPU_COLUMNS = ("server", "envoy", "redis", "wrk")
HEADER = (
    f"{'load':<6} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}  CPU us/call:"
    + "".join(f" {c:>6}" for c in CPU_COLUMNS)
    + f"  {'srv cores':>9} {'box cores':>9} {'up/req':>6}"
)


def print_row(r: Row) -> None:
    print(
        f"{r.name:<6} {r.connections:>5} {r.req_per_s:>7.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.non_2xx:>7} "
        f"{'':12}"
        + "".join(f" {r.us_per_call[c]:>6.0f}" for c in CPU_COLUMNS)
        + f"  {r.server_cores:>9.2f} {r.box_cores:>9.2f} {r.upstream_per_req:>6.2f}",
        flush=True,
    )


async def _one_burst_request(
    host: str, port: int, request: bytes, start: asyncio.Event, results: list[tuple[int, bool, float]]
) -> None:
    """Connect, wait for every other connection, send one request, read the status line and
    headers: (status, has Retry-After, seconds from the start); status 0 for a socket error."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        results.append((0, False, 0.0))
        return
    try:
        await start.wait()
        began = time.perf_counter()
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        status = int(head.split(b" ", 2)[1])
        results.append((status, b"\r\nretry-after:" in head.lower(), time.perf_counter() - began))
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        results.append((0, False, 0.0))
    finally:
        writer.close()


def run_burst(envoy: Envoy, accounts: list[support.Account], connections: int) -> None:
    """`connections` clients connect, then all send one GetTask at the same instant."""
    host, port = "127.0.0.1", envoy.config.rest_port
    requests = [
        f"GET /api/v1/tasks/{account.task_ids[i % len(account.task_ids)]} HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {account.token}\r\nConnection: close\r\n\r\n".encode()
        for i, account in ((i, accounts[i % len(accounts)]) for i in range(connections))
    ]

    async def burst() -> list[tuple[int, bool, float]]:
        start, results = asyncio.Event(), []  # type: ignore[var-annotated]
        tasks = [asyncio.create_task(_one_burst_request(host, port, r, start, results)) for r in requests]
        await asyncio.sleep(1.0)  # every connection open (Envoy accepts them before any request)
        start.set()
        await asyncio.gather(*tasks)
        return results

    results = asyncio.run(burst())
    by_status: dict[int, int] = {}
    for status, _, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    shed = [r for r in results if r[0] == 503]
    times = sorted(r[2] for r in results if r[0] == 200)
    print(
        f"burst {connections} connections: "
        + ", ".join(f"{count} x {status or 'socket error'}" for status, count in sorted(by_status.items()))
        + f"; 503s with Retry-After: {sum(1 for r in shed if r[1])}/{len(shed)}"
        + (f"; 200s p50 {support.percentile(times, 50) * 1e3:.0f} ms, max {times[-1] * 1e3:.0f} ms" if times else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=3, help="per row (wrk takes whole seconds)")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--envoy-workers", type=int, default=1, help="Envoy --concurrency (taskapi dev: 1)")
    parser.add_argument("--get-share", type=float, default=0.8, help="GetTask share of the mix; the rest ListTasks")
    parser.add_argument("--no-floor", action="store_true", help="skip the Envoy-only 404 rows")
    parser.add_argument("--burst", type=int, default=0, help="then this many simultaneous connections, one call each")
    parser.add_argument(
        "--edge-tracing",
        choices=("default", "none"),
        default="default",
        help="default: Envoy's tracer as deployed without a collector (unsampled trace contexts); "
        "none: no tracer at all, to measure what the default costs",
    )
    parser.add_argument(
        "--edge-sse-ids",
        choices=("default", "none"),
        default="default",
        help="default: the SSE id filter in the chain as deployed (it runs only on the watch route); "
        "none: no such filter, to show the REST routes do not pay for it",
    )
    args, placement = support.start_wrk_bench(parser)
    levels = [int(c) for c in args.connections.split(",")]
    with support.bench_workspace() as (settings, workdir):
        app = App(settings)
        try:
            replicas = [app.start_replica(0) for _ in range(args.replicas)]
            accounts = support.seed(replicas[0].address)
            lua = workdir / "mix.lua"
            lua.write_text(lua_script(accounts, args.get_share))
            config = edge_config(
                [(settings.grpc_host, r.port) for r in replicas],
                access_log=os.devnull,
                health_check_interval_seconds=2.0,
                trace_context=args.edge_tracing == "default",
                # As deployed: the watch route and its SSE id filter are in the config.
                watch_upstreams=[(settings.grpc_host, r.watch.port) for r in replicas if r.watch is not None],
                sse_event_ids=args.edge_sse_ids == "default",
            )
            with open(workdir / "envoy.log", "wb") as envoy_log:
                envoy = Envoy(
                    config, workdir, stdout=subprocess.DEVNULL, stderr=envoy_log, concurrency=args.envoy_workers
                )
                with envoy:
                    envoy.wait_healthy(replicas=args.replicas)
                    print(
                        f"replicas={args.replicas} envoy workers={args.envoy_workers} seconds={args.seconds} "
                        f"get share={args.get_share} edge tracing={args.edge_tracing} sse ids={args.edge_sse_ids} "
                        f"cores={os.cpu_count()} {placement} tasks={sum(len(a.task_ids) for a in accounts)}",
                        flush=True,
                    )
                    assert envoy.process is not None and app.redis is not None  # both running by now
                    pids = {"envoy": envoy.process.pid, "redis": int(app.redis.info("server")["process_id"])}
                    rest = envoy.rest_url.rstrip("/").removesuffix("/api/v1")
                    run_wrk("warmup", envoy, pids, rest, lua, 8, 1)
                    print(HEADER)
                    for conns in levels:
                        print_row(run_wrk("rest", envoy, pids, rest, lua, conns, args.seconds))
                    if not args.no_floor:
                        for conns in levels:
                            floor_url = envoy.rest_url + "no-such-thing"
                            print_row(run_wrk("floor", envoy, pids, floor_url, None, conns, args.seconds))
                    if args.burst:
                        run_burst(envoy, accounts, args.burst)
        finally:
            app.close(grace=0)


if __name__ == "__main__":
    main()
