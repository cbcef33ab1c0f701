"""Who is calling: the identity a verified access token names."""

from __future__ import annotations

from dataclasses import dataclass

ROLE_USER = "USER"
ROLE_ADMIN = "ADMIN"
ROLES = (ROLE_USER, ROLE_ADMIN)


@dataclass(frozen=True)
class Caller:
    """Who is calling, from a verified access token."""

    user_id: str
    role: str  # ROLE_USER or ROLE_ADMIN
    session_id: str  # the refresh-token family the access token was issued from
    issued_at: int  # the token's `iat`, seconds since the epoch

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN
