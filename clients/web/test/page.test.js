// Drives clients/web and clients/openapi in headless Debian Chromium (playwright-core
// never downloads a browser here). tests/clients/test_web_page.py serves the pages,
// starts the API behind real Envoy with CORS, and sets:
//   TASKAPI_WEB_URL   the page, with ?api=<Envoy REST base URL>
//   TASKAPI_DOCS_URL  the OpenAPI docs page
//   CHROMIUM          the browser binary (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const webUrl = process.env.TASKAPI_WEB_URL;
const docsUrl = process.env.TASKAPI_DOCS_URL;
const skip = !webUrl && "TASKAPI_WEB_URL is not set";
let context;
let profile;

before(async () => {
  if (skip) return;
  profile = await mkdtemp(join(tmpdir(), "taskapi-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await context?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

async function openPage(url) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.goto(url);
  return { page, problems };
}

const titles = (page) => page.locator("#tasks li .title").allTextContents();

test("register, create, complete, delete, log out and back in", { skip }, async () => {
  const { page, problems } = await openPage(webUrl);
  const email = `web-${Date.now()}@example.com`;
  const register = page.locator("#register-form");
  await register.locator("[name=name]").fill("Web User");
  await register.locator("[name=email]").fill(email);
  await register.locator("[name=password]").fill("correct horse");
  await register.locator("button").click();
  await page.locator("#whoami", { hasText: email }).waitFor();
  await page.locator("#count", { hasText: "0 tasks" }).waitFor();
  // The REST body of register is the AuthSession itself, stored as is.
  const stored = await page.evaluate(() => JSON.parse(sessionStorage.getItem("taskapi.session")));
  assert.equal(stored.tokenType, "Bearer");
  assert.ok(stored.accessToken && stored.refreshToken);
  assert.equal(stored.user.email, email);

  const create = page.locator("#create-form");
  await create.locator("[name=title]").fill("Buy milk");
  await create.locator("[name=priority]").selectOption("HIGH");
  await create.locator("button").click();
  await page.locator("#count", { hasText: "1 task" }).waitFor();
  await create.locator("[name=title]").fill("Write report");
  await create.locator("button").click();
  await page.locator("#count", { hasText: "2 tasks" }).waitFor();
  assert.deepEqual(await titles(page), ["Buy milk", "Write report"]);
  assert.equal(await page.locator("#tasks li").first().locator(".priority").textContent(), "HIGH");

  await page.locator("#tasks li", { hasText: "Buy milk" }).locator("button.complete").click();
  await page.locator("#tasks li.completed", { hasText: "Buy milk" }).waitFor();
  assert.equal(await page.locator("#tasks li", { hasText: "Buy milk" }).locator("button.complete").isDisabled(), true);

  await page.locator("#tasks li", { hasText: "Write report" }).locator("button.delete").click();
  await page.locator("#count", { hasText: "1 task" }).waitFor();
  assert.deepEqual(await titles(page), ["Buy milk"]);

  await page.locator("#logout").click();
  await page.locator("#login-form").waitFor();
  assert.equal(await page.locator("#signed-in").isHidden(), true);

  // The API's error body is shown: registering the same email again is a 409.
  await register.locator("[name=name]").fill("Again");
  await register.locator("[name=email]").fill(email);
  await register.locator("[name=password]").fill("correct horse");
  await register.locator("button").click();
  await page.locator("#error").waitFor();
  assert.match(await page.locator("#error").textContent(), /already/i);

  const login = page.locator("#login-form");
  await login.locator("[name=email]").fill(email);
  await login.locator("[name=password]").fill("correct horse");
  await login.locator("button").click();
  await page.locator("#tasks li.completed", { hasText: "Buy milk" }).waitFor();
  assert.equal(await page.locator("#error").isHidden(), true);
  assert.deepEqual(problems, []);
});

test("the OpenAPI docs page renders every operation", { skip: !docsUrl && "TASKAPI_DOCS_URL is not set" }, async () => {
  const { page, problems } = await openPage(docsUrl);
  await page.locator("body[data-operations]").waitFor();
  const count = Number(await page.locator("body").getAttribute("data-operations"));
  assert.equal(await page.locator("section.op:not(.schema)").count(), count);
  assert.ok(count >= 16, `only ${count} operations`);
  await page.locator("#TaskService_CreateTask", { hasText: "/api/v1/tasks" }).waitFor();
  await page.locator("#schema-taskapi-v1-Task", { hasText: "dueTime" }).waitFor();
  assert.deepEqual(problems, []);
});
