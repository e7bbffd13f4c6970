// modelpull web page: check what a download will fetch, start it, watch every job live,
// pause, resume, retry, and manage what is on this machine.
// Plain JavaScript, no build step. All data goes into the page as text, never as HTML.
"use strict";

const API = document.body.dataset.api || "/api/models";
const KEY_NAME = "modelpull-api-key";
const $ = (id) => document.getElementById(id);
const jobs = new Map(); // job id -> {card, job, files}

let apiKey = sessionStorage.getItem(KEY_NAME) || "";
let feedAbort = null;
let inventoryTimer = null;
let online = false;
let booted = false;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const UNREACHABLE = "The service is not answering. Is modelpull serve still running?";

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.body !== undefined ? { "Content-Type": "application/json" } : {});
  let res;
  try {
    res = await fetch(API + path, opts);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    connectionLost();
    throw new ApiError(0, "service_unreachable", UNREACHABLE);
  }
  if (res.status === 401) needKey();
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    let message = (data && (data.message || data.detail)) || ("HTTP " + res.status);
    if (typeof message !== "string") message = JSON.stringify(message);
    throw new ApiError(res.status, data && data.error_code, message);
  }
  return data;
}

// ---- formatting -----------------------------------------------------------------
function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n, i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? Math.round(v) + " B" : v.toFixed(1) + " " + units[i];
}
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return s + "s";
}
// 99.96 % is not done: tenths rounded down, so only a finished download says 100 %.
function fmtPercent(p) {
  return (Math.floor(Math.max(0, Math.min(100, p || 0)) * 10) / 10).toFixed(1);
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function button(label, cls, onClick) {
  const b = el("button", cls, label);
  b.type = "button";
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

// Text with its URLs as links (opened in a new tab, no referrer).
const URL_RE = /https?:\/\/[^\s"'<>`)\]]+/g;
function setRichText(node, text) {
  node.textContent = "";
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    const trail = url.match(/[.,;:!?]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    node.append(text.slice(last, match.index));
    const a = el("a", "", url);
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    node.append(a);
    last = match.index + url.length;
  }
  node.append(text.slice(last));
}

// The library speaks to programs (token=..., base_url); the page names its own fields.
function pagePhrase(message, where) {
  const again = where === "job" ? "press Retry" : "press Download again";
  const paste = where === "job" ? "paste a token in the box below" : "paste a token in the Token field";
  const rules = [
    [/pass a token \(token=\.\.\., the HF_TOKEN variable, or `hf auth login`\)/g, paste],
    [/pass token=\.\.\., set HF_TOKEN or run `hf auth login`/g, paste],
    [/pass a token \(token=\.\.\. or --token\)/g, paste],
    [/pass token=\.\.\. \(or --token\)/g, paste],
    [/\(if it is private, pass a token\)/g, "(if it is private, " + paste + ")"],
    [/\(option (\w+)=(\w+) ([^)]*)\)/g, "(Options {\"$1\": $2} $3)"],
    [/[Ss]et base_url or OLLAMA_HOST if it listens elsewhere/g,
      "if it listens elsewhere, put its address in Source address (More options)"],
    [/;? ?run the download again to resume from what is already on disk/g,
      "; " + again + " to go on from what is already on disk"],
    [/then run (the download|it) again/g, "then " + again],
    [/\bbase_url\b/g, "Source address"],
    [/\btoken=\.\.\./g, "the Token field"],
    [/\boption '([A-Za-z_]+)'/g, "option \"$1\" (More options → Options)"],
  ];
  let text = String(message || "");
  for (const [pattern, replacement] of rules) text = text.replace(pattern, replacement);
  return text.replace(/^; /, "");
}

const FIELD_HINTS = {
  invalid_model: "Check the Model field",
  invalid_option: "Check Options under More options",
  unsupported_provider: "Pick a source from the list",
  invalid_request: "Check the form",
  service_unreachable: "",
};
function formError(e) {
  const box = $("form-error");
  box.textContent = "";
  if (!e) return;
  const text = el("span");
  setRichText(text, pagePhrase(e.message, "form"));
  box.append(text);
  const hint = FIELD_HINTS[e.code];
  if (hint) box.append(el("span", "hint-inline", " " + hint + "."));
  if (e.code) box.append(el("code", "code", e.code));
}

function copyable(node, text) {
  node.textContent = "";
  node.append(el("code", "path", text));
  const copy = button("Copy", "quiet tiny copy", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = "Copied";
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(node.firstChild);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copy.textContent = "Selected";
    }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  copy.setAttribute("aria-label", "Copy " + text);
  node.append(copy);
}

// ---- connection ----------------------------------------------------------------------
function setOnline(up, text) {
  const conn = $("conn");
  conn.textContent = up ? "Connected" : text;
  conn.classList.toggle("down", !up);
  const wasOnline = online;
  online = up;
  if (up) {
    $("lost").hidden = true;
    for (const entry of jobs.values()) entry.card.classList.remove("stale");
    if (!wasOnline && booted) scheduleInventory();
  }
}

function connectionLost(detail) {
  if (!booted) return;
  $("lost").hidden = false;
  $("lost-detail").textContent = detail || "Trying again…";
  setOnline(false, "Reconnecting…");
  for (const entry of jobs.values()) {
    entry.card.classList.add("stale");
    for (const b of entry.card.querySelectorAll(".buttons button")) b.disabled = true;
  }
}

// ---- API key ----------------------------------------------------------------------
function needKey() {
  $("auth").hidden = false;
  $("api-key").focus();
}
$("auth-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem(KEY_NAME, apiKey);
  $("api-key").value = "";
  $("auth").hidden = true;
  boot();
});

// ---- sources -------------------------------------------------------------------------
// Every source, as the service declares it (GET /providers), the common ones first.
let SOURCES = [];
const sourceOf = (name) => SOURCES.find((p) => p.name === name);

async function loadProviders() {
  const data = await api("/providers");
  SOURCES = data.providers;
  const select = $("provider");
  const current = select.value || (SOURCES[0] && SOURCES[0].name);
  select.textContent = "";
  for (const p of SOURCES) {
    const option = el("option", "", p.title);
    option.value = p.name;
    option.title = p.summary;
    select.appendChild(option);
  }
  select.value = SOURCES.some((p) => p.name === current) ? current : SOURCES[0].name;
  showSource();
}

function showSource() {
  const source = sourceOf($("provider").value);
  if (!source) return;
  $("model").placeholder = source.example;
  $("source-summary").textContent = source.summary;
  $("source-example").textContent = source.example;
  $("source-place").textContent = source.place ? " · lands in " + source.place : "";
  $("model-form").textContent = source.reference;
  const names = source.options.filter((o) => o.name !== "dry_run").map((o) => o.name);
  $("option-list").textContent = names.length ? "Options this source accepts: " + names.join(", ") : "";
  hidePlan();
}
$("provider").addEventListener("change", showSource);
$("source-example").addEventListener("click", () => {
  $("model").value = $("source-example").textContent;
  hidePlan();
  $("model").focus();
});

// ---- the form: check, then download ---------------------------------------------------
function requestBody() {
  formError(null);
  const body = { provider: $("provider").value, model: $("model").value.trim() };
  if (!body.model) {
    const source = sourceOf(body.provider);
    formError({ message: "Type a model in the Model field" + (source ? ", e.g. " + source.example : "") + "." });
    $("model").focus();
    return null;
  }
  const token = $("token").value.trim();
  if (token) body.token = token;
  const baseUrl = $("base-url").value.trim();
  if (baseUrl) body.base_url = baseUrl;
  const rawOptions = $("options").value.trim();
  if (rawOptions) {
    let options;
    try { options = JSON.parse(rawOptions); } catch (e) { options = undefined; }
    if (!options || typeof options !== "object" || Array.isArray(options)) {
      formError({ message: "Options (under More options) must be a JSON object, e.g. {\"revision\": \"main\"}." });
      $("more").open = true;
      return null;
    }
    body.options = options;
  }
  return body;
}

let planSeq = 0;
function hidePlan() {
  planSeq++;
  $("plan").hidden = true;
}

// A GGUF reference with a tag (org/repo:Q4_K): the repo without it lists what it has.
const TAGGED_GGUF = (body) => /^[^:]+\/[^:]+:[^:/]+$/.test(body.model);

async function checkPlan() {
  const body = requestBody();
  if (!body) return;
  const seq = ++planSeq;
  const buttonCheck = $("check");
  buttonCheck.disabled = true;
  buttonCheck.textContent = "Checking…";
  try {
    let plan;
    let note = null;
    try {
      plan = await api("/plan", { method: "POST", body: JSON.stringify(body) });
    } catch (e) {
      // A quantization the repo does not have: show what it has instead.
      if (e.code === "not_found" && /quantization/.test(e.message) && TAGGED_GGUF(body)) {
        const untagged = Object.assign({}, body, { model: body.model.replace(/:[^:]+$/, "") });
        plan = await api("/plan", { method: "POST", body: JSON.stringify(untagged) });
        note = pagePhrase(e.message, "form").split("; it has:")[0] + ". Pick one below.";
        for (const q of plan.quantizations) q.chosen = false;
      } else {
        throw e;
      }
    }
    if (seq !== planSeq) return;
    renderPlan(plan, note);
  } catch (e) {
    if (seq !== planSeq) return;
    $("plan").hidden = true;
    formError(e);
  } finally {
    buttonCheck.disabled = false;
    buttonCheck.textContent = "Check";
  }
}
$("check").addEventListener("click", checkPlan);
$("plan-close").addEventListener("click", hidePlan);
for (const id of ["model", "token", "base-url", "options"]) $(id).addEventListener("input", hidePlan);

function renderPlan(plan, note) {
  const box = $("plan");
  const layers = plan.items.length && plan.items.every((i) => i.kind === "layer" || i.kind === "config");
  const source = sourceOf(plan.provider);
  $("plan-summary").textContent = note || ((source ? source.title : plan.provider) + " · " + plan.model + ": " + plan.summary);
  $("plan-summary").classList.toggle("warn", Boolean(note));
  $("plan-total").textContent = plan.items.length ? fmtBytes(plan.total_bytes) : "known once the pull starts";
  $("plan-present").textContent = fmtBytes(plan.present_bytes);
  $("plan-missing").textContent = plan.items.length ? fmtBytes(plan.missing_bytes) : "?";
  const dest = $("plan-dest");
  if (plan.destination) copyable(dest, plan.destination); else dest.textContent = "chosen by the source";
  $("plan-kind").textContent = layers ? "Layer" : "File";
  const rows = $("plan-items");
  rows.textContent = "";
  for (const item of plan.items) {
    const tr = el("tr", item.local ? "local" : "");
    tr.append(el("td", "name", item.name), el("td", "num", fmtBytes(item.size)));
    let state = "";
    if (item.local) state = "✓ on disk";
    else if (item.present_bytes) state = fmtBytes(item.present_bytes) + " (resumes)";
    tr.append(el("td", "num", state));
    rows.append(tr);
  }
  if (!plan.items.length) {
    const tr = el("tr");
    const td = el("td", "hint", "This source announces its files as it goes (an Ollama server pulls them itself).");
    td.colSpan = 3;
    tr.append(td);
    rows.append(tr);
  }
  renderQuantPicker(plan);
  const notes = $("plan-notes");
  notes.textContent = "";
  for (const n of plan.notes) {
    if (plan.quantizations.length && n.startsWith("Quantizations:")) continue; // the picker shows it
    const li = el("li");
    setRichText(li, pagePhrase(n, "form"));
    notes.append(li);
  }
  box.hidden = false;
}

function renderQuantPicker(plan) {
  const picker = $("quant-picker");
  const list = $("quants");
  list.textContent = "";
  picker.hidden = !plan.quantizations.length;
  for (const q of plan.quantizations) {
    const label = el("label", "quant" + (q.chosen ? " chosen" : ""));
    const radio = el("input");
    radio.type = "radio";
    radio.name = "quant";
    radio.value = q.reference;
    radio.checked = q.chosen;
    radio.addEventListener("change", () => {
      $("model").value = q.reference;
      checkPlan();
    });
    const name = el("span", "qname", q.name);
    const size = el("span", "qsize", fmtBytes(q.size));
    label.append(radio, name, size);
    if (q.projector) label.append(el("span", "qextra", "+ projector " + fmtBytes(q.projector_size)));
    if (q.files.length > 1) label.append(el("span", "qextra", q.files.length + " parts"));
    if (q.default) label.append(el("span", "tag", "default"));
    label.title = q.files.join("\n") + (q.projector ? "\n" + q.projector : "");
    list.append(label);
  }
}

$("start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = requestBody();
  if (!body) return;
  $("start").disabled = true;
  try {
    const data = await api("/downloads", { method: "POST", body: JSON.stringify(body) });
    $("token").value = "";
    hidePlan();
    upsertJob(data.job);
  } catch (e) {
    formError(e);
  } finally {
    $("start").disabled = false;
  }
});

