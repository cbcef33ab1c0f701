"""The outbox relay: hands the events the store recorded to the job queue.

Each pass queues every pending event, oldest first, and tells the outbox each one is
sent. A relay that dies between the two queues that event again on its next pass (or
another relay does): the worker's delivery key drops the duplicate. A server runs one
(woken by its own writes, so a welcome email leaves within milliseconds, and sweeping
every OUTBOX_POLL_SECONDS); `taskapi worker` runs one too, which catches what a server
recorded and could not queue (it died, or Redis was down) when they share a MongoDB.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Protocol

from taskapi.server.domain.entities import now
from taskapi.server.domain.events import Event
from taskapi.server.jobs.metrics import JobMetrics
from taskapi.server.jobs.queue import UnknownEvent

log = logging.getLogger(__name__)


class Outbox(Protocol):
    """The store's side (`taskapi.server.store.MongoOutbox`)."""

    def pending(self, limit: int) -> list[Event]: ...

    def sent(self, event: Event) -> None: ...

    def oldest(self) -> datetime | None: ...


class Queue(Protocol):
    def enqueue(self, event: Event) -> str: ...


class Relay:
    def __init__(self, outbox: Outbox, queue: Queue, metrics: JobMetrics, *, interval: float, batch: int = 100) -> None:
        self._outbox = outbox
        self._queue = queue
        self._interval = interval
        self._batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._oldest: datetime | None = None
        metrics.measure_lag(self.lag)

    def run_once(self) -> int:
        """Queue everything pending now; how many were queued. Raises when the store or the
        queue fails (what was queued before stays queued and marked)."""
        queued = 0
        seen: set[str] = set()  # one look at each event per pass, even one that will not leave
        while True:
            events = [event for event in self._outbox.pending(self._batch + len(seen)) if event.id not in seen]
            for event in events:
                seen.add(event.id)
                try:
                    self._queue.enqueue(event)
                except UnknownEvent:  # recorded by a newer server: a newer relay will queue it
                    log.warning("outbox: no job for event type %s (event %s): left in the outbox", event.type, event.id)
                    continue
                self._outbox.sent(event)
                queued += 1
            if len(events) < self._batch:
                return queued

    def lag(self) -> float:
        """Seconds since the oldest event not yet queued happened, as of the last pass."""
        oldest = self._oldest
        return max(0.0, (now() - oldest).total_seconds()) if oldest is not None else 0.0

    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """An event was just recorded: a pass now rather than at the next sweep."""
        self._wake.set()

    def stop(self, *, final_pass: bool = True) -> None:
        """Stop the thread; then one more pass, for what was recorded while stopping."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if final_pass:
            self._pass()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._pass()
            self._wake.wait(self._interval)
            self._wake.clear()

    def _pass(self) -> None:
        try:
            self.run_once()
            self._oldest = self._outbox.oldest()
        except Exception as exc:  # the store or Redis is down: the events wait in the outbox
            if not self._failing:
                log.warning(
                    "outbox relay: cannot queue events (%s); retrying every %ss", type(exc).__name__, self._interval
                )
            self._failing = True
            try:
                self._oldest = self._outbox.oldest()
            except Exception:  # the store itself is down: keep the last known lag, which keeps growing
                pass
            return
        if self._failing:
            log.info("outbox relay: queueing events again")
            self._failing = False
