"""Rate-limit policy values: the settings name them, the limiter applies them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """`requests` per `window_seconds`."""

    requests: int
    window_seconds: int

    @property
    def policy(self) -> str:
        """The IETF RateLimit-Policy value, e.g. `100;w=900`."""
        return f"{self.requests};w={self.window_seconds}"


@dataclass(frozen=True, kw_only=True)
class LoginThrottle:
    """Failed sign-ins (API.md "Limits"; the limiter's docstring explains the policy).

    - per (email, IP): `free_failures` failures, then each further attempt waits
      `backoff_seconds`, doubling with every failure, at most the window;
    - per email: `email_failures` (failures per window), after which only addresses
      that have failed for that email are held back; a clean address still gets its check.
    Failures are remembered for `email_failures.window_seconds` after the last attempt.
    """

    email_failures: RateLimit
    free_failures: int
    backoff_seconds: int

    @property
    def window_ms(self) -> int:
        return self.email_failures.window_seconds * 1000

    @property
    def interval_ms(self) -> float:
        """The share of the email's bound one failure takes (GCRA's emission interval)."""
        return self.window_ms / self.email_failures.requests


# The reason a Login fails with when the email or the password is wrong: the one outcome
# the login throttle keeps as a failure (anything else is refunded).
LOGIN_FAILED_REASON = "LOGIN_FAILED"

# API.md's defaults: 100 requests per 15 minutes per client IP (and per user), and a
# tighter budget for Login and Register per IP (and Register per email).
DEFAULT_IP = RateLimit(requests=100, window_seconds=900)
DEFAULT_USER = RateLimit(requests=100, window_seconds=900)
DEFAULT_AUTH = RateLimit(requests=10, window_seconds=900)
# 3 typos are free; then 1 s, 2 s, 4 s ... per (email, IP); 10 failures per 15 min per email.
DEFAULT_LOGIN = LoginThrottle(
    email_failures=RateLimit(requests=10, window_seconds=900), free_failures=3, backoff_seconds=1
)
