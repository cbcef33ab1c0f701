"""What the domain needs from the outside world, as protocols.

`taskapi.server.store` (MongoDB through mongoengine) and `taskapi.server.cache` (Redis)
implement them; the wiring hands the implementations to the domain's constructors. Tests
of the rules may pass anything with the same methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from taskapi.server.domain.entities import NewTask, NewUser, RefreshToken, Task, User
from taskapi.server.domain.events import NewEvent

# Sort directions, as the store understands them (the values MongoDB uses).
ASCENDING, DESCENDING = 1, -1
SortKey = tuple[str, int]  # (field name, ASCENDING | DESCENDING); "id" breaks ties


@dataclass(frozen=True, kw_only=True)
class TaskQuery:
    """Which tasks a listing matches. `owner=None` means every owner (admins only)."""

    owner: str | None
    status: int | None = None
    priority: int | None = None
    tags: tuple[str, ...] = ()  # all of them
    due_after: datetime | None = None  # inclusive
    due_before: datetime | None = None  # exclusive
    q: str = ""  # case-insensitive substring of title or description


class TaskStore(Protocol):
    def insert(self, task: NewTask) -> Task | None:
        """The stored task; None when (owner, request_id) exists already (a retried create)."""

    def find(self, task_id: str, owner: str | None) -> Task | None:
        """The task, or None (also for a malformed id); `owner=None` looks across owners."""

    def find_by_request_id(self, owner: str, request_id: str) -> Task | None: ...

    def update(self, task_id: str, owner: str, version: int, changes: dict[str, Any]) -> Task | None:
        """Apply `changes` (None clears a field) if the task is still at `version`, else None."""

    def delete(self, task_id: str, owner: str, version: int | None) -> bool: ...

    def find_page(
        self, query: TaskQuery, after: Sequence[Any] | None, sort: Sequence[SortKey], limit: int
    ) -> tuple[list[Task], int]:
        """Up to `limit` tasks in `sort` order strictly after the keyset position `after`
        (the sort values of the last task served), and how many match in all."""


class UserStore(Protocol):
    def find(self, user_id: str) -> User | None: ...

    def find_by_email(self, email: str) -> User | None:
        """Case-insensitive."""

    def insert(self, user: NewUser, *, event: NewEvent | None = None) -> User | None:
        """The stored user; None when the email is taken (case-insensitive). `event` (about
        the new user) is recorded by the same write."""

    def update(self, user_id: str, changes: dict[str, Any], *, event: NewEvent | None = None) -> User | None:
        """`event` (about this user) is recorded by the same write as `changes`."""

    def delete_cascade(self, user_id: str, *, event: NewEvent | None = None) -> list[str]:
        """Delete the user and their sessions; the session families that ended. `event` is
        recorded before anything is deleted, and handed out once the user is gone (its consumer
        on the task side removes the tasks)."""

    def find_page(
        self, role: str | None, q: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[User], int]:
        """Users oldest first, keyset-paged on (create_time, id), and how many match."""


class SessionStore(Protocol):
    """Refresh tokens, by hash; read from the primary (a lagging replica could show a
    revoked session as live)."""

    def insert(
        self, *, token_hash: str, family: str, user_id: str, create_time: datetime, expire_time: datetime
    ) -> bool:
        """Insert; False when a token with this hash exists already (a racing rotation made it)."""

    def find(self, token_hash: str) -> RefreshToken | None: ...

    def mark_rotated(self, token_id: str) -> bool:
        """Atomically mark a live token used; False if it was used or revoked meanwhile."""

    def revoke_families(self, families: Iterable[str]) -> None: ...

    def families(self, user_id: str, *, live_only: bool = True) -> list[str]: ...

    def family_revoked(self, family: str) -> bool: ...

    def family_is_live(self, family: str, user_id: str) -> bool: ...


class TaskCacheInvalidation(Protocol):
    def invalidate(self, owner: str) -> None:
        """After a write to any of `owner`'s tasks: no later read may see the old data."""


@dataclass(frozen=True)
class CachedSession:
    """What the shared cache knows about a session: revoked, live (as of the store), or
    nothing (`seen` is the cache's own marker, to fill against so a racing revocation wins)."""

    revoked: bool = False
    user_id: str | None = None
    role: str | None = None
    seen: bytes = b""


class SessionCache(Protocol):
    """Entries are keyed by (user id, family): the user id lets an implementation keep all
    of one user's state together (one Redis Cluster slot)."""

    def lookup(self, user_id: str, family: str) -> CachedSession: ...

    def remember(self, user_id: str, family: str, seen: CachedSession, live_user: str, role: str) -> None:
        """Cache "live as (live_user, role)" unless the entry changed since `seen` was read."""

    def revoke(self, user_id: str, families: Sequence[str]) -> None:
        """Mark ended sessions, now or as soon as the cache answers again."""

    def recheck(self, user_id: str, families: Sequence[str]) -> None:
        """Make the next call of these sessions re-read the account (role change, deletion)."""


@dataclass(frozen=True)
class PublishedSession:
    """What the account services published about a session: live as (user_id, role),
    revoked, or nothing (`known` False: never published, or expired)."""

    known: bool = True
    revoked: bool = False
    user_id: str | None = None
    role: str | None = None


class SessionState(Protocol):
    """Session state the account services publish for the task service (docs/services.md)."""

    def lookup(self, user_id: str, family: str) -> PublishedSession | None:
        """None when the state cannot be read (Redis down)."""

    def publish_live(self, families: Sequence[str], user_id: str, role: str) -> None:
        """Live as (user_id, role), unless revoked already; outlives the access tokens minted now."""

    def publish_revoked(self, user_id: str, families: Sequence[str]) -> None: ...
