// The REST client: JSON over fetch to Envoy's /api/v1/, errors parsed into ApiError,
// and the access token refreshed silently (rotating the refresh token) before it
// expires or when the server says it has.

import { Session } from "./session.js";

const TIMEOUT_MS = 15000;
// 401 reasons a fresh access token cures; any other 401 on a signed-in call ends the session.
const REFRESHABLE = new Set(["TOKEN_EXPIRED", "TOKEN_INVALID"]);

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * The API's base URL: the origin set at build time (VITE_TASKAPI_API), else this page's
 * own origin. `?api=<origin>` overrides it only between loopback addresses (`taskapi dev`
 * serves the page and the API on different local ports): a link must never be able to
 * point a deployed app at another server, which would then receive the user's password.
 */
export function apiBase(location = window.location) {
  let origin = import.meta.env.VITE_TASKAPI_API || location.origin;
  const given = new URLSearchParams(location.search).get("api");
  if (given && LOOPBACK.has(location.hostname)) {
    try {
      if (LOOPBACK.has(new URL(given).hostname)) origin = given;
    } catch {
      // not a URL: ignored
    }
  }
  return `${origin.replace(/\/+$/, "").replace(/\/api\/v1$/, "")}/api/v1/`;
}

/**
 * Every failure of a call. `status` is the HTTP status (0: the request never got an
 * answer), `code`/`reason` the gRPC code and ErrorInfo reason, `fields` the
 * BadRequest violations keyed by form field name, `retryAfter` seconds (429/503).
 */
