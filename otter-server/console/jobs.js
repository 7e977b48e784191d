// The jobs view (/): a new prompt, filters kept in the address, the running and queued jobs
// in claim order, and the history; all kept current by the event stream (a job's lifecycle
// event makes the view read that job again), with no polling loop.

import { api, follow, get, post, qs } from "./api.js";
import { fmtTime, go, h, navLink, replace, shortId, showError, statusBadge } from "./dom.js";

const ACTIVE = ["queued", "running"];
const FINISHED = ["succeeded", "failed", "cancelled"];
const LIFECYCLE = new Set([
  "job_queued", "job_started", "job_retry_scheduled", "job_succeeded", "job_failed", "job_cancelled",
  "job_paused", "job_resumed", "job_priority_changed", "preview_url_set",
]);
const HISTORY_PAGE = 50;

export function firstLine(text, max = 140) {
  const line = String(text ?? "").split("\n")[0];
  return line.length > max ? line.slice(0, max) + "…" : line;
}

export async function loadNames() {
  const [ws, projects] = await Promise.all([get("/v1/workspaces?limit=500"), get("/v1/projects?limit=500")]);
  return {
    workspaces: ws.items,
    projects: projects.items,
    workspace: new Map(ws.items.map((w) => [w.id, w])),
    project: new Map(projects.items.map((p) => [p.id, p])),
  };
}

