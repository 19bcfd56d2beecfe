// Tessera console: jobs, task tree, timeline and logs. Plain JavaScript, no build step, no
// network fetch beyond this server's /v1 API. Every request asks for one page.
"use strict";

const TOKEN_KEY = "tessera-token";
// The page shown now: leaving it aborts its signal, which ends its loops and its requests.
const state = { view: null };

// The key this browser signed in with. Only the sign-in form sets it: a key in a link
// (`?token=`) is never used, so that a link cannot sign anyone into another tenant.
function token() {
  return localStorage.getItem(TOKEN_KEY);
}

// Removes a key from the address at once (it must not stay in the URL or its history entry),
// and says so. Returns whether there was one.
function dropKeyFromAddress() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return false;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  return true;
}

// Thrown when the server asks for a key this page does not have (or has a revoked one).
class SignIn extends Error {
  constructor() { super("this server asks for a key"); }
}

function signOut() {
  localStorage.removeItem(TOKEN_KEY);
  state.me = null;
  route();
}

// Who this page acts as, shown in the header; operators also get the Tenants page.
async function identity(signal) {
  if (!state.me) state.me = await api("/v1/whoami", { signal });
  const me = state.me;
  const who = document.getElementById("who");
  const text = me.keys_required
    ? (me.tenant ? "tenant " + me.tenant : "every tenant") + " · " + me.role
    : "no keys: anyone on this machine is operator";
  const signOutLink = token() ? el("a", { href: "#", id: "sign-out", onclick: (e) => { e.preventDefault(); signOut(); }, text: "sign out" }) : null;
  who.replaceChildren(...[el("span", { id: "identity", text }), signOutLink].filter(Boolean));
  document.getElementById("nav-tenants").hidden = me.role !== "operator";
  return me;
}

function signInPage(app) {
  const key = el("input", { id: "key", type: "password", autocomplete: "off", placeholder: "tsk_…", size: 60 });
  const error = el("p", { class: "error", id: "sign-in-error" });
  const form = el("form", { id: "sign-in", onsubmit: async (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, key.value.trim());
    state.me = null;
    try {
      await api("/v1/whoami");
      route();
    } catch (err) {
      localStorage.removeItem(TOKEN_KEY);
      error.textContent = err instanceof SignIn ? "That key is not valid here (revoked, mistyped, or of another server)." : err.message;
    }
  } }, el("label", {}, "Key ", key), " ", el("button", { type: "submit", text: "Sign in" }));
  app.replaceChildren(el("div", { class: "panel" },
    el("h1", { text: "Sign in" }),
    el("p", { class: "muted", text: "This server asks for a key. Paste one your operator or tenant admin created (tessera keys create); it stays in this browser until you sign out." }),
    form, error));
  document.getElementById("who").replaceChildren();
  key.focus();
  ready();
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const conn = document.getElementById("conn");
  if (response.status === 401) throw new SignIn();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.statusText);
  conn.textContent = "";
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const badge = (s) => el("span", { class: "badge s-" + s, text: s });
// UUIDv7s share their leading (time) digits; the random tail tells them apart.
const shortId = (id) => (id || "").slice(-8);

