"""Wiring: one App per process (store, Redis, keys, metrics), any number of replicas.

Replicas are gRPC servers that share the App's dependencies. In production a
process runs one; `taskapi dev` and the tests run several in one process so they
share the embedded store, as replicas share one MongoDB in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from taskapi.interceptors.auth import Authenticator
from taskapi.interceptors.chain import build_chain
from taskapi.interceptors.logging import LoggingInterceptor
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor, serve_metrics
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.server import affinity, store, worker
from taskapi.server.api import task_service
from taskapi.server.api.auth_service import AuthServicer
from taskapi.server.api.task_service import TaskServicer
from taskapi.server.api.user_service import UserServicer
from taskapi.server.api.watch_service import WatchLimits, WatchServicer
from taskapi.server.cache.changes import ChangeTail, RedisChangeLog
from taskapi.server.cache.client import connect_from_settings
from taskapi.server.cache.reads import ReadPlan
from taskapi.server.cache.session_state import RedisSessionState
from taskapi.server.cache.sessions import RedisSessionCache
from taskapi.server.cache.shared import SharedCache
from taskapi.server.cache.tasks import TaskCache
from taskapi.server.cache.watchers import RedisWatcherLeases
from taskapi.server.config import Settings
from taskapi.server.domain.accounts import Accounts
from taskapi.server.domain.changes import Changes
from taskapi.server.domain.page_tokens import PageTokens
from taskapi.server.domain.passwords import PasswordHasher, waiting_allowed
from taskapi.server.domain.sessions import PublishedSessions, Sessions
from taskapi.server.domain.tasks import Tasks
from taskapi.server.domain.tokens import Tokens
from taskapi.server.domain.users import Users
from taskapi.server.jobs.queue import JobQueue
from taskapi.server.jobs.runner import JobRunner
from taskapi.server.tracing import Tracing, current_traceparent
from taskapi.v1 import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc, user_pb2, user_pb2_grpc

log = logging.getLogger(__name__)

# What a replica accepts as request metadata (see start_replica).
MAX_METADATA_BYTES = 72 << 10

SERVICES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    task_pb2.DESCRIPTOR.services_by_name["TaskService"],
    user_pb2.DESCRIPTOR.services_by_name["UserService"],
)
SERVICE_NAMES = tuple(s.full_name for s in SERVICES)
# `--services` names (config.SERVICES) -> the gRPC service each one is.
SERVICE_OF = {"auth": "taskapi.v1.AuthService", "tasks": "taskapi.v1.TaskService", "users": "taskapi.v1.UserService"}


class App:
    """The process-wide dependencies every replica shares.

    `settings.services` says which services the replicas serve (docs/services.md): the
    account services (auth, users) and the task service (tasks) are built only where they
    are served, each on its own store, so one code base runs as one service or as several.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.warn_about_defaults()
        sides = ((store.ACCOUNTS,) if settings.serves_accounts else ()) + (
            (store.TASKS,) if settings.serves_tasks else ()
        )
        store.connect(settings, sides)
        # Tracing (OTEL_*; off by default): built first, so what follows is wired with it or untouched.
        self.tracing = Tracing(settings.tracing, component="taskapi-server") if settings.tracing is not None else None
        tracer = self.tracing.tracer if self.tracing is not None else None
        # REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER (docs/scaling.md); never logged with its credentials.
        self.redis = connect_from_settings(settings, tracer)
        self.metrics = Metrics(CollectorRegistry())
        self.shared_cache = SharedCache(self.redis, listener=self._count_cache)
        self.task_cache = TaskCache(self.shared_cache, settings.cache_ttl_seconds)
        self.session_cache = RedisSessionCache(self.shared_cache)
        self.session_state = RedisSessionState(self.shared_cache, access_ttl_seconds=settings.access_token_ttl_seconds)
        # The outbox relay: queues the events this process's writes record (docs/background-work.md).
        self.job_metrics = worker.job_metrics(self.metrics.registry)
        self.job_queue = self._job_queue(settings)
        self.relay = None
        self.task_jobs: JobRunner | None = None
        page_tokens = PageTokens(settings.jwt_secret)
        self.tokens = tokens_from(settings)
        self._tasks: Tasks | None = None
        self.changes: Changes | None = None
        self.change_tail: ChangeTail | None = None
        if settings.serves_tasks:
            task_store = store.MongoTaskStore()
            if self.tracing is not None:  # every store query a span of the call that made it
                task_store = self.tracing.traced(task_store, "store.tasks")
            self._build_changes(settings, page_tokens)
            self._tasks = Tasks(task_store, self.task_cache, page_tokens, self.changes)
            if self.job_queue is not None:  # the task side of a deletion: this service's own consumer
                self.task_jobs = worker.task_side_jobs(settings, self.job_queue, self.remove_tasks_of, self.tracing)
                self.task_jobs.start()
        self._accounts: Accounts | None = None
        self._users: Users | None = None
        authenticator: Authenticator
        session_read = RedisSessionCache.command
        if settings.serves_accounts:
            if self.job_queue is not None and settings.outbox_relay:
                self.relay = worker.outbox_relay(settings, self.job_queue, self.job_metrics).start()
            self._build_accounts(settings, page_tokens)
            authenticator = Sessions(self.tokens, self._user_store, self._session_store, self.session_cache)
        else:
            # The task service alone: the token and the state the account services publish.
            authenticator = PublishedSessions(self.tokens, self.session_state, fallback=settings.tasks_session_fallback)
            session_read = RedisSessionState.command
        self.authenticator = authenticator
        self.replicas: list[Replica] = []
        # The Redis reads each call needs, declared by their owners and run in the limiter's round trip.
        reads = ReadPlan(
            self.shared_cache,
            session_read=session_read,
            task_reads=TaskCache.commands,
            cached_methods=task_service.CACHED_READS,
        )
        # Built once: replicas share the limiter's per-process fallback state.
        self.interceptors = build_chain(
            authenticator=authenticator,
            services=SERVICES,  # every access level, so an RPC served elsewhere is UNIMPLEMENTED, not 401
            trusted_proxies=settings.trusted_proxies,
            translators=[store.translate_error],
            metrics=MetricsInterceptor(self.metrics),
            logging=LoggingInterceptor(),
            ratelimit=RateLimitInterceptor(
                self.redis,
                ip=settings.rate_limit_ip,
                user=settings.rate_limit_user,
                auth=settings.rate_limit_auth,
                login=settings.login_throttle,
                metrics=self.metrics,
                reads=reads,
            ),
            tracing=self.tracing.interceptor() if self.tracing is not None else None,
        )
        self.metrics_endpoint = serve_metrics(
            self.metrics.registry, port=settings.metrics_port, addr=settings.grpc_host
        )

    def _build_changes(self, settings: Settings, page_tokens: PageTokens) -> None:
        """The change feed (docs/api.md "Live changes"); it needs Redis (one server or Sentinel)."""
        if self.redis is None:
            log.warning("no Redis: the change feed (WatchTasks, ListTaskChanges) is off")
            return
        change_log = RedisChangeLog(
            self.redis, retention=settings.changes_retention, ttl_seconds=settings.changes_ttl_seconds
        )
        self.changes = Changes(
            change_log, page_tokens, gap_grace_seconds=settings.changes_gap_grace_seconds, clock=time.time
        )
        # The tail blocks in XREAD: a client of its own whose timeout outlasts the block.
        block_ms = 250
        tail_client = connect_from_settings(
            dataclasses.replace(settings, redis_timeout_ms=settings.redis_timeout_ms + block_ms)
        )
        assert tail_client is not None  # noqa: S101 - self.redis was built from the same settings
        self.change_tail = ChangeTail(tail_client, block_ms=block_ms)

    def _build_accounts(self, settings: Settings, page_tokens: PageTokens) -> None:
        # Writes that record an event wake the relay: the job is queued within milliseconds.
        users = store.MongoUserStore(
            on_event=self.relay.wake if self.relay is not None else None,
            traceparent=current_traceparent if self.tracing is not None else None,
        )
        sessions = store.MongoSessionStore()
        if self.tracing is not None:  # every store query a span of the call that made it
            users = self.tracing.traced(users, "store.users")
            sessions = self.tracing.traced(sessions, "store.sessions")
        self._user_store, self._session_store = users, sessions
        hasher = PasswordHasher(
            rounds=settings.bcrypt_rounds,
            concurrency=settings.bcrypt_concurrency,
            max_waiting=waiting_allowed(settings.workers, settings.bcrypt_concurrency),
            hashing_context=affinity.unpinned,
        )
        self.metrics.measure_password_hashing(hasher.load, settings.bcrypt_concurrency)
        self._accounts = Accounts(
            users=self._user_store,
            sessions=self._session_store,
            session_cache=self.session_cache,
            hasher=hasher,
            tokens=self.tokens,
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
            reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
            secret=settings.jwt_secret,
            session_state=self.session_state,
        )
        self._users = Users(
            self._user_store,
            self._session_store,
            self._accounts,
            page_tokens,
            # In one process with the task service: a deletion's tasks go at once (the event's
            # consumer finds nothing left); split, only the consumer removes them.
            local_task_cleanup=self.remove_tasks_of if settings.serves_tasks else None,
        )

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            raise RuntimeError("this App does not serve the account services (--services)")
        return self._accounts

    @property
    def tasks(self) -> Tasks:
        if self._tasks is None:
            raise RuntimeError("this App does not serve the task service (--services)")
        return self._tasks

    @property
    def users(self) -> Users:
        if self._users is None:
            raise RuntimeError("this App does not serve the account services (--services)")
        return self._users

    def remove_tasks_of(self, owner: str) -> None:
        """The task side of a deletion: every task of `owner`, and their cache. Idempotent."""
        store.MongoTaskStore().delete_owned(owner)
        self.task_cache.invalidate(owner)

    @property
    def metrics_port(self) -> int:
        return self.metrics_endpoint.port

    @property
    def served_services(self) -> tuple[str, ...]:
        """The gRPC names of the services this App's replicas serve."""
        return tuple(SERVICE_OF[name] for name in self.settings.services)

    def _job_queue(self, settings: Settings) -> JobQueue | None:
        # The task service consumes its jobs whatever OUTBOX_RELAY says (no one else can);
        # the account services queue their events only with it.
        if not settings.outbox_relay and not settings.serves_tasks:
            return None
        if not settings.queue_redis_url:
            # The queue needs one Redis server (REDIS_SENTINELS and REDIS_CLUSTER are the cache's only).
            log.warning(
                "neither JOBS_REDIS_URL nor REDIS_URL is set: no background work (email); "
                "events wait in the store for a relay"
            )
            return None
        return worker.job_queue(settings, self.job_metrics)

    def _count_cache(self, cache: str, result: str) -> None:
        metrics = self.metrics
        if result == "hit":
            metrics.cache_hit(cache)
        elif result == "miss":
            metrics.cache_miss(cache)
        else:
            metrics.cache_error(cache)

    def start_replica(self, port: int | None = None) -> Replica:
        settings = self.settings
        limits = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # No cap on what the server sends: page sizes bound every response, and a cap below
            # the largest valid page (100 of the largest tasks: ~1.1 MB) refused it with grpc's
            # own RESOURCE_EXHAUSTED ("Sent message larger than max") instead of answering.
            # A port in use fails the start; with SO_REUSEPORT a second server on the same port
            # would share its calls silently.
            ("grpc.so_reuseport", 0),
            # Streams a client may open on one connection. Envoy sends at most its
            # `replica_concurrency` (the workers) and queues the rest itself, so this is not
            # the limit that shapes load. grpc refuses a stream beyond it (REFUSED_STREAM), and
            # what it counts is not only what Envoy has open: at workers x 4, during a login
            # storm (Envoy resetting the streams of hundreds of retried shed Logins), it refused
            # streams while Envoy had at most `workers` open, and reads refused three times
            # were answered 503 (issue 14, bench/README.md; at x 64 none in the same runs).
            # No `maximum_concurrent_rpcs`: grpcio refuses calls beyond it as
            # RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!", a 429 that reads as a rate
            # limit and carries no retry advice.
            ("grpc.max_concurrent_streams", settings.workers * 64),
            # Envoy accepts 32 KiB of request headers, and the transcoder forwards the REST path
            # with its query string as x-envoy-original-path: grpc's default limits (8 KiB soft,
            # 16 KiB hard) turned a long query string into RESOURCE_EXHAUSTED (429) before the
            # field rules could answer 400. Room for all of it, and Envoy's own headers.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            # No bandwidth-delay probing: grpc pinged Envoy alongside calls' data to size its
            # receive window, and each ping costs both ends a frame, a wake-up and an ack.
            # Requests are small and Envoy is next door, so the default window does; the A/B
            # figures are in bench/README.md.
            ("grpc.http2.bdp_probe", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
            interceptors=self.interceptors,
            options=limits,
        )
        served = self.served_services
        if "auth" in settings.services:
            auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(self.accounts), server)
        if self._tasks is not None:
            task_pb2_grpc.add_TaskServiceServicer_to_server(
                TaskServicer(self.tasks, self.task_cache, max_message_bytes=settings.max_message_bytes), server
            )
        if "users" in settings.services:
            user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(self.users, self.accounts), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        # Reflection describes the whole API, also on a replica serving part of it: through
        # Envoy's gRPC port (where tools ask) every service is there, whichever replica answers.
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        bound = server.add_insecure_port(host_port(settings.grpc_host, settings.grpc_port if port is None else port))
        if bound == 0:
            raise OSError(f"cannot listen on {settings.grpc_host}:{port}")
        server.start()
        for name in ("", *served):  # exactly the services served here
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        watch = self._start_watch_server(port) if self._tasks is not None and self.changes is not None else None
        replica = Replica(
            server=server,
            port=bound,
            health=health_servicer,
            host=settings.grpc_host,
            drain_seconds=settings.drain_seconds,
            watch=watch,
        )
        self.replicas.append(replica)
        log.info("replica serving on %s:%s", settings.grpc_host, bound)
        return replica

    def _start_watch_server(self, port: int | None) -> WatchServer:
        settings = self.settings
        assert self.changes is not None and self.change_tail is not None  # noqa: S101 - checked by the caller
        changes, tail = self.changes, self.change_tail
        assert self.redis is not None  # noqa: S101 - the change feed is built only with Redis
        leases = RedisWatcherLeases(self.redis, lease_seconds=settings.watch_lease_seconds)
        # A replica on a free port (tests, dev) streams on a free port too; else TASKAPI_WATCH_PORT.
        watch_port = 0 if port == 0 or (port is None and settings.grpc_port == 0) else settings.watch_port

        def servicer() -> WatchServicer:
            return WatchServicer(
                changes,
                tail,
                self.authenticator,
                WatchLimits(
                    leases,
                    settings.watchers_per_user,
                    settings.watchers_per_replica,
                    lease_seconds=settings.watch_lease_seconds,
                ),
                heartbeat_seconds=settings.watch_heartbeat_seconds,
                buffer=settings.watch_buffer,
                write_timeout_seconds=settings.watch_write_timeout_seconds,
            )

        return WatchServer(servicer, host_port(settings.grpc_host, watch_port), settings.max_message_bytes)

    def close(self, grace: float | None = None) -> None:
        """Drain every replica at once: one drain period, then all stop together."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        replicas, self.replicas = self.replicas, []
        for replica in replicas:
            replica.health.enter_graceful_shutdown()
            if replica.watch is not None:  # watchers end now, with their token: they resume elsewhere
                replica.watch.drain()
        if replicas and self.settings.drain_seconds > 0:
            time.sleep(self.settings.drain_seconds)
        for stopped in [replica.server.stop(grace) for replica in replicas]:
            stopped.wait()
        for replica in replicas:
            if replica.watch is not None:
                replica.watch.stop(grace)
        if self.change_tail is not None:
            self.change_tail.stop()
        if self.task_jobs is not None:
            self.task_jobs.stop()
        if self.relay is not None:
            self.relay.stop()  # after the replicas: its last pass queues what their last calls recorded
        if self.job_queue is not None:
            self.job_queue.client.close()
        self.metrics_endpoint.close()
        if self.redis is not None:
            self.redis.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # sends the spans still buffered


@dataclass
class Replica:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    host: str = "127.0.0.1"
    drain_seconds: float = 0.0
    watch: WatchServer | None = None  # WatchTasks, on its own asyncio server

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def watch_address(self) -> str:
        if self.watch is None:
            raise RuntimeError("this replica serves no change feed (no task service, or no Redis)")
        return host_port(self.host, self.watch.port)

    def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING and keep serving while balancers notice, then refuse
        new calls and give in-flight ones `grace` seconds to finish."""
        self.health.enter_graceful_shutdown()
        if self.watch is not None:
            self.watch.drain()
        if self.drain_seconds > 0:
            time.sleep(self.drain_seconds)
        self.server.stop(grace).wait()
        if self.watch is not None:
            self.watch.stop(grace)


