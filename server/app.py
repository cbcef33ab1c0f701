"""Wiring: one App per process (store, Redis, keys, metrics), any number of replicas.

Replicas are gRPC servers that share the App's dependencies. In production a
process runs one; `taskapi dev` and the tests run several in one process so they
share the embedded store, as replicas share one MongoDB in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from taskapi.interceptors.chain import build_chain
from taskapi.interceptors.logging import LoggingInterceptor
from taskapi.interceptors.metrics import Metrics, MetricsInterceptor, serve_metrics
from taskapi.interceptors.ratelimit import RateLimitInterceptor
from taskapi.server import store, worker
from taskapi.server.api import task_service
from taskapi.server.api.auth_service import AuthServicer
from taskapi.server.api.task_service import TaskServicer
from taskapi.server.api.user_service import UserServicer
from taskapi.server.cache.client import connect_redis
from taskapi.server.cache.reads import ReadPlan
from taskapi.server.cache.sessions import RedisSessionCache
from taskapi.server.cache.shared import SharedCache
from taskapi.server.cache.tasks import TaskCache
from taskapi.server.config import Settings
from taskapi.server.domain.accounts import Accounts
from taskapi.server.domain.page_tokens import PageTokens
from taskapi.server.domain.passwords import PasswordHasher
from taskapi.server.domain.sessions import Sessions
from taskapi.server.domain.tasks import Tasks
from taskapi.server.domain.tokens import Tokens
from taskapi.server.domain.users import Users
from taskapi.server.jobs.queue import JobQueue
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


class App:
    """The process-wide dependencies every replica shares."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.warn_about_defaults()
        store.connect(settings)
        self.redis = connect_redis(settings.redis_url, settings.redis_timeout_ms)
        self.metrics = Metrics(CollectorRegistry())
        self.shared_cache = SharedCache(self.redis, listener=self._count_cache)
        self.task_cache = TaskCache(self.shared_cache, settings.cache_ttl_seconds)
        self.session_cache = RedisSessionCache(self.shared_cache)
        # The outbox relay: queues the events this process's writes record (docs/background-work.md).
        self.job_metrics = worker.job_metrics(self.metrics.registry)
        self.job_queue = self._job_queue(settings)
        self.relay = None
        if self.job_queue is not None:
            self.relay = worker.outbox_relay(settings, self.job_queue, self.job_metrics).start()
        # Writes that record an event wake the relay: the job is queued within milliseconds.
        users = store.MongoUserStore(on_event=self.relay.wake if self.relay is not None else None)
        sessions = store.MongoSessionStore()
        page_tokens = PageTokens(settings.jwt_secret)
        self.tokens = tokens_from(settings)
        self.accounts = Accounts(
            users=users,
            sessions=sessions,
            session_cache=self.session_cache,
            hasher=PasswordHasher(
                rounds=settings.bcrypt_rounds,
                concurrency=settings.bcrypt_concurrency,
                # Password checks may hold at most half the workers; the rest serve everything else.
                max_waiting=max(1, settings.workers // 2 - settings.bcrypt_concurrency),
            ),
            tokens=self.tokens,
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
            reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
            secret=settings.jwt_secret,
        )
        self.sessions = Sessions(self.tokens, users, sessions, self.session_cache)
        self.tasks = Tasks(store.MongoTaskStore(), self.task_cache, page_tokens)
        self.users = Users(users, sessions, self.accounts, self.task_cache, page_tokens)
        self.replicas: list[Replica] = []
        # The Redis reads each call needs, declared by their owners and run in the limiter's round trip.
        reads = ReadPlan(
            self.shared_cache,
            session_read=RedisSessionCache.command,
            task_reads=TaskCache.commands,
            cached_methods=task_service.CACHED_READS,
        )
        # Built once: replicas share the limiter's per-process fallback state.
        self.interceptors = build_chain(
            authenticator=self.sessions,
            services=SERVICES,
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
        )
        self.metrics_endpoint = serve_metrics(
            self.metrics.registry, port=settings.metrics_port, addr=settings.grpc_host
        )

    @property
    def metrics_port(self) -> int:
        return self.metrics_endpoint.port

    def _job_queue(self, settings: Settings) -> JobQueue | None:
        if not settings.outbox_relay:
            return None
        if not settings.queue_redis_url:
            log.warning("REDIS_URL is not set: no background work (email); events wait in the store for a relay")
            return None
        return worker.job_queue(settings, self.job_metrics)

    def _count_cache(self, cache: str, result: str) -> None:
        {"hit": self.metrics.cache_hit, "miss": self.metrics.cache_miss}.get(result, self.metrics.cache_error)(cache)

    def start_replica(self, port: int | None = None) -> Replica:
        settings = self.settings
        limits = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Envoy accepts 32 KiB of request headers, and the transcoder forwards the REST path
            # with its query string as x-envoy-original-path: grpc's default limits (8 KiB soft,
            # 16 KiB hard) turned a long query string into RESOURCE_EXHAUSTED (429) before the
            # field rules could answer 400. Room for all of it, and Envoy's own headers.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
            interceptors=self.interceptors,
            options=limits,
            maximum_concurrent_rpcs=settings.workers * 8,
        )
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(self.accounts), server)
        task_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(self.tasks, self.task_cache), server)
        user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(self.users, self.accounts), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        bound = server.add_insecure_port(host_port(settings.grpc_host, settings.grpc_port if port is None else port))
        if bound == 0:
            raise OSError(f"cannot listen on {settings.grpc_host}:{port}")
        server.start()
        for name in ("", *SERVICE_NAMES):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        replica = Replica(
            server=server,
            port=bound,
            health=health_servicer,
            host=settings.grpc_host,
            drain_seconds=settings.drain_seconds,
        )
        self.replicas.append(replica)
        log.info("replica serving on %s:%s", settings.grpc_host, bound)
        return replica

    def close(self, grace: float | None = None) -> None:
        """Drain every replica at once: one drain period, then all stop together."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        replicas, self.replicas = self.replicas, []
        for replica in replicas:
            replica.health.enter_graceful_shutdown()
        if replicas and self.settings.drain_seconds > 0:
            time.sleep(self.settings.drain_seconds)
        for stopped in [replica.server.stop(grace) for replica in replicas]:
            stopped.wait()
        if self.relay is not None:
            self.relay.stop()  # after the replicas: its last pass queues what their last calls recorded
        if self.job_queue is not None:
            self.job_queue.client.close()
        self.metrics_endpoint.close()
        if self.redis is not None:
            self.redis.close()


@dataclass
class Replica:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    host: str = "127.0.0.1"
    drain_seconds: float = 0.0

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING and keep serving while balancers notice, then refuse
        new calls and give in-flight ones `grace` seconds to finish."""
        self.health.enter_graceful_shutdown()
        if self.drain_seconds > 0:
            time.sleep(self.drain_seconds)
        self.server.stop(grace).wait()


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
