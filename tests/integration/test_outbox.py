"""The outbox in the store and its relay: an event is written by the very write of its change,
a deletion's event waits for the deletion (and is voided if it never happens), an event
no job knows stays for a newer relay, and the outbox lag is exported."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from taskapi.server import store, worker
from taskapi.server.config import Settings
from taskapi.server.domain.entities import NewUser, User, now
from taskapi.server.domain.events import NewEvent, password_changed, user_deleted, user_registered
from taskapi.server.jobs.admin import JobsAdmin
from taskapi.server.jobs.relay import Relay
from taskapi.server.store.documents import OutboxDoc, UserDoc
from taskapi.server.store.ids import object_id
from tests.conftest import unique_email
from tests.support.jobs import job_settings


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    configured = job_settings(redis_url, smtp_port=1)  # no worker here: nothing is sent
    store.connect(configured)
    yield configured


def new_user(users: store.MongoUserStore, event: NewEvent | None = None) -> User:
    email = unique_email("outbox")
    user = users.insert(
        NewUser(email=email, name="Out Box", password_hash="x", role="USER", create_time=now()), event=event
    )
    assert user is not None
    return user


def raw(user_id: str) -> dict[str, object]:
    document = UserDoc._get_collection().find_one({"_id": object_id(user_id)})
    assert document is not None
    return dict(document)


def mine(outbox: store.MongoOutbox, subject: str) -> list[str]:
    """The types of the pending events about `subject` (the embedded store holds other tests' too)."""
    return [event.type for event in outbox.pending(10_000) if event.subject == subject]


def test_an_event_is_written_by_the_same_write_as_its_change(settings: Settings) -> None:
    users = store.MongoUserStore()
    registered = user_registered("someone@example.com", "Out Box")
    user = new_user(users, registered)
    events = raw(user.id)["pending_events"]
    assert isinstance(events, list) and len(events) == 1
    recorded = events[0]
    assert recorded["event_id"] == registered.id and recorded["type"] == "user.registered"

    users.update(user.id, {"password_hash": "y"}, event=password_changed(user.email, user.name))
    document = raw(user.id)
    assert document["password_hash"] == "y"  # the change and its event, in one document write
    assert [e["type"] for e in document["pending_events"]] == ["user.registered", "user.password_changed"]  # type: ignore[attr-defined]

    outbox = store.MongoOutbox()
    events = [event for event in outbox.pending(10_000) if event.subject == user.id]
    assert [e.type for e in events] == ["user.registered", "user.password_changed"]
    assert events[0].payload == {"email": "someone@example.com", "name": "Out Box"}
    for event in events:
        outbox.sent(event)
    assert mine(outbox, user.id) == [] and raw(user.id)["pending_events"] == []


def test_a_deletion_event_goes_out_only_once_the_user_is_gone(settings: Settings) -> None:
    users, outbox = store.MongoUserStore(), store.MongoOutbox()
    user = new_user(users)
    users.delete_cascade(user.id, event=user_deleted(user.id))
    [event] = [event for event in outbox.pending(10_000) if event.subject == user.id]
    assert (event.type, event.id, event.payload) == ("user.deleted", user_deleted(user.id).id, {})
    outbox.sent(event)
    assert mine(outbox, user.id) == []


def test_a_deletion_that_never_happened_is_voided_not_sent(settings: Settings) -> None:
    """The process died after recording the deletion and before deleting: the user is still
    there, the caller saw an error. Not sent while it may still happen; voided after."""
    users = store.MongoUserStore()
    user = new_user(users)
    event = user_deleted(user.id)
    OutboxDoc(event_id=event.id, type=event.type, subject=user.id, occur_time=event.occur_time, state="pending").save()
    assert mine(store.MongoOutbox(), user.id) == []  # not yet: the delete may still be running
    assert mine(store.MongoOutbox(void_after=timedelta(0)), user.id) == []
    assert OutboxDoc.objects(event_id=event.id).get().state == "void"

    users.delete_cascade(user.id, event=event)  # retried, and done this time: the same event, pending again
    assert mine(store.MongoOutbox(), user.id) == ["user.deleted"]


def test_an_event_no_job_handles_waits_for_a_newer_relay(settings: Settings) -> None:
    users = store.MongoUserStore()
    unknown = dataclasses.replace(user_registered("x@example.com", "X"), type="user.promoted")
    user = new_user(users, unknown)
    metrics = worker.job_metrics(CollectorRegistry())
    queue = worker.job_queue(settings, metrics)
    try:
        Relay(store.MongoOutbox(), queue, metrics, interval=1).run_once()  # queues everything else
        assert mine(store.MongoOutbox(), user.id) == ["user.promoted"]  # left in the outbox
    finally:
        UserDoc.objects(id=object_id(user.id)).update_one(pull__pending_events__event_id=unknown.id)
        queue.client.close()


def test_the_outbox_lag_grows_while_the_queue_is_down_and_is_zero_once_queued(settings: Settings) -> None:
    old = dataclasses.replace(user_registered("lag@example.com", "Lag"), occur_time=now() - timedelta(minutes=5))
    user = new_user(store.MongoUserStore(), old)
    registry = CollectorRegistry()
    metrics = worker.job_metrics(registry)
    down = worker.job_queue(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"), metrics)
    Relay(store.MongoOutbox(), down, metrics, interval=0.05).stop()  # one pass (never started), which cannot queue
    lag = registry.get_sample_value("taskapi_outbox_lag_seconds")
    assert lag is not None and lag >= 300  # the oldest event waiting (this one, or older ones of other tests)
    assert mine(store.MongoOutbox(), user.id) == ["user.registered"]  # still in the outbox
    down.client.close()

    queue = worker.job_queue(settings, metrics)
    try:
        Relay(store.MongoOutbox(), queue, metrics, interval=0.05).stop()  # one pass that queues
        assert mine(store.MongoOutbox(), user.id) == []
        assert registry.get_sample_value("taskapi_outbox_lag_seconds") == 0
        assert JobsAdmin(queue).counts().queued >= 1
    finally:
        queue.client.close()
