"""Fixtures that start real things: Redis, gRPC servers on free ports.

Redis: REDIS_URL when set, else a `redis-server` of our own on a free port.
MongoDB: MONGODB_URI when set (the suite then runs against it unchanged), else
the embedded mongomock store, the one part we cannot run for real here.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from taskapi.server.app import App, Replica
from taskapi.server.config import Settings
from taskapi.server.dev import LocalRedis
from taskapi.server.domain.limits import RateLimit

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
GENEROUS = RateLimit(requests=1_000_000, window_seconds=60)


class RedisProcess(LocalRedis):
    """A private redis-server (the one `taskapi dev` starts), stoppable and restartable on its port."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """Our own redis-server (never the shared one): tests may stop and restart it."""
    process = RedisProcess(tmp_path_factory.mktemp("redis"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def redis_url(redis_process: RedisProcess) -> str:
    return os.environ.get("REDIS_URL") or redis_process.url


# Database 0 is the suite's shared one; Redis has 16 by default.
_PRIVATE_DATABASES = itertools.cycle(range(1, 16))


def private_database(redis_url: str) -> str:
    """`redis_url` on a database no other test of this run is using, emptied first: for a
    test whose rate-limit counters or sessions must not meet the suite's (the same client
    address, 127.0.0.1, spends the same budgets). Handed out in turn; fixtures that hold one
    for a module or the session take it once."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{next(_PRIVATE_DATABASES)}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def make_settings(redis_url: str = "", **overrides: Any) -> Settings:
    """Test settings: cheap bcrypt, a fixed secret, limits no test reaches by accident.

    `overrides` are Settings fields of any of their types, hence Any; dataclasses.replace refuses
    a name that is not a field."""
    base = Settings.from_env(
        {k: v for k, v in os.environ.items() if k in ("MONGODB_URI", "MONGODB_DB")} | {"JWT_SECRET": TEST_SECRET}
    )
    defaults: dict[str, Any] = dict(
        grpc_port=0,
        metrics_port=0,
        redis_url=redis_url,
        bcrypt_rounds=4,
        rate_limit_ip=GENEROUS,
        rate_limit_user=GENEROUS,
        rate_limit_auth=GENEROUS,
        shutdown_grace_seconds=1.0,
        drain_seconds=0.0,
        # The servers of one test process share the embedded store: a relay in each would queue
        # every test's events. Tests of background work turn it on (tests/integration/jobs.py).
        outbox_relay=False,
        jobs_namespace="taskapi-tests",
    )
    return dataclasses.replace(base, **(defaults | overrides))


@pytest.fixture
def settings_factory(redis_url: str) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(redis_url, **overrides)


@pytest.fixture(scope="session")
def app(redis_url: str) -> Iterator[App]:
    application = App(make_settings(redis_url))
    yield application
    application.close(grace=1.0)


@pytest.fixture(scope="session")
def replica(app: App) -> Replica:
    return app.start_replica(0)


@pytest.fixture(scope="session")
def channel(replica: Replica) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(replica.address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@Example.com"
