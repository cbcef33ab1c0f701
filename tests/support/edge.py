"""Test helpers for the REST edge: a real Envoy (server/edge.py) on free ports in front
of real replicas, and a small stdlib HTTP client that never raises on an error status.

    with running_edge([("127.0.0.1", replica.port)], tmp_path) as envoy:
        client = RestClient(envoy.rest_url)
        response = client.get("tasks", token=token)
        assert response.status == 200, response.text
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.message import Message
from pathlib import Path
from typing import Any

from taskapi.server.dev import free_port
from taskapi.server.edge import CLUSTER, SERVICE_CLUSTERS, EdgeConfig, Envoy

CLUSTERS = (CLUSTER, *SERVICE_CLUSTERS.values())

# Tests want Envoy to notice a replica going away quickly.
HEALTH_CHECK_INTERVAL_SECONDS = 0.5


def edge_config(upstreams: Sequence[tuple[str, int]], **overrides: Any) -> EdgeConfig:
    """An EdgeConfig on free ports for `upstreams`."""
    config = EdgeConfig(
        rest_port=free_port(),
        grpc_port=free_port(),
        admin_port=free_port(),
        upstreams=list(upstreams),
        health_check_interval_seconds=HEALTH_CHECK_INTERVAL_SECONDS,
        cors_origins=("http://app.example.com",),
    )
    return replace(config, **overrides)


@contextmanager
def running_edge(
    upstreams: Sequence[tuple[str, int]], workdir: Path, *, attempts: int = 3, **overrides: Any
) -> Iterator[Envoy]:
    """A started Envoy that sees every upstream healthy; always stopped on exit.

    Its JSON access log goes to `workdir/access.log` and its own log to
    `workdir/envoy.log` (read them when a test fails). A free port can be taken
    between choosing and binding it, so start is retried on fresh ports.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        config = edge_config(upstreams, access_log=str(workdir / "access.log"), **overrides)
        with open(workdir / "envoy.log", "ab") as envoy_log:
            envoy = Envoy(config, workdir, stdout=subprocess.DEVNULL, stderr=envoy_log)
            envoy.start()
            try:
                try:
                    envoy.wait_healthy(replicas=envoy.endpoints, timeout=30)
                except RuntimeError:  # exited: most likely a port was taken meanwhile
                    if attempt == attempts:
                        raise RuntimeError(f"envoy did not start; see {workdir / 'envoy.log'}") from None
                    continue
                yield envoy
                return
            finally:
                envoy.stop()


def upstream_requests(envoy: Envoy) -> dict[int, int]:
    """Requests Envoy has sent to each replica, by replica port, over every cluster of ours
    (from its admin /clusters)."""
    counts: dict[int, int] = {}
    for line in envoy.admin_get("/clusters").splitlines():
        # taskapi_replicas::127.0.0.1:50061::rq_total::12
        parts = line.split("::")
        if len(parts) == 4 and parts[0] in CLUSTERS and parts[2] == "rq_total":
            port = int(parts[1].rsplit(":", 1)[1])
            counts[port] = counts.get(port, 0) + int(parts[3])
    return counts


def cluster_stats(envoy: Envoy, prefix: str = "outlier_detection.") -> dict[str, int]:
    """Our clusters' counters and gauges under `prefix`, by the rest of their name, summed over
    the clusters (`ejections_active` for cluster.taskapi_replicas.outlier_detection.ejections_active;
    split, the sum over taskapi_auth, taskapi_users and taskapi_tasks)."""
    body = envoy.admin_get(f"/stats?filter={prefix.replace('.', '[.]')}&format=json")
    totals: dict[str, int] = {}
    for item in json.loads(body).get("stats", []):
        for cluster in CLUSTERS:
            head = f"cluster.{cluster}.{prefix}"
            if "value" in item and item["name"].startswith(head):
                name = item["name"].removeprefix(head)
                totals[name] = totals.get(name, 0) + int(item["value"])
    return totals


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:  # what pytest prints when an assert on it fails
        return f"<Response {self.status} {self.text[:500]!r}>"


class RestClient:
    """JSON over HTTP/1.1 with http.client: one connection per request, no retries."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.prefix = parsed.path if parsed.path.endswith("/") else parsed.path + "/"
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        token: str | None = None,
        query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> Response:
        """`path` is relative to the base URL (`tasks/123`), or absolute (`/api/v2/x`).

        Header names and values go out as given: http.client sends any HTTP token
        character in a name and raw bytes in a value (urllib would normalise them).
        """
        url = path if path.startswith("/") else self.prefix + path
        if query:
            # %20, never "+": Envoy's transcoder decodes a query string per RFC 3986,
            # where "+" is a literal plus, not a space as in HTML forms.
            url += "?" + urllib.parse.urlencode(query, doseq=True, quote_via=urllib.parse.quote)
        sent: dict[str, str | bytes] = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent.setdefault("content-type", "application/json")
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, url, body=body, headers=sent)
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def patch(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return self.request("PATCH", path, json_body=json_body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)
