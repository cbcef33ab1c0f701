"""Helpers for tests of background work: settings and environments with short backoffs and
time limits, and `taskapi serve` / `taskapi worker` / `taskapi jobs` run as real processes.

Each test gets its own queue (JOBS_NAMESPACE) in the test Redis, so nothing queued by one
test reaches another's worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from taskapi.server.config import Settings, SmtpSettings
from tests.conftest import GENEROUS, TEST_SECRET, make_settings
from tests.support.dev_process import TASKAPI, Output

# Short enough for tests: retries after 100-200, 200-400, 400-800 ms, then dead.
FAST_JOBS: dict[str, Any] = {
    "jobs_max_retries": 3,
    "jobs_min_backoff_ms": 100,
    "jobs_max_backoff_ms": 2000,
    "jobs_time_limit_ms": 3000,  # SMTP reads time out after 1.5 s; delivery leases last 6 s
    "jobs_heartbeat_timeout_ms": 1500,  # a killed worker's jobs are back in the queue after this
    "outbox_poll_seconds": 0.2,
}
# Settings a child process must not inherit from the machine's environment.
_SETTINGS_PREFIXES = (
    "TASKAPI_",
    "LOG_",
    "REDIS_",
    "JWT_",
    "RATE_LIMIT_",
    "BCRYPT_",
    "SMTP_",
    "MAIL_",
    "JOBS_",
    "OUTBOX_",
)


def namespace() -> str:
    return f"test-jobs-{uuid.uuid4().hex[:10]}"


def job_settings(redis_url: str, smtp_port: int, **overrides: Any) -> Settings:
    """In-process settings: this test's queue, the test SMTP server, fast retries, the relay on."""
    values = FAST_JOBS | {
        "smtp": SmtpSettings(host="127.0.0.1", port=smtp_port),
        "mail_from": "Task API <no-reply@taskapi.test>",
        "jobs_namespace": namespace(),
        "outbox_relay": True,
    }
    return make_settings(redis_url, **(values | overrides))


def job_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process the same background settings as `settings`."""
    assert settings.smtp is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    rate = f"{GENEROUS.requests}/{GENEROUS.window_seconds}"
    return (
        env
        | {
            "JWT_SECRET": TEST_SECRET,
            "REDIS_URL": settings.redis_url,
            "SMTP_URL": f"smtp://{settings.smtp.host}:{settings.smtp.port}",
            "MAIL_FROM": settings.mail_from,
            "JOBS_NAMESPACE": settings.jobs_namespace,
            "JOBS_MAX_RETRIES": str(settings.jobs_max_retries),
            "JOBS_MIN_BACKOFF_MS": str(settings.jobs_min_backoff_ms),
            "JOBS_MAX_BACKOFF_MS": str(settings.jobs_max_backoff_ms),
            "JOBS_TIME_LIMIT_MS": str(settings.jobs_time_limit_ms),
            "JOBS_HEARTBEAT_TIMEOUT_MS": str(settings.jobs_heartbeat_timeout_ms),
            "OUTBOX_POLL_SECONDS": str(settings.outbox_poll_seconds),
            "BCRYPT_ROUNDS": "4",
            "RATE_LIMIT_IP": rate,
            "RATE_LIMIT_USER": rate,
            "RATE_LIMIT_AUTH": rate,
            "TASKAPI_GRPC_PORT": "0",
            "TASKAPI_METRICS_PORT": "0",
            "TASKAPI_WORKER_METRICS_PORT": "0",
            "TASKAPI_DRAIN_SECONDS": "0",
            "TASKAPI_SHUTDOWN_GRACE_SECONDS": "1",
        }
        | extra
    )


class Process:
    """A `taskapi` child process and its output (stdout and stderr, merged)."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(TASKAPI), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env),
        )
        assert self.process.stdout is not None
        self.output = Output(self.process.stdout)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (match := self.output.find(pattern)) is None:
            assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.output.text()}"
            assert time.monotonic() < deadline, f"no line matching {pattern!r}:\n{self.output.text()}"
            time.sleep(0.05)
        return match.group(1)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is cleaned up, as when a machine dies."""
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.output.join()


@contextmanager
def running(args: list[str], env: Mapping[str, str]) -> Iterator[Process]:
    process = Process(args, env)
    try:
        yield process
    finally:
        process.close()


@contextmanager
def running_server(env: Mapping[str, str]) -> Iterator[str]:
    """`taskapi serve` (its own embedded store, and its relay); yields its gRPC address."""
    with running(["serve"], env) as server:
        yield "127.0.0.1:" + server.wait_for(r"serving gRPC on \S+:(\d+)")


@contextmanager
def running_worker(env: Mapping[str, str]) -> Iterator[tuple[Process, int]]:
    """`taskapi worker`; yields it and its metrics port."""
    with running(["worker"], env) as worker:
        yield worker, int(worker.wait_for(r"metrics on http://\S+:(\d+)/metrics"))


def taskapi_jobs(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TASKAPI), "jobs", *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def job_count(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, job_type: str) -> float:
    return samples.get((f"taskapi_jobs_{name}_total", frozenset({("type", job_type)})), 0.0)


def event_id(message: Any) -> str:
    """The event a delivered email was sent for, from its Message-ID `<event.job@domain>`."""
    match = re.fullmatch(r"<([0-9a-f]{32})\.\w+@[^>]+>", str(message["Message-ID"]).strip())
    assert match, message["Message-ID"]
    return match.group(1)
