"""Prometheus collectors of the background work, on the registry of the process's /metrics
(the App's in a server, the worker's own in `taskapi worker`):

    taskapi_jobs_enqueued_total{type}        handed to the queue (by the outbox relay)
    taskapi_jobs_succeeded_total{type}       done: the email accepted by the SMTP server, the cleanup run
    taskapi_jobs_retried_total{type}         failed attempts that run again after a backoff
    taskapi_jobs_dead_lettered_total{type}   failed their last attempt: in the dead-letter queue
    taskapi_jobs_duplicates_total{type}      redeliveries skipped by the delivery key (handled already)
    taskapi_outbox_lag_seconds               age of the oldest recorded event not yet queued (0: none)
    taskapi_jobs_lag_seconds{type}           from the event to an attempt at its job starting (histogram)
    taskapi_jobs{state}                      jobs in the queue now: queued, in_progress, retrying, dead
                                             (read from Redis at each scrape, where a queue is measured)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds: a job normally starts within a second of its event; retries wait minutes to an hour.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class QueueCounts(Protocol):
    """`taskapi.server.jobs.admin.Counts`, as far as the metrics read it."""

    @property
    def queued(self) -> int: ...
    @property
    def in_progress(self) -> int: ...
    @property
    def retrying(self) -> int: ...
    @property
    def dead(self) -> int: ...


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
        self.lag = Histogram(
            "taskapi_jobs_lag_seconds",
            "Seconds from an event to an attempt at its job starting (retries include their backoff).",
            ["type"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        for job_type in job_types:
            self.lag.labels(job_type)
        self._queue: _QueueCollector | None = None

    def measure_queue(self, counts: Callable[[], QueueCounts]) -> None:
        """Report the queue's counts (`taskapi jobs counts`) at every scrape; a later call
        (a worker started again on the same registry) replaces the source."""
        if self._queue is None:
            self._queue = _QueueCollector(counts)
            self.registry.register(self._queue)
        self._queue.counts = counts

    def measure_lag(self, lag: Callable[[], float]) -> None:
        """Read the outbox lag from `lag` at every scrape (the relay of this process)."""
        self._lag = lag


class _QueueCollector(Collector):
    def __init__(self, counts: Callable[[], QueueCounts]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("taskapi_jobs", "Jobs in the queue now, by state.", labels=["state"])
        try:
            counts = self.counts()
        except Exception:  # Redis down: no sample (an alert on absent data covers it), never a failed scrape
            yield family
            return
        for state in ("queued", "in_progress", "retrying", "dead"):
            family.add_metric([state], getattr(counts, state))
        yield family
