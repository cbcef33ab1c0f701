"""The domain's entities: what the store keeps, as the rules see it.

Ids are strings (the store maps them to its own id type). Times are naive UTC with
millisecond precision, what BSON keeps, so a value read back equals the one written and
cached responses equal fresh ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Proto enum numbers, which sort in meaning order: PENDING < IN_PROGRESS < COMPLETED,
# LOW < MEDIUM < HIGH (sorting and range filters rely on it).
PENDING, IN_PROGRESS, COMPLETED = 1, 2, 3
LOW, MEDIUM, HIGH = 1, 2, 3


def now() -> datetime:
    """The current time as the store keeps it: naive UTC, millisecond precision."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True, kw_only=True)
class Task:
    id: str
    owner: str
    title: str
    description: str
    status: int
    priority: int
    due_time: datetime | None
    tags: tuple[str, ...]
    request_id: str | None
    version: int  # +1 on every write: the etag's source
    create_time: datetime
    update_time: datetime
    complete_time: datetime | None

    @property
    def etag(self) -> str:
        return hashlib.blake2s(f"{self.id}:{self.version}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, kw_only=True)
class NewTask:
    """A task to insert: everything but the id the store assigns."""

    owner: str
    title: str
    description: str
    status: int
    priority: int
    due_time: datetime | None
    tags: tuple[str, ...]
    request_id: str | None
    create_time: datetime
    complete_time: datetime | None


@dataclass(frozen=True, kw_only=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str = field(repr=False)
    role: str
    disabled: bool
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, kw_only=True)
class NewUser:
    email: str
    name: str
    password_hash: str = field(repr=False)
    role: str
    create_time: datetime


@dataclass(frozen=True, kw_only=True)
class RefreshToken:
    """One refresh token, stored by its hash. Tokens of one sign-in share a `family`."""

    id: str
    token_hash: str
    family: str
    user_id: str
    rotated: bool  # used once already: presenting it again is reuse
    revoked: bool  # the whole family ended (logout, reuse, password change)
    expire_time: datetime
    create_time: datetime
