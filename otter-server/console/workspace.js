// The workspaces (/workspaces: list and a form to register one) and a workspace's page
// (/workspaces/{id}): the file tree and a viewer that shows text as text, a command box with a
// shell session (its cwd shown, `cd` kept), and the runtime panel (status, start, stop,
// restart, logs, preview link, and the interactive shell over a WebSocket).

import { get, post, token } from "./api.js";
import { extLink, fmtTime, go, h, navLink, replace, shortId, showError } from "./dom.js";

export async function renderWorkspaces(root) {
  let list;
  let projects;
  try {
    [list, projects] = await Promise.all([get("/v1/workspaces?limit=500"), get("/v1/projects?limit=500")]);
  } catch (e) {
    replace(root, h("h1", "Workspaces"), h("p.error", e.message));
    return null;
  }
  const names = new Map(projects.items.map((p) => [p.id, p.name]));
  const path = h("input#ws-path", { name: "path", required: true, placeholder: "/srv/otter/workspaces/shop", spellcheck: "false" });
  const name = h("input#ws-name", { name: "name", placeholder: "defaults to the folder's name" });
  const project = h("select#ws-project", { name: "project_id" }, h("option", { value: "" }, "no project"), projects.items.map((p) => h("option", { value: p.id }, p.name)));
  const create = h("input#ws-create", { type: "checkbox", name: "create", checked: true });
  const error = h("p.error#ws-error", { role: "alert" });
  error.hidden = true;
  const form = h(
    "form.card#new-workspace",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = { path: path.value.trim(), create: create.checked };
        if (name.value.trim()) body.name = name.value.trim();
        if (project.value) body.project_id = project.value;
        try {
          const ws = await post("/v1/workspaces", body);
          go(`/workspaces/${ws.id}`);
        } catch (e) {
          showError(error, e);
        }
      },
    },
    h("h2", "Register a workspace"),
    h("label", { for: "ws-path" }, "Absolute path"), path,
    h("label", { for: "ws-name" }, "Name"), name,
    h("label", { for: "ws-project" }, "Project"), project,
    h("label.check", create, " create the directory when it is missing"),
    error,
    h("button.primary", { type: "submit" }, "Register"),
  );
  replace(
    root,
    h("div.jobs-layout",
      h("section.side", form),
      h("section.main",
        h("h1", "Workspaces"),
        h("ul.jobs#workspaces",
          list.items.length
            ? list.items.map((w) =>
                h("li.job", { dataset: { workspace: w.id } },
                  h("div.line1", navLink(`/workspaces/${w.id}`, w.name, "jobid"), h("code.path", w.path)),
                  h("div.line2.muted", h("span", w.project_id ? `project ${names.get(w.project_id) ?? shortId(w.project_id)}` : "no project"), h("span", `registered ${fmtTime(w.created_at)}`), navLink(`/?workspace_id=${w.id}`, "jobs")),
                ))
            : h("li.empty", "No workspace yet: register one."),
        ),
      ),
    ),
  );
  return null;
}

function fmtSize(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Removes terminal escape sequences (colours, cursor moves) from shell output. */
function stripAnsi(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]/g, "").replace(/\r(?!\n)/g, "");
}