// ---- jobs ----------------------------------------------------------------------------
const ACTION_LABELS = {
  pause: "Pause", resume: "Resume", retry: "Retry", cancel: "Cancel", remove: "Remove from list",
};
const ACTION_CLASSES = { pause: "secondary", resume: "", retry: "", cancel: "danger", remove: "quiet" };
const FINISHED = new Set(["complete", "error", "cancelled"]);

function jobActions(job) {
  if (Array.isArray(job.actions)) return job.actions;
  return job.state === "running" ? ["cancel"] : ["remove"];
}

function jobCard(id) {
  let entry = jobs.get(id);
  if (entry) return entry;
  const card = el("li", "card job");
  card.dataset.id = id;
  const top = el("div", "top");
  const left = el("div", "who");
  left.append(el("div", "name"), el("div", "sub"));
  top.append(left, el("div", "buttons"));
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.appendChild(el("div"));
  const files = el("details", "files-box");
  files.hidden = true;
  files.append(el("summary"), el("ul", "file-rows"));
  files.addEventListener("toggle", () => renderFiles(jobs.get(id)));
  const tokenRow = el("form", "token-row");
  tokenRow.hidden = true;
  card.append(top, bar, el("div", "stats"), el("div", "msg"), el("div", "done-line"),
              el("div", "where"), tokenRow, files);
  entry = { card, job: null, files: null };
  jobs.set(id, entry);
  $("jobs").prepend(card);
  $("no-jobs").hidden = true;
  return entry;
}

