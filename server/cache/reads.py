"""The read plan: the Redis reads a call needs, known before it runs, so they ride the rate
limiter's round trip and a cached read costs one round trip in all.

Built once at wiring (`taskapi.server.app`) from what each part declares: the session
check reads its live-session entry on every authenticated call; each cached RPC declares
how its cache entry follows from the request (`taskapi.server.api.task_service.CACHED_READS`).
The limiter asks the plan for a call's commands, runs them in its pipeline, and hands the
replies back through `delivered()`, which binds them to the call for exactly as long as it
runs; the caches read them there and fall back to their own round trip when absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from taskapi.server.cache.shared import SharedCache
from taskapi.server.domain.caller import Caller

Command = tuple[str, ...]
# (request, caller) -> the cache field the call reads, or None when this call is not cached.
EntryOf = Callable[[Any, Caller], str | None]


@dataclass(eq=False)
class Planned:
    """One call's planned reads and, once run, their replies."""

    commands: tuple[Command, ...]
    task_entry: str | None = None  # the read-cache field, worked out once here
    replies: dict[Command, Any] = field(default_factory=dict)


_delivered: ContextVar[Planned | None] = ContextVar("taskapi_planned_reads", default=None)


def delivered_reply(command: Command) -> tuple[bool, Any]:
    """(True, reply) when this call's plan read `command` already, else (False, None)."""
    planned = _delivered.get()
    if planned is None or command not in planned.replies:
        return False, None
    return True, planned.replies[command]


def delivered_task_entry() -> str | None:
    planned = _delivered.get()
    return planned.task_entry if planned is not None else None


class ReadPlan:
    def __init__(
        self,
        shared: SharedCache,
        *,
        session_read: Callable[[str], Command],
        task_reads: Callable[[str, str], Sequence[Command]],
        cached_methods: Mapping[str, EntryOf],
    ) -> None:
        self._shared = shared
        self._session_read = session_read
        self._task_reads = task_reads
        self._cached = dict(cached_methods)

    def plan(self, method: str, request: Any, caller: Caller | None) -> Planned | None:
        """The reads to run ahead of `method`, or None (anonymous, or a missed write pending)."""
        if caller is None or not self._shared.prefetch_trusted:
            return None  # a missed delete is pending: read on demand, after it is replayed
        commands = [self._session_read(caller.session_id)]
        entry_of = self._cached.get(method)
        entry = entry_of(request, caller) if entry_of is not None else None
        if entry is not None:
            commands += self._task_reads(caller.user_id, entry)
        return Planned(tuple(commands), entry)

    @contextmanager
    def delivered(self, planned: Planned, replies: Sequence[Any]) -> Iterator[None]:
        """Bind `replies` (an exception stands for a failed read: read on demand) for the call."""
        planned.replies = {
            command: reply
            for command, reply in zip(planned.commands, replies, strict=True)
            if not isinstance(reply, Exception)
        }
        token = _delivered.set(planned)
        try:
            yield
        finally:
            _delivered.reset(token)
