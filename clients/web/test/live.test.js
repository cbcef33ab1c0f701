// The task list follows the change feed: what another client does through REST appears,
// changes and disappears in the open page, without a reload. The page reads
// GET tasks:watch with fetch and its Authorization header; the token never goes in a URL.
import assert from "node:assert/strict";
import { test } from "node:test";

import { browserPerFile, newContext, openApp, rest, signUp, skip, storedSession, taskRow, waitFor } from "./support.js";

const shared = browserPerFile();

test("another client's creates, updates and deletes show up live", { skip }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  const watchUrls = [];
  page.on("request", (request) => request.url().includes("tasks:watch") && watchUrls.push(request.url()));
  await signUp(page);
  await page.locator(".empty", { hasText: "No tasks yet" }).waitFor();
  await waitFor(async () => watchUrls.length > 0); // the feed is open
  await page.evaluate(() => {
    window.sameDocument = true; // gone if the page reloads
  });
  const { accessToken } = await storedSession(page);

  const created = await rest("POST", "tasks", { token: accessToken, body: { title: "Made by another client" } });
  assert.equal(created.status, 200);
  await taskRow(page, "Made by another client").waitFor();

  const updated = await rest("PATCH", `tasks/${created.body.id}`, {
    token: accessToken,
    query: { updateMask: "title" },
    body: { title: "Renamed by another client" },
  });
  assert.equal(updated.status, 200);
  await taskRow(page, "Renamed by another client").waitFor();
  assert.equal(await taskRow(page, "Made by another client").count(), 0);

  assert.equal((await rest("DELETE", `tasks/${created.body.id}`, { token: accessToken })).status, 200);
  await taskRow(page, "Renamed by another client").waitFor({ state: "detached" });
  await page.locator(".empty", { hasText: "No tasks yet" }).waitFor();

  assert.equal(await page.evaluate(() => window.sameDocument), true);
  assert.ok(watchUrls.every((url) => !url.includes(accessToken) && !url.includes("token")), watchUrls.join("\n"));
  assert.deepEqual(page.problems, []);

  // Signing out stops the feed: no new stream opens afterwards.
  await page.locator("#sign-out").click();
  await page.locator("#signin-email").waitFor();
  const opened = watchUrls.length;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(watchUrls.length, opened);
  await context.close();
});
