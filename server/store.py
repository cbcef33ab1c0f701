"""The data-access layer: every MongoDB document and query lives here.

Queries stay within what both MongoDB and mongomock support (no $text, no
collation, no aggregation stages beyond the basics), so the embedded store and a
real server behave the same. Case-insensitive email uniqueness uses a lowercased
key field because mongomock has no collations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import mongoengine as me
import pymongo
import pymongo.errors
from bson import ObjectId
from pymongo import ReadPreference

from interceptors.errors import Unavailable
from server.config import Settings

log = logging.getLogger(__name__)

PRIMARY = ReadPreference.PRIMARY


class UserDoc(me.Document):
    meta = {
        "collection": "users",
        "indexes": [
            {"fields": ["email_key"], "unique": True},
            {"fields": ["create_time", "id"]},
        ],
    }
    email = me.StringField(required=True)
    email_key = me.StringField(required=True)  # lowercased email: unique, case-insensitive
    name = me.StringField(required=True)
    password_hash = me.StringField(required=True)
    role = me.StringField(required=True, choices=("USER", "ADMIN"))
    disabled = me.BooleanField(default=False)
    create_time = me.DateTimeField(required=True)
    update_time = me.DateTimeField(required=True)


class TaskDoc(me.Document):
    meta = {
        "collection": "tasks",
        "indexes": [
            {"fields": ["owner", "status", "due_time"]},
            {"fields": ["owner", "create_time"]},
            {"fields": ["owner", "due_time"]},
            {"fields": ["owner", "priority"]},
            {
                "fields": ["owner", "request_id"],
                "unique": True,
                "partialFilterExpression": {"request_id": {"$type": "string"}},
            },
        ],
    }
    owner = me.ObjectIdField(required=True)
    title = me.StringField(required=True)
    description = me.StringField(default="")
    status = me.IntField(required=True)  # TaskStatus number: sorts PENDING < IN_PROGRESS < COMPLETED
    priority = me.IntField(required=True)  # TaskPriority number: sorts LOW < MEDIUM < HIGH
    due_time = me.DateTimeField(null=True)
    tags = me.ListField(me.StringField())
    request_id = me.StringField(null=True)
    version = me.IntField(required=True, default=1)  # the etag's source; +1 on every write
    create_time = me.DateTimeField(required=True)
    update_time = me.DateTimeField(required=True)
    complete_time = me.DateTimeField(null=True)


class RefreshTokenDoc(me.Document):
    """One refresh token. Tokens of one sign-in share a `family` (the session id)."""

    meta = {
        "collection": "refresh_tokens",
        "indexes": [
            {"fields": ["token_hash"], "unique": True},
            {"fields": ["family"]},
            {"fields": ["user_id"]},
        ],
    }
    token_hash = me.StringField(required=True)  # sha256 of the token: a leaked table grants nothing
    family = me.StringField(required=True)
    user_id = me.ObjectIdField(required=True)
    rotated = me.BooleanField(default=False)  # used once already: presenting it again is reuse
    revoked = me.BooleanField(default=False)  # the whole family ended (logout, reuse, password change)
    expire_time = me.DateTimeField(required=True)
    create_time = me.DateTimeField(required=True)


ALL_DOCUMENTS = (UserDoc, TaskDoc, RefreshTokenDoc)


def connect(settings: Settings) -> None:
    """Connect the process's default alias: MONGODB_URI, or the embedded mongomock store.

    Idempotent for the same URI and database, so several Apps in one process (replicas
    in `taskapi dev`, servers in tests) share one data set, embedded store included.
    """
    target = (settings.mongodb_uri, settings.mongodb_db)
    if me.connection._connection_settings.get("default", {}).get("taskapi_target") == target:
        return
    me.disconnect_all()
    if settings.mongodb_uri:
        me.connect(
            host=settings.mongodb_uri,
            db=settings.mongodb_db,
            maxPoolSize=settings.mongodb_pool_size,
            serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
            connectTimeoutMS=settings.mongodb_timeout_ms,
            socketTimeoutMS=settings.mongodb_timeout_ms,
            readPreference=settings.mongodb_read_preference,
            tz_aware=False,
            uuidRepresentation="standard",
        )
    else:
        import mongomock  # only the embedded store needs it

        me.connect(db=settings.mongodb_db, host="mongodb://localhost", mongo_client_class=mongomock.MongoClient)
    me.connection._connection_settings["default"]["taskapi_target"] = target
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()


def ping() -> None:
    me.get_db().command("ping")


def translate_error(exc: BaseException) -> Unavailable | None:
    """Driver connection failures become UNAVAILABLE, so a down store never hangs or 500s."""
    if isinstance(exc, (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError)):
        log.warning("store unavailable: %s", exc.__class__.__name__)
        return Unavailable("the task store is unavailable; retry shortly", reason="STORE_UNAVAILABLE")
    return None


def object_id(value: str) -> ObjectId | None:
    return ObjectId(value) if ObjectId.is_valid(value) else None


# --- users -------------------------------------------------------------------------------------


def find_user(user_id: str) -> UserDoc | None:
    oid = object_id(user_id)
    return UserDoc.objects(id=oid).first() if oid else None


def find_user_by_email(email: str) -> UserDoc | None:
    return UserDoc.objects(email_key=email.lower()).first()


def insert_user(user: UserDoc) -> bool:
    """Insert; False when the email is taken."""
    try:
        user.save(force_insert=True)
    except me.NotUniqueError:
        return False
    return True


def update_user(user_id: ObjectId, changes: dict[str, Any]) -> UserDoc | None:
    return UserDoc.objects(id=user_id).modify(new=True, **{f"set__{k}": v for k, v in changes.items()})


def delete_user_cascade(user_id: ObjectId) -> list[str]:
    """Delete the user, their tasks and sessions; return the session families that ended."""
    families = RefreshTokenDoc.objects(user_id=user_id).distinct("family")
    TaskDoc.objects(owner=user_id).delete()
    RefreshTokenDoc.objects(user_id=user_id).delete()
    UserDoc.objects(id=user_id).delete()
    return families


def list_users(
    filters: dict[str, Any], after: tuple[datetime, ObjectId] | None, limit: int
) -> tuple[list[UserDoc], int]:
    """Users oldest first, keyset-paged on (create_time, id); also the total count."""
    query: dict[str, Any] = dict(filters)
    total = UserDoc.objects(__raw__=query).count()
    if after is not None:
        time, oid = after
        query = {"$and": [query, {"$or": [{"create_time": {"$gt": time}}, {"create_time": time, "_id": {"$gt": oid}}]}]}
    page = list(UserDoc.objects(__raw__=query).order_by("create_time", "id").limit(limit))
    return page, total


# --- tasks -------------------------------------------------------------------------------------


def insert_task(task: TaskDoc) -> TaskDoc | None:
    """Insert; None when (owner, request_id) exists already (an idempotent retry)."""
    try:
        task.save(force_insert=True)
    except me.NotUniqueError:
        return None
    return task


def find_task_by_request_id(owner: ObjectId, request_id: str) -> TaskDoc | None:
    # From the primary: it runs right after an insert lost to that very document.
    return TaskDoc.objects(owner=owner, request_id=request_id).read_preference(PRIMARY).first()


def find_task(task_id: str, owner: ObjectId | None) -> TaskDoc | None:
    """The task, or None; `owner=None` looks across owners (admin reads)."""
    oid = object_id(task_id)
    if oid is None:
        return None
    query = TaskDoc.objects(id=oid)
    if owner is not None:
        query = query.filter(owner=owner)
    return query.first()


def update_task(task_id: ObjectId, owner: ObjectId, version: int, changes: dict[str, Any]) -> TaskDoc | None:
    """Apply `changes` only if the task is still at `version`; None when it is not (or is gone)."""
    sets = {f"set__{k}": v for k, v in changes.items() if v is not None}
    unsets = {f"unset__{k}": True for k, v in changes.items() if v is None}
    return TaskDoc.objects(id=task_id, owner=owner, version=version).modify(new=True, inc__version=1, **sets, **unsets)


def delete_task(task_id: ObjectId, owner: ObjectId, version: int | None) -> bool:
    query = TaskDoc.objects(id=task_id, owner=owner)
    if version is not None:
        query = query.filter(version=version)
    return query.delete() > 0


def list_tasks(
    query: dict[str, Any], keyset: dict[str, Any] | None, sort: list[tuple[str, int]], limit: int
) -> tuple[list[TaskDoc], int]:
    """One page of tasks matching `query` after the `keyset` position, and the total count."""
    total = TaskDoc.objects(__raw__=query).count()
    page_query = {"$and": [query, keyset]} if keyset else query
    order = [("+" if direction == pymongo.ASCENDING else "-") + _field(name) for name, direction in sort]
    page = list(TaskDoc.objects(__raw__=page_query).order_by(*order).limit(limit))
    return page, total


def explain_tasks(query: dict[str, Any], sort: list[tuple[str, int]]) -> dict[str, Any]:
    """The query planner's explain output (for the index tests on a real server)."""
    return TaskDoc._get_collection().find(query).sort(sort).explain()


