"""The browser app (clients/web) end to end: built from the current sources, served by
`taskapi dev`'s own page server (server.dev.serve_pages), driven in headless Debian
Chromium by playwright-core (clients/web/test/*.test.js) against real stacks: a
server replica behind a real Envoy that allows the page's origin by CORS.

Three stacks, each with the settings one behaviour needs: the everyday one (with an
admin made the only way admins are made, and an outage switch the browser test can
flip: the replica reports NOT_SERVING, Envoy's health check takes it out, the API
answers 503); one with 2-second access tokens (silent refresh, rotation, reuse); one
with a tight per-user rate limit. Screenshots land in clients/web/test-results/.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from taskapi.server.app import App, Replica
from taskapi.server.dev import serve_pages
from taskapi.server.domain.caller import ROLE_ADMIN
from taskapi.server.domain.limits import RateLimit
from taskapi.server.edge import Envoy
from tests.clients.conftest import ROOT, run_checked
from tests.conftest import make_settings, unique_email
from tests.support.edge import running_edge

WEB = ROOT / "clients" / "web"
ARTIFACTS = WEB / "test-results"
ADMIN_PASSWORD = "admin password 123"
SHORT_TOKEN_SECONDS = 2
USER_LIMIT = RateLimit(requests=12, window_seconds=60)


@pytest.fixture(scope="module")
def web_pages() -> Iterator[str]:
    """The app built now (so the test never sees a stale build), served as `taskapi dev` serves it."""
    run_checked(["npm", "run", "--silent", "--prefix", str(WEB), "build"], {})
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_pages("127.0.0.1", 0) as url:
        yield url


class _Outage(http.server.BaseHTTPRequestHandler):
    """POST /outage and /recover: the replica's health flips and Envoy is waited for."""

    replica: Replica
    envoy: Envoy

    def do_POST(self) -> None:  # noqa: N802 - the base's naming
        serving = self.path == "/recover"
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.replica.health.set("", status)
        # Done when a real call through Envoy sees it (its health stat turns a little earlier).
        deadline = time.monotonic() + 15
        while (_edge_status(self.envoy) != 503) != serving and time.monotonic() < deadline:
            time.sleep(0.05)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _edge_status(envoy: Envoy) -> int:
    """The HTTP status of an unauthenticated ListTasks through Envoy: 401 when a replica answers."""
    try:
        with urllib.request.urlopen(envoy.rest_url + "tasks", timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


@contextmanager
def outage_switch(replica: Replica, envoy: Envoy) -> Iterator[str]:
    handler = type("Outage", (_Outage,), {"replica": replica, "envoy": envoy})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="outage-switch", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def web_stack(redis_url: str, workdir: Path, pages: str, **settings: object) -> Iterator[dict[str, str]]:
    """One replica behind Envoy allowing `pages` by CORS; yields the node test's environment."""
    app = App(make_settings(redis_url, **settings))
    try:
        replica = app.start_replica(0)
        admin = unique_email("admin").lower()
        app.accounts.create_user(admin, ADMIN_PASSWORD, "Ada Admin", role=ROLE_ADMIN)
        with (
            running_edge(
                [("127.0.0.1", replica.port)], workdir, cors_origins=(pages,), watch_upstreams=_watch(replica)
            ) as envoy,
            outage_switch(replica, envoy) as switch,
        ):
            api = envoy.rest_url.removesuffix("/api/v1/")
            yield {
                "TASKAPI_WEB_URL": f"{pages}/web/?api={api}",
                "TASKAPI_API": envoy.rest_url,
                "TASKAPI_ADMIN_EMAIL": admin,
                "TASKAPI_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "TASKAPI_OUTAGE": switch,
                "TASKAPI_WEB_ARTIFACTS": str(ARTIFACTS),
                "CHROMIUM": "/usr/bin/chromium",
            }
    finally:
        app.close(grace=1.0)


def _watch(replica: Replica) -> list[tuple[str, int]]:
    """The replica's watch server, as the edge's watch cluster: the page's live list."""
    return [] if replica.watch is None else [("127.0.0.1", replica.watch.port)]


@pytest.fixture(scope="module")
def everyday(redis_url: str, web_pages: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with web_stack(redis_url, tmp_path_factory.mktemp("web-edge"), web_pages) as env:
        yield env


def run_node_test(name: str, env: dict[str, str]) -> str:
    output = run_checked(["node", "--test", "--test-reporter=tap", f"clients/web/test/{name}"], env)
    passed = re.search(r"^# pass (\d+)$", output, re.M)
    assert passed and int(passed.group(1)) > 0 and "# fail 0" in output, output
    assert "# skipped 0" in output, output  # every test ran: none found its stack missing
    return output


def test_taskapi_dev_serves_the_built_app_with_cache_headers(web_pages: str) -> None:
    with urllib.request.urlopen(f"{web_pages}/web/?api=http://127.0.0.1:1", timeout=10) as response:
        page = response.read().decode()
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache"  # always revalidated: a new build shows at once
    assets = re.findall(r'(?:src|href)="\./(assets/[\w.-]+-[\w-]{8}\.(?:js|css))"', page)
    assert {Path(asset).suffix for asset in assets} == {".js", ".css"}, page
    for asset in assets:
        with urllib.request.urlopen(f"{web_pages}/web/{asset}", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["Content-Type"] in ("text/javascript", "text/css", "application/javascript")
    # The sources are not served; a missing asset is an error that must not be cached.
    for missing in ("/web/src/main.jsx", "/web/assets/missing-00000000.js"):
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(web_pages + missing, timeout=10)
        with failed.value as error:
            assert error.code == 404
            assert error.headers["Cache-Control"] == "no-cache"


def test_tasks_in_the_browser(everyday: dict[str, str]) -> None:
    run_node_test("tasks.test.js", everyday)


def test_the_task_list_follows_the_change_feed(everyday: dict[str, str]) -> None:
    run_node_test("live.test.js", everyday)


def test_accounts_and_admin_in_the_browser(everyday: dict[str, str]) -> None:
    run_node_test("accounts.test.js", everyday)


def test_accessibility_keyboard_and_phone(everyday: dict[str, str]) -> None:
    run_node_test("a11y.test.js", everyday)


def test_silent_refresh_rotation_and_reuse(redis_url: str, web_pages: str, tmp_path: Path) -> None:
    # A 1 s reuse grace (two tabs racing a refresh are ms apart), so the test's reuse, seconds
    # after the thief's refresh, ends the session as reuse must.
    with web_stack(
        redis_url, tmp_path, web_pages, access_token_ttl_seconds=SHORT_TOKEN_SECONDS, refresh_reuse_grace_seconds=1
    ) as env:
        run_node_test("session.test.js", {**env, "TASKAPI_TOKEN_SECONDS": str(SHORT_TOKEN_SECONDS)})


def test_rate_limit_message(redis_url: str, web_pages: str, tmp_path: Path) -> None:
    with web_stack(redis_url, tmp_path, web_pages, rate_limit_user=USER_LIMIT) as env:
        run_node_test("ratelimit.test.js", {**env, "TASKAPI_USER_LIMIT": str(USER_LIMIT.requests)})


def test_openapi_docs_page_try_it_out_in_headless_chromium(everyday: dict[str, str]) -> None:
    """The docs page as `taskapi dev` serves it: Swagger UI from npm (offline), every operation
    rendered, and "Try it out" against the stack (Register, Authorize, GetCurrentUser) through
    Envoy's CORS. Screenshots: clients/web/test-results/docs-try-it-out-*.png."""
    api = everyday["TASKAPI_API"].removesuffix("/api/v1/")
    pages = everyday["TASKAPI_WEB_URL"].split("/web/", 1)[0]
    env = {**everyday, "TASKAPI_DOCS_URL": f"{pages}/openapi/?api={api}"}
    run_node_test("docs-page.test.js", env)
    for name in ("docs-try-it-out-register", "docs-try-it-out-authorized"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name


def test_taskapi_dev_serves_swagger_ui_from_node_modules(web_pages: str) -> None:
    with urllib.request.urlopen(f"{web_pages}/openapi/vendor/swagger-ui/swagger-ui-bundle.js", timeout=10) as response:
        assert response.status == 200
        assert b"SwaggerUIBundle" in response.read()
    for escape in (
        "/openapi/vendor/swagger-ui/../../../pyproject.toml",
        "/openapi/vendor/swagger-ui/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    ):
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(web_pages + escape, timeout=10)
        with failed.value as error:
            assert error.code == 404, escape
