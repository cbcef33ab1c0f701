// Calls a live Task API over gRPC. TASKAPI_GRPC_TARGET (host:port) names it; the
// pytest wrapper tests/clients/test_ts_client.py starts the server and sets it.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { Code, ConnectError, TaskPriority, TaskStatus, createTaskApi, errorDetails } from "../index.js";

const target = process.env.TASKAPI_GRPC_TARGET;

test("register, create tasks, list them, and read error details", { skip: !target && "TASKAPI_GRPC_TARGET is not set" }, async () => {
  const api = createTaskApi(target);
  const email = `ts-${randomUUID()}@example.com`;
  const session = await api.auth.register({ email, password: "correct horse", name: "TS" });
  api.useSession(session);
  assert.equal(session.tokenType, "Bearer");
  assert.equal(session.user.email, email);

  const task = await api.tasks.createTask({
    task: { title: "Write the TypeScript client", priority: TaskPriority.HIGH, tags: ["ts"] },
    requestId: randomUUID(),
  });
  assert.equal(task.status, TaskStatus.PENDING);
  assert.equal(task.owner, session.user.id);
  const fetched = await api.tasks.getTask({ id: task.id });
  assert.equal(fetched.title, "Write the TypeScript client");
  const me = await api.users.getCurrentUser({});
  assert.equal(me.email, email);
  await api.tasks.createTask({ task: { title: "Second" } });

  const page = await api.tasks.listTasks({ pageSize: 10, orderBy: "createTime" });
  assert.equal(page.totalSize, 2);
  assert.deepEqual(page.tasks.map((t) => t.title), ["Write the TypeScript client", "Second"]);

  const filtered = await api.tasks.listTasks({ tag: ["ts"] });
  assert.deepEqual(filtered.tasks.map((t) => t.id), [task.id]);

  await assert.rejects(api.tasks.createTask({ task: { title: "x".repeat(101) } }), (error) => {
    assert.ok(error instanceof ConnectError);
    const details = errorDetails(error);
    assert.equal(details.code, Code.InvalidArgument);
    assert.ok("task.title" in details.fieldViolations, JSON.stringify(details));
    return true;
  });

  api.useSession(undefined);
  await assert.rejects(api.tasks.listTasks({}), (error) => ConnectError.from(error).code === Code.Unauthenticated);
});
