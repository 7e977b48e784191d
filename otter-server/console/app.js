// The console's entry: the token (login form, `#token=…`), the router (every view has its own
// address: /, /jobs/{id}, /workspaces, /workspaces/{id}) and the header.

import { ApiError, get, onUnauthorized, setToken, takeTokenFromFragment, token } from "./api.js";
import { h, replace } from "./dom.js";
import { renderJobs } from "./jobs.js";
import { renderJob } from "./job.js";
import { renderWorkspace, renderWorkspaces } from "./workspace.js";

const view = document.getElementById("view");
const logout = document.getElementById("logout");
let cleanup = null;
let authRequired = false;

const ROUTES = [
  [/^\/$/, () => renderJobs],
  [/^\/jobs\/([^/]+)$/, (m) => (el) => renderJob(el, decodeURIComponent(m[1]))],
  [/^\/workspaces\/?$/, () => renderWorkspaces],
  [/^\/workspaces\/([^/]+)$/, (m) => (el) => renderWorkspace(el, decodeURIComponent(m[1]))],
];

function navigate(path) {
  if (path !== location.pathname + location.search) history.pushState(null, "", path);
  route();
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A view that failed to clean up must not stop the next one.
    }
    cleanup = null;
  }
  const path = location.pathname;
  for (const a of document.querySelectorAll("header nav a")) {
    const active = a.getAttribute("href") === "/" ? path === "/" || path.startsWith("/jobs") : path.startsWith(a.getAttribute("href"));
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, make] of ROUTES) {
    const m = path.match(re);
    if (m) {
      replace(view);
      cleanup = (await make(m)(view)) || null;
      return;
    }
  }
  replace(view, h("h1", "Not found"), h("p", "The console has no view at this address."));
}

function showLogin(message) {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  logout.hidden = true;
  const input = h("input#token", { type: "password", name: "token", autocomplete: "current-password", required: true, spellcheck: "false" });
  const error = h("p.error#login-error", { role: "alert" }, message || "");
  error.hidden = !message;
  const form = h(
    "form.card.login#login",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        setToken(input.value.trim());
        await start();
      },
    },
    h("h1", "Log in to Otter"),
    h("p.muted", "This server requires an API token (one of OTTER_API_TOKENS). It is kept in this tab only (sessionStorage)."),
    h("label", { for: "token" }, "API token"),
    input,
    error,
    h("button.primary", { type: "submit" }, "Log in"),
  );
  replace(view, form);
  input.focus();
}

/** Checks whether the API answers with the stored token (or without one), then routes. */
async function start() {
  try {
    await get("/v1/projects?limit=1");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      authRequired = true;
      showLogin(token() ? "That token was refused: " + e.message : "");
      return;
    }
    replace(view, h("h1", "The API does not answer"), h("p.error", e.message));
    return;
  }
  logout.hidden = !authRequired && !token();
  await route();
}

onUnauthorized(() => {
  authRequired = true;
  showLogin("The server refused the token (401). Log in again.");
});

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[data-nav]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
  view.focus({ preventScroll: true });
});

window.addEventListener("popstate", () => route());

logout.addEventListener("click", () => {
  setToken("");
  authRequired = true;
  showLogin("");
});

takeTokenFromFragment();
start();
