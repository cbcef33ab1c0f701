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


# API.md's defaults: 100 requests per 15 minutes per client IP (and per user), and a
# tighter budget for Login and Register per IP and per email.
DEFAULT_IP = RateLimit(requests=100, window_seconds=900)
DEFAULT_USER = RateLimit(requests=100, window_seconds=900)
DEFAULT_AUTH = RateLimit(requests=10, window_seconds=900)
