// The console's only way to the server: the public /v1 API, with the token the user gave
// (kept in sessionStorage, so it lives as long as the tab). An error answer becomes an Error
// whose message is the API's own `error.message`.

const TOKEN_KEY = "otter.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Takes `#token=…` from the address: stores it and removes it from the address bar. */
export function takeTokenFromFragment() {
  const hash = location.hash.slice(1);
  if (!hash) return;
  const params = new URLSearchParams(hash);
  const value = params.get("token");
  if (value === null) return;
  setToken(value.trim());
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Listeners told when the server answers 401 (the token is missing or wrong). */
const unauthorizedListeners = new Set();
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

async function errorOf(resp) {
  let code = "http_" + resp.status;
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  if (resp.status === 401) unauthorizedListeners.forEach((fn) => fn());
  return new ApiError(resp.status, code, message);
}

/** A JSON request; resolves to the body, rejects with an ApiError carrying the API's message. */
export async function api(method, path, body, signal) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `cannot reach the server: ${e.message}`);
  }
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, signal) => api("GET", path, undefined, signal);

/** A GET whose answer is text (a diff); rejects with the API's message like api(). */
export async function getText(path) {
  let resp;
  try {
    resp = await fetch(path, { headers: headers() });
  } catch (e) {
    throw new ApiError(0, "network", `cannot reach the server: ${e.message}`);
  }
  if (!resp.ok) throw await errorOf(resp);
  return { text: await resp.text(), truncated: resp.headers.get("x-otter-diff-truncated") === "true" };
}
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows `GET /v1/events/stream` with fetch() (so the token goes in the Authorization header,
 * never in the address), parsing the SSE frames itself. After a dropped connection it
 * reconnects with `Last-Event-ID` = the last id it handed on, and drops any event whose id is
 * not above it: nothing lost, nothing twice.
 *
 * handlers: onEvent(event, kind), onEnd(), onState("live"|"reconnecting"|"ended"|"error", msg),
 * onReconnect() (after a reconnect, before its first event).
 * Returns { close(), lastId() }.
 */
export function follow(params, handlers, startAfter) {
  let lastId = startAfter ?? null;
  let closed = false;
  let controller = null;
  let attempt = 0;
  const state = (s, msg) => handlers.onState && handlers.onState(s, msg);

  async function run() {
    while (!closed) {
      controller = new AbortController();
      const h = headers({ Accept: "text/event-stream" });
      if (lastId !== null) h.set("Last-Event-ID", String(lastId));
      let ended = false;
      try {
        const resp = await fetch(`/v1/events/stream${qs(params)}`, { headers: h, signal: controller.signal, cache: "no-store" });
        if (!resp.ok) {
          const err = await errorOf(resp);
          if (resp.status >= 400 && resp.status < 500) {
            state("error", err.message);
            return;
          }
          throw err;
        }
        if (attempt > 0 && handlers.onReconnect) handlers.onReconnect();
        attempt = 0;
        state("live");
        ended = await readFrames(resp.body, (frame) => {
          if (frame.event === "end") {
            return true;
          }
          if (frame.event === "error") {
            return false;
          }
          if (!frame.data) return false;
          const id = frame.id !== undefined ? Number(frame.id) : null;
          if (id !== null && lastId !== null && id <= lastId) return false; // already handed on
          let event;
          try {
            event = JSON.parse(frame.data);
          } catch {
            return false;
          }
          if (id !== null) lastId = id;
          handlers.onEvent(event, frame.event);
          return false;
        });
      } catch (e) {
        if (closed) return;
      }
      if (closed) return;
      if (ended) {
        state("ended");
        if (handlers.onEnd) handlers.onEnd();
        return;
      }
      attempt += 1;
      state("reconnecting", `connection lost; reconnecting (attempt ${attempt})`);
      await new Promise((r) => setTimeout(r, Math.min(500 * attempt, 5000)));
    }
  }
  run();
  return {
    close() {
      closed = true;
      if (controller) controller.abort();
    },
    lastId: () => lastId,
    /** Drops the connection as a network failure would (used to test resumption). */
    drop() {
      if (controller) controller.abort();
    },
  };
}

/** Reads SSE frames from a byte stream; onFrame returns true to stop (the stream ended). */
async function readFrames(body, onFrame) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let frame = {};
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (data.length || frame.event) {
          frame.data = data.join("\n");
          const stop = onFrame(frame);
          if (stop) {
            reader.cancel().catch(() => {});
            return true;
          }
        }
        frame = {};
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") data.push(val);
      else if (field === "id") frame.id = val;
      else if (field === "event") frame.event = val;
    }
  }
}
