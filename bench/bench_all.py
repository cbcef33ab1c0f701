"""Issue 14's figures in one run, each beside the no-op floors measured in the same run.

What runs
  The App with `--replicas` sync gRPC replicas behind a real Envoy, as bench_rest.py wires
  it (real JWT auth, the rate limiter deciding every call in a private redis-server, the
  shared read cache, the embedded mongomock store, JSON call logs to /dev/null), bcrypt at
  `--bcrypt-rounds` (12, the default, so the login storm costs what it does in production).
  Beside it, for the floors, a second Envoy in front of a no-op gRPC server (grpcio's sync
  server with the replicas' `--workers`, no interceptors: GetTask, ListTasks and CreateTask answer a canned
  message), the same edge configuration.

Rows (wrk, keep-alive HTTP/1.1, one request in flight per connection, `--connections`)
  mix        80 % GET /api/v1/tasks/{id}, 20 % GET /api/v1/tasks?pageSize=10, cached (issue 14's mix)
  get-cold   GET /api/v1/tasks/{id}, every read a cache miss: the store read and the cache
             fill run on every call (the bench makes the cache's lookup miss; the rest of the
             path, the planned read in the limiter's round trip included, is unchanged)
  list20     GET /api/v1/tasks?pageSize=20, cache misses as get-cold (20 items a page)
  create     POST /api/v1/tasks (a write: the store insert, the cache invalidation)
  storm      the mix again while a second wrk runs Login with the right password at
             `--storm` connections (bcrypt): the mix's figures, then the logins'
  floor-envoy  GET of an unrouted path, which Envoy answers itself (404)
  floor-noop   GET /api/v1/tasks/{id} to the no-op gRPC server behind its own Envoy
  burst      (unless --burst 0) N connections, one GetTask each at the same instant

Ratios: `x envoy` and `x noop` are the row's req/s over the floors' req/s (1.00 = as fast
as the floor); CPU per call as in bench_rest.py (server: this process, every replica and the
no-op server, measured while only that row's load runs).

    .venv/bin/python bench/bench_all.py [--replicas 1] [--seconds 5] [--connections 64]
        [--storm 16] [--burst 1000] [--bcrypt-rounds 12] [--rows storm,mix] [--explain-errors]

  --rows            only these rows (the burst runs unless --burst 0)
  --explain-errors  the edge writes its JSON access log to a file; after each row, its non-2xx
                    by (rpc, status, grpc status, response flags, details, attempts) and the
                    replicas' cluster counters that moved (retries, overflows, resets, 5xx).
                    Status 0 with flag DC: wrk closed the connection when it stopped.

Prints a table; asserts nothing. Exits 2 when wrk is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rest  # noqa: E402
import grpc  # noqa: E402
import support  # noqa: E402

from taskapi.server import affinity  # noqa: E402
from taskapi.server.app import App  # noqa: E402
from taskapi.server.config import Settings  # noqa: E402
from taskapi.server.edge import CLUSTER, Envoy  # noqa: E402
from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc  # noqa: E402
from tests.support.edge import edge_config  # noqa: E402

# One wrk thread's requests, chosen at random; `requests` is {method, path, token index, body}.
LUA = """
local built = {}
function init(args)
  for _, r in ipairs(requests) do
    local headers = {["Authorization"] = "Bearer " .. tokens[r[3]]}
    if r[4] ~= "" then headers["Content-Type"] = "application/json" end
    table.insert(built, wrk.format(r[1], r[2], headers, r[4] ~= "" and r[4] or nil))
  end
