"""Rate-limit policy values, shared by the limiter and the server's settings."""

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
