"""Background work end to end: real servers (`taskapi serve`, or an App in this process where a
test must share its embedded store), real workers (`taskapi worker`, or the same code in this
process), a real Redis and a real SMTP server (aiosmtpd). Each test has its own queue.

"Exactly once" is checked without waiting for a duplicate that might come later: once the
email is there, its delivery key says done and the queue holds nothing, so nothing more can
arrive.
"""

from __future__ import annotations

import base64
import dataclasses
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import getaddresses

import grpc
import pytest
from dramatiq import Message
from prometheus_client import CollectorRegistry

from taskapi.server import store, worker
from taskapi.server.app import App
from taskapi.server.config import Settings
from taskapi.server.domain.entities import NewTask, now
from taskapi.server.domain.events import user_deleted
from taskapi.server.jobs.admin import Counts, JobsAdmin
from taskapi.server.jobs.delivery import DeliveryLedger
from taskapi.server.jobs.events import from_json
from taskapi.server.jobs.queue import PASSWORD_CHANGED_EMAIL, QUEUE, USER_DELETED_CLEANUP, WELCOME_EMAIL, JobQueue
from taskapi.v1 import task_pb2, user_pb2
from tests.integration.api import PASSWORD, Api
from tests.support.jobs import (
    Process,
    event_id,
    job_count,
    job_env,
    job_settings,
    running_server,
    running_worker,
    scrape,
    taskapi_jobs,
)
from tests.support.smtp import DroppingServer, SmtpSink, running_sink

NEW_PASSWORD = "another horse battery"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with running_sink() as running:
        yield running


@pytest.fixture
def settings(redis_url: str, sink: SmtpSink) -> Settings:
    return job_settings(redis_url, sink.port)


@pytest.fixture
def queue(settings: Settings) -> Iterator[JobQueue]:
    """This test's queue, to look at (what `taskapi jobs` reads)."""
    job_queue = worker.job_queue(settings, worker.job_metrics(CollectorRegistry()))
    yield job_queue
    job_queue.client.close()


@contextmanager
def connected(address: str) -> Iterator[Api]:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Api(channel)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    """A `taskapi serve` process: its own embedded store, its own outbox relay."""
    with running_server(job_env(settings)) as address, connected(address) as stubs:
        yield stubs


@pytest.fixture
def background(settings: Settings) -> Iterator[worker.Background]:
    """The worker in this process (the code `taskapi worker` runs), without a relay: the
    server's relay queues the server's events."""
    with worker.running_worker(settings, worker.job_metrics(CollectorRegistry()), relay=False) as running:
        yield running


@pytest.fixture
def empty_outbox(settings: Settings) -> None:
    """The embedded store is shared by the whole test process, and the suite's servers relay
    nothing: for a relay in this process, drop the events other tests left there first."""
    store.connect(settings)
    outbox = store.MongoOutbox()
    while events := outbox.pending(1000):
        for event in events:
            outbox.sent(event)


def delivered(queue: JobQueue, job_type: str, event: str, timeout: float = 20) -> str | None:
    """The event's delivery key once it says done (the worker marks it a moment after the SMTP
    server accepted the message), or what it says at the timeout."""
    ledger = DeliveryLedger(queue.client, queue.config.namespace, lease_ms=queue.config.lease_ms)
    deadline = time.monotonic() + timeout
    while (state := ledger.state(f"{job_type}:{event}")) != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def settled(queue: JobQueue, timeout: float = 20) -> Counts:
    """The queue's counts once nothing is queued, in progress or waiting for a retry."""
    deadline = time.monotonic() + timeout
    while True:
        counts = JobsAdmin(queue).counts()
        if counts.queued == counts.in_progress == counts.retrying == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_register_sends_exactly_one_welcome_email(
    api: Api, background: worker.Background, sink: SmtpSink, queue: JobQueue, settings: Settings
) -> None:
    user = api.register("ada")

    [message] = sink.wait_for(1, to=user.email)
    assert getaddresses([message["To"]]) == [("Ada", user.email)]
    assert message["From"] == settings.mail_from
    assert message["Subject"] == "Welcome to Task API"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None  # both parts
    assert "Hello Ada," in plain.get_content() and user.email in plain.get_content()
    assert "<p>Hello Ada,</p>" in html.get_content()
    raw = message.as_string()
    assert user.id not in raw and PASSWORD not in raw  # the name and the address, nothing else of the account
    assert delivered(queue, WELCOME_EMAIL, event_id(message)) == "done"
    assert settled(queue) == Counts(queued=0, in_progress=0, retrying=0, dead=0, succeeded={WELCOME_EMAIL: 1})


