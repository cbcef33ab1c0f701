"""ListTaskChanges pages are cut by bytes as well as by count: a page of 1,000 changes of large
tasks would pass the message limit, and grpc would answer RESOURCE_EXHAUSTED ("Sent message
larger than max") instead of the page. A real server with a small message limit, real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from taskapi.server.app import App
from taskapi.v1 import task_pb2 as T
from tests.conftest import make_settings, private_database
from tests.integration.api import Api

LIMIT = 64 * 1024
DESCRIPTION = "é" * 2000  # the longest description there is: ~4 KB a change


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[Api]:
    app = App(make_settings(private_database(redis_url), max_message_bytes=LIMIT))
    replica = app.start_replica(0)
    with grpc.insecure_channel(replica.address) as channel:
        yield Api(channel)
    app.close(grace=1.0)


def test_a_page_of_large_changes_stays_under_the_message_limit(api: Api) -> None:
    user = api.register("big-pages")
    start = api.tasks.ListTaskChanges(T.ListTaskChangesRequest(), metadata=user.auth).next_token
    created = [
        api.tasks.CreateTask(
            T.CreateTaskRequest(task=T.Task(title=f"big {n}", description=DESCRIPTION)), metadata=user.auth
        ).id
        for n in range(40)  # ~160 KB of changes: three pages at least
    ]
    seen: list[str] = []
    token, pages = start, 0
    while len(seen) < len(created) and pages < 20:
        page = api.tasks.ListTaskChanges(
            T.ListTaskChangesRequest(since_token=token, page_size=1000), metadata=user.auth
        )
        assert page.changes, "a page with changes still to come came back empty"
        assert page.ByteSize() <= LIMIT
        assert page.next_token == page.changes[-1].resume_token
        seen += [change.task.id for change in page.changes]
        token, pages = page.next_token, pages + 1
    assert seen == created  # every change once, in order: none lost at a cut
    assert pages >= 3
    rest = api.tasks.ListTaskChanges(T.ListTaskChangesRequest(since_token=token), metadata=user.auth)
    assert not rest.changes
