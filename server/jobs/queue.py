"""The job queue: Dramatiq's Redis broker, configured once for the servers (which only
enqueue) and the workers (which also consume).

Every event type has one job type (an actor) on the queue of the service that does it:
`events` for `taskapi worker` (email), `tasks` for the task service (its part of a deletion:
it alone can reach the task store). Redis keys, per queue Q, under JOBS_NAMESPACE
(Dramatiq's layout, read by `taskapi jobs`):

    {ns}:Q, {ns}:Q.msgs                    waiting (a list of ids) and their messages
    {ns}:__acks__.{worker}.Q               fetched by a live worker: in progress
    {ns}:Q.DQ, {ns}:Q.DQ.msgs              waiting for a retry's backoff to pass
    {ns}:Q.XQ, {ns}:Q.XQ.msgs              dead letters (kept 7 days), by time of death
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq import Message, MessageProxy, Middleware, Retry
from dramatiq.brokers.redis import DEFAULT_DEAD_MESSAGE_TTL, MAINTENANCE_SCALE, RedisBroker
from dramatiq.middleware import Retries, TimeLimit

from taskapi.server.config import Settings
from taskapi.server.domain.events import PASSWORD_CHANGED, USER_DELETED, USER_REGISTERED, Event
from taskapi.server.jobs import events
from taskapi.server.jobs.metrics import JobMetrics

log = logging.getLogger(__name__)

QUEUE = "events"  # taskapi worker's
TASKS_QUEUE = "tasks"  # the task service's
QUEUES = (QUEUE, TASKS_QUEUE)
WELCOME_EMAIL = "welcome_email"
PASSWORD_CHANGED_EMAIL = "password_changed_email"
USER_DELETED_CLEANUP = "user_deleted_cleanup"
JOB_TYPES = {
    USER_REGISTERED: WELCOME_EMAIL,
    PASSWORD_CHANGED: PASSWORD_CHANGED_EMAIL,
    USER_DELETED: USER_DELETED_CLEANUP,
}
JOB_QUEUES = {WELCOME_EMAIL: QUEUE, PASSWORD_CHANGED_EMAIL: QUEUE, USER_DELETED_CLEANUP: TASKS_QUEUE}
DEAD_LETTER_SECONDS = DEFAULT_DEAD_MESSAGE_TTL // 1000  # dead letters are kept 7 days, then dropped
# Dramatiq's loggers that print a message with its arguments (an address, a name).
_LOGGERS_WITH_ARGUMENTS = (
    "dramatiq.worker.WorkerThread",
    *(f"dramatiq.worker.ConsumerThread({name}{suffix})" for name in QUEUES for suffix in ("", ".DQ")),
)


class UnknownEvent(LookupError):
    """No job handles this event type (a newer server recorded it): left for a newer relay."""


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    namespace: str
    threads: int
    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int
    time_limit_ms: int
    heartbeat_timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobConfig:
        return cls(
            namespace=settings.jobs_namespace,
            threads=settings.jobs_worker_threads,
            max_retries=settings.jobs_max_retries,
            min_backoff_ms=settings.jobs_min_backoff_ms,
            max_backoff_ms=settings.jobs_max_backoff_ms,
            time_limit_ms=settings.jobs_time_limit_ms,
            heartbeat_timeout_ms=settings.jobs_heartbeat_timeout_ms,
        )

    @property
    def smtp_timeout_seconds(self) -> float:
        """Per SMTP socket operation. The time limit interrupts Python code only, not a blocked
        read, so each read must give up well within it."""
        return self.time_limit_ms / 2000

    @property
    def lease_ms(self) -> int:
        """How long an attempt holds its delivery key: past the time limit plus one last
        blocked read, so a live attempt never loses it, and a killed one frees it this soon."""
        return 2 * self.time_limit_ms

    @property
    def poll_ms(self) -> int:
        """An idle worker's longest wait between fetches. Each fetch is also its heartbeat."""
        return max(50, min(1000, self.heartbeat_timeout_ms // 5))


def connect_queue(url: str) -> redis.Redis:
    """The queue's client: longer timeouts than the request path's (no call waits on it)."""
    client: redis.Redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return client


class JobQueue:
    """The broker, and the one way events become jobs (`enqueue`)."""

    def __init__(self, client: redis.Redis, config: JobConfig, metrics: JobMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.client = client
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]  # Dramatiq leaves its __init__ unannotated
            client=client,
            namespace=config.namespace,
            heartbeat_timeout=config.heartbeat_timeout_ms,
            # Maintenance (a dead worker's jobs back to the queue, old dead letters out) on every
            # command rather than Dramatiq's 0.1%: idle workers fetch about once a second, so by
            # chance a killed worker's jobs could wait many minutes. It costs two sorted-set reads.
            maintenance_chance=MAINTENANCE_SCALE,
            middleware=[
                # First: its after-hooks run last, and see what Retries decided.
                _Outcomes(metrics, client, self.key("error")),
                TimeLimit(time_limit=config.time_limit_ms, interval=min(1000, max(100, config.time_limit_ms // 4))),
                Retries(
                    max_retries=config.max_retries,
                    min_backoff=config.min_backoff_ms,  # then doubling, with jitter: Dramatiq's compute_backoff
                    max_backoff=config.max_backoff_ms,
                ),
            ],
        )
        for name in QUEUES:
            self.broker.declare_queue(name)
        redact_job_arguments()

    def enqueue(self, event: Event) -> str:
        """Queue the job that handles `event`; its type. Raises UnknownEvent, or Redis's errors."""
        job_type = JOB_TYPES.get(event.type)
        if job_type is None:
            raise UnknownEvent(event.type)
        self.broker.enqueue(job_message(job_type, events.to_json(event)))
        self.metrics.enqueued.labels(job_type).inc()
        return job_type

    def key(self, suffix: str) -> str:
        """A Redis key of the queue: `{namespace}:{suffix}`."""
        return f"{self.config.namespace}:{suffix}"


def job_message(job_type: str, event: dict[str, Any], *, message_id: str | None = None) -> Message[Any]:
    """A fresh job (no retries counted) for one event; `message_id` keeps a retried job's id."""
    fields: dict[str, Any] = {} if message_id is None else {"message_id": message_id}
    return Message(queue_name=JOB_QUEUES[job_type], actor_name=job_type, args=(event,), kwargs={}, options={}, **fields)


class _Outcomes(Middleware):
    """Counts retried and dead-lettered jobs per type (successes are counted by the job
    itself, which alone knows a skipped duplicate from a delivery), and keeps each failing
    job's last error for `taskapi jobs dead` (the job's own message cannot carry it: the
    dead-letter queue keeps the message as it was queued)."""

    def __init__(self, metrics: JobMetrics, client: redis.Redis, error_prefix: str) -> None:
        self._metrics = metrics
        self._client = client
        self._error_prefix = error_prefix

    def after_process_message(
        self, broker: Any, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        key = f"{self._error_prefix}:{message.message_id}"
        if exception is None:
            self._client.delete(key)
            return
        if not message.failed:
            self._metrics.retried.labels(message.actor_name).inc()
        # A Retry raised for a failure names it as its cause (jobs/handlers.py).
        failure = exception.__cause__ if isinstance(exception, Retry) and exception.__cause__ else exception
        error = f"{type(failure).__name__}: {failure}"[:300]
        self._client.set(key, error, ex=DEAD_LETTER_SECONDS)

    def after_nack(self, broker: Any, message: MessageProxy) -> None:
        self._metrics.dead_lettered.labels(message.actor_name).inc()


class RedactJobArguments(logging.Filter):
    """Dramatiq logs a message as `actor(args...)`, and an actor its arguments at DEBUG: ours
    hold an address and a name. The message becomes its job type and id; the arguments go."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == _ACTOR_RECEIVED:
            record.msg, record.args = "Received a job (its arguments are not logged).", ()
        elif isinstance(args, tuple) and any(isinstance(arg, Message | MessageProxy) for arg in args):
            record.args = tuple(
                f"{arg.actor_name}[{arg.message_id}]" if isinstance(arg, Message | MessageProxy) else arg
                for arg in args
            )
        return True


_ACTOR_RECEIVED = "Received args=%r kwargs=%r."  # dramatiq.actor.Actor.__call__


def redact_job_arguments(*loggers: logging.Logger) -> None:
    """Dramatiq's loggers that print job arguments, and `loggers` (the actors'), once each:
    a filter must sit on the logger that makes the record."""
    for logger in (*map(logging.getLogger, _LOGGERS_WITH_ARGUMENTS), *loggers):
        if not any(isinstance(existing, RedactJobArguments) for existing in logger.filters):
            logger.addFilter(RedactJobArguments())
