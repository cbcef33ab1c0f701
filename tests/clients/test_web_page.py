"""The browser page (clients/web) and the OpenAPI docs page in headless Chromium,
against the API behind real Envoy with CORS. The page is served from another
origin than the API, as a deployed page would be."""

from taskapi.server.edge import Envoy
from tests.clients.conftest import run_checked


def test_web_page_and_docs_in_headless_chromium(rest_edge: Envoy, static_site: str) -> None:
    api = rest_edge.rest_url.removesuffix("/api/v1/")
    env = {
        "TASKAPI_WEB_URL": f"{static_site}/web/index.html?api={api}",
        "TASKAPI_DOCS_URL": f"{static_site}/openapi/index.html",
        "CHROMIUM": "/usr/bin/chromium",
    }
    output = run_checked(["node", "--test", "clients/web/test/"], env)
    assert "# pass 2" in output and "# fail 0" in output, output