export async function renderJobs(root) {
  const params = new URLSearchParams(location.search);
  const filters = {
    status: params.get("status") || "",
    workspace_id: params.get("workspace_id") || "",
    project_id: params.get("project_id") || "",
    session_id: params.get("session_id") || "",
  };
  let names;
  try {
    names = await loadNames();
  } catch (e) {
    replace(root, h("h1", "Jobs"), h("p.error", e.message));
    return null;
  }
  const jobs = new Map();
  let historyShown = HISTORY_PAGE;
  let historyTotal = 0;
  const error = h("p.error#jobs-error", { role: "alert" });
  error.hidden = true;

  // --- new prompt ---
  const promptInput = h("textarea#prompt", { name: "prompt", rows: 3, required: true, placeholder: "What should vibe do?" });
  const wsSelect = h(
    "select#prompt-workspace",
    { name: "workspace_id" },
    h("option", { value: "" }, "default workspace"),
    names.workspaces.map((w) => h("option", { value: w.id, selected: w.id === filters.workspace_id }, w.name)),
  );
  if (!filters.workspace_id && names.workspaces.length) wsSelect.value = names.workspaces[names.workspaces.length - 1].id;
  const prioInput = h("input#prompt-priority", { type: "number", name: "priority", value: "0", step: "1" });
  const limit = (id, label, step) => {
    const input = h(`input#${id}`, { type: "number", name: id, min: "0", step, placeholder: "default" });
    return [input, h("div.field", h("label", { for: id }, label), input)];
  };
  const [turns, turnsField] = limit("limit-turns", "Max turns", "1");
  const [price, priceField] = limit("limit-price", "Max price (USD)", "any");
  const [tokens, tokensField] = limit("limit-tokens", "Max tokens", "1");
  const [secs, secsField] = limit("limit-secs", "Time limit (s)", "1");
  const modelInput = h("input#prompt-model", { name: "model", placeholder: "the worker's default", spellcheck: "false" });
  const formError = h("p.error#prompt-error", { role: "alert" });
  formError.hidden = true;
  const form = h(
    "form.card#new-prompt",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = { prompt: promptInput.value };
        if (wsSelect.value) body.workspace_id = wsSelect.value;
        if (prioInput.value !== "") body.priority = Number(prioInput.value);
        const limits = {};
        if (turns.value !== "") limits.max_turns = Number(turns.value);
        if (price.value !== "") limits.max_price_usd = Number(price.value);
        if (tokens.value !== "") limits.max_tokens = Number(tokens.value);
        if (secs.value !== "") limits.time_limit_secs = Number(secs.value);
        if (Object.keys(limits).length) body.limits = limits;
        if (modelInput.value.trim()) body.model = modelInput.value.trim();
        submit.disabled = true;
        try {
          const job = await post("/v1/prompts", body);
          showError(formError, null);
          go(`/jobs/${job.id}`);
        } catch (e) {
          showError(formError, e);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h2", "New prompt"),
    h("label", { for: "prompt" }, "Prompt"),
    promptInput,
    h(
      "div.row",
      h("div.field", h("label", { for: "prompt-workspace" }, "Workspace"), wsSelect),
      h("div.field.narrow", h("label", { for: "prompt-priority" }, "Priority"), prioInput),
    ),
    h("details.limits#prompt-limits",
      h("summary", "Limits and model"),
      h("div.grid2", turnsField, priceField, tokensField, secsField),
      h("label", { for: "prompt-model" }, "Model (a vibe alias)"),
      modelInput,
    ),
    formError,
  );
  const submit = h("button.primary#prompt-submit", { type: "submit" }, "Queue prompt");
  form.append(submit);

  // --- filters ---
  const fStatus = h(
    "select#filter-status",
    { name: "status" },
    h("option", { value: "" }, "any status"),
    [...ACTIVE, ...FINISHED].map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const fWs = h(
    "select#filter-workspace",
    { name: "workspace_id" },
    h("option", { value: "" }, "any workspace"),
    names.workspaces.map((w) => h("option", { value: w.id, selected: w.id === filters.workspace_id }, w.name)),
  );
  const fProject = h(
    "select#filter-project",
    { name: "project_id" },
    h("option", { value: "" }, "any project"),
    names.projects.map((p) => h("option", { value: p.id, selected: p.id === filters.project_id }, p.name)),
  );
  const fSession = h("input#filter-session", { name: "session_id", value: filters.session_id, placeholder: "any session", spellcheck: "false" });
  const applyFilters = () => {
    const q = qs({ status: fStatus.value, workspace_id: fWs.value, project_id: fProject.value, session_id: fSession.value.trim() });
    go(`/${q}`);
  };
  for (const s of [fStatus, fWs, fProject, fSession]) s.addEventListener("change", applyFilters);
  const filterBar = h(
    "form.filters#filters",
    { onsubmit: (ev) => { ev.preventDefault(); applyFilters(); }, "aria-label": "Filters" },
    h("div.field", h("label", { for: "filter-status" }, "Status"), fStatus),
    h("div.field", h("label", { for: "filter-workspace" }, "Workspace"), fWs),
    h("div.field", h("label", { for: "filter-project" }, "Project"), fProject),
    h("div.field", h("label", { for: "filter-session" }, "Session"), fSession),
  );

  const activeList = h("ul.jobs#active-jobs", { "aria-live": "polite" });
  const historyList = h("ul.jobs#history-jobs");
  const more = h("button#history-more", { type: "button", hidden: true, onclick: () => { historyShown += HISTORY_PAGE; loadHistory(); } }, "Show more");
  const showActive = !filters.status || ACTIVE.includes(filters.status);
  const showHistory = !filters.status || FINISHED.includes(filters.status);

  replace(
    root,
    h("div.jobs-layout",
      h("section.side", form),
      h("section.main",
        h("h1", "Jobs"),
        filterBar,
        error,
        showActive ? h("h2", "Running and queued") : null,
        showActive ? activeList : null,
        showHistory ? h("h2", "History") : null,
        showHistory ? historyList : null,
        showHistory ? more : null,
      ),
    ),
  );

  function matches(job) {
    if (filters.status && job.status !== filters.status) return false;
    if (filters.workspace_id && job.workspace_id !== filters.workspace_id) return false;
    if (filters.project_id && job.project_id !== filters.project_id) return false;
    if (filters.session_id && job.session_id !== filters.session_id) return false;
    return true;
  }

  async function control(job, action, body) {
    try {
      let updated;
      if (action === "priority") updated = await api("PATCH", `/v1/queue/${job.id}`, body);
      else updated = await post(`/v1/jobs/${job.id}/${action}`);
      showError(error, null);
      upsert(updated);
    } catch (e) {
      showError(error, new Error(`${action} ${shortId(job.id)}: ${e.message}`));
    }
  }

  function controls(job) {
    const box = h("div.controls");
    if (job.status === "queued") {
      if (job.paused) box.append(h("button", { type: "button", onclick: () => control(job, "resume"), dataset: { action: "resume" } }, "Resume"));
      else box.append(h("button", { type: "button", onclick: () => control(job, "pause"), dataset: { action: "pause" } }, "Pause"));
      const prio = h("input.prio", { type: "number", value: String(job.priority), "aria-label": `priority of job ${shortId(job.id)}` });
      box.append(
        h("form.inline", { onsubmit: (ev) => { ev.preventDefault(); control(job, "priority", { priority: Number(prio.value) }); } },
          prio, h("button", { type: "submit", dataset: { action: "priority" } }, "Set priority")),
      );
    }
    if (ACTIVE.includes(job.status)) {
      box.append(h("button.danger", { type: "button", onclick: () => control(job, "cancel"), dataset: { action: "cancel" }, disabled: job.cancel_requested }, job.cancel_requested ? "Cancelling…" : "Cancel"));
    }
    return box;
  }

  function row(job) {
    const ws = names.workspace.get(job.workspace_id);
    return h(
      "li.job",
      { dataset: { job: job.id, status: job.status } },
      h("div.line1",
        statusBadge(job),
        navLink(`/jobs/${job.id}`, shortId(job.id), "jobid"),
        h("span.prompt", firstLine(job.prompt)),
      ),
      h("div.line2.muted",
        h("span", ws ? ws.name : shortId(job.workspace_id)),
        h("span", `priority ${job.priority}`),
        h("span", `attempt ${job.attempts}/${job.max_attempts}`),
        h("span", job.finished_at ? `finished ${fmtTime(job.finished_at)}` : job.status === "running" ? `started ${fmtTime(job.started_at)}` : `queued ${fmtTime(job.created_at)}`),
        job.output && typeof job.output.cost === "number" ? h("span", `$${job.output.cost.toFixed(4)}`) : null,
        job.parent_job_id ? h("span", "follow-up of ", navLink(`/jobs/${job.parent_job_id}`, shortId(job.parent_job_id))) : null,
        job.session_id ? navLink(`/${qs({ session_id: job.session_id })}`, `session ${shortId(job.session_id)}`) : null,
        job.model ? h("span", `model ${job.model}`) : null,
      ),
      controls(job),
    );
  }

  // Rows are kept by job and rebuilt only when their job changed, so a live update does not
  // take the focus or a half-typed priority away from the other rows.
  const rows = new Map();
  function rowOf(job) {
    const key = JSON.stringify(job);
    const cached = rows.get(job.id);
    if (cached && cached.key === key) return cached.el;
    const el = row(job);
    rows.set(job.id, { key, el });
    return el;
  }
  function place(list, els, empty) {
    const want = els.length ? els : [h("li.empty", empty)];
    const have = [...list.children];
    if (have.length === want.length && have.every((el, i) => el === want[i] || (el.classList.contains("empty") && want[i].classList.contains("empty")))) return;
    replace(list, want);
  }

  function render() {
    const all = [...jobs.values()].filter(matches);
    const active = all
      .filter((j) => ACTIVE.includes(j.status))
      .sort((a, b) => (a.status === b.status ? (a.status === "queued" ? b.priority - a.priority || a.created_at.localeCompare(b.created_at) : b.created_at.localeCompare(a.created_at)) : a.status === "running" ? -1 : 1));
    const done = all
      .filter((j) => FINISHED.includes(j.status))
      .sort((a, b) => (b.finished_at || "").localeCompare(a.finished_at || ""))
      .slice(0, historyShown);
    place(activeList, active.map(rowOf), "Nothing running or queued.");
    place(historyList, done.map(rowOf), "No finished jobs.");
    more.hidden = historyTotal <= done.length;
  }

  function upsert(job) {
    jobs.set(job.id, job);
    render();
  }

  const base = { workspace_id: filters.workspace_id, project_id: filters.project_id };
  const listed = { ...base, session_id: filters.session_id };
  async function loadActive() {
    const page = await get(`/v1/jobs${qs({ ...listed, status: filters.status && ACTIVE.includes(filters.status) ? filters.status : ACTIVE.join(","), limit: 500 })}`);
    for (const j of page.items) jobs.set(j.id, j);
  }
  async function loadHistory() {
    const page = await get(`/v1/jobs${qs({ ...listed, status: filters.status && FINISHED.includes(filters.status) ? filters.status : FINISHED.join(","), limit: Math.min(historyShown, 500) })}`);
    historyTotal = page.total;
    for (const j of page.items) jobs.set(j.id, j);
    render();
  }
  async function loadAll() {
    try {
      const tasks = [];
      if (showActive) tasks.push(loadActive());
      if (showHistory) tasks.push(loadHistory());
      await Promise.all(tasks);
      // A job that was active and has finished since is read again by its event; one that
      // left the lists' pages is dropped.
      render();
    } catch (e) {
      showError(error, e);
    }
  }

  // Jobs whose lifecycle changed: read again once per animation frame, each once.
  const stale = new Set();
  let scheduled = false;
  function refresh(id) {
    stale.add(id);
    if (scheduled) return;
    scheduled = true;
    setTimeout(async () => {
      scheduled = false;
      const ids = [...stale];
      stale.clear();
      for (const id of ids) {
        try {
          const job = await get(`/v1/jobs/${id}`);
          jobs.set(job.id, job);
        } catch {
          jobs.delete(id);
        }
      }
      render();
    }, 50);
  }

  // Subscribe first, then read the lists: a change in between is in the stream.
  const conn = document.getElementById("conn");
  const stream = follow(base, {
    onEvent: (event) => {
      if (LIFECYCLE.has(event.kind)) refresh(event.job_id);
    },
    onReconnect: () => loadAll(),
    onState: (s, msg) => {
      conn.dataset.state = s;
      conn.textContent = s === "live" ? "live" : msg || s;
    },
  });
  await loadAll();
  return () => stream.close();
}