function fmtDuration(ns) {
  if (ns === null || ns === undefined) return "–";
  const ms = ns / 1e6;
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(2) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function fmtTime(ns) {
  if (!ns) return "–";
  const d = new Date(ns / 1e6);
  return d.toLocaleString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function progressBar(done, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return el("span", { class: "progress", role: "progressbar", "aria-label": label, "aria-valuenow": Math.round(pct), "aria-valuemin": 0, "aria-valuemax": 100 },
    el("span", { style: "width:" + pct + "%" }));
}

// Waits `ms`, or less if the page is left.
function pause(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Every `ms`, runs `fn` (one at a time, never overlapping) until the page is left.
async function loop(signal, ms, fn) {
  while (!signal.aborted) {
    await pause(ms, signal);
    if (signal.aborted) return;
    try { await fn(); } catch (e) { if (!signal.aborted) console.warn(e); }
  }
}

function ready() {
  document.body.dataset.ready = "1";
}

// ---------------------------------------------------------------- jobs page

async function jobsPage(app, signal) {
  const params = new URLSearchParams(location.search);
  const filter = { state: params.get("state") || "", name: params.get("name") || "" };
  const cursors = [null];
  // An operator sees every tenant's jobs, so each row says whose.
  const operator = state.me?.role === "operator" && state.me?.keys_required;
  const stateSelect = el("select", { id: "job-state", "aria-label": "Filter by state" },
    ...["", "queued", "running", "completed", "failed", "canceled"].map((s) => el("option", { value: s, text: s || "any state" })));
  stateSelect.value = filter.state;
  const nameInput = el("input", { id: "job-name", type: "search", placeholder: "name contains…", "aria-label": "Filter by name", value: filter.name });
  const body = el("tbody");
  const older = el("button", { id: "older", text: "Older →", "aria-label": "Older jobs" });
  const newer = el("button", { id: "newer", text: "← Newer", "aria-label": "Newer jobs" });
  const pageInfo = el("span", { class: "muted" });
  app.replaceChildren(
    el("div", { class: "panel" },
      el("div", { class: "row" }, el("h1", { text: "Jobs" }),
        el("label", {}, "State", stateSelect), el("label", {}, "Name", nameInput)),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Name", ...(operator ? ["Tenant"] : []), "State", "Progress", "Tasks", "Failed", "Submitted", "Duration"].map((h) => el("th", { text: h })))), body),
      el("div", { class: "pager" }, newer, older, pageInfo)));

  // Answers to earlier filters may arrive after later ones: only the latest is shown.
  let generation = 0;
  async function load() {
    const mine = ++generation;
    const q = new URLSearchParams({ limit: "25" });
    if (filter.state) q.set("state", filter.state);
    if (filter.name) q.set("name", filter.name);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const page = await api("/v1/jobs?" + q, { signal });
    if (mine !== generation) return;
    body.replaceChildren(...page.jobs.map((j) => {
      const c = j.task_counts;
      const total = c.queued + c.running + c.computed + c.failed + c.canceled;
      const dur = j.started_at ? (j.finished_at || Date.now() * 1e6) - j.started_at : null;
      return el("tr", { "data-job-id": j.id },
        el("td", {}, el("a", { href: "/jobs/" + j.id, text: j.name }), " ", el("span", { class: "muted mono", text: shortId(j.id) })),
        operator ? el("td", { class: "tenant", text: j.tenant }) : null,
        el("td", {}, badge(j.state)),
        el("td", {}, progressBar(c.computed, total, "tasks computed")),
        el("td", { text: c.computed + " / " + total }),
        el("td", { text: c.failed }),
        el("td", { text: fmtTime(j.submitted_at) }),
        el("td", { text: fmtDuration(dur) }));
    }));
    if (page.jobs.length === 0) body.append(el("tr", {}, el("td", { colspan: operator ? 8 : 7, class: "muted", text: "No jobs. Submit one with: tessera submit TASK --input '{…}'" })));
    older.disabled = !page.next_cursor;
    older.onclick = () => { cursors.push(page.next_cursor); load(); };
    newer.disabled = cursors.length === 1;
    newer.onclick = () => { cursors.pop(); load(); };
    pageInfo.textContent = "page " + cursors.length;
    ready();
  }
  const refilter = () => {
    filter.state = stateSelect.value;
    filter.name = nameInput.value.trim();
    const q = new URLSearchParams();
    if (filter.state) q.set("state", filter.state);
    if (filter.name) q.set("name", filter.name);
    history.replaceState(null, "", "/" + (q.toString() ? "?" + q : ""));
    cursors.length = 1;
    load();
  };
  stateSelect.addEventListener("change", refilter);
  // Typing asks once it pauses, not on every keystroke.
  let typing = null;
  nameInput.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refilter, 250); });
  signal.addEventListener("abort", () => clearTimeout(typing), { once: true });
  await load();
  loop(signal, 2000, load);
}

// ---------------------------------------------------------------- job page

