// Drives the OpenAPI docs page (clients/openapi) in headless Debian Chromium
// (playwright-core never downloads a browser here). Moved unchanged out of the old
// clients/web page test when the web app was rebuilt; tests/clients/test_web_page.py
// serves the page and sets:
//   TASKAPI_DOCS_URL  the OpenAPI docs page
//   CHROMIUM          the browser binary (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const docsUrl = process.env.TASKAPI_DOCS_URL;
const skip = !docsUrl && "TASKAPI_DOCS_URL is not set";
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
