"""The data-access layer: every MongoDB document and query lives in this package.

Queries stay within what both MongoDB and mongomock support (no $text, no collation, no
aggregation stages beyond the basics), so the embedded store and a real server behave the
same. Each class implements one of the domain's ports (`taskapi.server.domain.ports`) and
turns documents into domain entities at the boundary: nothing above sees mongoengine.
"""

from __future__ import annotations

import logging

import mongoengine as me
import pymongo.errors

from taskapi.server.config import Settings
from taskapi.server.domain.errors import ApiError, Unavailable
from taskapi.server.store.audit import CommandAudit
from taskapi.server.store.documents import ACCOUNTS, DOCUMENTS, TASKS
from taskapi.server.store.outbox import MongoOutbox
from taskapi.server.store.sessions import MongoSessionStore
from taskapi.server.store.tasks import MongoTaskStore
from taskapi.server.store.users import MongoUserStore

log = logging.getLogger(__name__)

__all__ = [
    "ACCOUNTS",
    "TASKS",
    "MongoOutbox",
    "MongoSessionStore",
    "MongoTaskStore",
    "MongoUserStore",
    "connect",
    "translate_error",
]


def connect(settings: Settings, sides: tuple[str, ...] = (ACCOUNTS, TASKS)) -> None:
    """Connect each side's alias (`accounts`, `tasks`): its own URI (ACCOUNTS_MONGODB_URI,
    TASKS_MONGODB_URI, else MONGODB_URI), or an embedded mongomock store of its own.

    A process connects only the sides it serves, so the task service cannot read the
    accounts' collections, nor they its. Idempotent for the same target, so several Apps in
    one process (replicas in `taskapi dev`, servers in tests) share one data set per side.
    """
    uris = {ACCOUNTS: settings.accounts_store_uri, TASKS: settings.tasks_store_uri}
    for side in sides:
        _connect(side, uris[side], settings)


def _connect(alias: str, uri: str, settings: Settings) -> None:
    target = (uri, settings.mongodb_db)
    if me.connection._connection_settings.get(alias, {}).get("taskapi_target") == target:
        return
    me.disconnect(alias)
    if uri:
        me.connect(
            alias=alias,
            host=uri,
            db=settings.mongodb_db,
            maxPoolSize=settings.mongodb_pool_size,
            serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
            connectTimeoutMS=settings.mongodb_timeout_ms,
            socketTimeoutMS=settings.mongodb_timeout_ms,
            readPreference=settings.mongodb_read_preference,
            tz_aware=False,
            uuidRepresentation="standard",
            # What the driver sends, for the query audit (store/audit.py); idle without listeners.
            event_listeners=[CommandAudit()],
        )
    else:
        import mongomock  # only the embedded store needs it

        # A client of its own per side: two embedded stores, sharing nothing.
        me.connect(
            alias=alias, db=settings.mongodb_db, host="mongodb://localhost", mongo_client_class=mongomock.MongoClient
        )
    me.connection._connection_settings[alias]["taskapi_target"] = target
    for document in DOCUMENTS[alias]:
        document._collection = None  # mongoengine caches the collection of the previous connection
        document.ensure_indexes()


def translate_error(exc: BaseException) -> ApiError | None:
    """Driver connection failures become UNAVAILABLE, so a down store never hangs or 500s."""
    if isinstance(exc, (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError)):
        log.warning("store unavailable: %s", exc.__class__.__name__)
        return Unavailable("the task store is unavailable; retry shortly", reason="STORE_UNAVAILABLE")
    return None