end
function request() return built[math.random(#built)] end
"""


def lua(tokens: list[str], requests: list[tuple[str, str, int, str]]) -> str:
    """A wrk script sending `requests` (method, path, 1-based token index, JSON body or "")."""
    quoted = ", ".join(json.dumps(t) for t in tokens)
    rows = ",\n  ".join(f"{{{json.dumps(m)}, {json.dumps(p)}, {n}, {json.dumps(b)}}}" for m, p, n, b in requests)
    return f"tokens = {{{quoted}}}\nrequests = {{\n  {rows}\n}}\n" + LUA


class _NoOpTasks(task_pb2_grpc.TaskServiceServicer):
    """The floor behind Envoy: grpcio's sync server with no chain and no work."""

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        return task_pb2.Task(id=request.id, title="canned")

    def ListTasks(self, request: Any, context: grpc.ServicerContext) -> Any:
        return task_pb2.ListTasksResponse()

    def CreateTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        return request.task


def start_noop(workers: int) -> tuple[grpc.Server, int]:
    # The stubs mark every RPC abstract; the real base class answers UNIMPLEMENTED for the rest.
    return support.start_tasks_server(_NoOpTasks(), workers)  # type: ignore[abstract]


def register(address: str, email: str, password: str) -> str:
    with grpc.insecure_channel(address) as channel:
        session = auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(email=email, password=password, name="Storm"), timeout=30
        )
    return str(session.access_token)


def print_row(row: bench_rest.Row, floors: dict[str, float]) -> None:
    envoy, noop = floors.get("envoy"), floors.get("noop")
    ratios = f"  x envoy {row.req_per_s / envoy:5.2f}" if envoy else ""
    ratios += f"  x noop {row.req_per_s / noop:5.2f}" if noop else ""
    print(
        f"{row.name:<12} {row.connections:>5} {row.req_per_s:>7.0f} {row.p50_ms:>7.2f} {row.p99_ms:>7.2f} "
        f"{row.non_2xx:>7}  "
        + " ".join(f"{row.us_per_call[c]:>6.0f}" for c in bench_rest.CPU_COLUMNS)
        + f"  {row.box_cores:>5.2f}{ratios}"
        + (f"  ({row.socket_errors} of the non-2xx: no response within wrk's 2 s)" if row.socket_errors else ""),
        flush=True,
    )


class ErrorTally:
    """--explain-errors: what each row's non-2xx were, from the edge's JSON access log (a file
    per Envoy, flushed every second) and the replicas' cluster counters (/stats)."""

    COUNTERS = re.compile(
        r"upstream_rq_(pending_overflow|retry_overflow|timeout|per_try_timeout|rx_reset|tx_reset|5\d\d|retry|"
        r"retry_success|cancelled|maintenance_mode|max_duration_reached)$|upstream_cx_(destroy\w*|connect_fail|"
        r"overflow|protocol_error|close_notify|none_healthy)$|circuit_breakers\.default\.\w+_open$"
    )

    def __init__(self, enabled: bool, logs: dict[int, Path]) -> None:
        self.enabled, self.logs = enabled, logs  # admin port -> access log file

    def counters(self, envoy: Envoy) -> dict[str, int]:
        body = envoy.admin_get(f"/stats?filter=^cluster[.]{CLUSTER}[.]&format=json")
        stats = json.loads(body).get("stats", [])
        prefix = f"cluster.{CLUSTER}."
        return {
            item["name"].removeprefix(prefix): int(item["value"])
            for item in stats
            if "value" in item and self.COUNTERS.search(item["name"].removeprefix(prefix))
        }

    def mark(self, envoy: Envoy) -> tuple[int, dict[str, int]]:
        if not self.enabled:
            return 0, {}
        time.sleep(1.5)  # what the previous row sent is flushed to the file
        log = self.logs[envoy.config.admin_port]
        return (log.stat().st_size if log.exists() else 0), self.counters(envoy)

    def report(self, envoy: Envoy, before: tuple[int, dict[str, int]], label: str) -> None:
        if not self.enabled:
            return
        time.sleep(1.5)  # Envoy flushes its access log every second
        offset, counters0 = before
        with open(self.logs[envoy.config.admin_port], "rb") as log:
            log.seek(offset)
            lines = [json.loads(line) for line in log.read().splitlines() if line.strip()]
        tally: dict[tuple[str, ...], int] = {}
        for entry in lines:
            if not str(entry.get("status", "")).startswith("2"):
                key = tuple(str(entry.get(k)) for k in ("rpc", "status", "grpc_status", "flags", "details", "attempts"))
                tally[key] = tally.get(key, 0) + 1
        moved = {k: v - counters0.get(k, 0) for k, v in self.counters(envoy).items() if v != counters0.get(k, 0)}
        print(f"  {label}: {len(lines)} lines, non-2xx by (rpc, status, grpc status, flags, details, attempts):")
        for key, count in sorted(tally.items(), key=lambda kv: -kv[1]):
            print(f"    {count:>6} x {' '.join(key)}")
        shown = ", ".join(f"{k} +{v}" for k, v in sorted(moved.items())) or "none"
        print(f"  cluster {CLUSTER} counters that moved: {shown}")
        failed_reads = [
            e for e in lines if not str(e.get("status", "")).startswith(("2", "0")) and "Login" not in e["rpc"]
        ]
        for entry in failed_reads[:3]:  # status 0: wrk closed the connection (at its end), not an answer
            print(f"    e.g. {json.dumps(entry)}")
        sys.stdout.flush()


HEADER = (
    f"{'row':<12} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}  "
    + " ".join(f"{c:>6}" for c in bench_rest.CPU_COLUMNS)
    + "  box   (CPU us/call per process; ratios: req/s over the floors')"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5, help="per row (wrk takes whole seconds)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--storm", type=int, default=16, help="Login connections during the storm row")
    parser.add_argument("--burst", type=int, default=1000, help="simultaneous connections, one call each (0: none)")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--envoy-workers", type=int, default=1, help="Envoy --concurrency (taskapi dev: 1)")
    parser.add_argument("--workers", type=int, default=Settings.workers, help="TASKAPI_WORKERS of each replica")
    parser.add_argument(
        "--replica-concurrency",
        type=int,
        default=0,
        help="calls Envoy sends a replica at once (0: as taskapi does, 2 per worker)",
    )
    parser.add_argument(
        "--rows",
        default="all",
        help="comma-separated rows to run (floor-envoy,floor-noop,mix,get-cold,list20,create,storm); all: every row",
    )
    parser.add_argument(
        "--explain-errors",
        action="store_true",
        help="the edge writes its JSON access log to a file: after each row, its non-2xx by "
        "(rpc, status, response flags, details, attempts) and the replicas' cluster counters that moved",
    )
    args, placement = support.start_wrk_bench(parser)
    conns, secs = args.connections, args.seconds
    with support.bench_workspace(bcrypt_rounds=args.bcrypt_rounds, workers=args.workers) as (settings, workdir):
        app = App(settings)
        noop, noop_port = start_noop(args.workers)
        try:
            replicas = [app.start_replica(0) for _ in range(args.replicas)]
            accounts = support.seed(replicas[0].address)
            email, password = f"storm-{os.urandom(4).hex()}@example.com", "bench password 123"
            storm_token = register(replicas[0].address, email, password)
            tokens = [a.token for a in accounts] + [storm_token]
            gets = [("GET", f"/api/v1/tasks/{t}", n, "") for n, a in enumerate(accounts, 1) for t in a.task_ids]
            scripts = {
                "mix": bench_rest.lua_script(accounts, 0.8),
                "get-cold": lua(tokens, gets),
                "list20": lua(tokens, [("GET", "/api/v1/tasks?pageSize=20", n, "") for n in range(1, 5)]),
                "create": lua(tokens, [("POST", "/api/v1/tasks", n, '{"title": "bench create"}') for n in range(1, 5)]),
                "login": lua(
                    tokens, [("POST", "/api/v1/auth/login", 5, json.dumps({"email": email, "password": password}))]
                ),
                "noop": lua(tokens, gets),
            }
            paths = {}
            for name, text in scripts.items():
                paths[name] = workdir / f"{name}.lua"
                paths[name].write_text(text)

            logs: dict[int, Path] = {}
            errors = ErrorTally(args.explain_errors, logs)
            selected = set(args.rows.split(",")) if args.rows != "all" else None

            def wanted(name: str) -> bool:
                return selected is None or name in selected

            def envoy_for(name: str, upstreams: list[tuple[str, int]], expect: int) -> Envoy:
                access_log = workdir / f"{name}-access.log" if args.explain_errors else Path(os.devnull)
                config = edge_config(
                    upstreams,
                    access_log=str(access_log),
                    health_check_interval_seconds=2.0,
                    replica_concurrency=args.replica_concurrency or settings.replica_concurrency,
                )
                logs[config.admin_port] = access_log
                (workdir / name).mkdir()
                log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the run's directory
                envoy = Envoy(
                    config, workdir / name, stdout=subprocess.DEVNULL, stderr=log, concurrency=args.envoy_workers
                )
                envoy.__enter__()
                envoy.wait_healthy(replicas=expect)
                return envoy

            edge = envoy_for("edge", [(settings.grpc_host, r.port) for r in replicas], args.replicas)
            noop_edge = envoy_for("noop-edge", [("127.0.0.1", noop_port)], 1)
            try:
                assert edge.process is not None and noop_edge.process is not None and app.redis is not None
                redis_pid = int(app.redis.info("server")["process_id"])
                pids = {"envoy": edge.process.pid, "redis": redis_pid}
                noop_pids = {"envoy": noop_edge.process.pid, "redis": redis_pid}
                rest = edge.rest_url.rstrip("/").removesuffix("/api/v1")
                noop_rest = noop_edge.rest_url.rstrip("/").removesuffix("/api/v1")
                print(
                    f"replicas={args.replicas} envoy workers={args.envoy_workers} seconds={secs} conns={conns} "
                    f"bcrypt rounds={args.bcrypt_rounds} cores={os.cpu_count()} {placement}",
                    flush=True,
                )
                bench_rest.run_wrk("warmup", edge, pids, rest, paths["mix"], 8, 1)
                floors: dict[str, float] = {}
                printed: dict[str, bench_rest.Row] = {}

                def run(
                    name: str, envoy: Envoy, these: dict[str, int], url: str, wrk_lua: Path | None
                ) -> bench_rest.Row:
                    before = errors.mark(envoy)
                    row = bench_rest.run_wrk(name, envoy, these, url, wrk_lua, conns, secs)
                    if name != "floor-envoy":  # every one of its answers is a 404 by design
                        errors.report(envoy, before, row.name)
                    printed[name] = row
                    return row

                print(HEADER)
                if wanted("floor-envoy"):
                    floors["envoy"] = run("floor-envoy", edge, pids, edge.rest_url + "no-such-thing", None).req_per_s
                if wanted("floor-noop"):
                    floors["noop"] = run("floor-noop", noop_edge, noop_pids, noop_rest, paths["noop"]).req_per_s
                for name in ("floor-envoy", "floor-noop"):
                    if name in printed:
                        print_row(printed[name], floors)
                if wanted("mix"):
                    print_row(run("mix", edge, pids, rest, paths["mix"]), floors)
                read = app.task_cache.read

                def miss(owner: str, entry: str) -> tuple[bytes | None, str | None]:
                    return None, read(owner, entry)[1]  # what a cold entry reads: the fill still runs

                app.task_cache.read = miss  # type: ignore[method-assign]  # bench-only: every lookup misses
                try:
                    for name in ("get-cold", "list20"):
                        if wanted(name):
                            print_row(run(name, edge, pids, rest, paths[name]), floors)
                finally:
                    del app.task_cache.read  # the class's method again
                if wanted("create"):
                    print_row(run("create", edge, pids, rest, paths["create"]), floors)
                if wanted("storm"):
                    storm_secs, login_lua = f"{secs + 1}s", str(paths["login"])
                    storm_cmd = ["wrk", "-t", "1", "-c", str(args.storm), "-d", storm_secs, "-s", login_lua]
                    before = errors.mark(edge)
                    with affinity.off_serving():
                        storm = subprocess.Popen([*storm_cmd, rest], stdout=subprocess.PIPE, text=True)
                    time.sleep(0.5)  # the storm under way before the mix starts
                    mixed = bench_rest.run_wrk("storm", edge, pids, rest, paths["mix"], conns, secs)
                    out, _ = storm.communicate()
                    print_row(mixed, floors)
                    attempts = int(bench_rest._wrk_field(r"(\d+) requests in", out))
                    refused = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
                    print(
                        f"storm logins: {(attempts - refused) / (secs + 1):.1f}/s signed in at {args.storm} "
                        f"connections, {refused} non-2xx (503: shed, every bcrypt slot busy; 429: a Login limit)",
                        flush=True,
                    )
                    errors.report(edge, before, "storm (the mix and the logins)")
                if args.burst:
                    bench_rest.run_burst(edge, accounts, args.burst)
            finally:
                noop_edge.__exit__(None, None, None)
                edge.__exit__(None, None, None)
        finally:
            noop.stop(0)
            app.close(grace=0)


if __name__ == "__main__":
    main()
