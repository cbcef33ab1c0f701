"""Login throttling as a REST client sees it, with the default policy: three free
failures per (email, address), then a backoff of 1 s, 2 s, 4 s ...; a 429 with an exact
Retry-After that looks the same whether or not the account exists."""

from __future__ import annotations

import time

from tests.conftest import unique_email
from tests.e2e.conftest import PASSWORD, assert_error, detail, register
from tests.support.edge import RestClient

UNAUTHENTICATED, RESOURCE_EXHAUSTED = 16, 8


def test_failed_logins_back_off_with_an_exact_retry_after(client: RestClient) -> None:
    owner, bodies = register(client).email, []
    for email in (owner, unique_email("nobody")):
        for _ in range(3):
            assert_error(
                client.post("auth/login", {"email": email, "password": "wrong password"}), 401, UNAUTHENTICATED
            )
        held = client.post("auth/login", {"email": email, "password": PASSWORD})
        body = assert_error(held, 429, RESOURCE_EXHAUSTED)
        assert held.headers["retry-after"] == "1"
        assert detail(body, "RetryInfo")["retryDelay"] == "1s"
        (violation,) = detail(body, "QuotaFailure")["violations"]
        assert violation["subject"].startswith("login-email:") and "example.com" not in violation["subject"].lower()
        violation["subject"] = "<hashed email>"
        bodies.append(body)
    assert bodies[0] == bodies[1]  # nothing tells a real account from a made-up one

    time.sleep(1)  # the Retry-After: then the right password gets in, and clears the record
    assert client.post("auth/login", {"email": owner, "password": PASSWORD}).status == 200
    assert client.post("auth/login", {"email": owner, "password": PASSWORD}).status == 200
