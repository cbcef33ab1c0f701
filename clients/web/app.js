// Task API in the browser: plain ES module, no build step, no dependencies.
// Talks JSON to the REST edge (Envoy) under /api/v1/ with CORS. The API base URL
// comes from ?api=..., else the last one used (localStorage), else the default.
const DEFAULT_API = "http://127.0.0.1:8080";
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
let apiBase = params.get("api") || localStorage.getItem("taskapi.api") || DEFAULT_API;
// The session lives for the tab only: a refresh token is a long-lived secret.
let session = JSON.parse(sessionStorage.getItem("taskapi.session") || "null");

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
  // "title: must be at most 100 characters" lines from a google.rpc.BadRequest.
  get fieldViolations() {
    const details = this.body?.details || [];
    return details
      .filter((d) => d["@type"] === "type.googleapis.com/google.rpc.BadRequest")
      .flatMap((d) => d.fieldViolations || []);
  }
}

async function request(method, path, body, { auth = true, retried = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && session) headers.Authorization = `Bearer ${session.accessToken}`;
  const response = await fetch(apiBase.replace(/\/$/, "") + "/api/v1" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (response.status === 401 && auth && session && !retried) {
    // The access token expired or was revoked: rotate once, then retry once.
    if (await refresh()) return request(method, path, body, { auth, retried: true });
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function setSession(newSession) {
  session = newSession;
  if (session) sessionStorage.setItem("taskapi.session", JSON.stringify(session));
  else sessionStorage.removeItem("taskapi.session");
}

async function refresh() {
  try {
    // Register, login and refresh answer with the AuthSession itself.
    setSession(await request("POST", "/auth/refresh", { refreshToken: session.refreshToken }, { auth: false }));
    return true;
  } catch {
    setSession(null);
    render();
    return false;
  }
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const lines = [error.message];
  if (error instanceof ApiError) {
    for (const v of error.fieldViolations) lines.push(`${v.field}: ${v.description}`);
  } else if (error instanceof TypeError) {
    lines.push(`Cannot reach ${apiBase} (is the API running, and is this page's origin allowed by CORS?)`);
  }
  box.textContent = lines.join("\n");
  box.hidden = false;
}

function guard(handler) {
  return async (event) => {
    event.preventDefault?.();
    showError(null);
    try {
      await handler(event);
    } catch (error) {
      showError(error);
    }
  };
}

async function loadTasks() {
  // Every page, in order of creation (a page is at most 100 tasks).
  const tasks = [];
  let pageToken = "";
  do {
    const query = new URLSearchParams({ pageSize: "100", orderBy: "createTime" });
    if (pageToken) query.set("pageToken", pageToken);
    const page = await request("GET", `/tasks?${query}`);
    tasks.push(...(page.tasks || []));
    pageToken = page.nextPageToken || "";
  } while (pageToken);
  renderTasks(tasks);
}

function renderTasks(tasks) {
  $("count").textContent = `${tasks.length} task${tasks.length === 1 ? "" : "s"}`;
  const list = $("tasks");
  list.replaceChildren(
    ...tasks.map((task) => {
      const item = document.createElement("li");
      item.dataset.id = task.id;
      item.className = (task.status || "PENDING").toLowerCase();
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = task.title;
      const priority = document.createElement("span");
      priority.className = `priority ${task.priority}`;
      priority.textContent = task.priority;
      const complete = document.createElement("button");
      complete.textContent = "Complete";
      complete.className = "complete";
      complete.disabled = task.status === "COMPLETED";
      complete.addEventListener("click", guard(async () => {
        await request("PATCH", `/tasks/${task.id}?updateMask=status`, { status: "COMPLETED", etag: task.etag });
        await loadTasks();
      }));
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.className = "delete";
      remove.addEventListener("click", guard(async () => {
        await request("DELETE", `/tasks/${task.id}`);
        await loadTasks();
      }));
      item.append(title, priority, complete, remove);
      return item;
    }),
  );
}

function render() {
  const signedIn = Boolean(session);
  $("signed-out").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
  $("whoami").textContent = signedIn ? session.user?.email || "" : "";
  if (!signedIn) $("tasks").replaceChildren();
}

async function signIn(authSession) {
  setSession(authSession);
  render();
  await loadTasks();
}

$("api-base").value = apiBase;
$("api-base").addEventListener("change", (event) => {
  apiBase = event.target.value || DEFAULT_API;
  localStorage.setItem("taskapi.api", apiBase);
});

$("register-form").addEventListener("submit", guard(async (event) => {
  const form = new FormData(event.target);
  const body = { name: form.get("name"), email: form.get("email"), password: form.get("password") };
  await signIn(await request("POST", "/auth/register", body, { auth: false }));
  event.target.reset();
}));

$("login-form").addEventListener("submit", guard(async (event) => {
  const form = new FormData(event.target);
  const body = { email: form.get("email"), password: form.get("password") };
  await signIn(await request("POST", "/auth/login", body, { auth: false }));
  event.target.reset();
}));

$("create-form").addEventListener("submit", guard(async (event) => {
  const form = new FormData(event.target);
  // A fresh requestId per submit: a retried POST cannot create a duplicate.
  const query = new URLSearchParams({ requestId: crypto.randomUUID() });
  await request("POST", `/tasks?${query}`, { title: form.get("title"), priority: form.get("priority") });
  event.target.reset();
  await loadTasks();
}));

$("logout").addEventListener("click", guard(async () => {
  const current = session;
  setSession(null);
  render();
  if (current) await request("POST", "/auth/logout", { refreshToken: current.refreshToken }, { auth: false });
}));

render();
if (session) guard(loadTasks)({});
