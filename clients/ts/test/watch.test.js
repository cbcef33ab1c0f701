// watchTasks() against a live stack: Envoy's gRPC port (TASKAPI_GRPC_TARGET) for the stream,
// its REST port (TASKAPI_REST_URL, ".../api/v1/") for the writes of "another client". The
// pytest wrapper tests/clients/test_ts_client.py starts the stack and sets both, and
// TASKAPI_RESYNC_TOKEN / TASKAPI_RESYNC_ACCESS: a token past retention and its owner's access token.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { test } from "node:test";

import { ResyncRequiredError, TaskChange_Kind, createTaskApi } from "../index.js";

const { TASKAPI_GRPC_TARGET: target, TASKAPI_REST_URL: rest } = process.env;
const skip = !(target && rest) && "TASKAPI_GRPC_TARGET and TASKAPI_REST_URL are not set";

async function call(method, path, token, body) {
  const response = await fetch(rest + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

/** A TCP proxy to `to` that can drop every connection and refuse new ones: a network cut. */
async function cuttableProxy(to) {
  const [host, port] = [to.slice(0, to.lastIndexOf(":")), Number(to.slice(to.lastIndexOf(":") + 1))];
  const sockets = new Set();
  let cut = false;
  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(port, host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    cut() {
      cut = true;
      for (const socket of sockets) socket.destroy();
    },
    mend() {
      cut = false;
    },
    close() {
      this.cut(); // server.close() waits for open connections: end them first
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The next `count` changes (heartbeats skipped) from an iterator of watchTasks({heartbeats: true}). */
async function nextChanges(events, count) {
  const found = [];
  while (found.length < count) {
    const { value, done } = await events.next();
    assert.ok(!done, "the feed ended");
    if (value.kind !== TaskChange_Kind.KIND_UNSPECIFIED) found.push(value);
  }
  return found;
}

test("watchTasks sees REST writes and, after a network cut, exactly the missed ones", { skip, timeout: 60_000 }, async () => {
  const proxy = await cuttableProxy(target);
  const api = createTaskApi(target, { watchTarget: proxy.address, backoffMs: [50, 200] });
  const session = await call("POST", "auth/register", "", {
    email: `ts-watch-${randomUUID()}@example.com`,
    password: "correct horse",
    name: "TS watch",
  });
  api.useSession(session);
  const stop = new AbortController();
  const events = api.watchTasks({ heartbeats: true, signal: stop.signal });
  try {
    const first = await events.next(); // a heartbeat at once: the stream is open
    assert.equal(first.value.kind, TaskChange_Kind.KIND_UNSPECIFIED);
    assert.ok(first.value.resumeToken);

    const seen = await call("POST", "tasks", session.accessToken, { title: "seen live" });
    const [created] = await nextChanges(events, 1);
    assert.equal(created.kind, TaskChange_Kind.CREATED);
    assert.equal(created.task.id, seen.id);
    assert.equal(api.lastResumeToken, created.resumeToken);

    proxy.cut(); // the stream drops; reconnects fail until mended
    const renamed = await call("PATCH", `tasks/${seen.id}`, session.accessToken, { title: "renamed while away" });
    const other = await call("POST", "tasks", session.accessToken, { title: "created while away" });
    await call("DELETE", `tasks/${seen.id}`, session.accessToken);
    await new Promise((resolve) => setTimeout(resolve, 500)); // a few refused reconnects
    proxy.mend();

    const missed = await nextChanges(events, 3);
    assert.deepEqual(
      missed.map((c) => [c.kind, c.task.id]),
      [
        [TaskChange_Kind.UPDATED, seen.id],
        [TaskChange_Kind.CREATED, other.id],
        [TaskChange_Kind.DELETED, seen.id],
      ],
    );
    assert.equal(missed[0].task.title, renamed.title);
    // Nothing repeated after them: the next event is an idle heartbeat at the last change.
    const after = await events.next();
    assert.equal(after.value.kind, TaskChange_Kind.KIND_UNSPECIFIED);
    assert.equal(after.value.resumeToken, missed[2].resumeToken);
  } finally {
    stop.abort();
    await events.return();
    await proxy.close();
  }
});

test("watchTasks throws ResyncRequiredError for a token past retention", { skip, timeout: 30_000 }, async () => {
  const { TASKAPI_RESYNC_TOKEN: expired, TASKAPI_RESYNC_ACCESS: accessToken } = process.env;
  assert.ok(expired && accessToken, "TASKAPI_RESYNC_TOKEN and TASKAPI_RESYNC_ACCESS are not set");
  const api = createTaskApi(target);
  api.useSession({ accessToken, refreshToken: "" });
  await assert.rejects(
    async () => {
      // Bounded: a feed that opened instead would end at the timeout, without the rejection.
      const signal = AbortSignal.timeout(10_000);
      for await (const change of api.watchTasks({ resumeToken: expired, signal })) assert.fail(`a change: ${change.kind}`);
    },
    (error) => error instanceof ResyncRequiredError && /resync required/.test(error.message),
  );
});
