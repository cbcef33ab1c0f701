"""`taskapi dev`: the whole stack on one machine, for development and demos.

    taskapi dev [--split] [--replicas N] [--rest-port P] [--grpc-port P] [--admin-port P]
                [--metrics-port P] [--cors-origin ORIGIN ...] [--listen ADDRESS]
                [--admin-email EMAIL]

Starts, in order:
  1. Redis: `REDIS_URL` when set, else a throw-away `redis-server` on a free port;
  2. SMTP: `SMTP_URL` when set, else a local sink (dev/mailsink.py) that shows each
     message on the console and keeps it as an .eml file in the stack's folder;
  3. N gRPC server replicas (default 1, chosen by measurement: bench/README.md "Dev
     topology") in this process, sharing one App, so they share one embedded data set
     (mongomock), one metrics endpoint and one Redis;
  4. a job worker in this process (the one `taskapi worker` runs), taking the jobs
     the App's outbox relay queues: a new user's welcome email arrives at once;
  5. a real Envoy in front of them (server/edge.py): JSON REST and gRPC.
With --split, step 3 is two processes instead (dev/split.py): `taskapi serve --services
auth,users` and `taskapi serve --services tasks`, each with its own embedded store, and
Envoy routes each service to a cluster of its own; the worker still runs here.
On a machine with two or more CPUs (and without --split) this process, the replicas and the
worker, runs on the last CPU, Envoy and Redis on the others, password hashing on any
(server/affinity.py; TASKAPI_CPUS names the replicas' CPUs instead).
Waits until Envoy's health checks pass for every replica, prints where to reach
the stack, and on Ctrl-C or SIGTERM stops Envoy, the worker (after the jobs in
hand), drains the replicas, closes the app and stops the sink and its Redis, in
that order. Port 0 picks any free port.

The console shows one readable line per call (the server's call log; LOG_FORMAT=json
for JSON lines) and no health checks; Envoy's JSON access log goes to a file in the
stack's working directory, named in the start-up banner.

Configuration of the server itself comes from the environment (server.config);
the flags here only shape the local stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import http.server
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from taskapi.server import affinity
from taskapi.server.dev.split import ChildFailed, SplitServices, split_services
from taskapi.server.edge import EdgeConfig, Envoy

if TYPE_CHECKING:
    from taskapi.server.app import App
    from taskapi.server.config import Settings

log = logging.getLogger(__name__)

DEFAULT_REST_PORT = 8080
DEFAULT_GRPC_PORT = 8081
DEFAULT_ADMIN_PORT = 9901
DEFAULT_WEB_PORT = 3000
# Replicas in this process share one GIL: a second one adds no parallelism, only a second
# server's threads contending for it (~20 % more server CPU per call on a 2-core machine,
# no more throughput: bench/README.md "Dev topology"). `--replicas 2` shows balancing.
DEFAULT_REPLICAS = 1
# Dev-only: the browser pages are served from the checkout (server/dev/ -> the repo root).
CLIENTS_DIR = Path(__file__).resolve().parents[2] / "clients"
# The docs page's renderer: Swagger UI from npm (package.json), served from node_modules as is.
SWAGGER_UI_DIR = CLIENTS_DIR.parent / "node_modules" / "swagger-ui-dist"
SWAGGER_UI_PATH = "/openapi/vendor/swagger-ui/"
READY_TIMEOUT_SECONDS = 60.0


class DevError(Exception):
    """A problem the user can fix (a port in use, a missing binary): printed, exit status 1."""


class _RedisExited(Exception):
    """The local redis-server exited before answering (its port taken meanwhile, say)."""


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the dev stack until Ctrl-C/SIGTERM; returns the process exit status."""
    out = out or sys.stdout
    args = _parser().parse_args(list(argv) if argv is not None else None)
    stop = threading.Event()
    restore = _on_signals(stop)
    try:
        run(args, stop, out)
    except DevError as exc:
        print(f"taskapi dev: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        restore()
    return 0


def run(args: argparse.Namespace, stop: threading.Event, out: TextIO) -> None:
    """Start the stack, report where it is, block until `stop` is set, tear down."""
    from taskapi.server import worker
    from taskapi.server.app import App  # the server proper; imported late to keep `--help` fast
    from taskapi.server.config import Settings, SmtpSettings
    from taskapi.server.dev.mailsink import mail_sink

    settings = Settings.from_env()
    if args.split and args.replicas is not None:
        # Each embedded store lives in one process: a second account process would hold other accounts.
        raise DevError("--replicas does not apply with --split: one process per side, each with its own embedded store")
    if args.split and settings.cpus is not None:
        raise DevError("TASKAPI_CPUS does not apply with --split: both server processes would share those CPUs")
    # The replicas' threads on one CPU, Envoy and Redis on the others: server/affinity.py.
    # Before anything starts, so every thread inherits it.
    serving = None if args.split else settings.cpus or affinity.dev_serving()
    # --metrics-port 0 (or TASKAPI_METRICS_PORT=0) means any free port.
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    wanted = {
        "--rest-port": (args.listen, args.rest_port),
        "--grpc-port": (args.listen, args.grpc_port),
        "--admin-port": ("127.0.0.1", args.admin_port),
        "--web-port": (args.listen, args.web_port),
    }
    if metrics_port or args.metrics_port == 0:
        wanted["--metrics-port"] = (settings.grpc_host, metrics_port)
    with ExitStack() as stack:
        if serving is not None:  # first in, last out: undone once everything has stopped
            stack.enter_context(affinity.pinned(serving))
        # Each held bound until just before its server listens (closing twice is harmless): the
        # mail sink, replicas and watch servers bind port 0 meanwhile, and the OS would hand
        # them a port chosen and let go.
        held = {flag: stack.enter_context(hold_port(host, port, flag)) for flag, (host, port) in wanted.items()}
        ports = {flag: int(sock.getsockname()[1]) for flag, sock in held.items()}
        metrics_port = ports.get("--metrics-port", 0)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskapi-dev-")))
        # Before anything starts: no usable password is a clear error, not a half-started stack.
        admin_password = _admin_password(settings) if args.admin_email else ""
        redis_url = settings.redis_url
        if not settings.redis_configured:  # REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER: use it
            redis_url = stack.enter_context(local_redis(workdir / "redis")).url
        smtp, mail = settings.smtp, f"{settings.smtp.url}  (SMTP_URL)" if settings.smtp else ""
        if smtp is None:
            sink_port = stack.enter_context(mail_sink(workdir / "mail", out))
            smtp = SmtpSettings(host="127.0.0.1", port=sink_port)
            mail = f"{smtp.url}  (a local sink: messages shown here, saved in {workdir / 'mail'})"
        # No drain delay: Envoy, the only balancer, is stopped before the replicas.
        settings = dataclasses.replace(
            settings, redis_url=redis_url, smtp=smtp, metrics_port=metrics_port, drain_seconds=0.0
        )

        if "--metrics-port" in held:
            held["--metrics-port"].close()
        if args.split:
            split = _start_split(stack, settings, workdir, metrics_port, args.admin_email or "", admin_password)
            upstreams: dict[str, Any] = {
                "service_upstreams": split.service_upstreams(),
                "watch_upstreams": split.watch_upstreams(),
            }
            endpoints = ", ".join(child.label for child in split.children)
            metrics = f"http://{settings.grpc_host}:{split.accounts.metrics_port}/metrics"
            metrics += f"  (tasks: http://{settings.grpc_host}:{split.tasks.metrics_port}/metrics)"
            check: Callable[[], None] = split.check
        else:
            app = App(settings)
            # LIFO: registered before Envoy's stop, so the replicas stop after Envoy is gone.
            stack.callback(app.close)
            # The worker takes what the App's relay queues (its own relay only if the App has none).
            stack.enter_context(
                worker.running_worker(settings, app.job_metrics, relay=app.relay is None, tracing=app.tracing)
            )
            if args.admin_email:  # inside this process: the only one holding the embedded store
                _create_admin(app, args.admin_email, admin_password, out)
            replicas = [app.start_replica(port=0) for _ in range(args.replicas or DEFAULT_REPLICAS)]
            upstreams = {
                "upstreams": [(settings.grpc_host, replica.port) for replica in replicas],
                # WatchTasks (gRPC and SSE) to the replicas' watch servers.
                "watch_upstreams": [(settings.grpc_host, r.watch.port) for r in replicas if r.watch is not None],
            }
            endpoints = ", ".join(f"{settings.grpc_host}:{r.port}" for r in replicas)
            metrics = f"http://{settings.grpc_host}:{app.metrics_port}/metrics"
            check = lambda: None  # noqa: E731 - the replicas live in this process

        config = EdgeConfig(
            rest_port=ports["--rest-port"],
            grpc_port=ports["--grpc-port"],
            admin_port=ports["--admin-port"],
            listen_address=args.listen,
            cors_origins=tuple(args.cors_origin or EdgeConfig.cors_origins),
            # A file, not the console: the server already prints a line per call there.
            access_log=str(workdir / "envoy-access.log"),
            replica_concurrency=settings.replica_concurrency,
            # Envoy's spans go where the server's go (OTEL_EXPORTER_OTLP_ENDPOINT), if anywhere.
            otlp_endpoint=settings.tracing.host_port if settings.tracing is not None else None,
            **upstreams,
        )
        # One Envoy worker beside the replicas, which share one process and its GIL (about a
        # core): measured on 2 cores, it served the cached mix ~1.13x the req/s of two workers
        # at ~0.88x Envoy's CPU per call (bench/README.md "One Envoy worker"). The split layout
        # runs two server processes, which can use both cores: two workers there.
        envoy_workers = 2 if args.split else 1
        envoy = Envoy(config, workdir, concurrency=envoy_workers, stdout=None, stderr=None, start_new_session=True)
        for flag in ("--rest-port", "--grpc-port", "--admin-port"):
            held[flag].close()
        stack.enter_context(envoy)
        try:
            _wait_healthy(envoy, check)
        except (RuntimeError, TimeoutError, ChildFailed) as exc:
            raise DevError(f"the stack did not become healthy: {exc}") from exc

        held["--web-port"].close()
        pages = stack.enter_context(serve_pages(args.listen, ports["--web-port"]))
        api_origin = envoy.rest_url.split("/api/")[0]
        served, rest, every = affinity.described()
        placement = (
            f"  cpus     replicas on CPU {served}, Envoy and Redis on {rest}, password hashing on any of {every}"
        )
        print(
            "\n".join(
                [
                    "Task API dev stack is up.",
                    f"  REST     {envoy.rest_url}",
                    f"  gRPC     {envoy.grpc_target}  (through Envoy; replicas: {endpoints})",
                    f"  metrics  {metrics}",
                    f"  web      {pages}/web/?api={api_origin}  (the browser client)",
                    f"  docs     {pages}/openapi/?api={api_origin}  (OpenAPI reference, Swagger UI: try it out)",
                    f"  admin    {envoy.admin_url}  (Envoy)",
                    f"  access   {config.access_log}  (Envoy's JSON access log)",
                    f"  redis    {_redact(redis_url) if settings.redis_url else settings.redis_shown}",
                    f"  mail     {mail}",
                    *([placement] if serving is not None else []),
                    "Press Ctrl-C to stop.",
                ]
            ),
            file=out,
            flush=True,
        )
        while not stop.wait(0.5):
            if envoy.process is not None and envoy.process.poll() is not None:
                raise DevError(f"envoy exited unexpectedly with status {envoy.process.returncode}")
            try:
                check()
            except ChildFailed as exc:
                raise DevError(f"{exc} (unexpectedly)") from exc
        print("Stopping: envoy, the worker, replicas (draining), then mail and redis.", file=out, flush=True)


def _start_split(
    stack: ExitStack, settings: Settings, workdir: Path, metrics_port: int, admin_email: str, admin_password: str
) -> SplitServices:
    """The two service processes, serving, and the worker here (its relay off: theirs run)."""
    from prometheus_client import CollectorRegistry

    from taskapi.server import worker

    try:
        split = stack.enter_context(
            split_services(
                settings,
                workdir,
                metrics_port,
                admin_email=admin_email,
                admin_password=admin_password,
                ready_timeout=READY_TIMEOUT_SECONDS,
            )
        )
    except (ChildFailed, OSError) as exc:  # OSError: no readiness socket in the stack's folder
        raise DevError(f"the stack did not start: {exc}") from exc
    registry = CollectorRegistry()
    stack.enter_context(worker.running_worker(settings, worker.job_metrics(registry), relay=False))
    return split


def _wait_healthy(envoy: Envoy, check: Callable[[], None]) -> None:
    """Until Envoy sees every endpoint healthy; `check` raises when a service process died."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        check()
        try:
            envoy.wait_healthy(replicas=envoy.endpoints, timeout=0.5)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _admin_password(settings: Settings) -> str:
    from taskapi.server.cli import admin_password

    try:
        return admin_password(settings, interactive=sys.stdin.isatty())
    except ValueError as exc:
        raise DevError(f"--admin-email: {exc}") from None


def _create_admin(app: App, email: str, password: str, out: TextIO) -> None:
    from taskapi.server.cli import add_admin
    from taskapi.server.domain.errors import ApiError

    try:
        print(add_admin(app.accounts, email, password), file=out, flush=True)
    except ApiError as error:  # the account exists already (a database that outlives the stack)
        print(f"taskapi dev: --admin-email: {error.message}; left as it is", file=out, flush=True)


class LocalRedis:
    """A throw-away `redis-server` (no persistence) on a free loopback port."""

    # A free port picked here can be taken before redis-server binds it: then another one
    # (only before it first served: a restart keeps the port its clients know).
    PORT_ATTEMPTS = 3

    def __init__(self, directory: Path, *, port: int = 0) -> None:
        self.directory = directory
        self._fixed_port = port
        self.port = port or free_port("127.0.0.1")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevError("redis-server is not installed: run scripts/setup.sh, or set REDIS_URL")
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else self.PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start(binary, timeout)
                break
            except _RedisExited as exc:
                if attempt == attempts:
                    raise DevError(str(exc)) from None
                self.port = free_port("127.0.0.1")
        self._fixed_port = self.port  # its clients know it now: a restart keeps it
        return self

    def _start(self, binary: str, timeout: float) -> None:
        with affinity.off_serving():  # Redis never on a pinned replica's CPU
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--loglevel",
                    "warning",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Its own session: Ctrl-C reaches only us, and we stop it last.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if self.process.poll() is not None:
                raise _RedisExited(f"redis-server on port {self.port} exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise DevError(f"redis-server did not answer on port {self.port} within {timeout}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_redis(directory: Path, *, port: int = 0) -> Iterator[LocalRedis]:
    redis = LocalRedis(directory, port=port).start()
    try:
        yield redis
    finally:
        redis.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def claim_port(host: str, port: int, flag: str) -> int:
    """`port` if it is free (any free port for 0); a clear error if it is taken."""
    with hold_port(host, port, flag) as sock:
        return int(sock.getsockname()[1])


def hold_port(host: str, port: int, flag: str) -> socket.socket:
    """A socket bound (not listening) to `port`, or to any free port for 0; a clear error if
    it is taken. Close it just before the real server binds: while it is open, nothing that
    binds port 0 is given this port.

    Bound with SO_REUSEADDR, as Envoy and our HTTP servers bind: connections of the
    previous run linger in TIME_WAIT for a minute after it stops, and they do not stop
    a server from listening again. A socket listening on the port still fails the bind.
    (Linux never hands a port held this way to a bind to port 0.)
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DevError(f"port {port} on {host} is in use: pass {flag} with another port, or 0 for any") from None
        raise DevError(f"cannot bind {host}:{port} ({flag}): {exc.strerror}") from None
    return sock


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _on_signals(stop: threading.Event):  # type: ignore[no-untyped-def]
    """Set `stop` on SIGINT/SIGTERM (main thread only); returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskapi dev",
        description="Run Redis, N server replicas and Envoy locally (REST under /api/v1/, gRPC).",
    )
    parser.add_argument(
        "--replicas",
        type=_positive,
        default=None,
        help=f"server replicas (default {DEFAULT_REPLICAS}; not with --split)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="the account services (auth, users) and the task service as processes of their own, "
        "each with its own embedded store, each with its own Envoy cluster",
    )
    parser.add_argument("--rest-port", type=_port, default=DEFAULT_REST_PORT, help="Envoy REST port (8080)")
    parser.add_argument("--grpc-port", type=_port, default=DEFAULT_GRPC_PORT, help="Envoy gRPC port (8081)")
    parser.add_argument(
        "--admin-port", type=_port, default=DEFAULT_ADMIN_PORT, help="Envoy admin port, loopback only (9901)"
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="Prometheus /metrics port (default TASKAPI_METRICS_PORT or 9464; 0 for any free port)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="an origin browsers may call the REST API from (repeatable; '*' for any; "
        "default http://localhost:3000 and http://127.0.0.1:3000)",
    )
    parser.add_argument(
        "--web-port",
        type=_port,
        default=DEFAULT_WEB_PORT,
        help="the web page and API docs (3000, an allowed CORS origin)",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1", help="address Envoy listens on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--admin-email",
        metavar="EMAIL",
        help="create this admin account in the stack (password: TASKAPI_ADMIN_PASSWORD, else asked for)",
    )
    return parser


@contextmanager
def serve_pages(host: str, port: int) -> Iterator[str]:
    """Serve clients/ as static files: the built browser app under /web/, the OpenAPI docs
    (Swagger UI, from node_modules, under /openapi/vendor/swagger-ui/)."""
    handler = functools.partial(_QuietFiles, directory=str(CLIENTS_DIR))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="pages", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        # /web/ is the built browser app (clients/web/dist, made by scripts/setup.sh), not its sources.
        if path == "/web" or path.startswith(("/web/", "/web?")):
            path = "/web/dist" + path[len("/web") :]
        if path.startswith(SWAGGER_UI_PATH):
            # The base class resolves the rest within a directory it is given (no `..` escapes).
            inner = super().translate_path("/" + path[len(SWAGGER_UI_PATH) :])
            return str(SWAGGER_UI_DIR / Path(inner).relative_to(CLIENTS_DIR))
        return super().translate_path(path)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        # Built assets have content-hashed names: cacheable forever (but never an error). Anything
        # else, the page first, is revalidated on every load, so a new build is picked up at once.
        immutable = self.path.startswith("/web/assets/") and self.status in (200, 304)
        self.send_header("Cache-Control", "public, max-age=31536000, immutable" if immutable else "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass  # page loads are noise on the console, which shows the API calls


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value