def test_register_answers_while_its_email_is_still_being_sent(
    api: Api, background: worker.Background, sink: SmtpSink
) -> None:
    """Register never waits on SMTP (so its latency, p99 included, holds no SMTP time): with
    the SMTP server holding every transaction open, Register still answers."""
    sink.gate.clear()
    try:
        first = api.register("first")  # answered: its email not even accepted
        sink.wait_holding()  # the worker is in that email's SMTP transaction now
        second = api.register("second")  # another sign-up answers meanwhile
        assert sink.to(first.email) == [] and sink.to(second.email) == []
    finally:
        sink.gate.set()
    sink.wait_for(1, to=first.email)
    sink.wait_for(1, to=second.email)


def test_change_password_sends_one_notice(
    api: Api, background: worker.Background, sink: SmtpSink, queue: JobQueue
) -> None:
    user = api.register("grace")
    sink.wait_for(1, to=user.email)  # the welcome
    api.users.ChangePassword(
        user_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=user.auth,
        timeout=10,
    )

    welcome, notice = sink.wait_for(2, to=user.email)
    assert welcome["Subject"] == "Welcome to Task API"
    assert notice["Subject"] == "Your Task API password was changed"
    text = notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello Grace," in text and user.email in text and NEW_PASSWORD not in notice.as_string()
    assert notice.get_body(("html",)) is not None
    assert delivered(queue, PASSWORD_CHANGED_EMAIL, event_id(notice)) == "done"
    assert settled(queue).succeeded == {PASSWORD_CHANGED_EMAIL: 1, WELCOME_EMAIL: 1}


@pytest.mark.usefixtures("empty_outbox")
def test_delete_user_records_one_deletion_event_whose_consumer_removes_the_tasks(
    settings: Settings, sink: SmtpSink, queue: JobQueue
) -> None:
    """In this process, so the test can look into the server's embedded stores. The consumer
    is the task service's own (it runs in every server that serves tasks), not the worker's."""
    app = App(settings)
    try:
        replica = app.start_replica(0)
        with connected(replica.address) as api:
            user = api.register("leaving")
            api.tasks.CreateTask(task_pb2.CreateTaskRequest(task=task_pb2.Task(title="mine")), metadata=user.auth)
            # Stop the task side's consumer first, so the job waits in the queue for the one below.
            assert app.task_jobs is not None
            app.task_jobs.stop()
            api.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id), metadata=user.auth, timeout=10)
        # A task the in-process cleanup never saw (a CreateTask racing the deletion): the
        # deletion event's consumer removes it, as it removes every task when tasks are a
        # service of their own.
        late = store.MongoTaskStore().insert(_task(owner=user.id))
        assert late is not None
        deletion = user_deleted(user.id).id  # one per user: a retried DeleteUser records the same

        metrics = worker.job_metrics(CollectorRegistry())
        consumer = worker.task_side_jobs(settings, worker.job_queue(settings, metrics), app.remove_tasks_of)
        consumer.start()
        try:
            with worker.running_worker(settings, metrics, relay=False):
                assert delivered(queue, USER_DELETED_CLEANUP, deletion) == "done"
                assert store.MongoTaskStore().find(late.id, None) is None
                assert store.MongoOutbox().pending(1000) == []  # sent
                assert settled(queue).succeeded == {WELCOME_EMAIL: 1, USER_DELETED_CLEANUP: 1}  # each once
        finally:
            consumer.stop()
        assert job_count(_samples(metrics.registry), "duplicates", USER_DELETED_CLEANUP) == 0
        served = scrape(app.metrics_port)  # the server's own /metrics: what its relay queued
        assert job_count(served, "enqueued", WELCOME_EMAIL) == job_count(served, "enqueued", USER_DELETED_CLEANUP) == 1
        assert served[("taskapi_outbox_lag_seconds", frozenset())] == 0
    finally:
        app.close(grace=1.0)


