"""The process's one Redis client (rate limiter, session checks, read cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


def connect_redis(url: str, timeout_ms: int, tracer: Tracer | None = None) -> redis.Redis | None:
    """A client for `url`, or None without one (then: per-process limits, no cache).

    Short timeouts and no retries: redis-py retries 3 times with backoff by default, and on
    an outage that multiplies the time every call waits before the limiter and the caches
    can fall back. With a `tracer` (tracing on), every round trip is a span.
    """
    if not url:
        return None
    timeout = timeout_ms / 1000
    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=64,  # bounded: more than the worker threads that share it
    )
    if tracer is not None:
        from taskapi.server.cache.tracing import traced_client

        return traced_client(client, tracer)
    return client
