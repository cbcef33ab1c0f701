"""The outbox as the relay reads it: the events the store recorded with their changes.

Events live where the write that records them can make them atomic without transactions
(mongomock has none, and single-document writes need none in MongoDB):

- about a user that stays (registered, password changed): embedded in the user document by
  the very write that inserts or updates it (`UserDoc.pending_events`). There is no moment
  at which the user exists without the event, or the new password without its notice;
- about a user being deleted: a document of its own in `outbox`, written *before* the
  delete (the user document cannot carry it), and handed out only once the user is gone.
  A crash between the two leaves the user in place: the delete never happened (the caller
  saw an error and may retry), so after VOID_AFTER the event is voided, never sent.

The relay removes an event once the job queue has it (`sent`); if it dies in between, the
event is queued again by the next pass, and the worker's delivery key drops the duplicate.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from taskapi.server.domain.entities import now
from taskapi.server.domain.events import Event
from taskapi.server.store.documents import OutboxDoc, UserDoc
from taskapi.server.store.ids import PRIMARY, object_id

log = logging.getLogger(__name__)

# Longer than any DeleteUser call takes; a deletion event whose user is still there after
# this was recorded by a call that died before deleting.
VOID_AFTER = timedelta(minutes=5)
_WITH_EVENTS = {"pending_events.occur_time": {"$exists": True}}


class MongoOutbox:
    def __init__(self, *, void_after: timedelta = VOID_AFTER) -> None:
        self._void_after = void_after

    def pending(self, limit: int) -> list[Event]:
        """Up to `limit` events ready to queue, oldest first."""
        events = [event for doc in self._users_with_events(limit) for event in _embedded(doc)]
        for doc in OutboxDoc.objects(state="pending").read_preference(PRIMARY).order_by("occur_time").limit(limit):
            if self._deletion_done(doc):
                events.append(_event(doc))
        events.sort(key=lambda event: event.occur_time)
        return events[:limit]

    def sent(self, event: Event) -> None:
        """The queue has `event`: never hand it out again."""
        if OutboxDoc.objects(event_id=event.id).delete() == 0:
            oid = object_id(event.subject)
            if oid is not None:
                UserDoc.objects(id=oid).update_one(pull__pending_events__event_id=event.id)

    def oldest(self) -> datetime | None:
        """When the oldest event not yet queued happened (the outbox lag's start)."""
        times = []
        # Ascending on an array field sorts by each document's earliest element.
        first = self._users_with_events(1)
        if first:
            times.append(min(item.occur_time for item in first[0].pending_events))
        deletion = OutboxDoc.objects(state="pending").read_preference(PRIMARY).order_by("occur_time").first()
        if deletion is not None:
            times.append(deletion.occur_time)
        return min(times, default=None)

    def _users_with_events(self, limit: int) -> list[UserDoc]:
        query = UserDoc.objects(__raw__=_WITH_EVENTS).only("id", "pending_events").read_preference(PRIMARY)
        return list(query.order_by("pending_events.occur_time").limit(limit))

    def _deletion_done(self, doc: OutboxDoc) -> bool:
        """The user is gone; if it is still there long after, void the event (the delete never ran)."""
        oid = object_id(doc.subject)
        if oid is None or UserDoc.objects(id=oid).read_preference(PRIMARY).count() == 0:
            return True
        if doc.occur_time <= now() - self._void_after:
            OutboxDoc.objects(event_id=doc.event_id, state="pending").update_one(set__state="void")
            log.warning("outbox: %s event %s voided: its user still exists (no delete)", doc.type, doc.event_id)
        return False


def _embedded(doc: UserDoc) -> list[Event]:
    return [
        Event(
            id=item.event_id,
            type=item.type,
            subject=str(doc.id),
            occur_time=item.occur_time,
            payload=dict(item.payload),
            trace_parent=item.traceparent or "",
        )
        for item in doc.pending_events
    ]


def _event(doc: OutboxDoc) -> Event:
    return Event(
        id=doc.event_id,
        type=doc.type,
        subject=doc.subject,
        occur_time=doc.occur_time,
        payload=dict(doc.payload),
        trace_parent=doc.traceparent or "",
    )