def test_a_redelivered_job_does_not_send_twice(
    settings: Settings, sink: SmtpSink, queue: JobQueue, background: worker.Background
) -> None:
    """A relay that died between queueing an event and marking it sent queues it again (as
    does a dead letter retried after a duplicate went through): the second delivery finds
    the event's delivery key done, and does nothing."""
    event = from_json(
        {
            "id": "0" * 31 + "1",
            "type": "user.registered",
            "subject": "6b0ad69f3e182fdd97bd66ce",
            "occur_time": "2026-12-01T10:00:00.000Z",
            "payload": {"email": "twice@example.com", "name": "Twice"},
        }
    )
    queue.enqueue(event)
    [message] = sink.wait_for(1, to="twice@example.com")
    assert delivered(queue, WELCOME_EMAIL, event.id) == "done"

    queue.enqueue(event)  # delivered again
    counts = settled(queue)
    assert counts.succeeded == {WELCOME_EMAIL: 1} and len(sink.to("twice@example.com")) == 1
    assert job_count(_samples(background.queue.metrics.registry), "duplicates", WELCOME_EMAIL) == 1


def test_worker_killed_during_the_smtp_transaction_still_sends_the_email_once(
    settings: Settings, sink: SmtpSink, queue: JobQueue
) -> None:
    """SIGKILL while the worker holds the job and its SMTP transaction is open (nothing
    accepted yet): after the worker's heartbeat stops, its job goes back to the queue, the
    dead attempt's delivery lease runs out, and another worker sends the email, once."""
    env = job_env(settings)
    sink.gate.clear()
    with running_server(env) as address:
        with connected(address) as api:
            with running_worker(env) as (first, _):
                user = api.register("killed")
                sink.wait_holding()
                first.kill()
            sink.gate.set()  # the abandoned transaction has no client left: nothing is accepted
            assert sink.to(user.email) == []

            with running_worker(env) as (second, metrics_port):
                [message] = sink.wait_for(1, to=user.email, timeout=30)
                assert delivered(queue, WELCOME_EMAIL, event_id(message)) == "done"
                assert settled(queue, timeout=30).succeeded == {WELCOME_EMAIL: 1}
                assert job_count(scrape(metrics_port), "succeeded", WELCOME_EMAIL) == 1


def test_sigterm_finishes_the_job_in_hand(settings: Settings, sink: SmtpSink, queue: JobQueue) -> None:
    env = job_env(settings)
    sink.gate.clear()
    with running_server(env) as address:
        with connected(address) as api:
            with running_worker(env) as (process, _):
                user = api.register("stopping")
                sink.wait_holding()  # the job is in hand, its SMTP transaction open
                process.process.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                assert process.process.poll() is None  # still finishing it
                sink.gate.set()
                assert process.process.wait(timeout=30) == 0, process.output.text()
            [message] = sink.wait_for(1, to=user.email)
            assert delivered(queue, WELCOME_EMAIL, event_id(message)) == "done"
            assert settled(queue) == Counts(queued=0, in_progress=0, retrying=0, dead=0, succeeded={WELCOME_EMAIL: 1})


