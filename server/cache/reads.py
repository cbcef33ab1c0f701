"""The read plan: the Redis reads a call needs, known before it runs, so they ride the rate
limiter's round trip and a cached read costs one round trip in all.

Built once at wiring (`taskapi.server.app`) from what each part declares: the session
check reads its live-session entry on every authenticated call; each cached RPC declares
how its cache entry follows from the request (`taskapi.server.api.task_service.CACHED_READS`).
The limiter asks the plan for a call's commands, runs them inside its own script (with the
epoch of the node that read them: `taskapi.server.cache.shared`), and hands the replies back
through `delivered()`, which binds them to the call for exactly as long as it runs; the
caches read them there and fall back to their own round trip when absent. Every key a plan
reads carries the caller's hash tag, so on Cluster they ride the script of the user's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from taskapi.server.cache.shared import Command, SharedCache
from taskapi.server.domain.caller import Caller

__all__ = ["Command", "Planned", "ReadPlan", "delivered_read", "delivered_task_entry"]
# (request, caller) -> the cache field the call reads, or None when this call is not cached.
EntryOf = Callable[[Any, Caller], str | None]


@dataclass(eq=False)
class Planned:
    """One call's planned reads and, once run, their replies."""

    commands: tuple[Command, ...]
    task_entry: str | None = None  # the read-cache field, worked out once here
    replies: dict[Command, tuple[Any, str]] = field(default_factory=dict)  # -> (reply, epoch)


_delivered: ContextVar[Planned | None] = ContextVar("taskapi_planned_reads", default=None)


def delivered_read(command: Command) -> tuple[bool, Any, str]:
    """(True, reply, epoch) when this call's plan read `command` already, else (False, None, "")."""
    planned = _delivered.get()
    if planned is None or command not in planned.replies:
        return False, None, ""
    reply, epoch = planned.replies[command]
    return True, reply, epoch


def delivered_task_entry() -> str | None:
    planned = _delivered.get()
    return planned.task_entry if planned is not None else None


class ReadPlan:
    def __init__(
        self,
        shared: SharedCache,
        *,
        session_read: Callable[[str, str], Command],
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
        commands = [self._session_read(caller.user_id, caller.session_id)]
        entry_of = self._cached.get(method)
        entry = entry_of(request, caller) if entry_of is not None else None
        if entry is not None:
            commands += self._task_reads(caller.user_id, entry)
        return Planned(tuple(commands), entry)

    @contextmanager
    def delivered(self, planned: Planned, replies: Sequence[Any], epochs: Sequence[str]) -> Iterator[None]:
        """Bind `replies`, read under `epochs`, for the call (an exception stands for a failed
        read, an empty epoch for one that did not run with one: read on demand)."""
        planned.replies = {
            command: (reply, epoch)
            for command, reply, epoch in zip(planned.commands, replies, epochs, strict=True)
            if not isinstance(reply, Exception) and epoch
        }
        token = _delivered.set(planned)
        try:
            yield
        finally:
            _delivered.reset(token)