function upsertJob(job) {
  const entry = jobCard(job.id);
  const card = entry.card;
  // The POST answer and the live feed race: never let an older view overwrite a newer one.
  const seq = Number(job.last_event_id || 0);
  const seen = Number(card.dataset.seq || 0);
  if (seq < seen) return;
  card.dataset.seq = String(seq);
  entry.job = job;
  if (online) card.classList.remove("stale");
  const p = job.progress || {};
  if (Array.isArray(p.files)) entry.files = p.files;
  const state = job.state;
  card.classList.remove("running", "paused", "complete", "error", "cancelled");
  card.classList.add(state);
  card.dataset.state = state;
  card.querySelector(".name").textContent = job.model;
  const source = sourceOf(job.provider);
  const sub = card.querySelector(".sub");
  sub.textContent = (source ? source.title : job.provider) + " · ";
  const badgeText = state === "running" ? (p.status || "starting") : state === "error" ? "failed" : state;
  sub.appendChild(el("span", "badge " + state, badgeText));
  sub.appendChild(el("span", "stale-tag", " · last known state"));

  const percent = Math.max(0, Math.min(100, p.percent || 0));
  const shown = fmtPercent(percent);
  const bar = card.querySelector(".bar");
  bar.setAttribute("aria-valuenow", shown);
  bar.firstChild.style.width = percent + "%";

  const stats = [];
  if (p.total_bytes !== null && p.total_bytes !== undefined) {
    stats.push(fmtBytes(p.downloaded_bytes || 0) + " / " + fmtBytes(p.total_bytes) + " (" + shown + "%)");
  } else if (p.downloaded_bytes) {
    stats.push(fmtBytes(p.downloaded_bytes));
  }
  if (state === "running" && p.speed_bps) stats.push(fmtBytes(p.speed_bps) + "/s");
  if (state === "running" && p.status === "downloading" && p.eta_seconds !== null && p.eta_seconds !== undefined) {
    stats.push(fmtDuration(p.eta_seconds) + " left");
  }
  card.querySelector(".stats").textContent = stats.join(" · ");

  const msg = card.querySelector(".msg");
  msg.className = "msg" + (state === "error" ? " failed" : state === "complete" ? " done" : "");
  let text = p.message || "";
  if (state === "complete" && p.path && text.endsWith(" to " + p.path)) text = text.slice(0, -(" to " + p.path).length);
  if (state === "error") text = "Error: " + pagePhrase(text || "failed", "job");
  else text = pagePhrase(text, "job");
  setRichText(msg, text);

  const doneLine = card.querySelector(".done-line");
  doneLine.textContent = "";
  if (state === "complete") doneLine.textContent = doneSummary(job, p);

  const where = card.querySelector(".where");
  if (state === "complete" && p.path) copyable(where, p.path); else where.textContent = "";

  renderTokenRow(entry);
  renderButtons(entry);
  renderFiles(entry);
  updateClearButton();
  if (state !== "running" && card.dataset.counted !== state) {
    card.dataset.counted = state;
    scheduleInventory();
  }
}

