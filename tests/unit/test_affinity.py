"""CPU lists as TASKAPI_CPUS takes them, and what `taskapi dev` picks (server/affinity.py)."""

from __future__ import annotations

import pytest

from taskapi.server import affinity
from taskapi.server.config import ConfigError, Settings

JWT = {"JWT_SECRET": "x" * 40}


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("1", {1}), ("0,2", {0, 2}), (" 0-3 , 8 ", {0, 1, 2, 3, 8}), ("5-5", {5}), ("8191", {8191})],
)
def test_cpu_lists(text: str, cpus: set[int]) -> None:
    assert affinity.parse_cpu_list(text) == cpus


@pytest.mark.parametrize(
    "text",
    ["", "a", "1,", "-1", "3-1", "1-", "0-8192", "99999999999", "1.5", "0x1", "²", "١", "1-٣", "9" * 5000, "1 - 3"],
)
def test_bad_cpu_lists(text: str) -> None:
    with pytest.raises(ValueError, match="CPU"):
        affinity.parse_cpu_list(text)


@pytest.mark.skipif(not affinity.supported(), reason="Linux CPU affinity")
def test_settings_take_only_cpus_this_process_may_use() -> None:
    usable = affinity.allowed()
    assert Settings.from_env(JWT).cpus is None and Settings.from_env(JWT | {"TASKAPI_CPUS": " "}).cpus is None
    assert Settings.from_env(JWT | {"TASKAPI_CPUS": affinity.text(usable)}).cpus == usable
    outside = max(usable) + 1
    with pytest.raises(ConfigError, match=f"TASKAPI_CPUS names CPUs this process may not use \\({outside}\\)"):
        Settings.from_env(JWT | {"TASKAPI_CPUS": f"{min(usable)},{outside}"})


@pytest.mark.skipif(not affinity.supported(), reason="Linux CPU affinity")
def test_dev_serves_on_the_last_cpu_only_when_there_are_others() -> None:
    usable = affinity.allowed()
    assert affinity.dev_serving() == (frozenset({max(usable)}) if len(usable) > 1 else None)


def test_not_pinned_work_off_serving_stays_where_it_is() -> None:
    before = affinity.allowed()
    with affinity.off_serving():
        assert affinity.allowed() == before
