"""A Dramatiq worker in this process: worker threads running the jobs off the queue.

Embedded rather than Dramatiq's own CLI (which forks processes), so `taskapi worker` and
`taskapi dev` run it as one part of a process they control. `stop` is the graceful path
SIGTERM takes: no new job starts, the jobs in hand finish (up to their time limit),
prefetched ones go back to the queue.
"""

from __future__ import annotations

import logging

import dramatiq

from taskapi.server.jobs.handlers import Handlers
from taskapi.server.jobs.queue import JobQueue

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(
        self, queue: JobQueue, handlers: Handlers, *, threads: int | None = None, poll_ms: int | None = None
    ) -> None:
        self._queue = queue
        self._queues = sorted(handlers.queues)
        self._threads = threads or queue.config.threads
        handlers.declare(queue.broker, queue.config)
        self._stopped = False
        self._worker = dramatiq.Worker(
            queue.broker,
            queues=set(self._queues),  # only the queues of the jobs declared here
            worker_threads=self._threads,
            worker_timeout=poll_ms or queue.config.poll_ms,  # also how long a stop waits for idle consumers
        )

    def start(self) -> None:
        # Dramatiq's CLI sends this signal once per process; the time limit's watchdog starts on it.
        self._queue.broker.emit_after("process_boot")
        self._worker.start()
        log.info("job worker: %s threads on %s", self._threads, ", ".join(map(self._queue.key, self._queues)))

    def stop(self) -> None:
        """Finish the jobs in hand, requeue the rest. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._worker.stop(timeout=self._queue.config.time_limit_ms + 5_000)
