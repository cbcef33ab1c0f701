"""The account-security settings: login throttling and the refresh reuse grace window."""

from __future__ import annotations

import pytest

from taskapi.server.config import Settings
from taskapi.server.domain.limits import DEFAULT_LOGIN, LoginThrottle, RateLimit


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env({"JWT_SECRET": "x" * 32})
    assert settings.login_throttle == DEFAULT_LOGIN
    assert (DEFAULT_LOGIN.email_failures.policy, DEFAULT_LOGIN.free_failures, DEFAULT_LOGIN.backoff_seconds) == (
        "10;w=900",
        3,
        1,
    )
    assert settings.refresh_reuse_grace_seconds == 10


def test_every_value_comes_from_the_environment() -> None:
    env = {
        "LOGIN_FAILURES_PER_EMAIL": "20/600",
        "LOGIN_FREE_FAILURES": "0",
        "LOGIN_BACKOFF_SECONDS": "2",
        "REFRESH_REUSE_GRACE_SECONDS": "0",
    }
    settings = Settings.from_env(env)
    assert settings.login_throttle == LoginThrottle(
        email_failures=RateLimit(requests=20, window_seconds=600), free_failures=0, backoff_seconds=2
    )
    assert settings.refresh_reuse_grace_seconds == 0


@pytest.mark.parametrize(
    "name", ["LOGIN_FAILURES_PER_EMAIL", "LOGIN_FREE_FAILURES", "LOGIN_BACKOFF_SECONDS", "REFRESH_REUSE_GRACE_SECONDS"]
)
def test_bad_values_fail_fast_with_the_variable_named(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: "-1"})
