"""Rate limiting as a REST client sees it: headers on allowed calls, 429 with Retry-After."""

from __future__ import annotations

from pathlib import Path

import redis

from server.config import RateLimit
from tests.conftest import make_settings
from tests.e2e.conftest import assert_error, detail, register, running_stack

RESOURCE_EXHAUSTED = 8


def test_ip_limit_answers_429_with_retry_after(redis_url: str, tmp_path: Path) -> None:
    # A database of its own, so no other test's counters count here.
    own_db = redis_url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(own_db).flushdb()
    settings = make_settings(own_db, rate_limit_ip=RateLimit(requests=5, window_seconds=60))
    with running_stack(settings, tmp_path) as stack:
        client = stack.client
        account = register(client)  # one call of the five
        allowed = []
        response = client.get("tasks", token=account.token)
        while response.status == 200 and len(allowed) < 10:
            allowed.append(response)
            response = client.get("tasks", token=account.token)

        assert 1 <= len(allowed) <= 4, [r.status for r in allowed]
        for ok in allowed:
            assert ok.headers["ratelimit-policy"].startswith("5;w=60") or "5;w=60" in ok.headers["ratelimit-policy"]
            assert "remaining=" in ok.headers["ratelimit"]

        body = assert_error(response, 429, RESOURCE_EXHAUSTED)
        retry_after = int(response.headers["retry-after"])
        assert 0 < retry_after <= 60
        assert "remaining=0" in response.headers["ratelimit"]
        assert detail(body, "RetryInfo")["retryDelay"].endswith("s")
        assert detail(body, "QuotaFailure")["violations"]