async function jobPage(app, id, signal) {
  const job = await api("/v1/jobs/" + encodeURIComponent(id), { signal });
  const names = new Map(); // task id -> display
  const header = el("div", { class: "panel", id: "job-header" });
  const treeBox = el("div", { class: "tree", role: "tree", id: "tree", "aria-label": "Task tree" });
  const timeline = makeTimeline(id, names, (taskId) => selectTask(taskId));
  const logs = makeLogs(id, names);
  const taskView = el("div", { class: "panel taskview", id: "task-view", hidden: true });
  // A completed job's result: its root task's output (which may be a subtask's).
  const result = el("div", { class: "panel", id: "job-result", hidden: true });
  let resultShown = false;
  async function showResult(j) {
    if (resultShown || j.state !== "completed") return;
    resultShown = true;
    const o = await outputOf(id, null);
    if (!o.bytes) return;
    result.replaceChildren(el("h2", { text: "Result" }), outputSection(o, o.from));
    result.hidden = false;
  }
  // Queued tasks no runner seen lately could run, and why (GET /v1/jobs/{id}/unserved).
  const waiting = el("div", { class: "waiting", id: "unserved", hidden: true });
  let waitingChecked = 0;
  async function checkWaiting(j) {
    if (j.task_counts.queued === 0) { waiting.hidden = true; return; }
    if (Date.now() - waitingChecked < 5000) return;
    waitingChecked = Date.now();
    try {
      const list = await api("/v1/jobs/" + encodeURIComponent(id) + "/unserved", { signal });
      waiting.replaceChildren(...list.tasks.map((u) => el("div", {
        text: "⚠ " + u.queued + (u.queued === 1 ? " task" : " tasks") + " waiting: " + u.reason })));
      waiting.hidden = list.tasks.length === 0;
    } catch (e) {
      if (!signal.aborted) console.warn(e);
    }
  }
  app.replaceChildren(header, result, waiting,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Tasks" }), treeBox),
      el("div", { class: "panel" }, el("h2", { text: "Timeline" }), timeline.node)),
    taskView,
    logs.node);

  let current = job;
  function renderHeader(j) {
    const c = j.task_counts;
    const total = c.queued + c.running + c.computed + c.failed + c.canceled;
    const wall = j.started_at ? (j.finished_at || Date.now() * 1e6) - j.started_at : 0;
    const parallelism = wall > 0 ? (j.task_time_ns / wall).toFixed(1) : "–";
    const cancel = el("button", { class: "danger", id: "cancel-job", text: "Cancel job", disabled: j.state === "completed" || j.state === "canceled" || j.state === "failed",
      onclick: async () => { if (confirm("Cancel job " + j.name + "? Queued tasks stop; running ones stop at their next lease extension.")) { await api("/v1/jobs/" + id + "/cancel", { method: "POST", body: {} }); } } });
    const retry = el("button", { id: "retry-job", text: "Retry failed", disabled: !(c.failed > 0 || c.canceled > 0),
      onclick: async () => { if (confirm("Requeue the failed and canceled tasks of " + j.name + "?")) { await api("/v1/jobs/" + id + "/retry", { method: "POST", body: {} }); } } });
    header.replaceChildren(
      el("div", { class: "row" }, el("h1", { text: j.name }), badge(j.state), el("span", { class: "muted mono", text: j.id }),
        el("span", { style: "margin-left:auto" }), cancel, retry),
      el("div", { class: "stats" },
        el("div", {}, el("b", { text: c.computed + " / " + total }), "tasks computed ", progressBar(c.computed, total, "tasks computed")),
        el("div", {}, el("b", { text: c.queued + " · " + c.running + " · " + c.failed + " · " + c.canceled }), "queued · running · failed · canceled"),
        ...j.progress.map((p) => el("div", {}, el("b", { text: p.done + " / " + p.total }), p.label + " ", progressBar(p.done, p.total, p.label))),
        el("div", {}, el("b", { text: fmtTime(j.started_at) }), "first start"),
        el("div", {}, el("b", { text: fmtTime(j.finished_at) }), "last stop"),
        el("div", {}, el("b", { text: fmtDuration(j.task_time_ns) }), "summed task time"),
        el("div", {}, el("b", { id: "parallelism", text: parallelism }), "parallelism (task time / wall time)")));
  }

  // The tree: root first, children loaded a page at a time when expanded. Rows are keyed by
  // task id and updated in place, so expansion, selection and scroll survive every update.
  function row(t) {
    const toggle = el("button", { class: "toggle" });
    const name = el("span", { class: "name" });
    const stateBox = el("span", {});
    const meta = el("span", { class: "meta" });
    const item = el("div", { role: "treeitem", "data-task-id": t.id, style: "padding-left:" + (4 + 16 * t.depth) + "px", tabindex: 0 },
      toggle, name, stateBox, meta);
    const children = el("div", { role: "group" });
    const node = el("div", { "data-node": t.id }, item, children);
    node.update = (t) => {
      names.set(t.id, t.display);
      node.task = t;
      const dur = t.started_at && t.finished_at ? t.finished_at - t.started_at : null;
      if (name.textContent !== t.display) name.textContent = t.display;
      if (stateBox.dataset.state !== t.state) { stateBox.dataset.state = t.state; stateBox.replaceChildren(badge(t.state)); }
      meta.textContent = (t.attempts > 1 ? t.attempts + " attempts · " : "") + fmtDuration(dur);
      toggle.setAttribute("aria-label", (t.children ? "Expand " : "") + t.display);
      if (t.children && !item.hasAttribute("aria-expanded")) {
        toggle.disabled = false;
        toggle.textContent = "▸";
        item.setAttribute("aria-expanded", "false");
      } else if (!t.children) {
        toggle.disabled = true;
        toggle.textContent = "·";
      }
    };
    node.update(t);
    item.addEventListener("click", (e) => { if (e.target !== toggle) selectTask(t.id); });
    item.addEventListener("keydown", (e) => { if (e.key === "Enter") selectTask(t.id); });
    toggle.addEventListener("click", () => expand(node));
    return node;
  }
  // Puts a page of children into `box`: existing rows updated, new ones added in order.
  function merge(box, tasks) {
    const more = box.querySelector(":scope > .more");
    for (const t of tasks) {
      const existing = box.querySelector(':scope > [data-node="' + CSS.escape(t.id) + '"]');
      if (existing) existing.update(t);
      else box.insertBefore(row(t), more);
    }
  }
  function moreButton(node, box, cursor) {
    box.querySelector(":scope > .more")?.remove();
    if (cursor) {
      box.append(el("button", { class: "more", text: "Load more children", "aria-label": "Load more children of " + node.task.display,
        onclick: () => loadChildren(node, cursor) }));
    }
  }
  async function loadChildren(node, cursor) {
    const box = node.lastChild;
    const q = new URLSearchParams({ parent: node.task.id, limit: "100" });
    if (cursor) q.set("cursor", cursor);
    const page = await api("/v1/jobs/" + id + "/tasks?" + q, { signal });
    merge(box, page.tasks);
    moreButton(node, box, page.next_cursor);
    logs.refreshTasks();
  }
  async function expand(node) {
    const item = node.firstChild;
    const open = item.getAttribute("aria-expanded") === "true";
    item.setAttribute("aria-expanded", open ? "false" : "true");
    item.querySelector(".toggle").textContent = open ? "▸" : "▾";
    if (open) { node.lastChild.replaceChildren(); return; }
    await loadChildren(node, null);
  }
  async function loadTree() {
    const page = await api("/v1/jobs/" + id + "/tasks?limit=1", { signal });
    const root = page.tasks[0];
    if (!root) return;
    const node = row(root);
    treeBox.replaceChildren(node);
    if (root.children) await expand(node);
  }
  // Updates every row shown: the root, and the children of every expanded row (as many pages
  // as are shown), in place.
  async function refreshTree() {
    const rootNode = treeBox.querySelector(":scope > [data-node]");
    if (!rootNode) return loadTree();
    const page = await api("/v1/jobs/" + id + "/tasks?limit=1", { signal });
    if (page.tasks[0]) rootNode.update(page.tasks[0]);
    for (const node of [...treeBox.querySelectorAll("[data-node]")]) {
      if (node.firstChild.getAttribute("aria-expanded") !== "true") continue;
      const box = node.lastChild;
      const shown = box.querySelectorAll(":scope > [data-node]").length;
      let cursor = null, seen = 0;
      do {
        const q = new URLSearchParams({ parent: node.task.id, limit: "100" });
        if (cursor) q.set("cursor", cursor);
        const children = await api("/v1/jobs/" + id + "/tasks?" + q, { signal });
        merge(box, children.tasks);
        seen += children.tasks.length;
        cursor = children.next_cursor;
      } while (cursor && seen < shown);
      moreButton(node, box, cursor);
    }
    logs.refreshTasks();
  }

  async function selectTask(taskId) {
    treeBox.querySelectorAll(".sel").forEach((n) => n.classList.remove("sel"));
    treeBox.querySelector('[data-task-id="' + taskId + '"]')?.classList.add("sel");
    const [t, spans, lines] = await Promise.all([
      api("/v1/tasks/" + taskId),
      api("/v1/jobs/" + id + "/spans?task=" + taskId + "&limit=100"),
      api("/v1/jobs/" + id + "/logs?task=" + taskId + "&limit=200"),
    ]);
    const output = t.state === "computed" ? await outputOf(id, t.id) : null;
    names.set(t.id, t.display);
    taskView.hidden = false;
    taskView.replaceChildren(
      el("div", { class: "row" }, el("h2", { text: t.display }), badge(t.state), el("span", { class: "muted mono", text: t.id }),
        el("span", { style: "margin-left:auto" }),
        el("button", { text: "Show its logs below", onclick: () => logs.setTask(t.id) }),
        el("button", { "aria-label": "Close task view", text: "×", onclick: () => { taskView.hidden = true; } })),
      el("div", { class: "stats" },
        el("div", {}, el("b", { text: t.identifier.name + "@" + t.identifier.version }), "task type"),
        el("div", {}, el("b", { text: t.attempts }), "attempts"),
        el("div", {}, el("b", { text: t.retries_used + " / " + t.max_retries }), "retries used"),
        el("div", {}, el("b", { text: t.children }), "subtasks"),
        el("div", {}, el("b", { text: t.cluster }), "cluster"),
        t.component ? el("div", { id: "task-component" }, el("b", { class: "mono", title: t.component, text: shortDigest(t.component) }), "deployed component") : null),
      t.error ? el("p", { class: "error", text: "Error: " + t.error }) : null,
      el("h2", { text: "Input" }), el("pre", { class: "mono", text: JSON.stringify(t.input, null, 2) }),
      output ? el("h2", { text: "Output" }) : null,
      outputSection(output, t.id),
      el("h2", { text: "Attempts" }),
      el("table", { id: "attempts" }, el("thead", {}, el("tr", {}, ...["#", "Runner", "Ran", "Start", "Duration", "Outcome", "Error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...spans.spans.map((s) => el("tr", {},
          el("td", { text: s.attempt }), el("td", { class: "mono", text: shortId(s.runner_id) }),
          s.component ? digestCell(s.component) : el("td", { class: "muted", text: "–" }),
          el("td", { text: fmtTime(s.start_time_unix_nano) }),
          el("td", { text: fmtDuration(s.end_time_unix_nano ? s.end_time_unix_nano - s.start_time_unix_nano : null) }),
          el("td", {}, badge(s.outcome)), el("td", { text: s.error || "" }))))),
      el("h2", { text: "Logs" }),
      el("div", { class: "logs", id: "task-logs" }, ...lines.logs.map((l) => logs.line(l))));
  }

  // Live: the server answers a watch as soon as the job changes (ETag + If-None-Match long
  // poll); each change updates the header, the tree in place and the timeline.
  async function watch() {
    let etag = null;
    while (!signal.aborted) {
      try {
        const headers = { Accept: "application/json" };
        const t = token();
        if (t) headers.Authorization = "Bearer " + t;
        if (etag) headers["If-None-Match"] = etag;
        const response = await fetch("/v1/jobs/" + encodeURIComponent(id) + "?wait_ms=" + (etag ? 10000 : 0), { headers, signal, cache: "no-store" });
        if (response.status === 304) continue;
        if (!response.ok) throw new Error("watching the job: HTTP " + response.status);
        etag = response.headers.get("ETag");
        current = await response.json();
        renderHeader(current);
        checkWaiting(current);
        showResult(current);
        await refreshTree();
        await timeline.load();
        document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      } catch (e) {
        if (signal.aborted) return;
        console.warn(e);
        await pause(2000, signal);
      }
    }
  }

  renderHeader(job);
  await Promise.all([loadTree(), timeline.load(), checkWaiting(job), showResult(job)]);
  // After the tree, so log lines can name their tasks.
  await logs.load();
  ready();
  watch();
  // Running attempts' bars grow with the clock, with no request.
  loop(signal, 1000, () => { if (current.state === "running") timeline.draw(); });
  loop(signal, 1000, () => logs.follow());
}

