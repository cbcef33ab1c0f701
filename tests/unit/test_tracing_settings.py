"""OTEL_* variables as Settings reads them: off by default, every value checked, headers secret."""

from __future__ import annotations

import pytest

from taskapi.server.config import ConfigError, Settings, TracingSettings

SECRET = "JWT_SECRET"
BASE = {SECRET: "x" * 40}


def tracing(**env: str) -> TracingSettings | None:
    return Settings.from_env(BASE | env).tracing


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing() is None
    assert tracing(OTEL_SERVICE_NAME="svc", OTEL_TRACES_SAMPLER="always_on") is None


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_SDK_DISABLED": "TRUE"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_an_endpoint_with_tracing_switched_off_is_off(env: dict[str, str]) -> None:
    assert tracing(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", **env) is None


def test_the_standard_variables_configure_it() -> None:
    settings = tracing(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OTEL_EXPORTER_OTLP_HEADERS="api-key=s3cr%3Dt,x-tenant=a",
        OTEL_EXPORTER_OTLP_TIMEOUT="2500",
        OTEL_SERVICE_NAME="tasks",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod,service.version=1.2",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.25",
        OTEL_BSP_SCHEDULE_DELAY="1000",
    )
    assert settings == TracingSettings(
        endpoint="http://collector:4317",
        insecure=True,
        headers=(("api-key", "s3cr=t"), ("x-tenant", "a")),
        timeout_seconds=2.5,
        service_name="tasks",
        resource_attributes=(("deployment.environment", "prod"), ("service.version", "1.2")),
        sampler="parentbased_traceidratio",
        sampler_ratio=0.25,
        export_delay_ms=1000,
    )
    assert settings.host_port == ("collector", 4317)
    assert "s3cr" not in repr(settings)  # a header is usually a credential


def test_the_traces_endpoint_wins_and_https_is_tls() -> None:
    settings = tracing(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://a:4317", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://b.example.com"
    )
    assert settings is not None
    assert (settings.endpoint, settings.insecure, settings.host_port) == (
        "https://b.example.com",
        False,
        ("b.example.com", 4317),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER must be one of"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TIMEOUT must be an integer"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES must be key=value pairs"),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, "OTEL_EXPORTER_OTLP_INSECURE must be one of"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    full = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"} | env
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(BASE | full)


def test_a_bad_header_never_shows_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        tracing(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4317", OTEL_EXPORTER_OTLP_HEADERS="Bearer-topsecret")
    assert "topsecret" not in str(info.value)
