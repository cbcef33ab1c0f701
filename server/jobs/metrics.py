"""Prometheus collectors of the background work, on the registry of the process's /metrics
(the App's in a server, the worker's own in `taskapi worker`):

    taskapi_jobs_enqueued_total{type}        handed to the queue (by the outbox relay)
    taskapi_jobs_succeeded_total{type}       done: the email accepted by the SMTP server, the cleanup run
    taskapi_jobs_retried_total{type}         failed attempts that run again after a backoff
    taskapi_jobs_dead_lettered_total{type}   failed their last attempt: in the dead-letter queue
    taskapi_jobs_duplicates_total{type}      redeliveries skipped by the delivery key (handled already)
    taskapi_outbox_lag_seconds               age of the oldest recorded event not yet queued (0: none)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge


class JobMetrics:
    def __init__(self, registry: CollectorRegistry, job_types: Iterable[str] = ()) -> None:
        self.registry = registry

        def counter(name: str, documentation: str) -> Counter:
            made = Counter(name, documentation, ["type"], registry=registry)
            for job_type in job_types:  # present at 0 from the start, so rates and alerts see them
                made.labels(job_type)
            return made

        self.enqueued = counter("taskapi_jobs_enqueued", "Jobs handed to the queue, by type.")
        self.succeeded = counter("taskapi_jobs_succeeded", "Jobs done, by type.")
        self.retried = counter("taskapi_jobs_retried", "Failed job attempts that will run again after a backoff.")
        self.dead_lettered = counter(
            "taskapi_jobs_dead_lettered", "Jobs that failed their last attempt and went to the dead-letter queue."
        )
        self.duplicates = counter(
            "taskapi_jobs_duplicates", "Redelivered jobs skipped because their delivery key says they were done."
        )
        self.outbox_lag = Gauge(
            "taskapi_outbox_lag_seconds",
            "Age of the oldest event recorded in the store and not yet handed to the queue (0 when none).",
            registry=registry,
        )
        self._lag: Callable[[], float] = lambda: 0.0
        self.outbox_lag.set_function(lambda: self._lag())

    def measure_lag(self, lag: Callable[[], float]) -> None:
        """Read the outbox lag from `lag` at every scrape (the relay of this process)."""
        self._lag = lag
