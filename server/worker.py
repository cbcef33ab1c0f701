"""The background side, wired: `taskapi worker`.

What app.py is to the servers: the one module that builds the job queue, the email jobs
with the SMTP server, and the outbox relay. (The task side of a deletion is the task
service's own job: app.py runs it in every server that serves tasks.)

    taskapi worker   runs the jobs and an outbox relay until SIGTERM/SIGINT, then finishes
                     the jobs in hand; serves its own /metrics (TASKAPI_WORKER_METRICS_PORT)

`taskapi jobs` needs only the queue: it is jobs/admin.py.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from taskapi.interceptors.metrics import serve_metrics
from taskapi.server import store
from taskapi.server.cache.tracing import traced_client
from taskapi.server.config import Settings
from taskapi.server.jobs.admin import NO_QUEUE, JobsAdmin
from taskapi.server.jobs.delivery import DeliveryLedger
from taskapi.server.jobs.handlers import Handlers
from taskapi.server.jobs.mail import Mailer
from taskapi.server.jobs.metrics import JobMetrics
from taskapi.server.jobs.queue import JOB_TYPES, JobConfig, JobQueue, connect_queue
from taskapi.server.jobs.relay import Relay
from taskapi.server.jobs.runner import JobRunner
from taskapi.server.tracing import Tracing

log = logging.getLogger(__name__)

TaskCleanup = Callable[[str], None]  # owner id -> that owner's tasks and cache gone

NO_SMTP = "SMTP_URL is not set: the worker sends email (smtp://user:password@host:587?starttls=true)"


def job_metrics(registry: CollectorRegistry) -> JobMetrics:
    return JobMetrics(registry, JOB_TYPES.values())


def job_queue(settings: Settings, metrics: JobMetrics, tracer: Tracer | None = None) -> JobQueue:
    """The queue; with a `tracer`, its Redis commands inside a span (a job's) are spans too."""
    client = connect_queue(settings.queue_redis_url)
    if tracer is not None:
        client = traced_client(client, tracer)
    return JobQueue(client, JobConfig.from_settings(settings), metrics)


def task_side_jobs(
    settings: Settings, queue: JobQueue, tasks: TaskCleanup, tracing: Tracing | None = None
) -> JobRunner:
    """The task service's consumer: the task side of a deletion, on its own queue."""
    config = queue.config
    handlers = Handlers(
        ledger=DeliveryLedger(queue.client, config.namespace, lease_ms=config.lease_ms),
        metrics=queue.metrics,
        remove_tasks=tasks,
        tracing=tracing,
    )
    # One deletion at a time is plenty; a short poll, so a server's shutdown does not wait on it.
    return JobRunner(queue, handlers, threads=1, poll_ms=100)


def outbox_relay(settings: Settings, queue: JobQueue, metrics: JobMetrics) -> Relay:
    return Relay(store.MongoOutbox(), queue, metrics, interval=settings.outbox_poll_seconds)


@dataclass
class Background:
    queue: JobQueue
    runner: JobRunner
    relay: Relay | None


@contextmanager
def running_worker(
    settings: Settings, metrics: JobMetrics, *, relay: bool, tracing: Tracing | None = None
) -> Iterator[Background]:
    """Worker threads on the queue (and an outbox relay over this process's store if
    `relay`), until the block ends; then the jobs in hand finish. Needs the queue's Redis
    and `settings.smtp`. With `tracing`, each job is a span continuing its event's trace,
    and its store queries and Redis commands are spans inside it."""
    if settings.smtp is None:
        raise ValueError(NO_SMTP)
    store.connect(settings, (store.ACCOUNTS,))  # the outbox: the worker reads nothing of the tasks
    tracer = tracing.tracer if tracing is not None else None
    queue = job_queue(settings, metrics, tracer)
    config = queue.config
    handlers = Handlers(
        ledger=DeliveryLedger(queue.client, config.namespace, lease_ms=config.lease_ms),
        mailer=Mailer(settings.smtp, timeout=config.smtp_timeout_seconds),
        sender=settings.mail_from,
        metrics=metrics,
        tracing=tracing,
    )
    metrics.measure_queue(JobsAdmin(queue).counts)
    runner = JobRunner(queue, handlers)
    runner.start()
    sweeper = outbox_relay(settings, queue, metrics).start() if relay else None
    try:
        yield Background(queue, runner, sweeper)
    finally:
        if sweeper is not None:
            sweeper.stop()
        runner.stop()
        queue.client.close()


def serve(settings: Settings) -> int:
    """`taskapi worker`."""
    smtp = settings.smtp
    if not settings.queue_redis_url or smtp is None:
        print(f"taskapi worker: {NO_SMTP if settings.queue_redis_url else NO_QUEUE}", file=sys.stderr)
        return 2
    if not settings.mongodb_uri:
        log.warning(
            "MONGODB_URI is not set: this worker's relay reads its own empty embedded store; "
            "servers with an embedded store queue their events themselves"
        )
    if smtp.password and smtp.security == "none" and smtp.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("SMTP_URL has a password and no TLS: it crosses the network in the clear (add ?starttls=true)")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    registry = CollectorRegistry()
    metrics = job_metrics(registry)
    endpoint = serve_metrics(registry, port=settings.worker_metrics_port, addr=settings.grpc_host)
    tracing = Tracing(settings.tracing, component="taskapi-worker") if settings.tracing is not None else None
    try:
        with running_worker(settings, metrics, relay=True, tracing=tracing):
            log.info(
                "worker running: email through %s; metrics on http://%s:%s/metrics",
                smtp.url,
                settings.grpc_host,
                endpoint.port,
            )
            stopping.wait()
            log.info("stopping: finishing the jobs in hand (up to %s ms)", settings.jobs_time_limit_ms)
    finally:
        endpoint.close()
        if tracing is not None:
            tracing.shutdown()
    log.info("stopped")
    return 0
