"""Login throttling (API.md "Limits") through a real server, real bcrypt and a real Redis.

Failed sign-ins count per (email, IP) with exponential backoff and per email with a
bound that holds back only addresses that have failed: guesses never lock the real
owner out from an address of their own. Calls come straight to a replica from
loopback, a trusted proxy, so `x-forwarded-for` names the client address.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc
import pytest

from taskapi.server.app import Replica, run_server
from taskapi.server.domain.limits import DEFAULT_AUTH, LoginThrottle, RateLimit
from taskapi.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import make_settings, private_database, unique_email
from tests.integration.api import PASSWORD, as_call, error_details

WRONG = "not the password"


@pytest.fixture
def own_redis(redis_url: str) -> Iterator[str]:
    """A database of its own, emptied first: no other test's counters count here."""
    yield private_database(redis_url)


Server = Callable[..., auth_pb2_grpc.AuthServiceStub]


@pytest.fixture
def server(own_redis: str) -> Iterator[Server]:
    """Starts an App (one replica) with the given settings; returns an AuthService stub."""
    stack: list[AbstractContextManager[Replica] | grpc.Channel] = []

    def start(**overrides: Any) -> auth_pb2_grpc.AuthServiceStub:  # Settings fields, as make_settings
        overrides.setdefault("redis_url", own_redis)
        context = run_server(make_settings(**overrides))
        replica = context.__enter__()
        stack.append(context)
        channel = grpc.insecure_channel(replica.address)
        stack.append(channel)
        return auth_pb2_grpc.AuthServiceStub(channel)

    yield start
    for item in reversed(stack):
        if isinstance(item, grpc.Channel):
            item.close()
        else:
            item.__exit__(None, None, None)


def register(stub: auth_pb2_grpc.AuthServiceStub) -> str:
    email = unique_email("owner")
    stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Owner"), timeout=10)
    return email