function doneSummary(job, p) {
  const parts = [];
  if (!p.speed_bps) parts.push("Already on disk: nothing had to be fetched");
  if (job.finished_at && job.created_at) {
    const took = Math.max(0, job.finished_at - job.created_at);
    const span = took < 10 ? took.toFixed(1) + "s" : fmtDuration(took);
    parts.push(job.runs > 1 ? "done " + span + " after it was first started (" + job.runs + " runs)" : "took " + span);
  }
  if (p.speed_bps) parts.push("average " + fmtBytes(p.speed_bps) + "/s");
  const text = parts.join(" · ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function renderButtons(entry) {
  const job = entry.job;
  const box = entry.card.querySelector(".buttons");
  const actions = jobActions(job).filter((a) => !(a === "resume" && job.needs_token));
  const signature = actions.join(",");
  if (box.dataset.actions === signature) {
    for (const b of box.children) b.disabled = false;
    return;
  }
  box.dataset.actions = signature;
  box.textContent = "";
  for (const action of actions) {
    const b = button(ACTION_LABELS[action] || action, ACTION_CLASSES[action] || "quiet",
                     () => jobAction(job.id, action, b));
    b.dataset.action = action;
    box.append(b);
  }
}

const TOKEN_CODES = new Set(["gated", "auth_required"]);
function needsTokenRow(job) {
  if (job.state === "paused" && job.needs_token) return true;
  const code = job.progress && job.progress.error_code;
  return job.state === "error" && TOKEN_CODES.has(code) && jobActions(job).includes("retry");
}

function renderTokenRow(entry) {
  const job = entry.job;
  const row = entry.card.querySelector(".token-row");
  const wanted = needsTokenRow(job);
  row.hidden = !wanted;
  if (!wanted || row.childElementCount) return;
  const input = el("input");
  input.type = "password";
  input.autocomplete = "off";
  input.placeholder = "Token";
  input.setAttribute("aria-label", "Token for " + job.model);
  const go = el("button", "", job.state === "paused" ? "Resume with this token" : "Retry with this token");
  go.type = "submit";
  row.append(input, go);
  row.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) { input.focus(); return; }
    go.disabled = true;
    try {
      const data = await api("/downloads/" + encodeURIComponent(job.id) + "/resume",
                             { method: "POST", body: JSON.stringify({ token }) });
      input.value = "";
      row.textContent = "";
      upsertJob(data);
    } catch (e) {
      go.disabled = false;
      showJobError(entry, e);
    }
  });
}

