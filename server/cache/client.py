"""The process's one Redis client (rate limiter, session checks, read cache)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect_redis(url: str, timeout_ms: int) -> redis.Redis | None:
    """A client for `url`, or None without one (then: per-process limits, no cache).

    Short timeouts and no retries: redis-py retries 3 times with backoff by default, and on
    an outage that multiplies the time every call waits before the limiter and the caches
    can fall back.
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
    return client
