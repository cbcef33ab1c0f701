// Accessibility (axe-core on every view, light and dark, desktop and phone), keyboard
// use with a sensible focus order, a phone-sized layout that never scrolls sideways,
// and screenshots of each view at both sizes (TASKAPI_WEB_ARTIFACTS).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  browserPerFile,
  DESKTOP,
  PASSWORD,
  PHONE,
  assertAccessible,
  createTasks,
  env,
  newContext,
  openApp,
  signIn,
  signUp,
  skip,
  storedSession,
  taskRow,
  uniqueEmail,
} from "./support.js";

const shared = browserPerFile();

const SAMPLE = [
  { title: "Renew passport", priority: "HIGH", dueTime: "2030-01-15T10:00:00Z", tags: ["admin", "travel"] },
  { title: "Call the plumber", description: "Kitchen tap drips; ask about Thursday.", status: "IN_PROGRESS", tags: ["home"] },
  { title: "Write the quarterly report", description: "Numbers from finance first.", priority: "HIGH", tags: ["work"] },
  { title: "Buy milk", priority: "LOW", status: "COMPLETED", tags: ["errands"] },
  { title: "Book dentist appointment", dueTime: "2020-06-01T08:00:00Z" },
];

async function assertFitsWidth(page, what) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `${what}: ${scroll}px of content in a ${width}px viewport`);
}

for (const [size, viewport] of [
  ["desktop", DESKTOP],
  ["phone", PHONE],
]) {
  test(`every view passes axe at ${size} size`, { skip }, async () => {
    const phone = viewport === PHONE;
    const context = await newContext(shared.browser, { viewport, isMobile: phone, hasTouch: phone });
    const page = await openApp(context);
    const check = async (name) => {
      await assertAccessible(page, `${name} (${size})`);
      await assertFitsWidth(page, `${name} (${size})`);
      await page.screenshot({ path: `${env.artifacts}/${size}-${name}.png`, fullPage: !name.includes("editor") });
    };
    await page.locator("#signin-form").waitFor();
    await check("sign-in");
    await page.locator("#switch-mode").click();
    await page.locator("#signup-form button[type=submit]").click();
    await page.locator("#signup-email-error").waitFor();
    await check("sign-up-errors");
    await page.locator("#switch-mode").click();

    await signUp(page, { name: "Ada Lovelace" });
    await createTasks((await storedSession(page)).accessToken, SAMPLE);
    await page.reload();
    await taskRow(page, "Renew passport").waitFor();
    if (phone) {
      assert.equal(await page.locator("#filter-panel").isVisible(), false); // folded away on a phone
      await page.locator(".filters-toggle").click();
      await page.locator("#filter-status").waitFor();
    }
    await check("tasks");
    await taskRow(page, "Write the quarterly report").locator("button.edit").click();
    await page.locator("dialog.editor").waitFor();
    await check("editor");
    await page.keyboard.press("Escape");
    await page.locator("nav a", { hasText: "Account" }).click();
    await page.locator("#profile-form").waitFor();
    await check("account");
    await page.locator("#sign-out").click();

    await signIn(page, env.adminEmail, env.adminPassword);
    await page.locator("nav a", { hasText: "Admin" }).click();
    await page.locator("#users tbody tr").first().waitFor();
    await check("admin");
    assert.deepEqual(page.problems, []);
    await context.close();
  });
}

test("the dark colour scheme passes axe too", { skip }, async () => {
  const context = await newContext(shared.browser, { colorScheme: "dark" });
  const page = await openApp(context);
  await signUp(page, { name: "Night Owl" });
  await createTasks((await storedSession(page)).accessToken, SAMPLE);
  await page.reload();
  await taskRow(page, "Renew passport").waitFor();
  await assertAccessible(page, "tasks (dark)");
  await taskRow(page, "Call the plumber").locator("button.edit").click();
  await page.locator("dialog.editor").waitFor();
  await assertAccessible(page, "editor (dark)");
  await page.screenshot({ path: `${env.artifacts}/desktop-dark-tasks.png` });
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("the app works from the keyboard alone, in a sensible focus order", { skip }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  const email = uniqueEmail("keys");
  const focused = () =>
    page.evaluate(() => {
      const e = document.activeElement;
      return e.id || (e.tagName === "H1" ? "heading" : e.textContent.trim());
    });
  const tab = async (shift = false) => {
    await page.keyboard.press(shift ? "Shift+Tab" : "Tab");
    return focused();
  };

  // Sign-in page: heading first, then the fields in reading order.
  await page.locator("#signin-form").waitFor();
  assert.equal(await focused(), "heading");
  assert.deepEqual([await tab(), await tab(), await tab(), await tab()], ["signin-email", "signin-password", "Sign in", "switch-mode"]);
  await page.keyboard.press("Enter"); // to "Create an account", whose heading takes focus
  await page.waitForFunction(() => document.activeElement.tagName === "H1");
  assert.deepEqual([await tab(), await tab(), await tab()], ["signup-name", "signup-email", "signup-password"]);
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.type(email);
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.type("Keyboard User");
  await page.keyboard.press("Enter");
  await page.locator("#whoami", { hasText: "Keyboard User" }).waitFor();

  // Signed in: focus starts at the view's heading, after the header; the skip link comes first of all.
  await page.waitForFunction(() => document.activeElement.tagName === "H1");
  assert.equal(await tab(true), "sign-out");
  const first = await page.evaluate(() => document.querySelector("a[href], button, input, select, textarea").textContent);
  assert.equal(first, "Skip to content");
  await page.locator(".skip-link").focus();
  await page.keyboard.press("Enter");
  assert.equal(await focused(), "main");
  await page.locator("#quick-title").focus();
  await page.keyboard.type("Made with the keyboard");
  await page.keyboard.press("Enter");
  const row = taskRow(page, "Made with the keyboard");
  await row.waitFor();
  assert.equal(await focused(), "quick-title"); // ready for the next one

  // Complete with Space, edit with Enter, leave the dialog with Escape.
  await row.locator("input.complete").focus();
  await page.keyboard.press("Space");
  await page.locator("#tasks > li.completed", { hasText: "Made with the keyboard" }).waitFor();
  await page.keyboard.press("Tab"); // past "Start"? no: a completed task has none
  assert.equal(await focused(), "Edit “Made with the keyboard”");
  await page.keyboard.press("Enter");
  await page.locator("dialog.editor").waitFor();
  assert.equal(await focused(), "task-title");
  // The dialog is modal: Tab stays inside it.
  for (let i = 0; i < 14; i++) await page.keyboard.press("Tab");
  assert.ok(await page.evaluate(() => document.querySelector("dialog.editor").contains(document.activeElement)));
  await page.keyboard.press("Escape");
  await page.locator("dialog.editor").waitFor({ state: "detached" });
  await page.waitForFunction(() => document.activeElement.classList.contains("edit")); // back where it was
  assert.equal(await focused(), "Edit “Made with the keyboard”");
  assert.deepEqual(page.problems, []);
  await context.close();
});