function renderFiles(entry) {
  if (!entry || !entry.files) return;
  const box = entry.card.querySelector(".files-box");
  const files = entry.files;
  box.hidden = !files.length;
  // layers are named by their digest ("sha256:…", or a label and its first 12 hex digits)
  const layers = files.some((f) => /^sha256[:-]|\b[0-9a-f]{12}$/.test(f.name));
  const done = files.filter((f) => f.size !== null && f.present >= f.size).length;
  box.querySelector("summary").textContent =
    (layers ? "Layers" : "Files") + " (" + done + " of " + files.length + " done)";
  if (!box.open) return;
  const list = box.querySelector(".file-rows");
  list.textContent = "";
  for (const f of files) {
    const complete = f.size !== null && f.present >= f.size;
    const li = el("li", "file-row" + (complete ? " complete" : f.present ? " partial" : ""));
    const digest = /^(sha256[:-])([0-9a-f]{64})$/.exec(f.name);
    const fname = el("span", "fname", digest ? digest[1] + digest[2].slice(0, 12) + "…" : f.name);
    fname.title = f.name;
    li.append(fname);
    const mini = el("span", "mini");
    const fill = el("span");
    fill.style.width = (f.size ? Math.min(100, 100 * f.present / f.size) : 0) + "%";
    mini.append(fill);
    li.append(mini);
    let state = complete ? "✓ " + fmtBytes(f.size) : fmtBytes(f.present) + " / " + fmtBytes(f.size);
    if (!complete && !f.present) state = "waiting · " + fmtBytes(f.size);
    li.append(el("span", "fsize", state));
    list.append(li);
  }
}

