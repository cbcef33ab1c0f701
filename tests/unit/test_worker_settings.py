"""The worker threads: Envoy's per-replica default follows them, password checks keep half."""

from __future__ import annotations

import dataclasses

import pytest

from taskapi.server.config import Settings
from taskapi.server.domain.passwords import waiting_allowed
from taskapi.server.edge.config import EdgeConfig


def test_envoy_sends_a_replica_two_calls_per_worker_thread_by_default() -> None:
    settings = Settings.from_env({"JWT_SECRET": "x" * 32})
    (field,) = [f for f in dataclasses.fields(EdgeConfig) if f.name == "replica_concurrency"]
    assert field.default == settings.replica_concurrency == Settings().replica_concurrency == 2 * settings.workers
    assert Settings.from_env({"JWT_SECRET": "x" * 32, "TASKAPI_WORKERS": "6"}).replica_concurrency == 12


@pytest.mark.parametrize(
    ("workers", "concurrency", "waiting"),
    [(4, 2, 0), (8, 2, 2), (16, 2, 6), (5, 1, 1), (2, 2, 0), (1, 1, 0)],
)
def test_password_checks_hold_at_most_half_the_workers(workers: int, concurrency: int, waiting: int) -> None:
    assert waiting_allowed(workers, concurrency) == waiting
    # Running and waiting together stay within half, unless the running slots alone exceed it.
    assert concurrency + waiting <= max(workers // 2, concurrency)
