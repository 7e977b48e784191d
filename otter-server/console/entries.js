// One output line of a job (an `output_chunk` event) as DOM nodes, by what it is: a vibe
// entry (user and assistant messages, reasoning collapsed, tool effects with their command,
// output and status, file writes, approvals), a vibe stderr line, a setup.sh line, a runtime
// build line, or a raw line. Text only: nothing here is ever parsed as HTML.

import { h } from "./dom.js";

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === "string" ? part : part && typeof part.text === "string" ? part.text : ""))
      .join("");
  }
  return "";
}

function label(text, cls) {
  return h(`span.tag${cls ? "." + cls : ""}`, text);
}

function pre(text, cls) {
  return h(cls ? `pre.${cls}` : "pre", text ?? "");
}

function effectStatus(state) {
  const status = (state && state.status) || "pending";
  return h(`span.badge.e-${String(status).replace(/[^a-z_]/g, "")}`, status);
}

function renderEffect(entry) {
  const detail = entry.detail || {};
  const state = entry.state || {};
  const input = detail.input || {};
  const kind = detail.kind || "tool";
  if (kind === "file_write" || typeof input.filePath === "string") {
    const content = typeof input.content === "string" ? input.content : "";
    return [
      h("div.head", label("file write", "t-file"), h("code.path", String(input.filePath ?? "")), effectStatus(state)),
      content ? h("details", h("summary", `${content.replace(/\n$/, "").split("\n").length} line(s) written`), pre(content)) : null,
    ];
  }
  if (kind === "shell" || typeof input.command === "string") {
    const out = state.output && typeof state.output === "object" ? state.output : {};
    const stdout = typeof out.stdout === "string" ? out.stdout : typeof state.outputText === "string" ? state.outputText : "";
    const stderr = typeof out.stderr === "string" ? out.stderr : "";
    return [
      h("div.head", label("tool", "t-tool"), h("code.cmd", String(input.command ?? "")), effectStatus(state)),
      stdout ? pre(stdout, "out") : null,
      stderr ? pre(stderr, "err") : null,
    ];
  }
  const title = detail.toolName || entry.title || kind;
  return [
    h("div.head", label("tool", "t-tool"), h("code.cmd", String(title)), effectStatus(state)),
    h("details", h("summary", "input and output"), pre(JSON.stringify({ input, output: state.output ?? state.outputText ?? null }, null, 2))),
  ];
}

/** The nodes of one output_chunk event. */
export function renderChunk(event) {
  const p = event.payload || {};
  const stream = p.stream || "stdout";
  const text = typeof p.text === "string" ? p.text : "";
  const el = h("div.entry", { dataset: { id: String(event.id), seq: String(event.seq), stream } });
  if (stream === "stderr") {
    el.classList.add("k-stderr");
    el.append(label("stderr", "t-stderr"), pre(text));
    return el;
  }
  if (stream === "setup") {
    el.classList.add("k-setup");
    el.append(label("setup.sh", "t-setup"), pre(text));
    return el;
  }
  if (stream === "runtime") {
    el.classList.add("k-runtime");
    el.append(label("build", "t-runtime"), pre(text));
    return el;
  }
  const entry = p.entry && typeof p.entry === "object" && !Array.isArray(p.entry) ? p.entry : null;
  if (!entry) {
    el.classList.add("k-raw");
    el.append(pre(text));
    return el;
  }
  const type = entry.type || (entry.role ? "message" : "");
  if (type === "message") {
    const role = entry.role === "user" ? "user" : entry.role === "assistant" ? "assistant" : String(entry.role || "message");
    el.classList.add(`k-${role === "user" || role === "assistant" ? role : "message"}`);
    el.append(label(role, `t-${role === "user" ? "user" : "assistant"}`), h("div.msg", textOf(entry.content)));
    if (Array.isArray(entry.tool_calls)) {
      for (const call of entry.tool_calls) {
        const fn = (call && call.function) || {};
        el.append(h("div.head", label("tool call", "t-tool"), h("code.cmd", `${fn.name ?? "?"} ${fn.arguments ?? ""}`)));
      }
    }
    return el;
  }
  if (type === "reasoning") {
    el.classList.add("k-reasoning");
    el.append(h("details.reasoning", h("summary", "reasoning"), pre(typeof entry.text === "string" ? entry.text : textOf(entry.content))));
    return el;
  }
  if (type === "effect") {
    el.classList.add("k-effect");
    el.append(...renderEffect(entry).filter(Boolean));
    return el;
  }
  if (type === "callback") {
    el.classList.add("k-callback");
    const state = entry.state || {};
    const answer = state.output && state.output.decision ? state.output.decision : state.status || "";
    el.append(h("div.head", label("approval", "t-tool"), h("span", String(entry.title ?? "")), h("span.badge", String(answer))));
    return el;
  }
  if (type === "tool" || entry.role === "tool") {
    el.classList.add("k-effect");
    el.append(label("tool result", "t-tool"), pre(textOf(entry.content)));
    return el;
  }
  el.classList.add("k-raw");
  el.append(label(String(type || "entry"), ""), pre(text));
  return el;
}