function showJobError(entry, e) {
  const msg = entry.card.querySelector(".msg");
  msg.className = "msg failed";
  setRichText(msg, pagePhrase(e.message, "job") + (e.code ? " (" + e.code + ")" : ""));
}

function removeJob(id) {
  const entry = jobs.get(id);
  if (entry) entry.card.remove();
  jobs.delete(id);
  $("no-jobs").hidden = jobs.size > 0;
  updateClearButton();
}

async function jobAction(id, action, b) {
  const entry = jobs.get(id);
  if (b) b.disabled = true;
  const path = "/downloads/" + encodeURIComponent(id);
  try {
    let data;
    if (action === "pause" || action === "resume" || action === "retry") {
      data = await api(path + "/" + (action === "pause" ? "pause" : "resume"), { method: "POST", body: "{}" });
    } else {
      data = await api(path, { method: "DELETE" });
    }
    if (data && data.removed) removeJob(id); else if (data && data.id) upsertJob(data);
  } catch (e) {
    if (e.status === 404) { removeJob(id); return; }
    if (b) b.disabled = false;
    if (entry) showJobError(entry, e);
  }
}

function updateClearButton() {
  let finished = 0;
  for (const entry of jobs.values()) if (entry.job && FINISHED.has(entry.job.state)) finished++;
  const b = $("clear-finished");
  b.hidden = finished === 0;
  b.textContent = "Clear finished from list (" + finished + ")";
}
$("clear-finished").addEventListener("click", async () => {
  const b = $("clear-finished");
  b.disabled = true;
  const finished = Array.from(jobs.values()).filter((e) => e.job && FINISHED.has(e.job.state));
  await Promise.all(finished.map((e) => jobAction(e.job.id, "remove")));
  b.disabled = false;
  updateClearButton();
});

