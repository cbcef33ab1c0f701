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
    def __init__(self, queue: JobQueue, handlers: Handlers) -> None:
        self._queue = queue
        handlers.declare(queue.broker, queue.config)
        self._worker = dramatiq.Worker(
            queue.broker, worker_threads=queue.config.threads, worker_timeout=queue.config.poll_ms
        )

    def start(self) -> None:
        # Dramatiq's CLI sends this signal once per process; the time limit's watchdog starts on it.
        self._queue.broker.emit_after("process_boot")
        self._worker.start()
        log.info("job worker: %s threads on queue %r", self._queue.config.threads, self._queue.key("events"))

    def stop(self) -> None:
        """Finish the jobs in hand, requeue the rest."""
        self._worker.stop(timeout=self._queue.config.time_limit_ms + 5_000)
