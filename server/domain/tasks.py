"""Task rules: ownership, idempotent create, partial update with etags, keyset listing.

Statuses and priorities are the proto enum numbers (they sort in meaning order:
PENDING < IN_PROGRESS < COMPLETED, LOW < MEDIUM < HIGH).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskapi.server.domain.caller import Caller
from taskapi.server.domain.changes import CREATED, DELETED, UPDATED, Changes
from taskapi.server.domain.entities import COMPLETED, MEDIUM, PENDING, NewTask, Task, now
from taskapi.server.domain.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from taskapi.server.domain.page_tokens import PageTokens, query_digest
from taskapi.server.domain.ports import ASCENDING, DESCENDING, SortKey, TaskCacheInvalidation, TaskQuery, TaskStore
from taskapi.server.domain.updates import UpdateRule

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
UPDATABLE = ("title", "description", "status", "priority", "due_time", "tags")
OUTPUT_ONLY = ("id", "owner", "create_time", "update_time", "complete_time", "etag")
# A masked field the body leaves out is reset to these; title has none (it is required).
TASK_UPDATES = UpdateRule(
    resource="task",
    type_name="Task",
    fields=UPDATABLE,
    defaults={"description": "", "status": PENDING, "priority": MEDIUM, "due_time": None, "tags": ()},
    output_only=frozenset(OUTPUT_ONLY),
)
# API sort keys (either JSON or proto spelling) -> stored field.
SORT_FIELDS = {
    "duetime": "due_time",
    "due_time": "due_time",
    "createtime": "create_time",
    "create_time": "create_time",
    "updatetime": "update_time",
    "update_time": "update_time",
    "priority": "priority",
    "title": "title",
    "status": "status",
}
_NOT_FOUND = "task not found"
_WRITE_RETRIES = 5


@dataclass(frozen=True)
class TaskFilter:
    owner: str = ""  # "" the caller, "-" everyone (admins), or a user id (admins)
    status: int | None = None
    priority: int | None = None
    tags: tuple[str, ...] = ()
    due_after: datetime | None = None
    due_before: datetime | None = None
    q: str = ""
    order_by: str = ""


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    next_page_token: str
    total_size: int


@dataclass
class TaskValues:
    """New values for a task; `present` names the fields the request set."""

    values: dict[str, Any] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)


class Tasks:
    def __init__(
        self,
        store: TaskStore,
        cache: TaskCacheInvalidation,
        page_tokens: PageTokens,
        changes: Changes | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._page_tokens = page_tokens
        # The change feed (None without Redis): a write reserves its number first, publishes after.
        self._changes = changes

    @property
    def changes(self) -> Changes | None:
        return self._changes

    def _reserve(self, owner: str) -> int | None:
        return self._changes.reserve(owner) if self._changes is not None else None

    def _publish(self, owner: str, seq: int | None, kind: int, task_id: str, task: Task | None) -> None:
        if self._changes is None or seq is None:  # no feed, or unreachable (Changes.reserve)
            return
        if kind:
            self._changes.publish(owner, seq, kind, task_id, task, task.update_time if task else now())
        else:
            self._changes.fill(owner, seq)

    def create(self, caller: Caller, new: TaskValues, request_id: str) -> Task:
        owner = caller.user_id
        moment = now()
        status = new.values.get("status") or PENDING
        task = NewTask(
            owner=owner,
            title=new.values["title"],
            description=new.values.get("description") or "",
            status=status,
            priority=new.values.get("priority") or MEDIUM,
            due_time=new.values.get("due_time"),
            tags=tuple(new.values.get("tags") or ()),
            request_id=request_id or None,
            create_time=moment,
            complete_time=moment if status == COMPLETED else None,
        )
        seq = self._reserve(owner)
        # A store error leaves `seq` a hole on purpose: the write may have happened (readers resync).
        created = self._store.insert(task)
        if created is None:  # (owner, request_id) exists: a retry; answer with the first task
            self._publish(owner, seq, 0, "", None)
            created = self._store.find_by_request_id(owner, request_id)
            if created is None:  # deleted between our insert and this read: the caller may retry
                raise Aborted("the task for this request_id changed concurrently; retry", reason="CONCURRENT_UPDATE")
            return created
        self._cache.invalidate(caller.user_id)
        self._publish(owner, seq, CREATED, created.id, created)
        return created

    def get(self, caller: Caller, task_id: str) -> Task:
        task = self._store.find(task_id, None if caller.is_admin else caller.user_id)
        if task is None:
            raise NotFound(_NOT_FOUND)
        return task

    def update(self, caller: Caller, task_id: str, new: TaskValues, mask: list[str] | None, etag: str) -> Task:
        """A partial update by the rule of domain/updates.py (AIP-134), conditional on `etag`."""
        paths = TASK_UPDATES.paths(mask, new.present, UPDATABLE)
        owner = caller.user_id
        for _ in range(_WRITE_RETRIES):
            task = self._store.find(task_id, owner)
            if task is None:
                raise NotFound(_NOT_FOUND)
            if etag and etag != task.etag:
                raise Aborted(
                    "the task changed since it was read (etag mismatch); read it again", reason="ETAG_MISMATCH"
                )
            changes = TASK_UPDATES.changes(paths, new.values, task, UPDATABLE)
            if not changes:  # nothing to change: no write, same etag
                return task
            changes = _with_times(task, changes)
            seq = self._reserve(owner)
            updated = self._store.update(task.id, owner, task.version, changes)
            if updated is not None:
                self._cache.invalidate(caller.user_id)
                self._publish(owner, seq, UPDATED, updated.id, updated)
                return updated
            self._publish(owner, seq, 0, "", None)
            if etag:  # someone wrote between our read and write
                raise Aborted("the task changed concurrently; read it again", reason="ETAG_MISMATCH")
        raise Aborted("the task is changing too often; retry", reason="CONCURRENT_UPDATE")

    def delete(self, caller: Caller, task_id: str, etag: str) -> None:
        owner = caller.user_id
        version = None
        if etag:
            task = self._store.find(task_id, owner)
            if task is None:
                raise NotFound(_NOT_FOUND)
            version = task.version
            if etag != task.etag:
                raise Aborted(
                    "the task changed since it was read (etag mismatch); read it again", reason="ETAG_MISMATCH"
                )
        seq = self._reserve(owner)
        # One conditional delete; nothing there (or not yours) is NOT_FOUND.
        deleted = self._store.delete(task_id, owner, version)
        if not deleted:
            self._publish(owner, seq, 0, "", None)
            if etag:
                raise Aborted(
                    "the task changed since it was read (etag mismatch); read it again", reason="ETAG_MISMATCH"
                )
            raise NotFound(_NOT_FOUND)
        self._cache.invalidate(caller.user_id)
        self._publish(owner, seq, DELETED, task_id, None)

    def list_page(self, caller: Caller, spec: TaskFilter, page_size: int, page_token: str) -> TaskPage:
        owner = self._owner_scope(caller, spec.owner)
        sort = parse_order_by(spec.order_by)
        query = TaskQuery(
            owner=owner,
            status=spec.status or None,
            priority=spec.priority or None,
            tags=spec.tags,
            due_after=spec.due_after,
            due_before=spec.due_before,
            q=spec.q,
        )
        digest = query_digest("tasks", caller.user_id, owner, spec.__dict__, _legacy_sort(sort))
        position = self._page_tokens.decode(page_token, digest) if page_token else None
        if position is not None and len(position) != len(sort):
            raise InvalidArgument.field("page_token", "is not a page token of this query")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        tasks, total = self._store.find_page(query, position, sort, limit + 1)
        next_token = ""
        if len(tasks) > limit:
            tasks = tasks[:limit]
            last = tasks[-1]
            next_token = self._page_tokens.encode([_sort_value(last, name) for name, _ in sort], digest)
        return TaskPage(tasks=tasks, next_page_token=next_token, total_size=total)

    @staticmethod
    def _owner_scope(caller: Caller, requested: str) -> str | None:
        """The owner id to list, or None for everyone."""
        if requested in ("", caller.user_id):
            return caller.user_id
        if not caller.is_admin:
            raise PermissionDenied("only admins may list other users' tasks", reason="ADMIN_ONLY")
        return None if requested == "-" else requested


def _with_times(task: Task, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` plus the times they imply: update_time, and complete_time when status moves."""
    changes["update_time"] = now()
    new_status = changes.get("status", task.status)
    if new_status == COMPLETED and task.status != COMPLETED:
        changes["complete_time"] = changes["update_time"]
    elif new_status != COMPLETED and task.complete_time is not None:
        changes["complete_time"] = None
    return changes


def parse_order_by(order_by: str) -> list[SortKey]:
    """`"priority desc, dueTime"` -> [("priority", -1), ("due_time", 1), ("id", 1)]."""
    sort: list[SortKey] = []
    for clause in filter(None, (part.strip() for part in (order_by or "createTime desc").split(","))):
        words = clause.split()
        name = SORT_FIELDS.get(words[0].lower())
        if name is None or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InvalidArgument.field(
                "order_by", f"cannot order by {clause!r}; use {', '.join(sorted(set(SORT_FIELDS.values())))} [asc|desc]"
            )
        if any(existing == name for existing, _ in sort):
            continue  # a key named again is ignored: the first one orders (the proto's pattern allows repeats)
        sort.append((name, DESCENDING if words[-1].lower() == "desc" else ASCENDING))
    sort.append(("id", sort[-1][1] if sort else ASCENDING))  # ties break by id: a total order
    return sort


def _legacy_sort(sort: list[SortKey]) -> list[SortKey]:
    """The sort as page tokens issued before ids became strings named it ("_id"), so a
    token handed out by an earlier release still matches its query."""
    return [("_id" if name == "id" else name, direction) for name, direction in sort]


def _sort_value(task: Task, name: str) -> Any:
    return getattr(task, name)
