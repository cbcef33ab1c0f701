// Against a stack allowing each user TASKAPI_USER_LIMIT requests a minute: the page
// says when the user may try again (counting down, from Retry-After) and keeps what
// was typed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { browserPerFile, newContext, openApp, rest, signUp, skip, storedSession, taskRow } from "./support.js";

const limit = Number(process.env.TASKAPI_USER_LIMIT || 0);
const skipped = skip || (!limit && "TASKAPI_USER_LIMIT is not set");

const shared = browserPerFile(skipped);

test("a rate-limited user is told when to try again and loses nothing", { skip: skipped }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  await signUp(page);
  // Each quick add is two calls (create, then the list again): spend the budget.
  const limited = page.locator("#quick-add-error, #list-error");
  for (let i = 0; i < limit && !(await limited.count()); i++) {
    await page.locator("#quick-title").fill(`Task ${i}`);
    await page.locator("#quick-add button[type=submit]").click();
    await Promise.race([taskRow(page, `Task ${i}`).waitFor(), limited.first().waitFor()]);
  }
  await limited.first().waitFor();
  assert.match(await limited.first().textContent(), /Too many requests\. You can try again in \d+ s\./);

  // Now a form: its error says when, and the form keeps what was typed.
  await page.locator("#new-task").click();
  await page.locator("#task-title").fill("Typed while limited");
  await page.locator("#task-description").fill("Still here afterwards");
  await page.locator("#task-form button[type=submit]").click();
  const message = page.locator("#editor-error");
  await message.waitFor();
  const seconds = () => message.textContent().then((text) => Number(/try again in (\d+) s/.exec(text)?.[1]));
  const first = await seconds();
  const { accessToken } = await storedSession(page);
  const direct = await rest("GET", "tasks", { token: accessToken });
  assert.equal(direct.status, 429);
  const retryAfter = Number(direct.headers.get("retry-after"));
  assert.ok(first >= 1 && Math.abs(first - retryAfter) <= 2, `page says ${first} s, the API ${retryAfter} s`);
  await page.waitForFunction(
    ([start]) => Number(/try again in (\d+) s/.exec(document.querySelector("#editor-error").textContent)?.[1]) < start,
    [first],
    { timeout: 3000 },
  ); // it counts down
  assert.equal(await page.locator("#task-title").inputValue(), "Typed while limited");
  assert.equal(await page.locator("#task-description").inputValue(), "Still here afterwards");
  assert.deepEqual(page.problems, []);
  await context.close();
});
