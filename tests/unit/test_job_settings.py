"""The background-work settings: SMTP_URL, MAIL_FROM and the job queue's knobs, read once from
the environment; a secret in them never shows in a repr or an error."""

from __future__ import annotations

import pytest

from taskapi.server.config import ConfigError, Settings, SmtpSettings


def settings(**env: str) -> Settings:
    return Settings.from_env({"JWT_SECRET": "x" * 32} | env)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://user:pass@mail.example.com:587?starttls=true",
            SmtpSettings(host="mail.example.com", port=587, username="user", password="pass", security="starttls"),
        ),
        ("smtp://127.0.0.1:2525", SmtpSettings(host="127.0.0.1", port=2525)),
        ("smtp://mail.example.com", SmtpSettings(host="mail.example.com", port=25)),
        ("smtp://relay.example.com:25?starttls=false", SmtpSettings(host="relay.example.com", port=25)),
        (
            "smtps://apikey:p%40ss%2Fword@smtp.example.com",
            SmtpSettings(host="smtp.example.com", port=465, username="apikey", password="p@ss/word", security="tls"),
        ),
    ],
)
def test_smtp_url_forms(url: str, expected: SmtpSettings) -> None:
    assert settings(SMTP_URL=url).smtp == expected


def test_no_smtp_url_is_no_mail_server() -> None:
    assert settings().smtp is None and settings(SMTP_URL="").smtp is None


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@mail.example.com",
        "smtp://user:hunter2@",
        "smtp://user:hunter2@mail.example.com:99999",
        "smtp://user:hunter2@mail.example.com:587?starttls=yes",
        "smtp://user:hunter2@mail.example.com:587?tls=true",
        "smtps://user:hunter2@mail.example.com?starttls=true",
        "smtp://user:hunter2@mail.example.com/path",
        "smtp://user:hunt/er2@mail.example.com:x",  # a password urlsplit cannot even find
    ],
)
def test_a_bad_smtp_url_names_the_form_and_never_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^SMTP_URL must be smtp://") as error:
        settings(SMTP_URL=url)
    assert "hunter2" not in str(error.value) and "hunt" not in str(error.value)


@pytest.mark.parametrize(
    "url",
    ["smtp://user:hunter2@" + "m" * 1_000_000 + ".example.com", "smtp://user:hunter2@" + "m" * 300 + ".example.com"],
)
def test_a_huge_smtp_url_is_refused_without_being_echoed(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^SMTP_URL must be smtp://") as error:
        settings(SMTP_URL=url)
    assert "hunter2" not in str(error.value) and len(str(error.value)) < 600


def test_the_smtp_password_is_in_no_repr() -> None:
    configured = settings(SMTP_URL="smtp://mailer:hunter2@mail.example.com:587?starttls=true")
    assert configured.smtp is not None and configured.smtp.password == "hunter2"
    assert "hunter2" not in repr(configured) and "hunter2" not in repr(configured.smtp)
    assert configured.smtp.url == "smtp://mail.example.com:587?starttls=true"  # what banners and logs show


def test_mail_from() -> None:
    assert settings().mail_from == "Task API <no-reply@localhost>"
    assert settings(MAIL_FROM="Tasks <tasks@example.com>").mail_from == "Tasks <tasks@example.com>"
    for bad in ("nobody", "Tasks <tasks@example.com>\r\nBcc: everyone@example.com"):
        with pytest.raises(ConfigError, match="^MAIL_FROM must be an address"):
            settings(MAIL_FROM=bad)


def test_job_settings_come_from_the_environment() -> None:
    configured = settings(
        JOBS_REDIS_URL="redis://queue.example.com:6379/1",
        JOBS_NAMESPACE="tasks",
        JOBS_WORKER_THREADS="2",
        JOBS_MAX_RETRIES="0",
        JOBS_MIN_BACKOFF_MS="500",
        JOBS_MAX_BACKOFF_MS="60000",
        JOBS_TIME_LIMIT_MS="10000",
        JOBS_HEARTBEAT_TIMEOUT_MS="5000",
        OUTBOX_RELAY="false",
        OUTBOX_POLL_SECONDS="1.5",
        TASKAPI_WORKER_METRICS_PORT="0",
        REDIS_URL="redis://cache.example.com:6379/0",
    )
    assert configured.queue_redis_url == "redis://queue.example.com:6379/1"
    assert (configured.jobs_namespace, configured.jobs_worker_threads, configured.jobs_max_retries) == ("tasks", 2, 0)
    assert (configured.jobs_min_backoff_ms, configured.jobs_max_backoff_ms) == (500, 60000)
    assert (configured.jobs_time_limit_ms, configured.jobs_heartbeat_timeout_ms) == (10000, 5000)
    assert (configured.outbox_relay, configured.outbox_poll_seconds, configured.worker_metrics_port) == (False, 1.5, 0)
    assert settings(REDIS_URL="redis://cache.example.com:6379/0").queue_redis_url == "redis://cache.example.com:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBS_WORKER_THREADS", "0"),
        ("JOBS_MAX_RETRIES", "-1"),
        ("JOBS_MIN_BACKOFF_MS", "0"),
        ("JOBS_TIME_LIMIT_MS", "10"),
        ("JOBS_HEARTBEAT_TIMEOUT_MS", "100"),
        ("OUTBOX_RELAY", "maybe"),
        ("OUTBOX_POLL_SECONDS", "soon"),
        ("TASKAPI_WORKER_METRICS_PORT", "70000"),
    ],
)
def test_bad_job_values_fail_fast_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        settings(**{name: value})
