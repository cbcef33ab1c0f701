"""The jobs: what the worker does with each event, exactly once per event.

    welcome_email            user.registered        the welcome email
    password_changed_email   user.password_changed  the "your password was changed" notice
    user_deleted_cleanup     user.deleted           remove the user's tasks and their cache (run
                                                    by the task service, the one process that can
                                                    reach the task store; idempotent)

Each runs behind its delivery key (jobs/delivery.py). A refused recipient or message (an
SMTP 5xx) goes straight to the dead letters; anything else is retried with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from email.message import EmailMessage
from typing import Any, Protocol

import dramatiq

from taskapi.server.domain.entities import now
from taskapi.server.domain.events import Event
from taskapi.server.jobs import emails
from taskapi.server.jobs import events as event_json
from taskapi.server.jobs.delivery import DeliveryLedger
from taskapi.server.jobs.mail import DeliveryFailed, Mailer, Undeliverable
from taskapi.server.jobs.metrics import JobMetrics
from taskapi.server.jobs.queue import (
    JOB_QUEUES,
    PASSWORD_CHANGED_EMAIL,
    USER_DELETED_CLEANUP,
    WELCOME_EMAIL,
    JobConfig,
    redact_job_arguments,
)

log = logging.getLogger(__name__)


class RetryLater(dramatiq.Retry):
    """A failure worth another attempt after the usual backoff (its cause says which).
    Dramatiq logs a Retry without a traceback: a busy SMTP server is not a bug."""


class MalformedJob(Exception):
    """A job whose argument this service did not write (forged, or from an incompatible
    version): no retry can help, so it goes straight to the dead letters (`throws`)."""


class JobTracing(Protocol):
    """Given at wiring when tracing is on (taskapi.server.tracing.Tracing): a job's span,
    continuing the trace of the call that recorded its event (`traceparent`, may be "")."""

    def job_span(self, job_type: str, event_id: str, traceparent: str) -> AbstractContextManager[object]: ...


class Handlers:
    """The jobs one process does: email (with a `mailer`: taskapi worker) and the task side of
    a deletion (with `remove_tasks`: the task service, the one that can reach the task store)."""

    def __init__(
        self,
        *,
        ledger: DeliveryLedger,
        metrics: JobMetrics,
        mailer: Mailer | None = None,
        sender: str = "",
        remove_tasks: Callable[[str], None] | None = None,
        tracing: JobTracing | None = None,
    ) -> None:
        self._tracing = tracing
        self._ledger = ledger
        self._mailer = mailer
        self._sender = sender
        self._remove_tasks = remove_tasks
        self._metrics = metrics
        self.jobs: dict[str, Callable[[Event], None]] = {}
        if mailer is not None:
            self.jobs |= {WELCOME_EMAIL: self.welcome_email, PASSWORD_CHANGED_EMAIL: self.password_changed_email}
        if remove_tasks is not None:
            self.jobs[USER_DELETED_CLEANUP] = self.user_deleted_cleanup

    @property
    def queues(self) -> set[str]:
        """The queues these jobs are on: what this process's worker consumes."""
        return {JOB_QUEUES[job_type] for job_type in self.jobs}

    def declare(self, broker: dramatiq.Broker, config: JobConfig) -> None:
        """One actor per job type on `broker`, each with the time limit."""
        for job_type, action in self.jobs.items():
            actor = dramatiq.Actor(
                self._once(job_type, action),
                broker=broker,
                actor_name=job_type,
                queue_name=JOB_QUEUES[job_type],
                priority=0,
                options={"time_limit": config.time_limit_ms, "throws": (Undeliverable, MalformedJob)},
            )
            redact_job_arguments(actor.logger)

    def welcome_email(self, event: Event) -> None:
        assert self._mailer is not None  # declared only with a mailer
        self._mailer.send(_built(emails.welcome, event, sender=self._sender, job_type=WELCOME_EMAIL))

    def password_changed_email(self, event: Event) -> None:
        assert self._mailer is not None
        self._mailer.send(_built(emails.password_changed, event, sender=self._sender, job_type=PASSWORD_CHANGED_EMAIL))

    def user_deleted_cleanup(self, event: Event) -> None:
        assert self._remove_tasks is not None
        self._remove_tasks(event.subject)

    def _once(self, job_type: str, action: Callable[[Event], None]) -> Callable[[Any], None]:
        """`action` behind the event's delivery key: a duplicate delivery does nothing."""

        def job(data: Any) -> None:
            try:
                event = event_json.from_json(data)
            except event_json.MalformedEvent as exc:
                log.warning("%s: malformed job argument (%s), dead-lettered", job_type, exc)
                raise MalformedJob(str(exc)) from None
            if self._tracing is None:
                run(event)
                return
            with self._tracing.job_span(job_type, event.id, event.trace_parent):
                run(event)

        def run(event: Event) -> None:
            self._metrics.lag.labels(job_type).observe(max(0.0, (now() - event.occur_time).total_seconds()))
            key = f"{job_type}:{event.id}"
            claim = self._ledger.claim(key)
            if claim.done:
                self._metrics.duplicates.labels(job_type).inc()
                log.info("%s for event %s: done already, skipped", job_type, event.id)
                return
            if claim.token is None:  # another attempt holds the key (or held it, and died)
                raise dramatiq.Retry("another attempt holds the delivery key", delay=claim.retry_ms)
            try:
                action(event)
            except BaseException as exc:
                self._ledger.release(key, claim.token)
                if isinstance(exc, DeliveryFailed):
                    log.warning("%s for event %s failed: %s", job_type, event.id, exc)
                    if not isinstance(exc, Undeliverable):
                        raise RetryLater(str(exc)) from exc
                raise
            self._ledger.done(key, job_type)
            self._metrics.succeeded.labels(job_type).inc()
            log.info("%s for event %s: done", job_type, event.id)

        job.__name__ = job.__qualname__ = job_type
        return job


def _built(build: Callable[..., EmailMessage], event: Event, *, sender: str, job_type: str) -> EmailMessage:
    """The email for `event`; MalformedJob when its payload cannot make one (a field missing, or
    an address the email package refuses), which no retry would change."""
    try:
        return build(event, sender=sender, job_type=job_type)
    except (KeyError, ValueError, TypeError) as exc:
        log.warning(
            "%s for event %s: the payload makes no email (%s), dead-lettered", job_type, event.id, type(exc).__name__
        )
        raise MalformedJob(f"the payload makes no email: {type(exc).__name__}") from None
