// The change feed in the browser: GET tasks:watch as Server-Sent Events, read with fetch
// streaming so the access token goes in the Authorization header (EventSource cannot send
// one, and tokens never go in URLs). Each event's `id:` is its resume token: a dropped or
// ended stream is reopened with it as Last-Event-ID, so no change is missed or repeated.

import { ApiError } from "./api.js";

const BACKOFF_MS = [250, 10_000]; // first and longest wait between failed attempts
const RESYNC_REQUIRED = "RESYNC_REQUIRED";
const REFRESHABLE = new Set(["TOKEN_EXPIRED", "TOKEN_INVALID"]);

/**
 * Follows the signed-in user's changes until `signal` aborts (or the session ends):
 * `onChange(change)` for each created, updated or deleted task (heartbeats are not passed
 * on), `onResync()` when the feed lost track (RESYNC_REQUIRED: list again; the feed then
 * continues from now).
 */
export async function followChanges(api, { onChange, onResync, signal }) {
  let lastEventId = "";
  let failures = 0;
  while (!signal.aborted) {
    let retryAfter = 0;
    try {
      const events = await readStream(api, lastEventId, signal, (id, change) => {
        failures = 0;
        lastEventId = id || lastEventId;
        if (change.kind !== "KIND_UNSPECIFIED") onChange(change);
      });
      if (events) continue; // ended cleanly (the replica drains): reopen at once, from the last id
    } catch (error) {
      if (signal.aborted || !api.session.get()) return;
      if (error instanceof ApiError && error.reason === RESYNC_REQUIRED) {
        lastEventId = "";
        onResync();
        continue;
      }
      if (error instanceof ApiError && error.status === 401) {
        if (!REFRESHABLE.has(error.reason)) return api.end("revoked");
        await api.refresh(api.session.get().refreshToken).catch(() => {});
      }
      retryAfter = (error.retryAfter || 0) * 1000;
    }
    failures += 1;
    const [first, longest] = BACKOFF_MS;
    await pause(Math.max(retryAfter, Math.random() * Math.min(longest, first * 2 ** (failures - 1))), signal);
  }
}

/** One stream: `onEvent(id, change)` per SSE event; resolves with their count when the server ends it. */
async function readStream(api, lastEventId, signal, onEvent) {
  let current = api.session.get();
  if (!current) throw new ApiError({ status: 401, message: "Not signed in." });
  if (Date.now() >= current.refreshAt) current = await api.refresh(current.refreshToken);
  const headers = { authorization: `Bearer ${current.accessToken}`, accept: "text/event-stream" };
  if (lastEventId) headers["last-event-id"] = lastEventId;
  let response;
  try {
    // "./": a bare "tasks:watch" would be a URL of the scheme "tasks:".
    response = await fetch(new URL("./tasks:watch", api.base), { headers, signal, cache: "no-store" });
  } catch (error) {
    throw new ApiError({ status: 0, message: String(error?.message || error) });
  }
  if (!response.ok) {
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = { message: text.trim() || response.statusText };
    }
    throw new ApiError({ status: response.status, body });
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let events = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return events;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.data) onEvent(event.id, JSON.parse(event.data), ++events);
      }
    }
  } catch (error) {
    throw error instanceof ApiError ? error : new ApiError({ status: 0, message: String(error?.message || error) });
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The `id` and `data` fields of one SSE event block (several data lines join with "\n"). */
function parseEvent(block) {
  let id = "";
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // a comment (":…") or a line without a field
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  return { id, data: data.join("\n") };
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}
