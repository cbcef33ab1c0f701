"""The Redis settings: one of REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER, with ACL credentials
that never show in a repr, a banner or an error."""

from __future__ import annotations

import pytest
import redis

from taskapi.server.cache.client import connect_from_settings, is_cluster
from taskapi.server.config import ConfigError, Settings


def settings(**env: str) -> Settings:
    return Settings.from_env({"JWT_SECRET": "x" * 32} | env)


def test_sentinels_and_master_name() -> None:
    configured = settings(REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380", REDIS_SENTINEL_MASTER="cache")
    assert configured.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert configured.redis_sentinel_master == "cache"
    assert configured.redis_configured and configured.redis_url == ""
    assert configured.redis_shown == "sentinel cache via 10.0.0.1:26379,10.0.0.2:26379,::1:26380"


def test_cluster_seed_nodes() -> None:
    configured = settings(REDIS_CLUSTER="redis-0:6379,redis-1:6379")
    assert configured.redis_cluster == (("redis-0", 6379), ("redis-1", 6379))
    assert configured.redis_shown == "cluster via redis-0:6379,redis-1:6379"
    assert settings().redis_sentinel_master == "taskapi" and not settings().redis_configured


@pytest.mark.parametrize("value", ["host", "host:", ":6379", "host:0", "host:70000", "host:abc"])
def test_a_bad_address_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER must be host:port pairs"):
        settings(REDIS_CLUSTER=value)


def test_only_one_kind_of_redis() -> None:
    with pytest.raises(ConfigError, match="set only one of REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER"):
        settings(REDIS_URL="redis://127.0.0.1:6379/0", REDIS_SENTINELS="127.0.0.1:26379")
    with pytest.raises(ConfigError, match="REDIS_SENTINELS and REDIS_CLUSTER"):
        settings(REDIS_SENTINELS="127.0.0.1:26379", REDIS_CLUSTER="127.0.0.1:7000")
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        settings(REDIS_SENTINELS="127.0.0.1:26379", REDIS_SENTINEL_MASTER="")


def test_the_password_never_shows() -> None:
    configured = settings(REDIS_SENTINELS="127.0.0.1:26379", REDIS_USERNAME="app", REDIS_PASSWORD="s3cret-pw")
    assert configured.redis_username == "app" and configured.redis_password == "s3cret-pw"
    assert "s3cret-pw" not in repr(configured) and "s3cret-pw" not in configured.redis_shown
    assert settings(REDIS_URL="redis://app:s3cret-pw@cache:6379/0").redis_shown == "cache:6379/0"


def test_clients_for_each_shape_without_connecting() -> None:
    # redis-py connects lazily for a URL and for Sentinel; nothing listens on these ports.
    assert connect_from_settings(settings()) is None
    url_client = connect_from_settings(settings(REDIS_URL="redis://127.0.0.1:1/0"))
    sentinel_client = connect_from_settings(settings(REDIS_SENTINELS="127.0.0.1:1", REDIS_PASSWORD="pw"))
    assert url_client is not None and not is_cluster(url_client)
    assert isinstance(sentinel_client, redis.Redis) and not is_cluster(sentinel_client)
    assert sentinel_client.connection_pool.connection_kwargs["password"] == "pw"
    assert sentinel_client.connection_pool.connection_kwargs["socket_timeout"] == 0.25
