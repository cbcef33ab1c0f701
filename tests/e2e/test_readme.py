"""The README, followed the way a new user would: start `taskapi dev`, wait for the URL it
prints, register, log in, create and list tasks over HTTP, then Ctrl-C and a clean exit."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.support.dev_process import running_dev
from tests.support.edge import RestClient

# Free ports instead of 8080/8081/9901/9464/3000, which a developer may be using.
FREE_PORTS = ["--rest-port", "0", "--grpc-port", "0", "--admin-port", "0", "--metrics-port", "0", "--web-port", "0"]


@pytest.mark.parametrize("layout", [[], ["--split"]], ids=["single", "split"])
def test_taskapi_dev_as_the_readme_says(layout: list[str], tmp_path: Path) -> None:
    with running_dev([*layout, *FREE_PORTS], tmp_path) as dev:
        rest = dev.wait_for(r"REST\s+(http://\S+/api/v1/)")
        metrics = dev.output.find(r"metrics\s+(http://\S+/metrics)")
        redis_port = int(dev.wait_for(r"redis\s+redis://127\.0\.0\.1:(\d+)"))
        replicas = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", dev.wait_for(r"replicas: (.*)\)$"))]

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
        assert metrics is not None, dev.text()
        with urllib.request.urlopen(metrics.group(1), timeout=10) as response:
            assert response.status == 200
            assert b"# TYPE" in response.read()

        web = dev.output.find(r"web\s+(http://\S+/web/)\?api=")
        docs = dev.output.find(r"docs\s+(http://\S+/openapi/)\?api=(\S+)")
        assert web is not None and docs is not None, dev.text()
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

        assert dev.stop() == 0, dev.text()  # Ctrl-C
    assert "Traceback" not in dev.text(), dev.text()
    # Its children went with it: nothing answers on the REST port or the redis port any more.
    rest_port = int(rest.split(":")[2].split("/")[0])
    for port in (rest_port, redis_port, *replicas):  # split: the service processes too
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