export async function renderWorkspace(root, id) {
  let ws;
  try {
    ws = await get(`/v1/workspaces/${encodeURIComponent(id)}`);
  } catch (e) {
    replace(root, h("h1", "Workspace"), h("p.error", e.message));
    return null;
  }
  const cleanups = [];
  const base = `/v1/workspaces/${ws.id}`;

  // --- file tree and viewer ---
  const treeError = h("p.error#tree-error", { role: "alert" });
  treeError.hidden = true;
  const tree = h("ul.tree#tree", { role: "tree", "aria-label": "Files" });
  const viewer = h("div.viewer#viewer", h("p.muted", "Choose a file to see it."));

  async function openFile(path) {
    replace(viewer, h("p.muted", `Reading ${path}…`));
    try {
      const f = await get(`${base}/file?path=${encodeURIComponent(path)}`);
      replace(
        viewer,
        h("div.filehead", h("code.path#viewer-path", f.path), h("span.muted", `${fmtSize(f.size)}, modified ${fmtTime(f.modified)}`)),
        f.binary ? h("p.muted#viewer-binary", "A binary file: not shown.") : h("pre.file#viewer-content", f.content),
      );
    } catch (e) {
      replace(viewer, h("p.error#viewer-error", e.message));
    }
  }

  const expanded = new Set(); // directories open in the tree, kept open across reloads
  async function listDir(path, into) {
    const q = path ? `?path=${encodeURIComponent(path)}` : "";
    const listing = await get(`${base}/tree${q}`);
    replace(
      into,
      listing.entries.map((entry) => {
        if (entry.kind === "directory") {
          const children = h("ul", { role: "group", hidden: true });
          const btn = h("button.node.dir", { type: "button", "aria-expanded": "false", dataset: { path: entry.path } }, entry.name + "/");
          btn.addEventListener("click", async () => {
            const open = btn.getAttribute("aria-expanded") === "true";
            if (open) {
              btn.setAttribute("aria-expanded", "false");
              children.hidden = true;
              expanded.delete(entry.path);
              return;
            }
            try {
              await listDir(entry.path, children);
              showError(treeError, null);
              btn.setAttribute("aria-expanded", "true");
              children.hidden = false;
              expanded.add(entry.path);
            } catch (e) {
              showError(treeError, e);
            }
          });
          if (expanded.has(entry.path)) {
            listDir(entry.path, children)
              .then(() => {
                btn.setAttribute("aria-expanded", "true");
                children.hidden = false;
              })
              .catch(() => expanded.delete(entry.path));
          }
          return h("li", { role: "treeitem" }, btn, children);
        }
        const btn = h(
          "button.node.file",
          { type: "button", dataset: { path: entry.path }, onclick: () => openFile(entry.path), disabled: entry.kind !== "file" },
          entry.name,
          entry.kind === "symlink" ? " →" : "",
        );
        return h("li", { role: "treeitem" }, btn, h("span.size", fmtSize(entry.size)));
      }),
      listing.truncated ? h("li.muted", "(more entries not shown)") : null,
      listing.entries.length ? null : h("li.muted", "(empty)"),
    );
  }

  async function reloadTree() {
    try {
      await listDir("", tree);
      showError(treeError, null);
    } catch (e) {
      showError(treeError, e);
    }
  }

  // --- command box with a shell session ---
  const sessionKey = `otter.shell.${ws.id}`;
  let session = sessionStorage.getItem(sessionKey) || null;
  const cwd = h("code#cwd", ws.path);
  const cmdInput = h("input#command", { name: "command", required: true, placeholder: "ls -la", spellcheck: "false", autocomplete: "off" });
  const cmdLog = h("div.cmdlog#command-log", { role: "log", "aria-label": "Command output" });
  const cmdError = h("p.error#command-error", { role: "alert" });
  cmdError.hidden = true;
  const runBtn = h("button.primary#command-run", { type: "submit" }, "Run");
  const cmdForm = h(
    "form.cmdform#command-form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const command = cmdInput.value;
        if (!command.trim()) return;
        runBtn.disabled = true;
        const body = { command };
        if (session) body.shell_session_id = session;
        try {
          let r;
          try {
            r = await post(`${base}/command`, body);
          } catch (e) {
            if (session && e.status === 404) {
              // The session was forgotten (unused for 7 days): start a new one.
              session = null;
              delete body.shell_session_id;
              r = await post(`${base}/command`, body);
            } else {
              throw e;
            }
          }
          showError(cmdError, null);
          session = r.shell_session_id;
          sessionStorage.setItem(sessionKey, session);
          const status = r.timed_out ? "timed out" : r.exit_code === null ? `signal ${r.signal ?? "?"}` : `exit ${r.exit_code}`;
          cmdLog.append(
            h("div.cmdrun", { dataset: { exit: String(r.exit_code) } },
              h("div.head", h("code.prompt-cwd", cwd.textContent), h("code.cmd", "$ " + command), h(`span.badge${r.exit_code === 0 ? ".e-completed" : ".e-failed"}`, status), h("span.muted", `${r.duration_ms} ms`)),
              r.stdout ? h("pre.out", r.stdout) : null,
              r.stderr ? h("pre.err", r.stderr) : null,
              r.truncated ? h("p.muted", "(output truncated)") : null,
              r.warning ? h("p.warn", r.warning) : null,
            ),
          );
          cmdLog.scrollTop = cmdLog.scrollHeight;
          cwd.textContent = r.cwd;
          cmdInput.value = "";
          reloadTree();
        } catch (e) {
          showError(cmdError, e);
        } finally {
          runBtn.disabled = false;
          cmdInput.focus();
        }
      },
    },
    h("label", { for: "command" }, "Command (sh -c, in ", cwd, ")"),
    h("div.row", cmdInput, runBtn),
  );

  // --- runtime panel ---
  const rtStatus = h("div#runtime-status", h("p.muted", "Reading the runtime…"));
  const rtError = h("p.error#runtime-error", { role: "alert" });
  rtError.hidden = true;
  const logs = h("pre.logs#runtime-logs", { hidden: true });
  const term = h("pre.term#terminal", { hidden: true, role: "log", "aria-label": "Shell output" });
  const termInput = h("input#terminal-input", { placeholder: "type a line, Enter sends it", spellcheck: "false", autocomplete: "off", disabled: true });
  let socket = null;

  async function readRuntime() {
    try {
      const r = await get(`/v1/runtime/workspaces/${ws.id}`);
      showError(rtError, null);
      showRuntime(r);
    } catch (e) {
      replace(rtStatus, h("p.muted#runtime-unavailable", e.message));
    }
  }
  function showRuntime(r) {
    const dl = h("dl.summary");
    const add = (k, v) => v !== null && v !== undefined && v !== "" && dl.append(h("dt", k), h("dd", v instanceof Node ? v : String(v)));
    add("status", r.status);
    add("container", r.container_name);
    add("image", r.image);
    add("ports", (r.ports || []).map((p) => `${p.container_port} → ${p.host_ip}:${p.host_port}`).join(", "));
    add("preview", r.preview_url ? extLink(r.preview_url) : null);
    add("started", fmtTime(r.started_at));
    add("exit code", r.exit_code);
    add("error", r.error);
    replace(rtStatus, dl, r.build && r.build.log_tail ? h("details", h("summary", "last build lines"), h("pre", r.build.log_tail.join("\n"))) : null);
  }
  async function rtAction(action) {
    replace(rtStatus, h("p.muted", `${action}…`));
    try {
      const r = await post(`/v1/runtime/workspaces/${ws.id}/${action}`);
      showError(rtError, null);
      showRuntime(r);
    } catch (e) {
      showError(rtError, e);
      readRuntime();
    }
  }
  async function readLogs() {
    try {
      const r = await get(`/v1/runtime/workspaces/${ws.id}/logs?tail=200`);
      logs.hidden = false;
      logs.textContent = r.lines.map((l) => (l.stream === "stderr" ? "! " : "") + l.text).join("\n") || "(no lines)";
      showError(rtError, null);
    } catch (e) {
      showError(rtError, e);
    }
  }
  function openShell() {
    if (socket) {
      socket.close();
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ cols: "100", rows: "30" });
    // A browser cannot set Authorization on a WebSocket: the API takes the token as a query
    // parameter on this route (and never logs query strings).
    if (token()) q.set("access_token", token());
    socket = new WebSocket(`${proto}//${location.host}/v1/runtime/workspaces/${ws.id}/shell/ws?${q}`);
    socket.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    term.hidden = false;
    term.textContent = "";
    shellBtn.textContent = "Close shell";
    socket.addEventListener("open", () => {
      termInput.disabled = false;
      termInput.focus();
    });
    socket.addEventListener("message", (m) => {
      if (typeof m.data === "string") {
        try {
          const msg = JSON.parse(m.data);
          if (msg.type === "exit") term.append(`\n[shell exited: ${msg.exit_code ?? "unknown"}]\n`);
        } catch {
          term.append(m.data);
        }
      } else {
        term.append(stripAnsi(decoder.decode(m.data, { stream: true })));
      }
      term.scrollTop = term.scrollHeight;
    });
    socket.addEventListener("close", (ev) => {
      term.append(`\n[closed${ev.reason ? ": " + ev.reason : ""}]\n`);
      termInput.disabled = true;
      shellBtn.textContent = "Open shell";
      socket = null;
    });
    socket.addEventListener("error", () => showError(rtError, new Error("the shell could not be opened (is the container running?)")));
  }
  termInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && socket && socket.readyState === WebSocket.OPEN) {
      ev.preventDefault();
      socket.send(JSON.stringify({ type: "input", data: termInput.value + "\n" }));
      termInput.value = "";
    }
  });
  const shellBtn = h("button#runtime-shell", { type: "button", onclick: openShell }, "Open shell");
  cleanups.push(() => socket && socket.close());

  replace(
    root,
    h("div.titlebar", h("h1", ws.name), h("code.path#ws-path-shown", ws.path)),
    h("p.crumbs", navLink("/workspaces", "Workspaces"), " / ", ws.name, " · ", navLink(`/?workspace_id=${ws.id}`, "its jobs")),
    h("div.ws-layout",
      h("section.files",
        h("div.titlebar", h("h2", "Files"), h("button#tree-reload", { type: "button", onclick: reloadTree }, "Reload")),
        treeError,
        tree,
      ),
      h("section.viewer-pane", h("h2", "File"), viewer),
      h("section.commands", h("h2", "Shell"), cmdForm, cmdError, cmdLog),
      h("section.runtime",
        h("h2", "Runtime"),
        rtStatus,
        rtError,
        h("div.controls",
          h("button#runtime-start", { type: "button", onclick: () => rtAction("start") }, "Start"),
          h("button#runtime-stop", { type: "button", onclick: () => rtAction("stop") }, "Stop"),
          h("button#runtime-restart", { type: "button", onclick: () => rtAction("restart") }, "Restart"),
          h("button#runtime-logs-btn", { type: "button", onclick: readLogs }, "Logs"),
          shellBtn,
        ),
        logs,
        term,
        termInput,
      ),
    ),
  );
  await Promise.all([reloadTree(), readRuntime()]);
  return () => cleanups.forEach((fn) => fn());
}