// One stream carries every job's changes (one connection, whatever the number of jobs).
// It starts with the state of every job, so a reconnect cannot miss anything.
async function followJobs() {
  if (feedAbort) feedAbort.abort();
  const abort = new AbortController();
  feedAbort = abort;
  let delay = 500;
  let attempts = 0;
  while (!abort.signal.aborted) {
    try {
      const res = await fetch(API + "/events?format=ndjson", { headers: headers(), signal: abort.signal });
      if (res.status === 401) { needKey(); setOnline(false, "API key needed"); return; }
      if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
      const known = await api("/downloads");
      const ids = new Set(known.jobs.map((j) => j.id));
      for (const id of Array.from(jobs.keys())) if (!ids.has(id)) removeJob(id);
      setOnline(true);
      for (const job of known.jobs.slice().reverse()) upsertJob(job);
      delay = 500;
      attempts = 0;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (!line) continue;
          const message = JSON.parse(line);
          if (message.type === "job") upsertJob(message.job);
          else if (message.type === "removed") removeJob(message.id);
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    attempts++;
    connectionLost(attempts > 1 ? "Trying again (attempt " + attempts + ")…" : "Trying again…");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 4000);
  }
}

// ---- inventory ---------------------------------------------------------------------
function scheduleInventory() {
  clearTimeout(inventoryTimer);
  inventoryTimer = setTimeout(loadInventory, 300);
}

async function loadInventory() {
  let data;
  try {
    data = await api("/models");
  } catch (e) {
    $("inventory-notes").textContent = pagePhrase(e.message, "form");
    return;
  }
  loadPartials();
  const list = $("models");
  list.textContent = "";
  for (const m of data.models) list.appendChild(modelCard(m));
  const notes = data.notes.slice();
  if (!data.models.length) notes.unshift("No models downloaded yet.");
  $("inventory-notes").textContent = notes.join(" ");
}

function modelCard(m) {
  const card = el("li", "card model");
  card.dataset.provider = m.provider;
  card.dataset.name = m.name;
  const top = el("div", "top");
  const left = el("div", "who");
  const name = el("div", "name", m.name);
  left.appendChild(name);
  const sub = el("div", "sub");
  sub.append(el("span", "kind", m.kind));
  let size = fmtBytes(m.size_bytes);
  if (m.partial_bytes) size += " + " + fmtBytes(m.partial_bytes) + " unfinished";
  sub.append(" · " + size + " · " + m.where + (m.complete ? "" : " · incomplete"));
  left.appendChild(sub);
  const del = button("Delete from disk", "danger", async () => {
    const what = "from " + m.where;
    if (!confirm("Delete " + m.name + " " + what + "? This frees " + fmtBytes(m.size_bytes) + ".")) return;
    del.disabled = true;
    const path = m.name.split("/").map(encodeURIComponent).join("/");
    try {
      await api("/models/" + encodeURIComponent(m.provider) + "/" + path, { method: "DELETE" });
      card.remove();
      scheduleInventory();
    } catch (e) {
      del.disabled = false;
      $("inventory-notes").textContent = pagePhrase(e.message, "form");
    }
  });
  if (!m.path) del.textContent = "Delete from " + m.where;  // held by a server, not a folder here
  top.append(left, del);
  card.appendChild(top);
  if (m.path) {
    const where = el("div", "where");
    copyable(where, m.path);
    card.appendChild(where);
  }
  return card;
}
$("refresh").addEventListener("click", loadInventory);

