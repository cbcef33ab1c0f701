"""The process's one Redis client (rate limiter, session checks, read cache).

Three shapes, one interface (redis-py's own clients, nothing hand-rolled):
- `REDIS_URL`: one server;
- `REDIS_SENTINELS`: the primary that the sentinels name for `REDIS_SENTINEL_MASTER`,
  found again after a failover (redis.sentinel.Sentinel.master_for);
- `REDIS_CLUSTER`: a Redis Cluster from any of its nodes (redis.cluster.RedisCluster),
  which follows slot moves and failovers through MOVED/ASK replies.

Every shape has short timeouts and one immediate retry: a retry on a fresh connection is
what lets a call that met a just-failed-over primary reach the new one (Sentinel's pool asks
the sentinels again on reconnect, Cluster refreshes its slot table), and only one, because
redis-py's default (3 retries with backoff) multiplies the time a call waits on an outage
before the limiter and the caches fall back. A down Redis costs a call at most about two
timeouts plus one discovery round, never a hang.

With a tracer (tracing on), every round trip of a single-server or Sentinel client is a span
(cache/tracing.py); a Cluster client is not traced (its pipelines fan out per node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from taskapi.server.config import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

AnyRedis = redis.Redis | RedisCluster
MAX_CONNECTIONS = 64  # bounded per node: more than the worker threads that share it


def connect_redis(url: str, timeout_ms: int, tracer: Tracer | None = None) -> redis.Redis | None:
    """A client for one server at `url`, or None without one (then: per-process limits, no cache)."""
    if not url:
        return None
    client: redis.Redis = redis.Redis.from_url(url, max_connections=MAX_CONNECTIONS, **_common(timeout_ms))
    return _traced(client, tracer)


def connect_from_settings(settings: Settings, tracer: Tracer | None = None) -> AnyRedis | None:
    """The cache's Redis as configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER), or None."""
    client = _connect(settings)
    return _traced(client, tracer) if isinstance(client, redis.Redis) else client


def _traced(client: redis.Redis, tracer: Tracer | None) -> redis.Redis:
    if tracer is None:
        return client
    from taskapi.server.cache.tracing import traced_client  # only when tracing is on

    return traced_client(client, tracer)


def _connect(settings: Settings) -> AnyRedis | None:
    credentials: dict[str, Any] = {}
    if settings.redis_username:
        credentials["username"] = settings.redis_username
    if settings.redis_password:
        credentials["password"] = settings.redis_password
    if settings.redis_sentinels:
        return sentinel_primary(settings, credentials)
    if settings.redis_cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.redis_cluster],  # type: ignore[no-untyped-call]
            max_connections=MAX_CONNECTIONS,
            # `retry` (one, no backoff) also bounds how often a MOVED/ASK or a dead node is followed.
            **_common(settings.redis_timeout_ms),
            **credentials,
        )
    if settings.redis_url:
        client: redis.Redis = redis.Redis.from_url(
            settings.redis_url, max_connections=MAX_CONNECTIONS, **_common(settings.redis_timeout_ms), **credentials
        )
        return client
    return None


def sentinel_primary(settings: Settings, credentials: dict[str, Any]) -> redis.Redis:
    common = _common(settings.redis_timeout_ms)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(settings.redis_sentinels),
        # The sentinels themselves: the same timeouts and no retry (the client asks the next
        # sentinel instead; redis-py's default would back off for seconds per sentinel). They
        # usually run without ACLs, so no credentials.
        sentinel_kwargs=common | {"retry": Retry(NoBackoff(), 0)},
        **common,
        **credentials,
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master, max_connections=MAX_CONNECTIONS, **common, **credentials
    )
    return client


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _common(timeout_ms: int) -> dict[str, Any]:
    timeout = timeout_ms / 1000
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
    }
