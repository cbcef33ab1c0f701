"""Tasks in MongoDB: the domain's TaskStore. Every query is scoped by owner unless an admin
lists across owners (`TaskQuery.owner is None`): the owner is the shard key (docs/scaling.md),
so each query goes to one shard. Each is reported to the query audit (`store/audit.py`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import mongoengine as me
from bson import ObjectId

from taskapi.server.domain.entities import NewTask, Task
from taskapi.server.domain.ports import ASCENDING, SortKey, TaskQuery
from taskapi.server.store import audit
from taskapi.server.store.audit import TASKS, StoreQuery
from taskapi.server.store.documents import TaskDoc
from taskapi.server.store.ids import PRIMARY, object_id


def to_task(doc: TaskDoc) -> Task:
    return Task(
        id=str(doc.id),
        owner=str(doc.owner),
        title=doc.title,
        description=doc.description or "",
        status=doc.status,
        priority=doc.priority,
        due_time=doc.due_time,
        tags=tuple(doc.tags),
        request_id=doc.request_id,
        version=doc.version,
        create_time=doc.create_time,
        update_time=doc.update_time,
        complete_time=doc.complete_time,
    )


class MongoTaskStore:
    def insert(self, task: NewTask) -> Task | None:
        doc = TaskDoc(
            owner=ObjectId(task.owner),
            title=task.title,
            description=task.description,
            status=task.status,
            priority=task.priority,
            due_time=task.due_time,
            tags=list(task.tags),
            request_id=task.request_id,
            version=1,
            create_time=task.create_time,
            update_time=task.create_time,
            complete_time=task.complete_time,
        )
        audit.record(StoreQuery(TASKS, "insert", {"owner": doc.owner}))
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:  # (owner, request_id) exists: an idempotent retry
            return None
        return to_task(doc)

    def find_by_request_id(self, owner: str, request_id: str) -> Task | None:
        # From the primary: it runs right after an insert lost to that very document.
        audit.record(StoreQuery(TASKS, "find", {"owner": ObjectId(owner), "request_id": request_id}, 1))
        doc = TaskDoc.objects(owner=ObjectId(owner), request_id=request_id).read_preference(PRIMARY).first()
        return to_task(doc) if doc is not None else None

    def find(self, task_id: str, owner: str | None) -> Task | None:
        oid = object_id(task_id)
        if oid is None:
            return None
        match: dict[str, Any] = {"_id": oid} if owner is None else {"_id": oid, "owner": ObjectId(owner)}
        audit.record(StoreQuery(TASKS, "find", match, 1, cross_owner=owner is None))
        doc = TaskDoc.objects(__raw__=match).first()
        return to_task(doc) if doc is not None else None

    def update(self, task_id: str, owner: str, version: int, changes: dict[str, Any]) -> Task | None:
        oid = object_id(task_id)
        if oid is None:
            return None
        sets = {f"set__{k}": list(v) if isinstance(v, tuple) else v for k, v in changes.items() if v is not None}
        unsets = {f"unset__{k}": True for k, v in changes.items() if v is None}
        audit.record(StoreQuery(TASKS, "update", {"_id": oid, "owner": ObjectId(owner), "version": version}, 1))
        doc = TaskDoc.objects(id=oid, owner=ObjectId(owner), version=version).modify(
            new=True, inc__version=1, **sets, **unsets
        )
        return to_task(doc) if doc is not None else None

    def delete(self, task_id: str, owner: str, version: int | None) -> bool:
        oid = object_id(task_id)
        if oid is None:
            return False
        match: dict[str, Any] = {"_id": oid, "owner": ObjectId(owner)}
        if version is not None:
            match["version"] = version
        audit.record(StoreQuery(TASKS, "delete", match, 1))
        return bool(TaskDoc.objects(__raw__=match).delete() > 0)

    def delete_owned(self, owner: str) -> int:
        """Delete every task of `owner` (a deleted user's, by the user.deleted consumer)."""
        oid = object_id(owner)
        if oid is None:
            return 0
        audit.record(StoreQuery(TASKS, "delete", {"owner": oid}))
        return int(TaskDoc.objects(owner=oid).delete())

    def find_page(
        self, query: TaskQuery, after: Sequence[Any] | None, sort: Sequence[SortKey], limit: int
    ) -> tuple[list[Task], int]:
        match = _match(query)
        cross = query.owner is None  # an admin's listing of every owner: a scatter-gather, on purpose
        audit.record(StoreQuery(TASKS, "count", match, cross_owner=cross))
        total = TaskDoc.objects(__raw__=match).count()
        page_match = {"$and": [match, _keyset_after(sort, after)]} if after is not None else match
        audit.record(StoreQuery(TASKS, "find", page_match, limit, cross_owner=cross))
        order = [("+" if direction == ASCENDING else "-") + name for name, direction in sort]
        page = [to_task(doc) for doc in TaskDoc.objects(__raw__=page_match).order_by(*order).limit(limit)]
        return page, total

    def explain(self, query: TaskQuery, sort: Sequence[SortKey]) -> dict[str, Any]:
        """The query planner's explain output (for the index tests on a real server)."""
        mongo_sort = [(_mongo_field(name), direction) for name, direction in sort]
        result: dict[str, Any] = TaskDoc._get_collection().find(_match(query)).sort(mongo_sort).explain()
        return result


def _match(query: TaskQuery) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if query.owner is not None:
        match["owner"] = ObjectId(query.owner)
    if query.status:
        match["status"] = query.status
    if query.priority:
        match["priority"] = query.priority
    if query.tags:
        match["tags"] = {"$all": list(query.tags)}
    due: dict[str, datetime] = {}
    if query.due_after:
        due["$gte"] = query.due_after
    if query.due_before:
        due["$lt"] = query.due_before
    if due:
        match["due_time"] = due
    if query.q:
        pattern = {"$regex": re.escape(query.q), "$options": "i"}
        match["$or"] = [{"title": pattern}, {"description": pattern}]
    return match


def _mongo_field(name: str) -> str:
    return "_id" if name == "id" else name


def _mongo_value(name: str, value: Any) -> Any:
    if name == "id" and isinstance(value, str):
        return object_id(value) or value
    return value


def _keyset_after(sort: Sequence[SortKey], position: Sequence[Any]) -> dict[str, Any]:
    """Everything strictly after `position` in `sort` order, as one filter.

    MongoDB sorts null before any value, so "after" and "equal" treat a null
    (no due time) as the lowest value, in both directions.
    """
    values = [_mongo_value(name, value) for (name, _), value in zip(sort, position, strict=True)]
    branches = []
    for i, (name, direction) in enumerate(sort):
        branch = [{_mongo_field(prev): values[j]} for j, (prev, _) in enumerate(sort[:i])]
        branch.append(_strictly_after(_mongo_field(name), direction, values[i]))
        branches.append({"$and": branch} if len(branch) > 1 else branch[0])
    return {"$or": branches}


def _strictly_after(name: str, direction: int, value: Any) -> dict[str, Any]:
    if direction == ASCENDING:
        return {name: {"$ne": None}} if value is None else {name: {"$gt": value}}
    if value is None:
        return {name: {"$in": []}}  # nothing sorts below null
    return {"$or": [{name: {"$lt": value}}, {name: None}]}
