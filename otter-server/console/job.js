// A job's page (/jobs/{id}): its state, usage and cost, preview link, controls, the lifecycle
// as a timeline (attempts and retries), and its output live from the event stream, rendered
// by entry type. The output is paged: all lines are kept as data, at most PAGE of them are in
// the DOM, so a job with 100,000 lines stays responsive. A dropped stream resumes with
// Last-Event-ID; lines are keyed by event id, so none is shown twice.

import { api, follow, get, getText, post, qs } from "./api.js";
import { extLink, fmtTime, go, h, navLink, replace, shortId, showError, statusBadge } from "./dom.js";
import { renderChunk } from "./entries.js";

export const PAGE = 500;

const TIMELINE_KINDS = new Set([
  "job_queued", "job_started", "job_retry_scheduled", "job_succeeded", "job_failed", "job_cancelled",
  "job_paused", "job_resumed", "job_priority_changed", "setup_started", "setup_finished", "preview_url_set",
  "runtime_build_started", "runtime_build_finished",
]);

function describe(event) {
  const p = event.payload || {};
  switch (event.kind) {
    case "job_queued":
      return `priority ${p.priority}, at most ${p.max_attempts} attempt(s)`;
    case "job_started":
      return `attempt ${p.attempt} on worker ${p.worker_id}`;
    case "job_retry_scheduled":
      return `attempt ${p.attempt} ended (${p.reason}${p.error ? ": " + p.error : ""}${p.exit_code !== null && p.exit_code !== undefined ? ", exit " + p.exit_code : ""}); next attempt at ${fmtTime(p.next_attempt_at)}`;
    case "job_succeeded":
      return `attempt ${p.attempt}, exit ${p.exit_code}${p.setup ? `, setup.sh ${p.setup.outcome}` : ""}`;
    case "job_failed":
      return `attempt ${p.attempt}${p.exit_code !== null && p.exit_code !== undefined ? ", exit " + p.exit_code : ""}: ${p.error ?? ""}`;
    case "job_cancelled":
      return `while ${p.while}, attempt ${p.attempt}`;
    case "job_priority_changed":
      return `${p.from} → ${p.to}`;
    case "setup_started":
      return String(p.path ?? "");
    case "setup_finished":
      return `${p.outcome}${p.exit_code !== null && p.exit_code !== undefined ? ", exit " + p.exit_code : ""}`;
    case "preview_url_set":
      return String(p.preview_url ?? "");
    case "runtime_build_finished":
      return p.ok ? `image ${p.image}` : `failed: ${p.error ?? ""}`;
    default:
      return "";
  }
}

const TERMINAL = ["succeeded", "failed", "cancelled"];
/** At most this many diff lines become nodes of their own; the rest is one text node. */
const DIFF_LINES = 5000;

function renderDiff(text) {
  const lines = text.split("\n");
  const nodes = lines.slice(0, DIFF_LINES).map((line) => {
    const cls = line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff --git") ? "d-file"
      : line.startsWith("@@") ? "d-hunk" : line.startsWith("+") ? "d-add" : line.startsWith("-") ? "d-del" : line.startsWith("# otter:") ? "d-note" : "";
    return h(cls ? `span.${cls}` : "span", line || " ");
  });
  if (lines.length > DIFF_LINES) nodes.push(h("span", lines.slice(DIFF_LINES).join("\n")));
  return h("pre.diff#diff", nodes);
}

function kv(dl, key, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(h("dt", key), h("dd", value instanceof Node ? value : String(value)));
}

