"""Task rules: ownership, idempotent create, partial update with etags, keyset listing.

Statuses and priorities are the proto enum numbers (they sort in meaning order:
PENDING < IN_PROGRESS < COMPLETED, LOW < MEDIUM < HIGH).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pymongo
from bson import ObjectId

from interceptors.context import Caller
from interceptors.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from server import store
from server.auth import now
from server.page_tokens import PageTokens, query_digest
from server.task_cache import TaskCache
from server.updates import UpdateRule

PENDING, IN_PROGRESS, COMPLETED = 1, 2, 3
MEDIUM = 2
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
UPDATABLE = ("title", "description", "status", "priority", "due_time", "tags")
OUTPUT_ONLY = ("id", "owner", "create_time", "update_time", "complete_time", "etag")
# A masked field the body leaves out is reset to these; title has none (it is required).
TASK_UPDATES = UpdateRule(
    resource="task",
    type_name="Task",
    fields=UPDATABLE,
    defaults={"description": "", "status": PENDING, "priority": MEDIUM, "due_time": None, "tags": []},
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


def etag_of(task: store.TaskDoc) -> str:
    return hashlib.blake2s(f"{task.id}:{task.version}".encode(), digest_size=8).hexdigest()


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
    tasks: list[store.TaskDoc]
    next_page_token: str
    total_size: int


@dataclass
class TaskValues:
    """New values for a task; `present` names the fields the request set."""

    values: dict[str, Any] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)


class Tasks:
    def __init__(self, cache: TaskCache, page_tokens: PageTokens) -> None:
        self._cache = cache
        self._page_tokens = page_tokens

    def create(self, caller: Caller, new: TaskValues, request_id: str) -> store.TaskDoc:
        owner = ObjectId(caller.user_id)
        moment = now()
        status = new.values.get("status") or PENDING
        task = store.TaskDoc(
            owner=owner,
            title=new.values["title"],
            description=new.values.get("description") or "",
            status=status,
            priority=new.values.get("priority") or MEDIUM,
            due_time=new.values.get("due_time"),
            tags=list(new.values.get("tags") or []),
            request_id=request_id or None,
            version=1,
            create_time=moment,
            update_time=moment,
            complete_time=moment if status == COMPLETED else None,
        )
        created = store.insert_task(task)
        if created is None:  # (owner, request_id) exists: a retry; answer with the first task
            created = store.find_task_by_request_id(owner, request_id)
            if created is None:  # deleted between our insert and this read: the caller may retry
                raise Aborted("the task for this request_id changed concurrently; retry", reason="CONCURRENT_UPDATE")
            return created
        self._cache.invalidate(caller.user_id)
        return created

    def get(self, caller: Caller, task_id: str) -> store.TaskDoc:
        task = store.find_task(task_id, None if caller.is_admin else ObjectId(caller.user_id))
        if task is None:
            raise NotFound(_NOT_FOUND)
        return task

    def update(self, caller: Caller, task_id: str, new: TaskValues, mask: list[str] | None, etag: str) -> store.TaskDoc:
        """A partial update by the rule of server/updates.py (AIP-134), conditional on `etag`."""
        paths = TASK_UPDATES.paths(mask, new.present, UPDATABLE)
        owner = ObjectId(caller.user_id)
        for _ in range(_WRITE_RETRIES):
            task = store.find_task(task_id, owner)
            if task is None:
                raise NotFound(_NOT_FOUND)
            if etag and etag != etag_of(task):
                raise Aborted(
                    "the task changed since it was read (etag mismatch); read it again", reason="ETAG_MISMATCH"
                )
            changes = TASK_UPDATES.changes(paths, new.values, task, UPDATABLE)
            if not changes:  # nothing to change: no write, same etag
                return task
            changes = _with_times(task, changes)
            updated = store.update_task(task.id, owner, task.version, changes)
            if updated is not None:
                self._cache.invalidate(caller.user_id)
                return updated
            if etag:  # someone wrote between our read and write
                raise Aborted("the task changed concurrently; read it again", reason="ETAG_MISMATCH")
        raise Aborted("the task is changing too often; retry", reason="CONCURRENT_UPDATE")

    def delete(self, caller: Caller, task_id: str, etag: str) -> None:
        owner = ObjectId(caller.user_id)
        if not etag:  # one conditional delete; nothing there (or not yours) is NOT_FOUND
            if not store.delete_task(ObjectId(task_id), owner, None):
                raise NotFound(_NOT_FOUND)
            self._cache.invalidate(caller.user_id)
            return
        task = store.find_task(task_id, owner)
        if task is None:
            raise NotFound(_NOT_FOUND)
        if etag != etag_of(task) or not store.delete_task(task.id, owner, task.version):
            raise Aborted("the task changed since it was read (etag mismatch); read it again", reason="ETAG_MISMATCH")
        self._cache.invalidate(caller.user_id)

    def list(self, caller: Caller, spec: TaskFilter, page_size: int, page_token: str) -> TaskPage:
        owner = self._owner_scope(caller, spec.owner)
        sort = parse_order_by(spec.order_by)
        query = self._query(owner, spec)
        digest = query_digest("tasks", caller.user_id, owner, spec.__dict__, sort)
        position = self._page_tokens.decode(page_token, digest) if page_token else None
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        keyset = _keyset_after(sort, position) if position else None
        tasks, total = store.list_tasks(query, keyset, sort, limit + 1)
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

    @staticmethod
    def _query(owner: str | None, spec: TaskFilter) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if owner is not None:
            query["owner"] = ObjectId(owner)
        if spec.status:
            query["status"] = spec.status
        if spec.priority:
            query["priority"] = spec.priority
        if spec.tags:
            query["tags"] = {"$all": list(spec.tags)}
        due: dict[str, datetime] = {}
        if spec.due_after:
            due["$gte"] = spec.due_after
        if spec.due_before:
            due["$lt"] = spec.due_before
        if due:
            query["due_time"] = due
        if spec.q:
            pattern = {"$regex": re.escape(spec.q), "$options": "i"}
            query["$or"] = [{"title": pattern}, {"description": pattern}]
        return query


def _with_times(task: store.TaskDoc, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` plus the times they imply: update_time, and complete_time when status moves."""
    changes["update_time"] = now()
    new_status = changes.get("status", task.status)
    if new_status == COMPLETED and task.status != COMPLETED:
        changes["complete_time"] = changes["update_time"]
    elif new_status != COMPLETED and task.complete_time is not None:
        changes["complete_time"] = None
    return changes


