// Drives the OpenAPI docs page (clients/openapi: Swagger UI from npm over the generated
// document) in headless Debian Chromium, as served by `taskapi dev`'s page server, against a
// real stack whose Envoy allows the page's origin by CORS. tests/clients/test_web_page.py sets:
//   TASKAPI_DOCS_URL       the docs page, with ?api=<Envoy origin>
//   TASKAPI_WEB_ARTIFACTS  where screenshots go
//   CHROMIUM               the browser binary (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { test } from "node:test";

import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import { browserPerFile, env, uniqueEmail } from "./support.js";

/** A screenshot of one operation (request and live response), where a person would look. */
async function screenshot(operation, name) {
  await mkdir(env.artifacts, { recursive: true });
  await operation.screenshot({ path: join(env.artifacts, `${name}.png`) });
}

const docsUrl = process.env.TASKAPI_DOCS_URL;
const skip = !docsUrl && "TASKAPI_DOCS_URL is not set";
const shared = browserPerFile(skip);

async function openDocs() {
  const context = await shared.browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.problems = [];
  page.requests = [];
  page.on("pageerror", (error) => page.problems.push(String(error)));
  page.on("request", (request) => page.requests.push(request.url()));
  await page.goto(docsUrl);
  await page.locator("body[data-ready]").waitFor();
  return page;
}

/** Expands an operation, presses "Try it out", optionally replaces the JSON body, executes it. */
async function tryItOut(page, operationId, body) {
  const operation = page.locator(`[id$="-${operationId}"]`);
  await operation.locator(".opblock-summary").first().click();
  await operation.getByRole("button", { name: "Try it out" }).click();
  if (body !== undefined) await operation.locator("textarea.body-param__text").fill(JSON.stringify(body));
  await operation.getByRole("button", { name: "Execute" }).click();
  const live = operation.locator(".live-responses-table .response .response-col_status").first();
  await live.waitFor();
  return { operation, status: Number((await live.textContent()).trim()) };
}

test("Swagger UI renders every operation, offline", { skip }, async () => {
  const page = await openDocs();
  const spec = await page.evaluate(() => window.ui.specSelectors.specJson().toJS());
  const operations = Object.values(spec.paths).reduce((n, verbs) => n + Object.keys(verbs).length, 0);
  assert.ok(operations >= 16, `only ${operations} operations`);
  assert.equal(await page.locator(".opblock").count(), operations);
  await page.locator(".opblock-summary-path", { hasText: "/api/v1/tasks/{taskId}" }).first().waitFor();
  // "Try it out" goes to the stack named in ?api=, never to the document's default server.
  const api = new URL(docsUrl).searchParams.get("api");
  assert.deepEqual(spec.servers.map((s) => s.url), [api]);
  const origins = new Set(page.requests.map((url) => new URL(url).origin));
  assert.deepEqual([...origins], [new URL(docsUrl).origin], "every asset comes from the page server");
  assert.deepEqual(page.problems, []);
  await page.close();
});

test("try it out: register, authorize with the token, read the account", { skip }, async () => {
  const page = await openDocs();
  const email = uniqueEmail("swagger");
  const register = await tryItOut(page, "AuthService_Register", {
    email,
    password: "correct horse battery",
    name: "Swagger User",
  });
  assert.equal(register.status, 200);
  const text = await register.operation.locator(".live-responses-table .response-col_description pre").first().textContent();
  const session = JSON.parse(text);
  assert.equal(session.user.email, email);
  assert.equal(session.tokenType, "Bearer");
  await screenshot(register.operation, "docs-try-it-out-register");

  await page.getByRole("button", { name: "Authorize" }).first().click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.locator("input").first().fill(session.accessToken);
  await dialog.getByRole("button", { name: "Apply credentials" }).click();
  await dialog.getByRole("button", { name: "Close" }).click();

  const me = await tryItOut(page, "UserService_GetCurrentUser");
  assert.equal(me.status, 200);
  const user = JSON.parse(await me.operation.locator(".live-responses-table .response-col_description pre").first().textContent());
  assert.equal(user.email, email);
  // The rate-limit fields are CORS-exposed, so the page shows them as response headers.
  await me.operation.locator(".live-responses-table .response-col_description", { hasText: "ratelimit" }).first().waitFor();
  await screenshot(me.operation, "docs-try-it-out-authorized");
  assert.deepEqual(page.problems, []);
  await page.close();
});
