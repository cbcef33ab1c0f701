// Shared by the browser tests: Debian's Chromium through playwright-core (which never
// downloads a browser here), the app's page, a plain REST client for setting up and
// checking data behind the page's back, and axe-core for accessibility checks.
//
// tests/clients/test_web_page.py starts the stack and sets:
//   TASKAPI_WEB_URL        the app, with ?api=<Envoy origin>
//   TASKAPI_API            Envoy's REST base URL (…/api/v1/)
//   TASKAPI_ADMIN_EMAIL    an admin made through the store, and its password in
//   TASKAPI_ADMIN_PASSWORD
//   TASKAPI_OUTAGE         POST /outage or /recover: the replica leaves or rejoins Envoy
//   TASKAPI_WEB_ARTIFACTS  where screenshots go
//   CHROMIUM               the browser binary (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before } from "node:test";

import { chromium } from "playwright-core";

export const env = {
  webUrl: process.env.TASKAPI_WEB_URL,
  api: process.env.TASKAPI_API,
  adminEmail: process.env.TASKAPI_ADMIN_EMAIL,
  adminPassword: process.env.TASKAPI_ADMIN_PASSWORD,
  outage: process.env.TASKAPI_OUTAGE,
  artifacts: process.env.TASKAPI_WEB_ARTIFACTS || "test-results",
};
export const skip = !env.webUrl && "TASKAPI_WEB_URL is not set";
export const PASSWORD = "correct horse battery";
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", ...extraArgs],
  });
}

/**
 * One Chromium for the tests of the calling file: started before the first (unless `skipped`,
 * a reason the file's stack is missing), closed after the last. Use `.browser` inside tests.
 */
export function browserPerFile(skipped = skip) {
  const shared = { browser: undefined };
  before(async () => {
    if (!skipped) shared.browser = await launch();
  });
  after(() => shared.browser?.close());
  return shared;
}

/** A fresh browser profile (own storage) with a fixed locale; tabs opened in it share the session. */
export function newContext(browser, options = {}) {
  return browser.newContext({ viewport: DESKTOP, locale: "en-US", timezoneId: "Europe/Berlin", ...options });
}

/** A tab on the app; `page.problems` collects uncaught page errors (a test ends asserting none). */
export async function openApp(context, search = "") {
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(String(error)));
  await page.goto(search ? `${env.webUrl}&${search}` : env.webUrl);
  return page;
}

let counter = 0;
export const uniqueEmail = (prefix = "web") => `${prefix}-${Date.now()}-${++counter}@example.com`;

export async function signUp(page, { name = "Web User", email = uniqueEmail(), password = PASSWORD } = {}) {
  await page.locator("#switch-mode").click();
  await page.locator("#signup-name").fill(name);
  await page.locator("#signup-email").fill(email);
  await page.locator("#signup-password").fill(password);
  await page.locator("#signup-form button[type=submit]").click();
  await page.locator("#whoami", { hasText: name }).waitFor();
  return { name, email, password };
}

export async function signIn(page, email, password = PASSWORD) {
  await page.locator("#signin-email").fill(email);
  await page.locator("#signin-password").fill(password);
  await page.locator("#signin-form button[type=submit]").click();
  await page.locator("#whoami").waitFor();
}

/** The session the page keeps in localStorage for this API. */
export const storedSession = (page) =>
  page.evaluate((key) => JSON.parse(localStorage.getItem(key) || "null"), `taskapi.session:${env.api}`);

/** A REST call straight to Envoy (no browser): {status, headers, body}. */
export async function rest(method, path, { token, body, query } = {}) {
  const url = new URL(path, env.api);
  for (const [name, value] of Object.entries(query || {})) url.searchParams.append(name, value);
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : {} };
}

export async function createTasks(token, tasks) {
  const created = [];
  for (const task of tasks) {
    const response = await rest("POST", "tasks", { token, body: task });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    created.push(response.body);
  }
  return created;
}

export async function allTasks(token) {
  const response = await rest("GET", "tasks", { token, query: { pageSize: 100 } });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body.tasks || [];
}

/** Flips the stack's only replica out of (or back into) Envoy's healthy set. */
export async function outage(on) {
  const response = await fetch(`${env.outage}/${on ? "outage" : "recover"}`, { method: "POST" });
  assert.equal(response.status, 204);
}

const require = createRequire(import.meta.url);
// Evaluated through the DevTools protocol: the page's CSP (scripts from its origin only) stays on.
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's WCAG 2.x A/AA checks on the page as it is now; returns the violations. */
export async function axe(page) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }),
  );
  return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) }));
}

export async function assertAccessible(page, what) {
  const violations = await axe(page);
  assert.deepEqual(violations, [], `${what}: ${JSON.stringify(violations, null, 2)}`);
}

export async function screenshot(page, name) {
  await mkdir(env.artifacts, { recursive: true });
  await page.screenshot({ path: join(env.artifacts, `${name}.png`), fullPage: true });
}

/** The titles of the tasks listed, in order. */
export const listedTitles = (page) => page.locator("#tasks > li .title").allTextContents();

export const taskRow = (page, title) => page.locator("#tasks > li", { has: page.locator(".title", { hasText: title }) });

/** Polls `condition` (async) until it holds; fails after `timeout` ms. */
export async function waitFor(condition, timeout = 5000) {
  const deadline = Date.now() + timeout;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeout} ms: ${condition}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
