"""The README, followed the way a new user would: start `taskapi dev`, wait for the URL it
prints, register, log in, create and list tasks over HTTP, then Ctrl-C and a clean exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.support.edge import RestClient

STARTUP_SECONDS = 90


class Output:
    """Collects a child's output lines on a thread, so its pipe never fills up."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            if match := re.search(pattern, line):
                return match
        return None

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


def test_taskapi_dev_as_the_readme_says(tmp_path: Path) -> None:
    taskapi = Path(sys.executable).with_name("taskapi")
    env = dict(os.environ, BCRYPT_ROUNDS="4")
    env.pop("REDIS_URL", None)  # the dev command starts its own redis-server
    process = subprocess.Popen(
        # Free ports instead of 8080/8081/9901/9464, which a developer may be using.
        [
            str(taskapi),
            "dev",
            "--rest-port",
            "0",
            "--grpc-port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
            "--web-port",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    output = Output(process.stdout)
    try:
        rest = _wait_for(output, process, r"REST\s+(http://\S+/api/v1/)")
        metrics = output.find(r"metrics\s+(http://\S+/metrics)")
        redis_port = int(_wait_for(output, process, r"redis\s+redis://127\.0\.0\.1:(\d+)"))

        client = RestClient(rest)
        email = "ada@example.com"
        registered = client.post("auth/register", {"email": email, "password": "correct horse battery", "name": "Ada"})
        assert registered.status == 200, registered
        logged_in = client.post("auth/login", {"email": email, "password": "correct horse battery"})
        assert logged_in.status == 200, logged_in
        token = logged_in.json()["accessToken"]
        created = client.post("tasks", {"title": "Try the API", "priority": "HIGH"}, token=token)
        assert created.status == 200, created
        listed = client.get("tasks", token=token, query={"priority": "HIGH"})
        assert listed.status == 200, listed
        assert [task["title"] for task in listed.json()["tasks"]] == ["Try the API"]
        assert metrics is not None, output.text()
        with urllib.request.urlopen(metrics.group(1), timeout=10) as response:
            assert response.status == 200
            assert b"# TYPE" in response.read()

        web = output.find(r"web\s+(http://\S+/web/)\?api=")
        docs = output.find(r"docs\s+(http://\S+/openapi/)\?api=(\S+)")
        assert web is not None and docs is not None, output.text()
        assert rest.startswith(docs.group(2)), (rest, docs.group(2))  # "Try it out" calls this stack
        pages = (
            (web.group(1), b"<html"),
            (docs.group(1) + "taskapi.openapi.json", b'"openapi"'),
            (docs.group(1), b"swagger-ui-bundle.js"),
            (docs.group(1) + "vendor/swagger-ui/swagger-ui-bundle.js", b"swaggeruibundle"),
        )
        for page, marker in pages:
            with urllib.request.urlopen(page, timeout=10) as response:
                assert response.status == 200 and marker in response.read().lower()

        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0, output.text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.join()
        assert process.stdout is not None
        process.stdout.close()
    assert "Traceback" not in output.text(), output.text()
    # Its children went with it: nothing answers on the REST port or the redis port any more.
    rest_port = int(rest.split(":")[2].split("/")[0])
    for port in (rest_port, redis_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def _wait_for(output: Output, process: subprocess.Popen[str], pattern: str) -> str:
    deadline = time.monotonic() + STARTUP_SECONDS
    while (match := output.find(pattern)) is None:
        assert process.poll() is None, f"taskapi dev exited with {process.returncode}:\n{output.text()}"
        assert time.monotonic() < deadline, f"no line matching {pattern!r}:\n{output.text()}"
        time.sleep(0.1)
    return match.group(1)