def login(stub: auth_pb2_grpc.AuthServiceStub, email: str, password: str, ip: str) -> grpc.StatusCode:
    try:
        stub.Login(
            auth_pb2.LoginRequest(email=email, password=password), metadata=(("x-forwarded-for", ip),), timeout=10
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def refused(stub: auth_pb2_grpc.AuthServiceStub, email: str, password: str, ip: str) -> grpc.RpcError:
    """The login is refused by the throttle; returns the error."""
    with pytest.raises(grpc.RpcError) as info:
        stub.Login(
            auth_pb2.LoginRequest(email=email, password=password), metadata=(("x-forwarded-for", ip),), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    return info.value


def retry_after(error: grpc.RpcError) -> int:
    """Retry-After, checked against RetryInfo: both must say the same whole seconds."""
    seconds = int(dict(as_call(error).initial_metadata())["retry-after"])
    assert error_details(error)["RetryInfo"].retry_delay.seconds == seconds
    return seconds


def addresses(count: int) -> list[str]:
    """Client addresses no other test uses (the per-IP budgets live in Redis)."""
    prefix = uuid.uuid4().int % 250 + 1
    return [f"10.{prefix}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def test_guesses_from_many_addresses_do_not_lock_out_the_owner(server: Server) -> None:
    """The defaults (10 per 15 min for Login per IP): 12 addresses guess twice each."""
    stub = server(rate_limit_auth=DEFAULT_AUTH)
    owner = register(stub)
    guessers = addresses(13)
    clean, guessers = guessers[0], guessers[1:]
    for ip in guessers:
        assert grpc.StatusCode.OK not in [login(stub, owner, WRONG, ip) for _ in range(2)]
    assert login(stub, owner, PASSWORD, clean) == grpc.StatusCode.OK  # 24 guesses later, from home
    assert login(stub, owner, PASSWORD, clean) == grpc.StatusCode.OK
    # The per-email bound still holds back the addresses that guessed, right password or not.
    retry_after(refused(stub, owner, PASSWORD, guessers[0]))


def test_backoff_grows_for_one_email_and_address(server: Server) -> None:
    throttle = LoginThrottle(
        email_failures=RateLimit(requests=100, window_seconds=600), free_failures=2, backoff_seconds=1
    )
    stub = server(login_throttle=throttle)
    owner = register(stub)
    guesser, home = addresses(2)
    assert [login(stub, owner, WRONG, guesser) for _ in range(2)] == [grpc.StatusCode.UNAUTHENTICATED] * 2
    waits = []
    for _ in range(3):
        wait = retry_after(refused(stub, owner, WRONG, guesser))
        waits.append(wait)
        time.sleep(wait)
        assert login(stub, owner, WRONG, guesser) == grpc.StatusCode.UNAUTHENTICATED
    assert waits == [1, 2, 4]  # doubles with every failure past the free ones
    # Only that (email, address) pair backs off: the owner elsewhere, and other emails from there, do not.
    assert login(stub, owner, PASSWORD, home) == grpc.StatusCode.OK
    assert login(stub, register(stub), PASSWORD, guesser) == grpc.StatusCode.OK


def test_email_bound_stops_distributed_guessing_from_failing_addresses(server: Server) -> None:
    throttle = LoginThrottle(
        email_failures=RateLimit(requests=3, window_seconds=600), free_failures=10, backoff_seconds=1
    )
    stub = server(login_throttle=throttle)
    owner = register(stub)
    a, b, c, d, e = addresses(5)
    assert [login(stub, owner, WRONG, ip) for ip in (a, b, c)] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    # The email took 3 failures in its 600 s window: one more fits in 600 / 3 = 200 s.
    assert retry_after(refused(stub, owner, WRONG, a)) == 200
    assert retry_after(refused(stub, owner, PASSWORD, b)) == 200
    # A clean address gets its check: one guess, after which it is held back too.
    assert login(stub, owner, WRONG, d) == grpc.StatusCode.UNAUTHENTICATED
    refused(stub, owner, WRONG, d)
    assert login(stub, owner, PASSWORD, e) == grpc.StatusCode.OK


def test_throttling_says_nothing_about_whether_the_email_exists(server: Server) -> None:
    throttle = LoginThrottle(
        email_failures=RateLimit(requests=2, window_seconds=600), free_failures=1, backoff_seconds=5
    )
    stub = server(login_throttle=throttle)
    answers = []
    for email in (register(stub), unique_email("nobody")):
        first, second = addresses(2)
        codes = [login(stub, email, WRONG, first), login(stub, email, WRONG, second)]
        held = refused(stub, email, WRONG, first)
        quota = error_details(held)["QuotaFailure"]
        answers.append((codes, held.details(), retry_after(held), [v.description for v in quota.violations]))
        assert "example.com" not in str(quota).lower()  # the email is hashed, never echoed
    assert answers[0] == answers[1]


def test_without_redis_the_same_policy_applies_per_process(server: Server) -> None:
    throttle = LoginThrottle(
        email_failures=RateLimit(requests=2, window_seconds=600), free_failures=1, backoff_seconds=3
    )
    stub = server(redis_url="", login_throttle=throttle)
    owner = register(stub)
    guessers = addresses(4)
    assert login(stub, owner, WRONG, guessers[0]) == grpc.StatusCode.UNAUTHENTICATED
    assert retry_after(refused(stub, owner, WRONG, guessers[0])) == 3
    assert login(stub, owner, WRONG, guessers[1]) == grpc.StatusCode.UNAUTHENTICATED
    # Backoff says 3 s, but the email took its 2 failures: 600 / 2 s until it takes another.
    assert retry_after(refused(stub, owner, WRONG, guessers[1])) == 300
    assert login(stub, owner, PASSWORD, guessers[2]) == grpc.StatusCode.OK


def test_concurrent_guesses_cannot_all_pass_one_check(server: Server) -> None:
    """Each attempt is charged as a failure inside the decision, before its password check,
    so a burst from one address gets exactly the free failures, not one check per thread."""
    throttle = LoginThrottle(
        email_failures=RateLimit(requests=100, window_seconds=600), free_failures=2, backoff_seconds=60
    )
    stub = server(login_throttle=throttle, workers=8)
    owner = register(stub)
    (guesser,) = addresses(1)
    start = threading.Barrier(8)
    codes: list[grpc.StatusCode] = []

    def guess() -> None:
        start.wait()
        codes.append(login(stub, owner, WRONG, guesser))

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(code.name for code in codes) == ["RESOURCE_EXHAUSTED"] * 6 + ["UNAUTHENTICATED"] * 2
