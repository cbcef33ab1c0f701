"""The `taskapi` command on a bad environment value: one line naming the variable and what it
accepts, exit status 2, no traceback, for every command that reads the settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskapi.server import affinity

COMMANDS = {
    "serve": ["serve"],
    "dev": ["dev", "--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--web-port", "0"],
    "create-admin": ["create-admin", "--email", "admin@example.com"],
    "worker": ["worker"],
    "jobs": ["jobs"],
}
# Variables the settings read; cleared so the machine's environment cannot change the outcome.
SETTINGS_PREFIXES: tuple[str, ...] = ("TASKAPI_", "LOG_", "MONGODB_", "REDIS_", "JWT_", "RATE_LIMIT_", "BCRYPT_")
SETTINGS_PREFIXES += ("TRUSTED_", "SMTP_", "MAIL_", "JOBS_", "OUTBOX_", "TASKS_", "ACCOUNTS_")


CASES = [
    ("serve", "TASKAPI_WORKERS", "abc", "TASKAPI_WORKERS must be an integer from 1 to 1024, got 'abc'"),
    ("dev", "TASKAPI_WORKERS", "0", "TASKAPI_WORKERS must be an integer from 1 to 1024, got '0'"),
    ("serve", "TASKAPI_WORKERS", "2000000000", "TASKAPI_WORKERS must be an integer from 1 to 1024, got '2000000000'"),
    ("serve", "TASKAPI_GRPC_PORT", "70000", "TASKAPI_GRPC_PORT must be a port number from 0 to 65535, got '70000'"),
    ("dev", "TASKAPI_DRAIN_SECONDS", "soon", "TASKAPI_DRAIN_SECONDS must be a number ≥ 0, got 'soon'"),
    ("serve", "TASKAPI_SHUTDOWN_GRACE_SECONDS", "-1", "TASKAPI_SHUTDOWN_GRACE_SECONDS must be a number ≥ 0, got '-1'"),
    (
        "create-admin",
        "MONGODB_READ_PREFERENCE",
        "fastest",
        "MONGODB_READ_PREFERENCE must be one of primary, primaryPreferred, secondary, secondaryPreferred, "
        "nearest, got 'fastest'",
    ),
    ("serve", "LOG_LEVEL", "loud", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
    ("dev", "LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, text, got 'xml'"),
    (
        "dev",
        "RATE_LIMIT_IP",
        "lots",
        "RATE_LIMIT_IP must be REQUESTS/SECONDS, both integers ≥ 1 (e.g. 100/900), got 'lots'",
    ),
    (
        "serve",
        "TRUSTED_PROXIES",
        "10.0.0.0/33",
        "TRUSTED_PROXIES must be IP networks separated by commas (e.g. 10.0.0.0/8,::1/128), got '10.0.0.0/33'",
    ),
    ("create-admin", "JWT_SECRET", "too-short", "JWT_SECRET must be at least 32 characters, got 9"),
    (
        "worker",
        "SMTP_URL",
        "smtp://mailer:hunter2@mail.example.com:submission",
        "SMTP_URL must be smtp://[user:password@]host[:port][?starttls=true|false] or "
        "smtps://[user:password@]host[:port], got 'smtp://***@mail.example.com:submission'",
    ),
    ("jobs", "JOBS_MAX_RETRIES", "many", "JOBS_MAX_RETRIES must be an integer ≥ 0, got 'many'"),
    (
        "serve",
        "TASKAPI_SERVICES",
        "billing",
        "TASKAPI_SERVICES must be 'all' or services from auth, tasks, users separated by commas, got 'billing'",
    ),
    ("serve", "TASKS_SESSION_FALLBACK", "maybe", "TASKS_SESSION_FALLBACK must be one of token, refuse, got 'maybe'"),
    (
        "serve",
        "TASKAPI_CPUS",
        "0-x",
        "TASKAPI_CPUS must be a CPU list like 1, 0,2 or 0-3: '0-x' is not a CPU number or range like 0-3",
    ),
    (
        "dev",
        "TASKAPI_CPUS",
        "0-9000",
        "TASKAPI_CPUS must be a CPU list like 1, 0,2 or 0-3: '0-9000' is not a range of CPUs from 0 to 8191",
    ),
    (
        "serve",
        "TASKAPI_CPUS",
        "8191",
        f"TASKAPI_CPUS names CPUs this process may not use (8191); it may use {affinity.text(affinity.allowed())}",
    ),
]


@pytest.mark.parametrize(("command", "variable", "value", "message"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_bad_value_is_one_line_and_status_2(command: str, variable: str, value: str, message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)} | {variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "taskapi.server.cli", *COMMANDS[command]],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [f"taskapi: {message}"], result.stderr
    assert result.returncode == 2
    if variable in ("JWT_SECRET", "SMTP_URL"):
        # A secret, even a bad one, is never printed.
        assert "hunter2" not in result.stderr and value not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_URL": "smtp://127.0.0.1:2525"}, "taskapi worker: REDIS_URL (or JOBS_REDIS_URL) is not set"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "taskapi worker: SMTP_URL is not set"),
    ],
)
def test_the_worker_refuses_to_start_without_its_queue_or_its_mail_server(env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    result = subprocess.run(
        [sys.executable, "-m", "taskapi.server.cli", "worker"],
        env=base | env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--services", "tasks,billing"],
            "taskapi: --services must be 'all' or services from auth, tasks, users separated by commas, "
            "got 'tasks,billing'",
        ),
        (["--services", "tasks", "--admin-email", "a@example.com"], "error: --admin-email needs the account services"),
        (["--admin-email", "a@example.com"], "error: --admin-email: set TASKAPI_ADMIN_PASSWORD"),
    ],
)
def test_serve_refuses_services_it_does_not_know_and_an_admin_it_cannot_create(args: list[str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    result = subprocess.run(
        [sys.executable, "-m", "taskapi.server.cli", "serve", *args],
        env=base,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