export async function renderJob(root, id) {
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    replace(root, h("h1", "Job"), h("p.error", e.message));
    return null;
  }
  let workspace = null;
  try {
    workspace = await get(`/v1/workspaces/${job.workspace_id}`);
  } catch {
    // The job is shown without its workspace's name.
  }

  const lines = []; // output_chunk events, in id order
  const seen = new Set(); // event ids already taken
  let page = 0;
  let follow_ = true; // the last page is shown and follows new lines
  const counts = { stdout: 0, stderr: 0, setup: 0, runtime: 0 };

  const header = h("div.jobhead");
  const error = h("p.error#job-error", { role: "alert" });
  error.hidden = true;
  const summary = h("dl.summary#job-summary");
  const timeline = h("ol.timeline#timeline");
  const output = h("div.output#output", { role: "log", "aria-label": "Output" });
  const pager = h("div.pager#pager");
  const countsEl = h("p.muted#line-count");
  const finalText = h("div#final-text");
  const changes = h("section#changes");
  const followError = h("p.error#follow-up-error", { role: "alert" });
  followError.hidden = true;
  const followInput = h("textarea#follow-up", { name: "prompt", rows: 2, required: true, placeholder: "Go on in the same vibe session…" });
  const followUp = h(
    "form.card#follow-up-form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const next = await post("/v1/prompts", { prompt: followInput.value, parent_job_id: job.id });
          go(`/jobs/${next.id}`);
        } catch (e) {
          showError(followError, e);
        }
      },
    },
    h("h2", "Follow-up"),
    h("label", { for: "follow-up" }, "A prompt that resumes this job's vibe session (it waits for this job to end)"),
    followInput,
    followError,
    h("button.primary#follow-up-submit", { type: "submit" }, "Send follow-up"),
  );

  replace(
    root,
    header,
    error,
    h("div.job-layout",
      h("section.main",
        h("h2", "Output"),
        countsEl,
        pager,
        output,
        finalText,
        changes,
        followUp,
      ),
      h("aside.side",
        h("h2", "Summary"),
        summary,
        h("h2", "Timeline"),
        timeline,
      ),
    ),
  );

  async function control(action, body) {
    try {
      job = action === "priority" ? await api("PATCH", `/v1/queue/${job.id}`, body) : await post(`/v1/jobs/${job.id}/${action}`);
      showError(error, null);
      renderHead();
    } catch (e) {
      showError(error, new Error(`${action}: ${e.message}`));
    }
  }

  function renderHead() {
    const controls = h("div.controls");
    if (job.status === "queued") {
      controls.append(job.paused
        ? h("button#job-resume", { type: "button", onclick: () => control("resume") }, "Resume")
        : h("button#job-pause", { type: "button", onclick: () => control("pause") }, "Pause"));
      const prio = h("input.prio#job-priority", { type: "number", value: String(job.priority), "aria-label": "priority" });
      controls.append(h("form.inline", { onsubmit: (ev) => { ev.preventDefault(); control("priority", { priority: Number(prio.value) }); } }, prio, h("button", { type: "submit" }, "Set priority")));
    }
    if (job.status === "queued" || job.status === "running") {
      controls.append(h("button.danger#job-cancel", { type: "button", onclick: () => control("cancel"), disabled: job.cancel_requested }, job.cancel_requested ? "Cancelling…" : "Cancel"));
    }
    replace(
      header,
      h("div.titlebar",
        h("h1", "Job ", h("code", shortId(job.id))),
        h("span#job-status", statusBadge(job)),
        job.preview_url ? h("span.preview", "Preview: ", extLink(job.preview_url)) : null,
      ),
      h("p.crumbs", navLink("/", "Jobs"), " / ", workspace ? navLink(`/workspaces/${workspace.id}`, workspace.name) : shortId(job.workspace_id)),
      h("pre.prompt#job-prompt", job.prompt),
      controls,
    );
    replace(summary);
    kv(summary, "id", job.id);
    kv(summary, "status", job.status + (job.paused ? " (paused)" : "") + (job.cancel_requested && job.status === "running" ? " (cancel requested)" : ""));
    kv(summary, "attempts", `${job.attempts} of ${job.max_attempts}`);
    kv(summary, "priority", job.priority);
    kv(summary, "worker", job.worker_id);
    kv(summary, "created", fmtTime(job.created_at));
    kv(summary, "started", fmtTime(job.started_at));
    kv(summary, "finished", fmtTime(job.finished_at));
    kv(summary, "exit code", job.exit_code);
    kv(summary, "error", job.error);
    kv(summary, "preview", job.preview_url ? extLink(job.preview_url) : null);
    kv(summary, "follow-up of", job.parent_job_id ? navLink(`/jobs/${job.parent_job_id}`, shortId(job.parent_job_id)) : null);
    kv(summary, "session", job.session_id ? navLink(`/${qs({ session_id: job.session_id })}`, job.session_id) : null);
    kv(summary, "model asked", job.model);
    if (job.limits) {
      const l = job.limits;
      const parts = [];
      if (l.max_turns != null) parts.push(`${l.max_turns} turns`);
      if (l.max_price_usd != null) parts.push(`$${l.max_price_usd}`);
      if (l.max_tokens != null) parts.push(`${l.max_tokens} tokens`);
      if (l.time_limit_secs != null) parts.push(`${l.time_limit_secs} s`);
      kv(summary, "limits", parts.join(", "));
    }
    const out = job.output;
    if (out) {
      kv(summary, "outcome", out.outcome);
      kv(summary, "stop reason", out.stop_reason);
      kv(summary, "model", out.model);
      if (out.usage) {
        const u = out.usage;
        kv(summary, "tokens", `${u.input_tokens ?? "?"} in, ${u.output_tokens ?? "?"} out${u.cached_input_tokens ? `, ${u.cached_input_tokens} cached` : ""}`);
      }
      if (typeof out.cost === "number") kv(summary, "cost", `$${out.cost.toFixed(6)}`);
      if (out.files_changed != null) kv(summary, "changes", `${out.files_changed} file(s), +${out.additions ?? 0} −${out.deletions ?? 0}`);
      replace(finalText, out.final_text ? [h("h2", "Final answer"), h("div.msg.final", out.final_text)] : []);
    }
    if (TERMINAL.includes(job.status) && !changesLoaded) {
      changesLoaded = true;
      loadChanges();
    }
  }

  let changesLoaded = false;
  async function loadChanges() {
    const diffBox = h("div#diff-box");
    const restoreBox = h("div#restore-result", { role: "status" });
    const restoreError = h("p.error#restore-error", { role: "alert" });
    restoreError.hidden = true;
    const showDiff = async (path) => {
      replace(diffBox, h("p.muted", "Reading the diff…"));
      try {
        const d = await getText(`/v1/jobs/${job.id}/diff${qs({ path })}`);
        replace(diffBox, d.truncated ? h("p.muted", "The diff was cut (see its last line); ask for one file.") : null, renderDiff(d.text || "(no difference)"));
      } catch (e) {
        replace(diffBox, h("p.error", e.message));
      }
    };
    const restoreButton = (to, label) => {
      let armed = false;
      const btn = h(`button#restore-${to}`, { type: "button" }, label);
      btn.addEventListener("click", async () => {
        if (!armed) {
          armed = true;
          btn.textContent = `Confirm: ${label.toLowerCase()}`;
          btn.classList.add("danger");
          return;
        }
        armed = false;
        btn.textContent = label;
        btn.classList.remove("danger");
        try {
          const r = await post(`/v1/jobs/${job.id}/restore`, { to });
          showError(restoreError, null);
          replace(
            restoreBox,
            h("p", `Restored to ${r.to} the job: ${r.restored.length} file(s) written back, ${r.removed.length} removed` + (r.left_alone.length ? `, ${r.left_alone.length} left alone` : "") + "."),
            r.left_alone.length ? h("ul", r.left_alone.map((f) => h("li", h("code", f.path), " — ", f.reason))) : null,
            h("p.muted", `Undo: the files as they were before this restore are checkpoint ${shortId(r.undo_checkpoint_id)} (restore "${to === "before" ? "after" : "before"}" to go back to the job's other side).`),
          );
        } catch (e) {
          showError(restoreError, e);
        }
      });
      return btn;
    };
    try {
      const list = await get(`/v1/jobs/${job.id}/changes`);
      replace(
        changes,
        h("h2", "Changes"),
        list.items.length
          ? h("ul.changes#change-list",
              list.items.map((c) =>
                h("li", { dataset: { path: c.path, status: c.status } },
                  h(`span.badge.c-${c.status}`, c.status),
                  h("button.node.file", { type: "button", onclick: () => showDiff(c.path) }, c.path),
                  h("span.d-add", `+${c.additions}`),
                  h("span.d-del", `−${c.deletions}`),
                  c.binary ? h("span.muted", "binary") : null,
                  c.too_large ? h("span.muted", "over the size cap") : null,
                )))
          : h("p.muted#change-list", "The job changed no file."),
        h("div.controls",
          list.items.length ? h("button#diff-all", { type: "button", onclick: () => showDiff(undefined) }, "Whole diff") : null,
          restoreButton("before", "Restore files to before the job"),
          restoreButton("after", "Restore files to after the job"),
        ),
        restoreError,
        restoreBox,
        diffBox,
      );
    } catch (e) {
      replace(changes, h("h2", "Changes"), h("p.muted#changes-unavailable", e.message));
    }
  }

  function renderPager() {
    const pages = Math.max(1, Math.ceil(lines.length / PAGE));
    const btn = (label, target, id) =>
      h("button", { type: "button", id, disabled: target === page || target < 0 || target >= pages, onclick: () => { page = target; follow_ = page === pages - 1; renderPage(); } }, label);
    replace(
      pager,
      pages > 1
        ? [
            btn("« First", 0, "page-first"),
            btn("‹ Earlier", page - 1, "page-prev"),
            h("span#page-label", `page ${page + 1} of ${pages}`),
            btn("Later ›", page + 1, "page-next"),
            btn("Latest »", pages - 1, "page-last"),
          ]
        : [],
    );
    const parts = [`${lines.length} line(s)`];
    if (counts.stderr) parts.push(`${counts.stderr} stderr`);
    if (counts.setup) parts.push(`${counts.setup} setup.sh`);
    if (counts.runtime) parts.push(`${counts.runtime} build`);
    countsEl.textContent = parts.join(", ") + (pages > 1 ? ` — showing lines ${page * PAGE + 1}–${Math.min(lines.length, (page + 1) * PAGE)}` : "");
  }

  function renderPage() {
    const start = page * PAGE;
    replace(output, lines.slice(start, start + PAGE).map(renderChunk));
    renderPager();
  }

  // New lines are drawn once per frame: the page grows while it follows, or turns over.
  let pending = false;
  function scheduleDraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const pages = Math.max(1, Math.ceil(lines.length / PAGE));
      const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
      if (follow_ && page !== pages - 1) {
        page = pages - 1;
        renderPage();
      } else if (page === pages - 1) {
        const shown = output.childElementCount;
        const start = page * PAGE;
        const fresh = lines.slice(start + shown, start + PAGE);
        output.append(...fresh.map(renderChunk));
        renderPager();
      } else {
        renderPager();
      }
      if (follow_ && atBottom) output.scrollTop = output.scrollHeight;
    });
  }

  let refreshTimer = null;
  function refreshJob() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        job = await get(`/v1/jobs/${job.id}`);
        renderHead();
      } catch (e) {
        showError(error, e);
      }
    }, 50);
  }

  renderHead();
  renderPage();
  const conn = document.getElementById("conn");
  const stream = follow(
    { job_id: job.id },
    {
      onEvent: (event) => {
        if (seen.has(event.id)) return;
        seen.add(event.id);
        if (event.kind === "output_chunk") {
          lines.push(event);
          const s = (event.payload && event.payload.stream) || "stdout";
          if (s in counts) counts[s] += 1;
          scheduleDraw();
        } else if (TIMELINE_KINDS.has(event.kind)) {
          timeline.append(
            h("li", { dataset: { kind: event.kind, id: String(event.id) } },
              h("span.when", fmtTime(event.created_at)),
              h("span.what", event.kind.replace(/^job_/, "").replace(/_/g, " ")),
              h("span.detail", describe(event)),
            ),
          );
          refreshJob();
        }
      },
      onEnd: () => refreshJob(),
      onState: (s, msg) => {
        conn.dataset.state = s;
        conn.textContent = s === "live" ? "live" : s === "ended" ? "finished" : msg || s;
      },
    },
  );
  return () => {
    stream.close();
    if (refreshTimer) clearTimeout(refreshTimer);
  };
}