def parse_order_by(order_by: str) -> list[tuple[str, int]]:
    """`"priority desc, dueTime"` -> [("priority", -1), ("due_time", 1), ("_id", 1)]."""
    sort: list[tuple[str, int]] = []
    for clause in filter(None, (part.strip() for part in (order_by or "createTime desc").split(","))):
        words = clause.split()
        name = SORT_FIELDS.get(words[0].lower())
        if name is None or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InvalidArgument.field(
                "order_by", f"cannot order by {clause!r}; use {', '.join(sorted(set(SORT_FIELDS.values())))} [asc|desc]"
            )
        if any(existing == name for existing, _ in sort):
            raise InvalidArgument.field("order_by", f"{words[0]!r} appears twice")
        sort.append((name, pymongo.DESCENDING if words[-1].lower() == "desc" else pymongo.ASCENDING))
    sort.append(("_id", sort[-1][1] if sort else pymongo.ASCENDING))  # ties break by id: a total order
    return sort


def _sort_value(task: store.TaskDoc, name: str) -> Any:
    return task.id if name == "_id" else getattr(task, name)


def _keyset_after(sort: list[tuple[str, int]], position: list[Any]) -> dict[str, Any]:
    """Everything strictly after `position` in `sort` order, as one filter.

    MongoDB sorts null before any value, so "after" and "equal" treat a null
    (no due time) as the lowest value, in both directions.
    """
    if len(position) != len(sort):
        raise InvalidArgument.field("page_token", "is not a page token of this query")
    branches = []
    for i, (name, direction) in enumerate(sort):
        branch = [{prev: position[j]} for j, (prev, _) in enumerate(sort[:i])]
        branch.append(_strictly_after(name, direction, position[i]))
        branches.append({"$and": branch} if len(branch) > 1 else branch[0])
    return {"$or": branches}


def _strictly_after(name: str, direction: int, value: Any) -> dict[str, Any]:
    if direction == pymongo.ASCENDING:
        return {name: {"$ne": None}} if value is None else {name: {"$gt": value}}
    if value is None:
        return {name: {"$in": []}}  # nothing sorts below null
    return {"$or": [{name: {"$lt": value}}, {name: None}]}
