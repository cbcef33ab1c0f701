"""`taskapi serve` with TASKAPI_CPUS: every thread on those CPUs, password hashing on any
(server/affinity.py), as /proc shows the real process's threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from taskapi.server import affinity
from taskapi.server.dev import free_port
from taskapi.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import TEST_SECRET, private_database, unique_email
from tests.integration.test_cli import SETTINGS_PREFIXES
from tests.support.threads import thread_cpus

CPUS = sorted(affinity.allowed())
pytestmark = pytest.mark.skipif(not affinity.supported() or len(CPUS) < 2, reason="needs Linux and two CPUs")


def test_serve_keeps_every_thread_on_its_cpus_and_hashes_passwords_on_any(redis_url: str) -> None:
    serving = frozenset({CPUS[-1]})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)} | {
        "TASKAPI_CPUS": str(CPUS[-1]),
        "REDIS_URL": private_database(redis_url),
        "JWT_SECRET": TEST_SECRET,
        "TASKAPI_GRPC_PORT": str(port),
        "TASKAPI_METRICS_PORT": "0",
        "TASKAPI_WATCH_PORT": "0",
        "TASKAPI_DRAIN_SECONDS": "0",
        "BCRYPT_ROUNDS": "13",  # a hash long enough (~0.5 s) to see its thread move
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "taskapi.server.cli", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            before = thread_cpus(server.pid)
            assert len(before) > 4 and set(before.values()) == {serving}, before  # gRPC's own threads too

            seen_off: set[frozenset[int]] = set()
            registering = threading.Thread(
                target=auth_pb2_grpc.AuthServiceStub(channel).Register,
                args=(auth_pb2.RegisterRequest(email=unique_email("cpus"), password="a password 123", name="C"),),
                kwargs={"timeout": 30},
            )
            registering.start()
            while registering.is_alive():
                seen_off.update(cpus for cpus in thread_cpus(server.pid).values() if cpus != serving)
                time.sleep(0.01)
            registering.join()
            assert seen_off == {frozenset(CPUS)}, seen_off  # the hashing thread on any CPU, only while it hashed
            assert set(thread_cpus(server.pid).values()) == {serving}  # and back afterwards
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    expected = f"threads on CPU {CPUS[-1]}; password hashing on any of CPU {affinity.text(frozenset(CPUS))}"
    assert expected in output, output
