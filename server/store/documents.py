"""The MongoDB documents (mongoengine) and their indexes: the store's own shape of the data."""

from __future__ import annotations

import mongoengine as me

# Each side of the service has a store of its own (its own connection: ACCOUNTS_MONGODB_URI,
# TASKS_MONGODB_URI): no document of one side is reachable through the other's connection.
ACCOUNTS, TASKS = "accounts", "tasks"


class PendingEventDoc(me.EmbeddedDocument):
    """An event about the document it sits in, written by the same write as the change it
    describes (a single-document write is atomic in MongoDB and mongomock alike: neither has
    to offer multi-document transactions); the outbox relay removes it once it is queued."""

    event_id = me.StringField(required=True)
    type = me.StringField(required=True)
    occur_time = me.DateTimeField(required=True)
    payload = me.DictField()
    traceparent = me.StringField()  # the recording call's trace context, for the job's spans


class UserDoc(me.Document):
    meta = {
        "collection": "users",
        "db_alias": ACCOUNTS,
        "indexes": [
            {"fields": ["email_key"], "unique": True},
            {"fields": ["create_time", "id"]},
            {"fields": ["pending_events.occur_time"]},  # the relay's query: users with events to hand out
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
    pending_events = me.EmbeddedDocumentListField(PendingEventDoc)  # the outbox, for events about this user


class OutboxDoc(me.Document):
    """An event about a document that is being deleted, so it cannot carry it: recorded
    before the delete, handed out once the document is gone (store/outbox.py)."""

    meta = {"collection": "outbox", "db_alias": ACCOUNTS, "indexes": [{"fields": ["state", "occur_time"]}]}
    event_id = me.StringField(primary_key=True)
    type = me.StringField(required=True)
    subject = me.StringField(required=True)
    occur_time = me.DateTimeField(required=True)
    payload = me.DictField()
    traceparent = me.StringField()
    state = me.StringField(required=True, choices=("pending", "void"))


class TaskDoc(me.Document):
    meta = {
        "collection": "tasks",
        "db_alias": TASKS,
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
        "db_alias": ACCOUNTS,
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


ALL_DOCUMENTS = (UserDoc, TaskDoc, RefreshTokenDoc, OutboxDoc)
DOCUMENTS = {ACCOUNTS: (UserDoc, RefreshTokenDoc, OutboxDoc), TASKS: (TaskDoc,)}
