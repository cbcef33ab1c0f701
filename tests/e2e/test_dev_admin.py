"""`taskapi dev --admin-email`: the first admin of the embedded store, created inside the
running stack (the only process that holds that store), then used through REST."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskapi.server import dev
from tests.support.dev_process import running_dev
from tests.support.edge import RestClient

EMAIL = "root@example.com"
PASSWORD = "correct horse battery"
FREE_PORTS = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]


@pytest.mark.parametrize("layout", [[], ["--split"]], ids=["single", "split"])
def test_dev_creates_the_admin_who_can_list_users(layout: list[str], tmp_path: Path) -> None:
    """Split: inside the account services' process, the one holding the accounts' store."""
    with running_dev(
        [*layout, "--admin-email", EMAIL, *FREE_PORTS], tmp_path, {"TASKAPI_ADMIN_PASSWORD": PASSWORD}
    ) as stack:
        client = RestClient(stack.wait_for(r"REST\s+(http://\S+/api/v1/)"))
        login = client.post("auth/login", {"email": EMAIL, "password": PASSWORD})
        assert login.status == 200, login
        assert login.json()["user"]["role"] == "ADMIN"
        users = client.get("users", token=login.json()["accessToken"])  # ListUsers: admin only
        assert users.status == 200, users
        assert [user["email"] for user in users.json()["users"]] == [EMAIL]
        assert stack.stop() == 0, stack.text()
    assert PASSWORD not in stack.text()
    assert "Traceback" not in stack.text(), stack.text()


@pytest.mark.parametrize(
    ("password", "message"),
    [(None, "TASKAPI_ADMIN_PASSWORD"), ("short", "at least 8 bytes"), ("x" * 73, "at most 72 bytes")],
)
def test_dev_refuses_an_admin_without_a_usable_password(
    password: str | None, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before starting anything: stdin is not a terminal here, so there is no one to ask."""
    if password is None:
        monkeypatch.delenv("TASKAPI_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("TASKAPI_ADMIN_PASSWORD", password)
    assert dev.main(["--admin-email", EMAIL, *FREE_PORTS]) == 1
    error = capsys.readouterr().err
    assert "--admin-email" in error and message in error, error