export class ApiError extends Error {
  constructor({ status = 0, body = null, retryAfter = null, message = "" }) {
    super(body?.message || message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.code ?? null;
    const details = Array.isArray(body?.details) ? body.details : [];
    const info = details.find((d) => d["@type"]?.endsWith("google.rpc.ErrorInfo"));
    this.reason = info?.reason || "";
    const retryInfo = details.find((d) => d["@type"]?.endsWith("google.rpc.RetryInfo"));
    this.retryAfter = retryAfter ?? parseDuration(retryInfo?.retryDelay);
    this.violations = details
      .filter((d) => d["@type"]?.endsWith("google.rpc.BadRequest"))
      .flatMap((d) => d.fieldViolations || []);
    this.fields = {};
    for (const { field, description } of this.violations) {
      const name = formField(field);
      this.fields[name] = this.fields[name] ? `${this.fields[name]}; ${description}` : description;
    }
    // Errors that are about one field although the API sends no BadRequest for them.
    if (this.reason === "EMAIL_TAKEN") this.fields.email = this.message;
  }

  get offline() {
    return this.status === 0;
  }
}

/** `task.tags[0]` → `tags`, `new_password` → `newPassword`: the proto path as our form field name. */
export function formField(path) {
  const last = String(path || "")
    .replace(/^(task|user)\./, "")
    .replace(/\[.*$/, "")
    .split(".")[0];
  return last.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

function parseDuration(text) {
  const match = /^(\d+(?:\.\d+)?)s$/.exec(text || "");
  return match ? Math.ceil(Number(match[1])) : null;
}

/** What a person should read about an error that names no field of the form at hand. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error?.message || error}`;
  if (error.offline) {
    return "Can't reach Task API. Check your connection and try again; nothing you typed was lost.";
  }
  if (error.status === 429) {
    const when = error.retryAfter ? `in ${error.retryAfter} s` : "in a moment";
    return `Too many requests. Please wait and try again ${when}.`;
  }
  if (error.status >= 500) {
    const when = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again in a moment.";
    return `Task API is having trouble (${error.status}); nothing was saved and nothing you typed was lost.${when}`;
  }
  return error.message;
}

/** Why a session ended, in words for the sign-in page. */
export const ENDED = {
  reused:
    "You were signed out for your safety: this session's sign-in token was used twice, as happens when it is copied. " +
    "Sign in again; if this happens again, change your password.",
  revoked: "Your session has ended (signed out elsewhere, password changed or account disabled). Please sign in again.",
  expired: "Your session expired. Please sign in again.",
  elsewhere: "You signed out in another tab.",
};

export class Api {
  /** `onEnded(reason)` is told when the session ends by itself (a key of ENDED). */
  constructor(base, { onEnded = () => {} } = {}) {
    this.base = base;
    this.session = new Session(base);
    this.onEnded = onEnded;
    this.refreshing = null;
  }

  // --- auth ---
  async register(fields) {
    return this.session.start(await this.call("POST", "auth/register", { body: fields, auth: false }));
  }

  async login(fields) {
    return this.session.start(await this.call("POST", "auth/login", { body: fields, auth: false }));
  }

  async logout() {
    const current = this.session.get();
    this.session.clear();
    if (current) {
      // Best effort: the tokens are gone from this browser whatever the server says.
      await this.call("POST", "auth/logout", { body: { refreshToken: current.refreshToken }, auth: false }).catch(
        () => {},
      );
    }
  }

  // --- users ---
  me = () => this.call("GET", "users/me");
  updateMe = (user) => this.call("PATCH", "users/me", { query: { updateMask: "name" }, body: user });
  changePassword = (body) => this.call("POST", "users/me:changePassword", { body });
  listUsers = (query) => this.call("GET", "users", { query });
  updateUser = (id, fields) =>
    this.call("PATCH", `users/${id}`, { query: { updateMask: Object.keys(fields).join(",") }, body: fields });

  // --- tasks ---
  listTasks = (query) => this.call("GET", "tasks", { query });
  getTask = (id) => this.call("GET", `tasks/${id}`);
  createTask = (task, requestId) => this.call("POST", "tasks", { query: { requestId }, body: task });
  /** Changes the `mask` fields of `task` (keys of `changes`), failing with 409 unless `etag` is current. */
  updateTask = (id, changes, etag) =>
    this.call("PATCH", `tasks/${id}`, {
      query: { updateMask: Object.keys(changes).join(",") },
      body: { ...changes, etag },
    });
  deleteTask = (id, etag, { keepalive = false } = {}) =>
    this.call("DELETE", `tasks/${id}`, { query: { etag }, keepalive });

  /** One call; a signed-in call refreshes the access token first when it is about to expire. */
  async call(method, path, { query, body, auth = true, keepalive = false } = {}) {
    if (!auth) return this.send(method, path, { query, body, keepalive });
    let current = this.session.get();
    if (!current) throw new ApiError({ status: 401, message: "Not signed in." });
    if (Date.now() >= current.refreshAt) current = await this.refresh(current.refreshToken);
    try {
      return await this.send(method, path, { query, body, keepalive, token: current.accessToken });
    } catch (error) {
      if (error.status !== 401) throw error;
      if (!REFRESHABLE.has(error.reason)) {
        this.end("revoked");
        throw error;
      }
      // Our clock may be behind the server's: refresh once and try again.
      current = await this.refresh(current.refreshToken);
      return this.send(method, path, { query, body, keepalive, token: current.accessToken });
    }
  }

  /**
   * A new token pair for the one holding `used`. One refresh at a time across all tabs
   * (Web Locks): a rotated refresh token presented again revokes the whole session, so a
   * tab that waited re-reads the shared session and uses the pair another tab just got.
   */
  refresh(used) {
    this.refreshing ??= this.refreshOnce(used).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  async refreshOnce(used) {
    const rotate = async () => {
      const current = this.session.get();
      if (!current) throw new ApiError({ status: 401, message: "Not signed in." });
      if (current.refreshToken !== used && Date.now() < current.refreshAt) return current;
      try {
        const next = await this.send("POST", "auth/refresh", { body: { refreshToken: current.refreshToken } });
        return this.session.start(next);
      } catch (error) {
        if (error.status === 401) this.end(error.reason === "REFRESH_REUSED" ? "reused" : "expired");
        throw error;
      }
    };
    return navigator.locks ? navigator.locks.request(this.session.key, rotate) : rotate();
  }

  end(reason) {
    if (!this.session.get()) return;
    this.session.clear(reason);
    this.onEnded(reason);
  }

  async send(method, path, { query, body, token, keepalive = false }) {
    const url = new URL(path, this.base);
    for (const [name, value] of Object.entries(query || {})) {
      for (const item of [value].flat()) {
        if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
      }
    }
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (error) {
      throw new ApiError({ status: 0, message: String(error?.message || error) });
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { message: text.trim() || response.statusText };
    }
    if (response.ok) return parsed;
    const retryAfter = Number.parseInt(response.headers.get("retry-after") || "", 10);
    throw new ApiError({
      status: response.status,
      body: parsed,
      retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
    });
  }
}