// ---------------------------------------------------------------- timeline

function makeTimeline(jobId, names, onSelect) {
  const MAX_PAGES = 5;
  let spans = [];
  let more = null;
  let msPerPx = null; // null: fit to width
  const axis = el("div", { class: "axis" });
  const lanes = el("div", { class: "lanes" });
  const box = el("div", { class: "timeline", id: "timeline", tabindex: 0, "aria-label": "Timeline of task attempts, one lane per runner" }, axis, lanes);
  const info = el("span", { class: "muted", id: "timeline-info" });
  const loadMore = el("button", { text: "Load more attempts", hidden: true, onclick: async () => { await page(more); draw(); } });
  const zoom = (f) => { msPerPx = (msPerPx || fitScale()) * f; draw(); };
  const tools = el("div", { class: "timeline-tools" },
    el("button", { "aria-label": "Zoom in", text: "+", onclick: () => zoom(0.5) }),
    el("button", { "aria-label": "Zoom out", text: "−", onclick: () => zoom(2) }),
    el("button", { "aria-label": "Fit to width", text: "Fit", onclick: () => { msPerPx = null; draw(); } }),
    loadMore, info);
  const node = el("div", {}, tools, box);

  box.addEventListener("wheel", (e) => {
    if (!e.ctrlKey && !e.metaKey) return;
    e.preventDefault();
    zoom(e.deltaY < 0 ? 0.8 : 1.25);
  }, { passive: false });
  let drag = null;
  box.addEventListener("mousedown", (e) => { drag = { x: e.clientX, left: box.scrollLeft }; box.classList.add("dragging"); });
  window.addEventListener("mouseup", () => { drag = null; box.classList.remove("dragging"); });
  box.addEventListener("mousemove", (e) => { if (drag) box.scrollLeft = drag.left - (e.clientX - drag.x); });

  function bounds() {
    const now = Date.now() * 1e6;
    let t0 = Infinity, t1 = 0;
    for (const s of spans) {
      t0 = Math.min(t0, s.start_time_unix_nano);
      t1 = Math.max(t1, s.end_time_unix_nano || now);
    }
    return { t0, t1: Math.max(t1, t0 + 1e6), now };
  }
  function fitScale() {
    const { t0, t1 } = bounds();
    return (t1 - t0) / 1e6 / Math.max(200, box.clientWidth - 140);
  }
  async function page(cursor) {
    const q = new URLSearchParams({ limit: "1000" });
    if (cursor) q.set("cursor", cursor);
    const p = await api("/v1/jobs/" + jobId + "/spans?" + q);
    spans = spans.concat(p.spans);
    more = p.next_cursor;
  }
  async function load() {
    const pages = Math.max(1, Math.ceil(spans.length / 1000));
    spans = [];
    more = null;
    await page(null);
    for (let i = 1; i < Math.min(pages, MAX_PAGES) && more; i++) await page(more);
    draw();
  }
  function draw() {
    loadMore.hidden = !more;
    if (spans.length === 0) {
      lanes.replaceChildren(el("p", { class: "muted", style: "padding:8px", text: "No task has started yet." }));
      info.textContent = "";
      return;
    }
    const { t0, t1, now } = bounds();
    const scale = msPerPx || fitScale();
    const width = 130 + (t1 - t0) / 1e6 / scale + 20;
    const runners = [];
    for (const s of spans) if (!runners.includes(s.runner_id)) runners.push(s.runner_id);
    const rows = runners.map((r, i) => el("div", { class: "lane", "data-runner": r, style: "width:" + width + "px" },
      el("span", { class: "lane-label", title: r, text: "runner " + (i + 1) + " · " + shortId(r) })));
    for (const s of spans) {
      const end = s.end_time_unix_nano || now;
      const left = 130 + (s.start_time_unix_nano - t0) / 1e6 / scale;
      const w = Math.max(2, (end - s.start_time_unix_nano) / 1e6 / scale);
      const name = names.get(s.task_id) || s.name;
      const label = name + " · attempt " + s.attempt + " · " + s.outcome + " · " + fmtDuration(end - s.start_time_unix_nano) + " · runner " + shortId(s.runner_id);
      rows[runners.indexOf(s.runner_id)].append(el("div", { class: "bar o-" + s.outcome, style: "left:" + left + "px;width:" + w + "px", title: label, "aria-label": label,
        "data-task-id": s.task_id, onclick: () => onSelect(s.task_id) }, w > 40 ? name : ""));
    }
    lanes.replaceChildren(...rows);
    // Axis ticks every ~100 px.
    axis.style.width = width + "px";
    const stepMs = niceStep(scale * 100);
    const ticks = [];
    for (let ms = 0; ms <= (t1 - t0) / 1e6; ms += stepMs) ticks.push(el("span", { style: "left:" + (130 + ms / scale) + "px", text: "+" + fmtDuration(ms * 1e6) }));
    axis.replaceChildren(...ticks.slice(0, 400));
    const plural = (n, one, many) => n + " " + (n === 1 ? one : many);
    info.textContent = plural(spans.length, "attempt", "attempts") + " on " + plural(runners.length, "runner", "runners") + (more ? " (more to load)" : "");
  }
  function niceStep(ms) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(ms, 1))));
    for (const m of [1, 2, 5, 10]) if (m * p >= ms) return m * p;
    return 10 * p;
  }
  return { node, load, draw };
}

