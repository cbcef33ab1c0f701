"""Rate limiting as a REST client sees it: headers on allowed calls, 429 with Retry-After,
one budget per client IP that a client cannot dodge (spoofed X-Forwarded-For, bad tokens).

One stack with a tight IP limit serves this module; every test starts from empty
counters (its own Redis database, flushed before each test).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from taskapi.server.domain.limits import RateLimit
from tests.conftest import make_settings, private_database
from tests.e2e.conftest import LAYOUTS, Stack, assert_error, detail, register, running_stack
from tests.support.edge import Response, RestClient

UNAUTHENTICATED, RESOURCE_EXHAUSTED = 16, 8
LIMIT = 5
# A long window: GCRA lets a burst of LIMIT through, then one call every
# WINDOW/LIMIT seconds (120 s here), so no call in a test gets a fresh cell back
# and the counts below are exact.
WINDOW = 600
POLICY = f"{LIMIT};w={WINDOW}"


@pytest.fixture(scope="module", params=LAYOUTS)
def limited_stack(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, redis.Redis]]:
    """Both layouts: split, the account services and the task service count one budget per
    IP together (the counters live in Redis)."""
    # A database of its own, so no other test's counters count here.
    own_db = private_database(redis_url)
    settings = make_settings(own_db, rate_limit_ip=RateLimit(requests=LIMIT, window_seconds=WINDOW))
    with running_stack(settings, tmp_path_factory.mktemp("ratelimit"), layout=request.param) as stack:
        yield stack, redis.Redis.from_url(own_db)


@pytest.fixture
def client(limited_stack: tuple[Stack, redis.Redis]) -> RestClient:
    stack, counters = limited_stack
    counters.flushdb()  # a fresh budget for every test
    return stack.client


def remaining(response: Response) -> int:
    match = re.search(r"remaining=(\d+)", response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match.group(1))


def test_ip_limit_answers_429_with_retry_after(client: RestClient) -> None:
    account = register(client)  # one call of the five
    allowed = [client.get("tasks", token=account.token) for _ in range(LIMIT - 1)]
    assert [r.status for r in allowed] == [200] * (LIMIT - 1), allowed
    for ok in allowed:
        assert POLICY in ok.headers["ratelimit-policy"], ok.headers
    assert [remaining(ok) for ok in allowed] == list(range(LIMIT - 2, -1, -1))

    response = client.get("tasks", token=account.token)
    body = assert_error(response, 429, RESOURCE_EXHAUSTED)
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= WINDOW // LIMIT
    assert remaining(response) == 0
    assert detail(body, "RetryInfo")["retryDelay"].endswith("s")
    assert detail(body, "QuotaFailure")["violations"]


def test_spoofed_x_forwarded_for_does_not_change_the_key(client: RestClient) -> None:
    """Envoy appends the real peer to X-Forwarded-For and the server keys on that last
    hop, so whatever a client puts there, its calls share one budget."""
    account = register(client)  # no X-Forwarded-For: one call of the five
    spoofed = [
        client.get("tasks", token=account.token, headers={"x-forwarded-for": f"203.0.113.{i}"}) for i in range(1, LIMIT)
    ]
    assert [r.status for r in spoofed] == [200] * (LIMIT - 1), spoofed
    assert [remaining(r) for r in spoofed] == list(range(LIMIT - 2, -1, -1))

    for forged in ("198.51.100.99", "10.0.0.1, 192.0.2.1", "unknown"):
        response = client.get("tasks", token=account.token, headers={"x-forwarded-for": forged})
        assert_error(response, 429, RESOURCE_EXHAUSTED)
    assert_error(client.get("tasks", token=account.token), 429, RESOURCE_EXHAUSTED)


def test_calls_with_a_bad_token_count_against_the_ip_limit(client: RestClient) -> None:
    """A bad token is rejected only after its call was counted by IP: guessing tokens
    is rate limited like anything else, and the 401 says how much budget is left."""
    for _ in range(LIMIT):
        response = client.get("tasks", token="not-a-valid-token")
        assert_error(response, 401, UNAUTHENTICATED)
        assert POLICY in response.headers["ratelimit-policy"], response.headers
        assert "remaining=" in response.headers["ratelimit"], response.headers

    spent = client.get("tasks", token="not-a-valid-token")
    assert_error(spent, 429, RESOURCE_EXHAUSTED)
    assert int(spent.headers["retry-after"]) > 0