def _field(mongo_name: str) -> str:
    return "id" if mongo_name == "_id" else mongo_name


# --- refresh tokens ----------------------------------------------------------------------------


def insert_refresh_token(token: RefreshTokenDoc) -> bool:
    """Insert; False when a token with this hash exists already (a racing rotation made it)."""
    try:
        token.save(force_insert=True)
    except me.NotUniqueError:
        return False
    return True


# Session state is read from the primary whatever MONGODB_READ_PREFERENCE says: a lagging
# secondary could show a revoked session as live, or miss a token just rotated.


def find_refresh_token(token_hash: str) -> RefreshTokenDoc | None:
    return RefreshTokenDoc.objects(token_hash=token_hash).read_preference(PRIMARY).first()


def mark_rotated(token_id: ObjectId) -> bool:
    """Atomically mark a live token used; False if it was used or revoked meanwhile."""
    return RefreshTokenDoc.objects(id=token_id, rotated=False, revoked=False).update_one(set__rotated=True) == 1


def revoke_families(families: Iterable[str]) -> None:
    families = list(families)
    if families:
        RefreshTokenDoc.objects(family__in=families).update(set__revoked=True)


def user_families(user_id: ObjectId, *, live_only: bool = True) -> list[str]:
    query = RefreshTokenDoc.objects(user_id=user_id)
    if live_only:
        query = query.filter(revoked=False)
    return list(query.distinct("family"))


def family_revoked(family: str) -> bool:
    """Revocation marks every token of the family, so one revoked token means a revoked family."""
    return RefreshTokenDoc.objects(family=family, revoked=True).read_preference(PRIMARY).first() is not None


def family_is_live(family: str, user_id: ObjectId) -> bool:
    exists = RefreshTokenDoc.objects(family=family, user_id=user_id).read_preference(PRIMARY).first() is not None
    return exists and not family_revoked(family)
