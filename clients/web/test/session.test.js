// Silent refresh against a stack whose access tokens live TASKAPI_TOKEN_SECONDS (2 s):
// the page refreshes before a call when its token is about to expire, refreshes and
// retries when the server says it has, rotates the refresh token every time, keeps
// two tabs from presenting the same refresh token twice, and ends the session with a
// clear message when a rotated refresh token is used again (a stolen copy).
import assert from "node:assert/strict";
import { test } from "node:test";

import { browserPerFile, newContext, openApp, rest, signUp, skip, storedSession, taskRow } from "./support.js";

const tokenSeconds = Number(process.env.TASKAPI_TOKEN_SECONDS || 0);
const skipped = skip || (!tokenSeconds && "TASKAPI_TOKEN_SECONDS is not set");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const waitOutToken = () => sleep(tokenSeconds * 1000 + 600);

const shared = browserPerFile(skipped);

// The change feed's stream (tasks:watch) opens and reopens on its own schedule: not a call here.
const isCall = (response) => !response.url().includes("tasks:watch");

async function quickAdd(page, title) {
  await page.locator("#quick-title").fill(title);
  await page.locator("#quick-add button[type=submit]").click();
  await taskRow(page, title).waitFor();
}

test("expired access tokens are refreshed silently, rotating the refresh token", { skip: skipped }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  await signUp(page);
  const first = await storedSession(page);
  assert.ok(first.expiresAt - Date.now() <= tokenSeconds * 1000);
  assert.ok(first.refreshAt < first.expiresAt);

  // Before a call: the token is about to expire, so the page refreshes first.
  await sleep(first.refreshAt - Date.now() + 100);
  await quickAdd(page, "After the first expiry");
  const second = await storedSession(page);
  assert.notEqual(second.refreshToken, first.refreshToken);
  assert.notEqual(second.accessToken, first.accessToken);
  // The page refreshed 0.4 s before the first token's expiry; that token is not revoked, it
  // lives out its lifetime (a fast stack finished the call above inside it), then is refused.
  await sleep(Math.max(0, first.expiresAt + 100 - Date.now()));
  assert.equal((await rest("GET", "users/me", { token: first.accessToken })).status, 401);

  // After a call: the page believes its token is fresh (a clock behind the server's), the
  // server answers TOKEN_EXPIRED, the page refreshes and repeats the call.
  await waitOutToken();
  const later = Date.now() + 3600_000;
  await page.evaluate(
    ([key, session]) => localStorage.setItem(key, JSON.stringify(session)),
    [`taskapi.session:${process.env.TASKAPI_API}`, { ...(await storedSession(page)), expiresAt: later, refreshAt: later }],
  );
  const calls = [];
  page.on("response", (r) => isCall(r) && calls.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`));
  await quickAdd(page, "After the second expiry");
  assert.deepEqual(calls.slice(0, 3), ["401 POST /api/v1/tasks", "200 POST /api/v1/auth/refresh", "200 POST /api/v1/tasks"]);
  const third = await storedSession(page);
  assert.notEqual(third.refreshToken, second.refreshToken);

  // Two tabs whose token expired reload at once: one refreshes, the other uses its result.
  const other = await openApp(context);
  await taskRow(other, "After the second expiry").waitFor();
  await sleep((await storedSession(page)).refreshAt - Date.now() + 100);
  const calls2 = [];
  for (const [name, tab] of [["first", page], ["second", other]]) {
    tab.on("response", (r) => isCall(r) && calls2.push(`${name}: ${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`));
  }
  await Promise.all([page.reload(), other.reload()]);
  await Promise.all([taskRow(page, "After the first expiry"), taskRow(other, "After the first expiry")].map((row) => row.waitFor({ timeout: 10000 }))).catch(
    async (error) => {
      const shown = await Promise.all([page, other].map((tab) => tab.locator("main").innerText()));
      throw new Error(`${error.message}\ncalls: ${calls2.join("; ")}\npages: ${shown.join("\n---\n")}`);
    },
  );
  const fourth = await storedSession(page);
  assert.notEqual(fourth.refreshToken, third.refreshToken);
  assert.equal((await rest("POST", "auth/refresh", { body: { refreshToken: fourth.refreshToken } })).status, 200);
  assert.deepEqual([...page.problems, ...other.problems], []);
  await context.close();
});

test("a refresh token used twice ends the session with a clear message", { skip: skipped }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  await signUp(page);
  // Someone with a copy of the refresh token uses it first.
  const copied = (await storedSession(page)).refreshToken;
  const thief = await rest("POST", "auth/refresh", { body: { refreshToken: copied } });
  assert.equal(thief.status, 200);

  await waitOutToken();
  await page.locator("#quick-title").fill("Never saved");
  await page.locator("#quick-add button[type=submit]").click();
  await page.locator("#session-ended").waitFor();
  assert.match(await page.locator("#session-ended").textContent(), /signed out for your safety.*used twice/);
  await page.locator("#signin-form").waitFor();
  assert.equal(await storedSession(page), null);
  // The whole session family is revoked, the copy included.
  assert.equal((await rest("POST", "auth/refresh", { body: { refreshToken: thief.body.refreshToken } })).status, 401);
  assert.deepEqual(page.problems, []);
  await context.close();
});
