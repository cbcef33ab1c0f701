// Signing up, in and out; the account page; the admin view.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  browserPerFile,
  PASSWORD,
  env,
  launch,
  newContext,
  openApp,
  rest,
  signIn,
  signUp,
  skip,
  storedSession,
  uniqueEmail,
  waitFor,
} from "./support.js";

const shared = browserPerFile();

test("sign up shows the API's field errors, then sign out and back in", { skip }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  await page.locator("#switch-mode").click();
  await page.locator("#signup-email").fill("not an email");
  await page.locator("#signup-password").fill("short");
  await page.locator("#signup-form button[type=submit]").click();
  await page.locator("#signup-name-error").waitFor();
  assert.match(await page.locator("#signup-name-error").textContent(), /at least 1 character/);
  assert.match(await page.locator("#signup-email-error").textContent(), /valid email/);
  assert.match(await page.locator("#signup-password-error").textContent(), /at least 8 bytes/);
  for (const name of ["name", "email", "password"]) {
    const input = page.locator(`#signup-${name}`);
    assert.equal(await input.getAttribute("aria-invalid"), "true");
    assert.match(await input.getAttribute("aria-describedby"), new RegExp(`signup-${name}-error`));
  }
  await page.waitForFunction(() => document.activeElement.id === "signup-name"); // the first to fix
  assert.equal(await page.locator("#signup-email").inputValue(), "not an email"); // nothing lost

  const email = uniqueEmail();
  await page.locator("#signup-name").fill("Grace Hopper");
  await page.locator("#signup-email").fill(email);
  await page.locator("#signup-password").fill(PASSWORD);
  await page.locator("#signup-form button[type=submit]").click();
  await page.locator("#whoami", { hasText: "Grace Hopper" }).waitFor();
  const session = await storedSession(page);
  assert.equal(session.user.email, email);

  await page.locator("#sign-out").click();
  await page.locator("#signin-form").waitFor();
  assert.equal(await storedSession(page), null);
  // Signing out ended the session on the server too.
  assert.equal((await rest("POST", "auth/refresh", { body: { refreshToken: session.refreshToken } })).status, 401);
  assert.equal((await rest("GET", "users/me", { token: session.accessToken })).status, 401);

  // The same email again: the error sits next to the email field.
  await page.locator("#switch-mode").click();
  await page.locator("#signup-name").fill("Someone");
  await page.locator("#signup-email").fill(email);
  await page.locator("#signup-password").fill(PASSWORD);
  await page.locator("#signup-form button[type=submit]").click();
  await page.locator("#signup-email-error", { hasText: "already exists" }).waitFor();

  await page.locator("#switch-mode").click();
  await page.locator("#signin-email").fill(email);
  await page.locator("#signin-password").fill("wrong password");
  await page.locator("#signin-form button[type=submit]").click();
  await page.locator("#signin-error").waitFor();
  assert.match(await page.locator("#signin-error").textContent(), /email or password/i);
  await signIn(page, email);
  await page.locator("#whoami", { hasText: "Grace Hopper" }).waitFor();
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("edit the profile and change the password", { skip }, async () => {
  const context = await newContext(shared.browser);
  const page = await openApp(context);
  const { email } = await signUp(page, { name: "Alan" });
  await page.locator("nav a", { hasText: "Account" }).click();
  assert.equal(new URL(page.url()).searchParams.get("view"), "account");
  assert.equal(await page.locator("#profile-email").textContent(), email);

  await page.locator("#profile-name").fill("");
  await page.locator("#profile-form button[type=submit]").click();
  await page.locator("#profile-name-error", { hasText: "at least 1 character" }).waitFor();
  await page.locator("#profile-name").fill("Alan Turing");
  await page.locator("#profile-form button[type=submit]").click();
  await page.locator("#profile-form .success", { hasText: "Profile saved." }).waitFor();
  await page.locator("#whoami", { hasText: "Alan Turing" }).waitFor();
  const { accessToken } = await storedSession(page);
  assert.equal((await rest("GET", "users/me", { token: accessToken })).body.name, "Alan Turing");

  // Another device signed in before the change: it is signed out by it.
  const elsewhere = (await rest("POST", "auth/login", { body: { email, password: PASSWORD } })).body;

  const form = page.locator("#password-form");
  await page.locator("#pw-currentPassword").fill("not my password");
  await page.locator("#pw-newPassword").fill("a brand new password");
  await page.locator("#pw-confirmPassword").fill("a brand new password");
  await form.locator("button[type=submit]").click();
  await page.locator("#pw-currentPassword-error", { hasText: "incorrect" }).waitFor();
  await page.locator("#pw-currentPassword").fill(PASSWORD);
  await page.locator("#pw-newPassword").fill("short");
  await page.locator("#pw-confirmPassword").fill("short");
  await form.locator("button[type=submit]").click();
  await page.locator("#pw-newPassword-error", { hasText: "at least 8 bytes" }).waitFor();
  await page.locator("#pw-newPassword").fill("a brand new password");
  await page.locator("#pw-confirmPassword").fill("a brand new passwort");
  await form.locator("button[type=submit]").click();
  await page.locator("#pw-confirmPassword-error", { hasText: "does not match" }).waitFor();
  await page.locator("#pw-confirmPassword").fill("a brand new password");
  await form.locator("button[type=submit]").click();
  await form.locator(".success", { hasText: "Password changed" }).waitFor();
  assert.equal(await page.locator("#pw-newPassword").inputValue(), "");

  assert.equal((await rest("POST", "auth/refresh", { body: { refreshToken: elsewhere.refreshToken } })).status, 401);
  await page.locator("nav a", { hasText: "Tasks" }).click(); // this tab stays signed in
  await page.locator("#count", { hasText: "0 tasks" }).waitFor();
  await page.locator("#sign-out").click();
  await signIn(page, email, "a brand new password");
  assert.equal((await rest("POST", "auth/login", { body: { email, password: PASSWORD } })).status, 401);
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("admins list, find, promote and disable users; others never see the admin view", { skip }, async () => {
  const bob = uniqueEmail("bob");
  const carol = uniqueEmail("carol");
  for (const [email, name] of [[bob, "Bob Builder"], [carol, "Carol Danvers"]]) {
    assert.equal((await rest("POST", "auth/register", { body: { email, password: PASSWORD, name } })).status, 200);
  }
  const context = await newContext(shared.browser);
  const user = await openApp(context, "view=admin");
  await signIn(user, carol);
  await user.locator("h1", { hasText: "Tasks" }).waitFor(); // not an admin: the tasks view instead
  assert.equal(await user.locator("nav a", { hasText: "Admin" }).count(), 0);
  const carolSession = await storedSession(user);
  await context.close();

  const adminContext = await newContext(shared.browser);
  const page = await openApp(adminContext);
  await signIn(page, env.adminEmail, env.adminPassword);
  await page.locator("nav a", { hasText: "Admin" }).click();
  await page.locator("h1", { hasText: "Users" }).waitFor();
  const me = page.locator("#users tbody tr", { hasText: env.adminEmail });
  await me.waitFor();
  assert.equal(await me.locator("select.role").isDisabled(), true); // no locking oneself out
  assert.equal(await me.locator("button.toggle-disabled").count(), 0);

  await page.locator("#users-q").fill(bob.split("@")[0]);
  await page.locator("#users-count", { hasText: "1 user" }).waitFor();
  const bobRow = page.locator("#users tbody tr", { hasText: bob });
  await bobRow.locator("select.role").selectOption("ADMIN");
  await page.locator(".notice", { hasText: `${bob} is now Admin.` }).waitFor();
  const adminToken = (await storedSession(page)).accessToken;
  const bobId = (await rest("GET", "users", { token: adminToken, query: { q: bob } })).body.users[0].id;
  assert.equal((await rest("GET", `users/${bobId}`, { token: adminToken })).body.role, "ADMIN");

  await page.locator("#users-q").fill(carol);
  await page.locator("#users-count", { hasText: "1 user" }).waitFor();
  const carolRow = page.locator("#users tbody tr", { hasText: carol });
  await carolRow.locator("button.toggle-disabled", { hasText: "Disable" }).click();
  await carolRow.locator(".badge", { hasText: "Disabled" }).waitFor();
  // The badge changes at once (optimistically); the notice only once the server saved it.
  await page.locator(".notice", { hasText: `Disabled ${carol}; their sessions have ended.` }).waitFor();
  // Disabled at once: her session stops working and she cannot sign in.
  assert.equal((await rest("GET", "users/me", { token: carolSession.accessToken })).status, 401);
  assert.equal((await rest("POST", "auth/login", { body: { email: carol, password: PASSWORD } })).status, 401);
  await carolRow.locator("button.toggle-disabled", { hasText: "Enable" }).click();
  await carolRow.locator(".badge", { hasText: "Active" }).waitFor();
  await page.locator(".notice", { hasText: `Enabled ${carol}.` }).waitFor();
  assert.equal((await rest("POST", "auth/login", { body: { email: carol, password: PASSWORD } })).status, 200);

  await page.locator("#users-q").fill("");
  await page.locator("#users-role").selectOption("ADMIN");
  const roles = () => page.locator("#users select.role").evaluateAll((selects) => selects.map((s) => s.value));
  await waitFor(async () => (await roles()).every((role) => role === "ADMIN") && (await me.count()) === 1);
  await page.locator("#users tbody tr", { hasText: bob }).waitFor();
  assert.deepEqual(page.problems, []);
  await adminContext.close();
});

test("a link cannot point the deployed app at another API server", { skip }, async () => {
  // The page as deployed on a real host name (resolved to this machine), opened from a
  // link that names another API: the password must still go to the page's own origin.
  const pages = new URL(env.webUrl);
  const deployed = await launch(["--host-resolver-rules=MAP tasks.example.com 127.0.0.1"]);
  try {
    const page = await (await deployed.newContext()).newPage();
    await page.goto(`http://tasks.example.com:${pages.port}/web/${pages.search}`);
    const login = page.waitForRequest((request) => request.url().includes("/auth/login"));
    await page.locator("#signin-email").fill("someone@example.com");
    await page.locator("#signin-password").fill(PASSWORD);
    await page.locator("#signin-form button[type=submit]").click();
    assert.equal(new URL((await login).url()).origin, `http://tasks.example.com:${pages.port}`);
  } finally {
    await deployed.close();
  }
});
