"""`taskapi jobs`: what the queue holds, the dead letters, and retrying them.

    taskapi jobs                     counts per state, and jobs done per type
    taskapi jobs dead                the dead-letter list (no personal data: ids and errors)
    taskapi jobs retry JOB [JOB...]  queue dead jobs again, by job id (the event's id)
    taskapi jobs retry --all         every dead job

A retried job starts with a fresh retry budget; its delivery key still guards it, so a
job whose event was handled meanwhile (by a duplicate) does nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from dramatiq import Message
from prometheus_client import CollectorRegistry

from taskapi.server.config import Settings
from taskapi.server.jobs.metrics import JobMetrics
from taskapi.server.jobs.queue import JOB_QUEUES, QUEUES, JobConfig, JobQueue, connect_queue, job_message

NO_QUEUE = "REDIS_URL (or JOBS_REDIS_URL) is not set: the job queue lives in Redis"


@dataclass(frozen=True)
class Counts:
    queued: int
    in_progress: int
    retrying: int  # waiting for a retry's backoff to pass
    dead: int
    succeeded: dict[str, int]


@dataclass(frozen=True)
class DeadJob:
    job_id: str  # the event id: what logs name, the same across retries and redeliveries
    job_type: str
    subject: str
    attempts: int
    dead_since: datetime
    error: str
    redis_id: str
    message: Message[Any]


class JobsAdmin:
    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue
        self._client = queue.client

    def counts(self) -> Counts:
        key = self._queue.key
        pipe = self._client.pipeline(transaction=True)
        for name in QUEUES:  # every service's queue: one view of the background work
            pipe.llen(key(name))
            pipe.hlen(key(f"{name}.msgs"))
            pipe.hlen(key(f"{name}.DQ.msgs"))
            pipe.zcard(key(f"{name}.XQ"))
        pipe.hgetall(key("succeeded"))
        *per_queue, succeeded = pipe.execute()
        waiting, held, retrying, dead = (sum(int(n) for n in per_queue[i::4]) for i in range(4))
        return Counts(
            queued=waiting,
            in_progress=max(0, held - waiting),  # fetched by a worker, not yet acknowledged
            retrying=retrying,
            dead=dead,
            succeeded={name.decode(): int(count) for name, count in sorted(succeeded.items())},
        )

    def dead(self) -> list[DeadJob]:
        return [job for name in QUEUES for job in self._dead(name)]

    def _dead(self, queue: str) -> list[DeadJob]:
        key = self._queue.key
        # redis-py types its replies loosely; these are what a client without decode_responses returns.
        entries = cast(list[tuple[bytes, float]], self._client.zrange(key(f"{queue}.XQ"), 0, -1, withscores=True))
        if not entries:
            return []
        ids = [redis_id for redis_id, _ in entries]
        datas = cast(list[bytes | None], self._client.hmget(key(f"{queue}.XQ.msgs"), ids))
        jobs = []
        for (redis_id, score), data in zip(entries, datas, strict=True):
            if data is None:  # expired between the two reads
                continue
            message = Message.decode(data)
            event = message.args[0] if message.args and isinstance(message.args[0], dict) else {}
            error = cast(bytes | None, self._client.get(key(f"error:{message.message_id}")))
            jobs.append(
                DeadJob(
                    job_id=str(event.get("id", message.message_id)),
                    job_type=message.actor_name,
                    subject=str(event.get("subject", ""))[:64],  # a forged one may be huge
                    attempts=int(message.options.get("retries", 0)) + 1,
                    dead_since=datetime.fromtimestamp(score / 1000, UTC),
                    error=error.decode() if isinstance(error, bytes) else "",
                    redis_id=redis_id.decode(),
                    message=message,
                )
            )
        return jobs

    def retry(self, job_ids: Collection[str] | None) -> list[DeadJob]:
        """Queue the dead jobs named (all of them for None) again; the ones queued."""
        retried = []
        for job in self.dead():
            if job_ids is not None and job.job_id not in job_ids:
                continue
            # Queued first, then out of the dead letters: a crash between leaves a duplicate,
            # which the delivery key drops, never a lost job.
            fresh = job_message(job.job_type, job.message.args[0], message_id=job.message.message_id)
            self._queue.broker.enqueue(fresh)
            self._queue.metrics.enqueued.labels(job.job_type).inc()
            pipe = self._client.pipeline(transaction=True)
            queue = JOB_QUEUES[job.job_type]
            pipe.zrem(self._queue.key(f"{queue}.XQ"), job.redis_id)
            pipe.hdel(self._queue.key(f"{queue}.XQ.msgs"), job.redis_id)
            pipe.execute()
            retried.append(job)
        return retried


def main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`taskapi jobs`: needs only the queue's Redis (nothing of the store or the server)."""
    if not settings.queue_redis_url:
        print(f"taskapi jobs: {NO_QUEUE}", file=err)
        return 2
    config, metrics = JobConfig.from_settings(settings), JobMetrics(CollectorRegistry())
    queue = JobQueue(connect_queue(settings.queue_redis_url), config, metrics)
    try:
        return run(JobsAdmin(queue), args, out, err)
    finally:
        queue.client.close()


def run(admin: JobsAdmin, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.action == "dead":
        print_dead(admin.dead(), out)
        return 0
    if args.action == "retry":
        if bool(args.all) == bool(args.jobs):
            print("taskapi jobs retry: name the jobs to retry, or pass --all", file=err)
            return 2
        retried = admin.retry(None if args.all else set(args.jobs))
        for job in retried:
            print(f"queued again: {job.job_id} {job.job_type}", file=out)
        missing = set() if args.all else set(args.jobs) - {job.job_id for job in retried}
        for job_id in sorted(missing):
            print(f"taskapi jobs retry: no dead job {job_id}", file=err)
        print(f"{len(retried)} job(s) queued again", file=out)
        return 1 if missing else 0
    print_counts(admin.counts(), out)
    return 0


def print_counts(counts: Counts, out: TextIO) -> None:
    done = ", ".join(f"{name} {count}" for name, count in counts.succeeded.items()) or "-"
    rows = [
        ("queued", counts.queued, "waiting for a worker"),
        ("in progress", counts.in_progress, "held by a worker"),
        ("retrying", counts.retrying, "failed, waiting for the next attempt"),
        ("dead", counts.dead, "taskapi jobs dead; taskapi jobs retry"),
        ("succeeded", sum(counts.succeeded.values()), done),
    ]
    for state, count, note in rows:
        print(f"{state:<12} {count:>6}  {note}", file=out)


def print_dead(jobs: list[DeadJob], out: TextIO) -> None:
    if not jobs:
        print("no dead jobs", file=out)
        return
    print(f"{'JOB':<32}  {'TYPE':<22}  {'SUBJECT':<24}  {'ATTEMPTS':>8}  {'DEAD SINCE':<20}  LAST ERROR", file=out)
    for job in jobs:
        since = job.dead_since.strftime("%Y-%m-%dT%H:%M:%SZ")
        row = f"{job.job_id:<32}  {job.job_type:<22}  {job.subject:<24}  {job.attempts:>8}  {since:<20}"
        print(f"{row}  {job.error or '-'}", file=out)
