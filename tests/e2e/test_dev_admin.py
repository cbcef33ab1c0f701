"""`taskapi dev --admin-email`: the first admin of the embedded store, created inside the
running stack (the only process that holds that store), then used through REST."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskapi.server import dev
from tests.e2e.test_readme import Output, _wait_for
from tests.support.edge import RestClient

EMAIL = "root@example.com"
PASSWORD = "correct horse battery"
FREE_PORTS = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]


def test_dev_creates_the_admin_who_can_list_users(tmp_path: Path) -> None:
    taskapi = Path(sys.executable).with_name("taskapi")
    env = dict(os.environ, BCRYPT_ROUNDS="4", TASKAPI_ADMIN_PASSWORD=PASSWORD)
    for name in ("REDIS_URL", "MONGODB_URI"):  # the embedded default: the case with no other way
        env.pop(name, None)
    process = subprocess.Popen(
        [str(taskapi), "dev", "--admin-email", EMAIL, *FREE_PORTS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    output = Output(process.stdout)
    try:
        client = RestClient(_wait_for(output, process, r"REST\s+(http://\S+/api/v1/)"))
        login = client.post("auth/login", {"email": EMAIL, "password": PASSWORD})
        assert login.status == 200, login
        assert login.json()["user"]["role"] == "ADMIN"
        users = client.get("users", token=login.json()["accessToken"])  # ListUsers: admin only
        assert users.status == 200, users
        assert [user["email"] for user in users.json()["users"]] == [EMAIL]

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.join()
        assert process.stdout is not None
        process.stdout.close()
    assert PASSWORD not in output.text()
    assert "Traceback" not in output.text(), output.text()


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