// ---------------------------------------------------------------- logs

function makeLogs(jobId, names) {
  const taskSelect = el("select", { id: "log-task", "aria-label": "Filter logs by task" }, el("option", { value: "", text: "all tasks" }));
  const levelSelect = el("select", { id: "log-level", "aria-label": "Minimum log level" },
    ...["", "debug", "info", "warn", "error"].map((l) => el("option", { value: l, text: l || "any level" })));
  const followBox = el("input", { type: "checkbox", id: "log-follow", checked: true });
  const box = el("div", { class: "logs", id: "logs", role: "log", "aria-label": "Job logs" });
  const node = el("div", { class: "panel" },
    el("div", { class: "row" }, el("h2", { text: "Logs" }),
      el("label", {}, "Task", taskSelect), el("label", {}, "Level", levelSelect), el("label", {}, followBox, "Follow")),
    box);
  let cursor = null;
  let generation = 0;

  function line(l) {
    const fields = Object.entries(l.fields || {}).map(([k, v]) => " " + k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join("");
    const d = new Date(l.time_unix_nano / 1e6);
    return el("div", { class: "log", "data-task-id": l.task_id },
      el("span", { class: "t", text: d.toISOString().slice(11, 23) + " " }),
      el("span", { class: "lv-" + l.level, text: l.level.toUpperCase().padEnd(5) + " " }),
      el("span", { class: "task", text: (names.get(l.task_id) || shortId(l.task_id)) + " " }),
      l.message, el("span", { class: "f", text: fields }));
  }
  function query() {
    const q = new URLSearchParams({ limit: "500" });
    if (taskSelect.value) q.set("task", taskSelect.value);
    if (levelSelect.value) q.set("level", levelSelect.value);
    if (cursor) q.set("cursor", cursor);
    return "/v1/jobs/" + jobId + "/logs?" + q;
  }
  async function load() {
    const mine = ++generation;
    cursor = null;
    box.replaceChildren();
    const page = await api(query());
    if (mine !== generation) return;
    box.append(...page.logs.map(line));
    cursor = page.next_cursor;
  }
  async function follow() {
    if (!followBox.checked) return;
    const mine = generation;
    const page = await api(query());
    if (mine !== generation || page.logs.length === 0) return;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.append(...page.logs.map(line));
    cursor = page.next_cursor;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
  function refreshTasks() {
    const chosen = taskSelect.value;
    const options = [el("option", { value: "", text: "all tasks" })];
    for (const [tid, name] of names) options.push(el("option", { value: tid, text: name + " (" + shortId(tid) + ")" }));
    taskSelect.replaceChildren(...options);
    taskSelect.value = chosen;
  }
  function setTask(tid) {
    refreshTasks();
    taskSelect.value = tid;
    load();
    node.scrollIntoView({ behavior: "smooth" });
  }
  taskSelect.addEventListener("change", load);
  levelSelect.addEventListener("change", load);
  return { node, load, follow, line, refreshTasks, setTask };
}

// ---------------------------------------------------------------- runners and components

// `sha256:` and 12 hex digits: enough to tell components apart (the full digest on hover).
// ---------------------------------------------------------------- outputs

// A computed task's output (the job's root task's when `taskId` is null), as bytes: `none`
// when it has none, `error` when it cannot be read (an output taken from a subtask that has
// not computed yet). `from` names the task whose output it is.
async function outputOf(jobId, taskId) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const query = taskId === null ? "" : "?task=" + encodeURIComponent(taskId);
  try {
    const r = await fetch("/v1/jobs/" + encodeURIComponent(jobId) + "/output" + query, { headers, cache: "no-store" });
    const from = r.headers.get("x-tessera-task");
    if (r.status === 204) return { none: true, from };
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      return { error: body.message || r.statusText };
    }
    return { bytes: new Uint8Array(await r.arrayBuffer()), from };
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

// Pretty JSON when the output is JSON; otherwise its size and a download.
function outputSection(o, taskId) {
  if (!o) return null;
  if (o.error) return el("p", { class: "muted", id: "task-output", text: o.error });
  if (o.none) return el("p", { class: "muted", id: "task-output", text: "It computed without an output." });
  const via = o.from && o.from !== taskId
    ? el("p", { class: "muted", text: "The output of its subtask " + shortId(o.from) + ":" }) : null;
  let pretty = null;
  try {
    pretty = JSON.stringify(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(o.bytes)), null, 2);
  } catch (_) { /* not JSON */ }
  if (pretty !== null) return el("div", { id: "task-output" }, via, el("pre", { class: "mono", text: pretty }));
  const url = URL.createObjectURL(new Blob([o.bytes], { type: "application/octet-stream" }));
  return el("div", { id: "task-output" }, via,
    el("p", {}, fmtBytes(o.bytes.length) + " of binary data. ",
      el("a", { href: url, download: "output-" + taskId + ".bin", text: "Download" })));
}

const shortDigest = (d) => (d || "").slice(0, 19);
function fmtBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}
const digestCell = (d) => el("td", { class: "mono", title: d, text: shortDigest(d) });