class WatchServer:
    """A grpc.aio server on a thread of its own: streams are coroutines, not worker threads.

    The sync server's pool would give each open stream a worker for its whole life (8 watchers
    would take every worker); here 1,000 idle watchers cost a coroutine and a queue each."""

    def __init__(self, servicer: Callable[[], WatchServicer], address: str, max_message_bytes: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="watch-server", daemon=True)
        self._thread.start()
        self.port, self._server, self.servicer = asyncio.run_coroutine_threadsafe(
            self._start(servicer, address, max_message_bytes), self._loop
        ).result()

    async def _start(
        self, make: Callable[[], WatchServicer], address: str, max_message_bytes: int
    ) -> tuple[int, grpc.aio.Server, WatchServicer]:
        servicer = make()  # on this loop: its Event belongs here
        self._refresher = asyncio.ensure_future(servicer.limits.refresh_forever())
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ]
        )
        server.add_generic_rpc_handlers((servicer.handler(),))
        # Health for the edge's watch cluster: NOT_SERVING once draining, like the replica.
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("watch server streaming on %s", address.rsplit(":", 1)[0] + f":{port}")
        return port, server, servicer

    async def _stop_refreshing(self) -> None:
        self._refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._refresher

    def drain(self) -> None:
        """End every stream with its resume token, and refuse new ones."""
        if self._loop.is_closed():  # stopped already
            return
        self._loop.call_soon_threadsafe(self.servicer.draining.set)
        asyncio.run_coroutine_threadsafe(self.health.enter_graceful_shutdown(), self._loop)

    def stop(self, grace: float) -> None:
        if not self._loop.is_running():
            return
        self.drain()
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result()
        asyncio.run_coroutine_threadsafe(self._stop_refreshing(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


def tokens_from(settings: Settings) -> Tokens:
    return Tokens(
        secret=settings.jwt_secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
    )


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextmanager
def run_server(settings: Settings, port: int = 0) -> Iterator[Replica]:
    """An App with one replica on `port` (0: a free one), stopped on exit."""
    app = App(settings)
    try:
        yield app.start_replica(port)
    finally:
        app.close(grace=1.0)