def test_smtp_down_retries_with_backoff_then_dead_letters_and_a_retry_delivers_once(redis_url: str) -> None:
    down = DroppingServer()  # the SMTP port answers and hangs up at once, before any greeting
    settings = job_settings(redis_url, down.port)
    env = job_env(settings)
    queue = worker.job_queue(settings, worker.job_metrics(CollectorRegistry()))
    try:
        with running_server(env) as address, running_worker(env) as (process, metrics_port):
            with connected(address) as api:  # one after the other: each one's attempts are its own
                first = api.register("unlucky")
                wait_until_dead(queue, 1, process)
                second = api.register("unluckier")
                wait_until_dead(queue, 2, process)

            attempts = 1 + settings.jobs_max_retries
            assert len(down.attempts) == 2 * attempts
            samples = scrape(metrics_port)
            assert job_count(samples, "retried", WELCOME_EMAIL) == 2 * settings.jobs_max_retries
            assert job_count(samples, "dead_lettered", WELCOME_EMAIL) == 2
            assert job_count(samples, "succeeded", WELCOME_EMAIL) == 0

            counts = taskapi_jobs(env)
            assert counts.returncode == 0 and _count_of(counts.stdout, "dead") == 2, counts
            dead = taskapi_jobs(env, "dead")
            assert dead.returncode == 0, dead.stderr
            rows = {user.id: [line for line in dead.stdout.splitlines() if user.id in line] for user in (first, second)}
            for [row] in rows.values():
                assert WELCOME_EMAIL in row and f" {attempts} " in row and "DeliveryFailed" in row, row
            assert first.email not in dead.stdout + counts.stdout and second.email not in dead.stdout
            job = rows[first.id][0].split()[0]

            down.close()
            with running_sink(down.port) as sink:  # the server is back
                unknown = taskapi_jobs(env, "retry", "f" * 32)
                assert unknown.returncode == 1 and "no dead job" in unknown.stderr, unknown
                one = taskapi_jobs(env, "retry", job)
                assert one.returncode == 0 and "1 job(s) queued again" in one.stdout, one
                [message] = sink.wait_for(1, to=first.email)
                assert delivered(queue, WELCOME_EMAIL, event_id(message)) == "done"
                assert JobsAdmin(queue).counts().dead == 1 and sink.to(second.email) == []

                rest = taskapi_jobs(env, "retry", "--all")
                assert rest.returncode == 0 and "1 job(s) queued again" in rest.stdout, rest
                sink.wait_for(1, to=second.email)
                assert settled(queue) == Counts(
                    queued=0, in_progress=0, retrying=0, dead=0, succeeded={WELCOME_EMAIL: 2}
                )
                sink.wait_for(1, to=first.email)  # still one
        # The gaps between one job's attempts grow: the n-th backoff is min * 2^n to twice that.
        for times in (down.attempts[:attempts], down.attempts[attempts:]):
            gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
            for retry, gap in enumerate(gaps):
                assert gap >= settings.jobs_min_backoff_ms / 1000 * 2**retry, gaps
        assert first.email not in process.output.text()  # nor in the worker's log lines
    finally:
        down.close()
        queue.client.close()


@pytest.mark.usefixtures("empty_outbox")
def test_server_killed_after_register_answered_before_its_relay_ran(
    settings: Settings, sink: SmtpSink, queue: JobQueue
) -> None:
    """Simulated in this process, because the embedded store lives and dies with its
    process: the "server" is an App whose relay never runs (OUTBOX_RELAY off, as if the
    process died before the relay's first pass), torn down once Register has answered. Only
    the store outlives it, as a MongoDB outlives a server process (with MONGODB_URI set,
    this test uses a real one). After the "restart", a relay built anew over that store, the
    one `taskapi worker` runs, queues the event, and the email goes out."""
    app = App(dataclasses.replace(settings, outbox_relay=False))
    try:
        with connected(app.start_replica(0).address) as api:
            user = api.register("restarted")
    finally:
        app.close(grace=1.0)
    assert JobsAdmin(queue).counts().queued == 0  # nothing reached the queue

    with worker.running_worker(settings, worker.job_metrics(CollectorRegistry()), relay=True):
        [message] = sink.wait_for(1, to=user.email)
        assert delivered(queue, WELCOME_EMAIL, event_id(message)) == "done"
        assert settled(queue).succeeded == {WELCOME_EMAIL: 1}