// ---- unfinished downloads ------------------------------------------------------------------
function fmtAgo(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 90) return "just now";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}

async function loadPartials() {
  let data;
  try {
    data = await api("/models?partial=true");
  } catch (e) {
    $("partials-box").hidden = true;
    $("models-heading").hidden = true;
    return;
  }
  // A running or paused job's card already tells (and resumes) its download.
  const busy = new Set();
  for (const entry of jobs.values()) {
    if (entry.job && (entry.job.state === "running" || entry.job.state === "paused")) {
      busy.add(entry.job.provider + " " + entry.job.model);
    }
  }
  const groups = new Map();
  for (const p of data.partials || []) {
    const key = p.provider + " " + p.model;
    if (busy.has(key)) continue; // its job card tells its progress
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(p);
  }
  const list = $("partials");
  list.textContent = "";
  for (const parts of groups.values()) list.append(partialCard(parts));
  $("partials-box").hidden = groups.size === 0;
  $("models-heading").hidden = groups.size === 0;
}

function partialCard(parts) {
  const first = parts[0];
  const known = first.model && first.model !== "?";
  const card = el("li", "card partial");
  card.dataset.provider = first.provider;
  card.dataset.name = first.model;
  const top = el("div", "top");
  const left = el("div", "who");
  left.append(el("div", "name", known ? first.model : "Unknown model (" + parts.length + " unfinished file"
    + (parts.length > 1 ? "s" : "") + ")"));
  const present = parts.reduce((n, p) => n + p.present_bytes, 0);
  const totals = parts.every((p) => p.total_bytes !== null) ? parts.reduce((n, p) => n + p.total_bytes, 0) : null;
  const source = sourceOf(first.provider);
  let text = fmtBytes(present) + (totals ? " of " + fmtBytes(totals) : "") + " on disk";
  text += " · " + (source ? source.title : first.provider);
  text += " · last activity " + fmtAgo(Math.max(...parts.map((p) => p.modified)));
  if (first.left_by !== "modelpull") text += " · left by " + first.left_by;
  left.append(el("div", "sub", text));
  const files = el("div", "sub", parts.map((p) => p.file).join(", "));
  left.append(files);
  const buttons = el("div", "buttons");
  if (known) {
    const resume = button("Resume download", "", async () => {
      resume.disabled = true;
      try {
        const body = { provider: first.provider, model: first.model };
        const data = await api("/downloads", { method: "POST", body: JSON.stringify(body) });
        upsertJob(data.job);
        card.remove();
      } catch (e) {
        resume.disabled = false;
        setRichText(files, pagePhrase(e.message, "form"));
      }
    });
    const discard = button("Discard unfinished data", "danger", async () => {
      if (!confirm("Discard the " + fmtBytes(present) + " downloaded so far of " + first.model
                   + "? A later download starts from zero.")) return;
      discard.disabled = true;
      const path = first.model.split("/").map(encodeURIComponent).join("/");
      try {
        await api("/models/" + encodeURIComponent(first.provider) + "/" + path + "?partial=true",
                  { method: "DELETE" });
        card.remove();
        scheduleInventory();
      } catch (e) {
        discard.disabled = false;
        setRichText(files, pagePhrase(e.message, "form"));
      }
    });
    buttons.append(resume, discard);
  }
  top.append(left, buttons);
  card.append(top);
  return card;
}

// ---- start -----------------------------------------------------------------------------
async function boot() {
  for (let attempt = 0; ; attempt++) {
    try {
      await loadProviders();
      break;
    } catch (e) {
      if (e.status === 401) { setOnline(false, "API key needed"); return; }
      setOnline(false, "Not connected");
      formError(e);
      await new Promise((r) => setTimeout(r, Math.min(4000, 500 * 2 ** attempt)));
    }
  }
  formError(null);
  booted = true;
  followJobs();
  loadInventory();
}
boot();
