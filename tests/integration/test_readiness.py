"""`taskapi serve` tells a supervisor it serves, systemd's way (server/readiness.py): a real
server process on port 0 reports the ports it bound over NOTIFY_SOCKET, and they answer."""

from __future__ import annotations

import logging
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskapi.server import readiness
from taskapi.server.dev.split import ChildFailed, ServiceProcess
from tests.support.jobs import job_env, job_settings, running


def test_serve_on_port_0_reports_the_ports_it_bound_and_then_that_it_stops(redis_url: str, tmp_path: Path) -> None:
    env = job_env(job_settings(redis_url, smtp_port=9), TASKAPI_SERVICES="tasks")
    with readiness.ReadinessSocket(tmp_path / "ready") as notifications:
        env[readiness.ENVIRONMENT] = str(notifications.path)
        with running(["serve"], env) as server:

            def alive() -> None:
                assert server.process.poll() is None, server.output.text()

            fields = notifications.wait_for(alive, timeout=60)
            grpc_port = int(fields[readiness.GRPC_PORT])
            assert fields["STATUS"] == f"serving gRPC on 127.0.0.1:{grpc_port} (tasks)"
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            metrics = f"http://127.0.0.1:{fields[readiness.METRICS_PORT]}/metrics"
            with urllib.request.urlopen(metrics, timeout=10) as response:
                assert b"taskapi_" in response.read()
            watch_port = int(fields[readiness.WATCH_PORT])
            assert watch_port not in (0, grpc_port)
            socket.create_connection(("127.0.0.1", watch_port), timeout=10).close()

            server.process.terminate()
            assert notifications.wait_for(lambda: None, timeout=30, key="STOPPING") == {"STOPPING": "1"}
            assert server.process.wait(timeout=30) == 0, server.output.text()


def test_the_account_services_report_no_watch_port(redis_url: str, tmp_path: Path) -> None:
    env = job_env(job_settings(redis_url, smtp_port=9), TASKAPI_SERVICES="auth,users")
    with readiness.ReadinessSocket(tmp_path / "ready") as notifications:
        env[readiness.ENVIRONMENT] = str(notifications.path)
        with running(["serve"], env) as server:
            fields = notifications.wait_for(lambda: None, timeout=60)
            assert fields["READY"] == "1" and readiness.WATCH_PORT not in fields, fields
            assert fields["STATUS"].endswith("(auth, users)")
            server.process.terminate()


def test_notify_speaks_to_the_abstract_namespace_and_skips_what_it_cannot_reach(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"taskapi-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        assert readiness.notify({"READY": "1", "STATUS": "a=b"}, {readiness.ENVIRONMENT: "@" + name})
        # A value may hold "=": only the first one splits.
        assert readiness.parse(listener.recv(readiness.MAX_DATAGRAM)) == {"READY": "1", "STATUS": "a=b"}

    assert not readiness.notify({"READY": "1"}, {})  # no supervisor: nothing to do
    assert not readiness.notify({"READY": "1"}, {readiness.ENVIRONMENT: "vsock:2:1234"})
    with caplog.at_level(logging.WARNING, logger=readiness.__name__):
        assert not readiness.notify({"READY": "1"}, {readiness.ENVIRONMENT: str(tmp_path / "nobody")})
    assert "could not notify NOTIFY_SOCKET" in caplog.text


def test_waiting_stops_when_the_child_is_gone_or_the_time_is_up(tmp_path: Path) -> None:
    class Gone(Exception):
        pass

    def gone() -> None:
        raise Gone

    with readiness.ReadinessSocket(tmp_path / "ready") as notifications:
        with pytest.raises(Gone):
            notifications.wait_for(gone, timeout=10)
        # A notification without READY=1 (a STATUS update, say) is not readiness.
        assert readiness.notify({"STATUS": "starting"}, {readiness.ENVIRONMENT: str(notifications.path)})
        with pytest.raises(TimeoutError, match="no READY=1 notification within 0.5s"):
            notifications.wait_for(lambda: None, timeout=0.5)
    assert not (tmp_path / "ready").exists()


@pytest.mark.parametrize(
    "datagram",
    [
        b"READY=1\nX_TASKAPI_METRICS_PORT=9464\n",  # no gRPC port
        b"READY=1\nX_TASKAPI_GRPC_PORT=abc\nX_TASKAPI_METRICS_PORT=9464\n",
        b"READY=1\nX_TASKAPI_GRPC_PORT=99999\nX_TASKAPI_METRICS_PORT=9464\n",
        b"READY=1\nX_TASKAPI_GRPC_PORT=50051\nX_TASKAPI_METRICS_PORT=-1\n",
        b"READY=1\nX_TASKAPI_GRPC_PORT=\xd9\xa5\nX_TASKAPI_METRICS_PORT=9464\n",  # a non-ASCII digit
    ],
    ids=["missing", "not-a-number", "too-big", "negative", "arabic-indic-digit"],
)
def test_a_ready_notice_without_usable_ports_is_a_clear_child_failure(tmp_path: Path, datagram: bytes) -> None:
    """What `taskapi dev --split` reads from its children's socket: a READY=1 whose ports are
    missing or not ports stops the stack with a message naming the field, not a traceback."""
    with readiness.ReadinessSocket(tmp_path / "ready") as notifications, subprocess.Popen(["sleep", "30"]) as process:
        child = ServiceProcess(("tasks",), "127.0.0.1", process)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.sendto(datagram, str(notifications.path))
            with pytest.raises(ChildFailed, match="reported X_TASKAPI_"):
                child.ready(notifications, timeout=10)
        finally:
            process.kill()