def test_the_smtp_password_and_the_recipient_never_reach_the_worker_log(redis_url: str) -> None:
    """AUTH with a password, debug logging, a first attempt refused (451): the worker's whole
    output holds neither the password (nor AUTH's base64 of it), nor the address or name."""
    password = "s3cret-Pa55word"
    with running_sink(credentials=("mailer", password), refuse=1) as sink:
        settings = job_settings(redis_url, sink.port)
        env = job_env(settings, SMTP_URL=f"smtp://mailer:{password}@127.0.0.1:{sink.port}", LOG_LEVEL="DEBUG")
        with running_server(job_env(settings)) as address, running_worker(env) as (process, _):
            with connected(address) as api:
                user = api.register("private")
            sink.wait_for(1, to=user.email)
            assert sink.transactions == 2 and sink.logins == 2  # signed in, refused once, then accepted
    log = process.output.text()
    assert "Retrying message" in log  # the failure was logged, and this is its log
    for secret in (password, base64.b64encode(f"\0mailer\0{password}".encode()).decode(), user.email, "Private"):
        assert secret not in log, secret


def wait_until_dead(queue: JobQueue, count: int, process: Process) -> None:
    deadline = time.monotonic() + 30
    while JobsAdmin(queue).counts().dead < count:
        assert time.monotonic() < deadline, process.output.text()
        time.sleep(0.05)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def _count_of(text: str, state: str) -> int:
    [line] = [line for line in text.splitlines() if line.startswith(state + " ")]
    return int(line.split()[1])


def _task(owner: str) -> NewTask:
    return NewTask(
        owner=owner,
        title="late",
        description="",
        status=1,
        priority=2,
        due_time=None,
        tags=(),
        request_id=None,
        create_time=now(),
        complete_time=None,
    )


FORGED_ARGUMENTS = {
    "not an object": "user.registered",
    "no id": {"type": "user.registered", "subject": "u1", "occur_time": "2026-12-01T10:00:00.000Z"},
    "a huge subject": {"id": "f1", "type": "user.registered", "subject": "x" * 2_000_000, "occur_time": "2026-12-01"},
    "a bad time": {"id": "f2", "type": "user.registered", "subject": "u1", "occur_time": "yesterday"},
    "a payload of numbers": {
        "id": "f3",
        "type": "user.registered",
        "subject": "u1",
        "occur_time": "2026-12-01",
        "payload": {"email": 7},
    },
    "no payload": {"id": "f4", "type": "user.registered", "subject": "u1", "occur_time": "2026-12-01"},
    "a header injection": {
        "id": "f5",
        "type": "user.registered",
        "subject": "u1",
        "occur_time": "2026-12-01",
        "payload": {"email": "forged@example.com\r\nBcc: victim@example.com", "name": "F"},
    },
}


def test_forged_job_arguments_go_straight_to_the_dead_letters_and_the_worker_goes_on(
    queue: JobQueue, sink: SmtpSink, background: worker.Background, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs this service did not write (put in the queue by anyone who can write to Redis, or
    by an incompatible version) are refused at once: one attempt each, no email, an error that
    names the field but not the forged value, and the next real job is delivered."""
    for argument in FORGED_ARGUMENTS.values():
        queue.broker.enqueue(
            Message(queue_name=QUEUE, actor_name=WELCOME_EMAIL, args=(argument,), kwargs={}, options={})
        )
    real = from_json(
        {
            "id": "0" * 31 + "2",
            "type": "user.registered",
            "subject": "6b0ad69f3e182fdd97bd66cf",
            "occur_time": "2026-12-01T10:00:00.000Z",
            "payload": {"email": "real@example.com", "name": "Real"},
        }
    )
    queue.enqueue(real)
    sink.wait_for(1, to="real@example.com")
    counts = settled(queue)
    assert counts.dead == len(FORGED_ARGUMENTS) and counts.succeeded == {WELCOME_EMAIL: 1}, counts
    dead = JobsAdmin(queue).dead()
    assert [job.attempts for job in dead] == [1] * len(FORGED_ARGUMENTS)  # never retried
    assert all(job.error.startswith("MalformedJob: ") for job in dead), [job.error for job in dead]
    assert sink.to("victim@example.com") == [] and sink.to("forged@example.com") == []
    logged = caplog.text + " ".join(job.error for job in dead)
    assert "victim" not in logged and "xxxxxxxxxx" not in logged
