"""The change feed: every write of a task is a change in its owner's ordered log.

A write reserves the owner's next sequence number *before* it touches the store and
publishes the change with that number after it. A crash between the two leaves a hole
in the numbers, never a silent skip: a reader that meets a hole waits `gap_grace_seconds`
for it to fill (two writes of one user racing may publish out of order) and then ends
with FAILED_PRECONDITION, reason RESYNC_REQUIRED. A token whose changes the log no
longer holds (bounded retention) answers the same.

Tokens are signed page tokens bound to the caller: (sequence delivered, log position to
read on from). The log's positions are opaque to the domain; the log orders them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from taskapi.server.domain.caller import Caller
from taskapi.server.domain.entities import Task, now
from taskapi.server.domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from taskapi.server.domain.page_tokens import PageTokens, query_digest

# NOTHING fills a reserved number whose write did not happen (a retried create, a lost
# race): readers step over it without delivering anything.
NOTHING, CREATED, UPDATED, DELETED = 0, 1, 2, 3
RESYNC_REQUIRED = "RESYNC_REQUIRED"
DEFAULT_CHANGES_PAGE, MAX_CHANGES_PAGE = 100, 1000


@dataclass(frozen=True, kw_only=True)
class Change:
    """One published change, as the log returns it."""

    seq: int
    kind: int
    task_id: str
    task: Task | None  # None for DELETED
    time: datetime
    published_at: float  # seconds since the epoch, when the change entered the log
    position: str  # the log's position of this change
    before: str  # a position just before it (reading on from there returns it)


@dataclass(frozen=True)
class LogHead:
    """Where an owner's log stands: the last sequence reserved and the last position."""

    seq: int
    position: str


class ChangeLog(Protocol):
    """Per-owner ordered change log (taskapi.server.cache.changes.RedisChangeLog)."""

    def reserve(self, owner: str) -> int:
        """The owner's next sequence number; raises Unavailable if the log cannot be reached."""

    def publish(self, owner: str, seq: int, kind: int, task_id: str, task: Task | None, time: datetime) -> None:
        """Append a change; never raises (a lost change is a hole readers detect)."""

    def head(self, owner: str) -> LogHead: ...

    def read(self, owner: str, after: str, count: int) -> list[Change]:
        """Changes after position `after`, oldest first, at most `count`."""

    def lost_after(self, owner: str, position: str, seq: int) -> bool:
        """True if changes after (position, seq) are gone from the log (retention, data loss)."""


@dataclass(frozen=True)
class Delivered:
    change: Change
    token: str


@dataclass
class Cursor:
    """A reader's place in one owner's log: what it delivered, where it reads on."""

    owner: str
    seq: int
    position: str
    pending: dict[int, Change] = field(default_factory=dict)


def resync(message: str) -> FailedPrecondition:
    return FailedPrecondition(message + "; list the tasks again, then watch from now", reason=RESYNC_REQUIRED)


class Changes:
    def __init__(
        self,
        log: ChangeLog,
        page_tokens: PageTokens,
        *,
        gap_grace_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._log = log
        self._tokens = page_tokens
        self._grace = gap_grace_seconds
        self._clock = clock
        # Owners whose writes went ahead while the log was unreachable (see reserve).
        self._unannounced: set[str] = set()
        self._lock = threading.Lock()

    @property
    def log(self) -> ChangeLog:
        return self._log

    # --- the write side -------------------------------------------------------------
    def reserve(self, owner: str) -> int | None:
        """The write's number, or None when the log is unreachable: the write goes ahead (the
        service keeps serving without Redis) and the owner's log gets a hole once it is back, so
        a reader resyncs instead of missing the change."""
        self._punch_holes()
        try:
            return self._log.reserve(owner)
        except Unavailable:
            with self._lock:
                self._unannounced.add(owner)
            return None

    def _punch_holes(self) -> None:
        if not self._unannounced:
            return
        with self._lock:
            owners, self._unannounced = self._unannounced, set()
        for index, owner in enumerate(owners):
            try:
                self._log.reserve(owner)  # a number never published: a hole
            except Unavailable:
                with self._lock:
                    self._unannounced.update(list(owners)[index:])
                return

    def publish(self, owner: str, seq: int, kind: int, task_id: str, task: Task | None, time: datetime) -> None:
        self._log.publish(owner, seq, kind, task_id, task, time)

    def fill(self, owner: str, seq: int) -> None:
        """The reserved number `seq` changed nothing: say so, so readers do not wait on it."""
        self._log.publish(owner, seq, NOTHING, "", None, now())

    # --- the read side --------------------------------------------------------------
    def start(self, caller: Caller, token: str, field_name: str) -> Cursor:
        """A cursor after `token`, or at the head of the log without one."""
        owner = caller.user_id
        if not token:
            head = self._log.head(owner)
            return Cursor(owner, head.seq, head.position)
        seq, position = self._decode(caller, token, field_name)
        if self._log.lost_after(owner, position, seq):
            raise resync("the changes after this token are no longer kept")
        return Cursor(owner, seq, position)

    def token(self, cursor: Cursor) -> str:
        """The token of the cursor's place: everything delivered, nothing pending lost."""
        position = min((c.before for c in cursor.pending.values()), key=_position_key, default=cursor.position)
        return self._tokens.encode([cursor.seq, position], _digest(cursor.owner))

    def accept(self, cursor: Cursor, changes: list[Change]) -> list[Delivered]:
        """The changes ready to deliver, in sequence order, each with its token.

        Raises RESYNC_REQUIRED when a hole before a later change outlived the grace period."""
        for change in changes:
            if _position_key(change.position) > _position_key(cursor.position):
                cursor.position = change.position
            if change.seq > cursor.seq:
                cursor.pending[change.seq] = change
        delivered: list[Delivered] = []
        while cursor.seq + 1 in cursor.pending:
            cursor.seq += 1
            change = cursor.pending.pop(cursor.seq)
            if change.kind != NOTHING:
                delivered.append(Delivered(change, self.token(cursor)))
        if cursor.pending:
            oldest = min(c.published_at for c in cursor.pending.values())
            if self._clock() - oldest > self._grace:
                raise resync("a change is missing from the feed")
        return delivered

    def page(self, caller: Caller, token: str, page_size: int) -> tuple[list[Delivered], str]:
        """ListTaskChanges: the changes after `token`, and the token to poll with next."""
        cursor = self.start(caller, token, "since_token")
        limit = min(page_size or DEFAULT_CHANGES_PAGE, MAX_CHANGES_PAGE)
        delivered: list[Delivered] = []
        while len(delivered) < limit:
            wanted = limit - len(delivered)
            batch = self._log.read(cursor.owner, cursor.position, wanted)
            delivered += self.accept(cursor, batch)
            if len(batch) < wanted:
                break
        # Changes read but held back behind a hole still in its grace period come again.
        return delivered, self.token(cursor)

    def _decode(self, caller: Caller, token: str, field_name: str) -> tuple[int, str]:
        try:
            seq, position = self._tokens.decode(token, _digest(caller.user_id), field_name)
        except InvalidArgument:
            raise InvalidArgument.field(field_name, "is not a change token of this caller") from None
        if not isinstance(seq, int) or not isinstance(position, str):
            raise InvalidArgument.field(field_name, "is not a change token of this caller")
        return seq, position


def _digest(owner: str) -> str:
    return query_digest("task-changes", owner)


def _position_key(position: str) -> tuple[int, ...]:
    """Positions are `<int>-<int>` (Redis stream ids), ordered numerically."""
    return tuple(int(part) for part in position.split("-"))
