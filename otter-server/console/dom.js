// Building DOM nodes without markup: every text goes in through text nodes, every attribute
// through setAttribute on an allow-list, so nothing a job, a file or a command printed can
// become HTML. Links go through safeHref, which keeps only http(s) and same-origin paths.

/** h('div#id.cls', {attrs}, child, ...): an element; children are nodes, strings or arrays. */
export function h(spec, attrs, ...children) {
  const parts = spec.split(/(?=[.#])/);
  const el = document.createElement(parts[0] && !/^[.#]/.test(parts[0]) ? parts.shift() : "div");
  for (const part of parts) {
    if (part.startsWith("#")) el.id = part.slice(1);
    else if (part.startsWith(".")) el.classList.add(part.slice(1));
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "href") {
      const href = safeHref(value);
      if (href) el.setAttribute("href", href);
    } else if (key === "class") {
      el.classList.add(...String(value).split(/\s+/).filter(Boolean));
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in ALLOWED) {
      el.setAttribute(key, value === true ? "" : String(value));
    } else {
      throw new Error(`h(): attribute ${key} is not allowed`);
    }
  }
  append(el, children);
  return el;
}

const ALLOWED = Object.fromEntries(
  [
    "id", "type", "name", "value", "placeholder", "for", "min", "max", "step", "rows", "cols",
    "required", "disabled", "checked", "selected", "title", "role", "tabindex", "target", "rel",
    "autocomplete", "spellcheck", "open", "hidden", "aria-label", "aria-live", "aria-current",
    "aria-expanded", "aria-controls", "aria-pressed", "aria-busy", "aria-describedby", "size",
    "readonly",
  ].map((k) => [k, true]),
);

/** Appends children (nodes, strings, numbers, arrays, null skipped) as nodes or text. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** An href that can do nothing but navigate: http(s) URLs and paths of this origin. */
export function safeHref(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, location.origin);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    // A console address stays a path (what the page wrote), others are whole URLs.
    return url.origin === location.origin ? url.pathname + url.search + url.hash : url.href;
  } catch {
    return null;
  }
}

/** An external link (opened in a new tab, without referrer or opener). */
export function extLink(url, text) {
  const href = safeHref(url);
  if (!href) return h("span", String(url ?? ""));
  return h("a.ext", { href, target: "_blank", rel: "noopener noreferrer" }, text ?? href);
}

/** A link inside the console (handled by the router without a reload). */
export function navLink(path, text, cls) {
  return h(cls ? `a.${cls}` : "a", { href: path, dataset: { nav: "1" } }, text);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

export function shortId(id) {
  return String(id ?? "").slice(0, 8);
}

export function statusBadge(job) {
  const status = job.status + (job.paused ? " (paused)" : "");
  return h(`span.badge.s-${job.paused ? "paused" : job.status}`, { dataset: { status: job.status } }, status);
}

/** Shows an error (the API's own message) in el, or clears it. */
export function showError(el, err) {
  if (!el) return;
  if (!err) {
    replace(el);
    el.hidden = true;
    return;
  }
  el.hidden = false;
  replace(el, err.message || String(err));
}

/** Goes to a console address without a reload (the router listens to popstate). */
export function go(path) {
  history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}