async function runnersPage(app, signal) {
  const body = el("tbody");
  const count = el("span", { class: "muted" });
  app.replaceChildren(
    el("div", { class: "panel" },
      el("div", { class: "row" }, el("h1", { text: "Runners" }), count),
      el("p", { class: "muted", text: "Runners seen in the last five minutes, by their claims." }),
      el("table", { id: "runners" }, el("thead", {}, el("tr", {}, ...["Runner", "Host", "Cluster", "Running", "Last seen", "Serves"].map((h) => el("th", { text: h })))), body)));
  async function load() {
    const list = await api("/v1/runners", { signal });
    body.replaceChildren(...list.runners.map((r) => el("tr", { "data-runner-id": r.id },
      el("td", { class: "mono", title: r.id, text: shortId(r.id) }),
      el("td", { text: r.host || "–" }),
      el("td", { text: r.cluster }),
      el("td", { text: r.running + " / " + (r.concurrency ?? "?") }),
      el("td", { text: fmtTime(r.last_seen) }),
      el("td", { class: "serves", text: r.deployed ? "deployed components" : "files: " + r.identifiers.map((i) => i.name + "@" + i.version).join(", ") }))));
    if (list.runners.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No runner has claimed work lately. Start one with: tessera runner --deployed (or tessera runner TASKS.wasm)" })));
    count.textContent = list.runners.length + (list.runners.length === 1 ? " runner" : " runners");
    ready();
  }
  await load();
  loop(signal, 2000, load);
}

async function componentsPage(app, signal) {
  const body = el("tbody");
  const all = el("input", { id: "show-undeployed", type: "checkbox" });
  app.replaceChildren(
    el("div", { class: "panel" },
      el("div", { class: "row" }, el("h1", { text: "Components" }), el("label", {}, all, "show undeployed")),
      el("p", { class: "muted", text: "Deployed with tessera deploy; a job runs the components deployed when it was submitted." }),
      el("table", { id: "components" }, el("thead", {}, el("tr", {}, ...["Name", "Digest", "Size", "Task types", "Deployed", "By", ""].map((h) => el("th", { text: h })))), body)));
  async function load() {
    const list = await api("/v1/components" + (all.checked ? "?all=true" : ""), { signal });
    body.replaceChildren(...list.components.map((c) => el("tr", { "data-digest": c.digest },
      el("td", { text: c.name }),
      digestCell(c.digest),
      el("td", { text: fmtBytes(c.size) }),
      el("td", { class: "types", text: c.task_types.map((t) => t.name + "@" + t.version).join(", ") }),
      el("td", { text: fmtTime(c.deployed_at) }),
      el("td", { text: c.deployed_by }),
      el("td", {}, c.undeployed_at ? el("span", { class: "muted", text: "undeployed " + fmtTime(c.undeployed_at) }) : null))));
    if (list.components.length === 0) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No component is deployed. Deploy one with: tessera deploy TASKS.wasm" })));
    ready();
  }
  all.addEventListener("change", load);
  await load();
  loop(signal, 5000, load);
}

async function tenantsPage(app, signal) {
  const body = el("tbody");
  app.replaceChildren(
    el("div", { class: "panel" },
      el("h1", { text: "Tenants" }),
      el("p", { class: "muted", text: "Every tenant on this server, with what it uses now and its quotas (operators only). Create one with tessera tenants create NAME; change quotas with tessera tenants set-quota." }),
      el("table", { id: "tenants" }, el("thead", {}, el("tr", {}, ...["Tenant", "Weight", "Queued", "Running", "Components", "Ceilings per attempt", "Created"].map((h) => el("th", { text: h })))), body)));
  async function load() {
    const list = await api("/v1/tenants", { signal });
    body.replaceChildren(...list.tenants.map((t) => {
      const u = t.usage || { queued_tasks: 0, running: 0, component_bytes: 0 };
      const q = t.quotas;
      const ceilings = [q.memory_mib ? q.memory_mib + " MiB" : null, q.deadline_seconds ? q.deadline_seconds + " s" : null].filter(Boolean).join(", ") || "the runners'";
      return el("tr", { "data-tenant": t.name },
        el("td", { text: t.name }),
        el("td", { text: t.weight }),
        el("td", { class: "usage-queued", text: u.queued_tasks + " of " + q.queued_tasks }),
        el("td", { class: "usage-running", text: u.running + (q.running ? " of " + q.running : "") }),
        el("td", { text: fmtBytes(u.component_bytes) + " of " + fmtBytes(q.component_bytes) }),
        el("td", { text: ceilings }),
        el("td", { text: t.created_at ? fmtTime(t.created_at) : "built in" }));
    }));
    ready();
  }
  await load();
  loop(signal, 5000, load);
}

// ---------------------------------------------------------------- routing

async function route() {
  state.view?.abort();
  state.view = new AbortController();
  const signal = state.view.signal;
  delete document.body.dataset.ready;
  const app = document.getElementById("app");
  const m = location.pathname.match(/^\/jobs\/([^/]+)\/?$/);
  try {
    await identity(signal);
    if (location.pathname === "/" || location.pathname === "") await jobsPage(app, signal);
    else if (/^\/tenants\/?$/.test(location.pathname)) await tenantsPage(app, signal);
    else if (/^\/runners\/?$/.test(location.pathname)) await runnersPage(app, signal);
    else if (/^\/components\/?$/.test(location.pathname)) await componentsPage(app, signal);
    else if (m) await jobPage(app, decodeURIComponent(m[1]), signal);
    else app.replaceChildren(el("p", {}, "Nothing here. ", el("a", { href: "/", text: "See all jobs" })));
  } catch (e) {
    if (e instanceof SignIn) return signInPage(app);
    if (signal.aborted) return;
    app.replaceChildren(el("p", { class: "error", text: "Could not load this page: " + e.message }), el("a", { href: "/", text: "Back to all jobs" }));
    ready();
  }
}

window.addEventListener("popstate", route);
if (dropKeyFromAddress()) {
  const notice = document.getElementById("notice");
  notice.textContent = "A key in the link was ignored and removed from the address. Keys are never taken from links: sign in with the form (sign out first to switch keys).";
  notice.hidden = false;
}
route();
