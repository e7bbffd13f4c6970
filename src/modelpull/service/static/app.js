// modelpull web page: start downloads, watch every job live, manage local models.
// Plain JavaScript, no build step. All data goes into the page as text, never as HTML.
"use strict";

const API = document.body.dataset.api || "/api/models";
const KEY_NAME = "modelpull-api-key";
const $ = (id) => document.getElementById(id);
const jobs = new Map(); // job id -> card element

let apiKey = sessionStorage.getItem(KEY_NAME) || "";
let feedAbort = null;
let inventoryTimer = null;

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

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.body ? { "Content-Type": "application/json" } : {});
  const res = await fetch(API + path, opts);
  if (res.status === 401) needKey();
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    const message = (data && (data.message || data.detail)) || ("HTTP " + res.status);
    throw new ApiError(res.status, data && data.error_code, typeof message === "string" ? message : JSON.stringify(message));
  }
  return data;
}

// ---- formatting -----------------------------------------------------------------
function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n, i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? v + " B" : v.toFixed(1) + " " + units[i];
}
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return s + "s";
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
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

// ---- start form --------------------------------------------------------------------
// Every source, as the service declares it (GET /providers): names, examples, options.
let SOURCES = [];

async function loadProviders() {
  const data = await api("/providers");
  SOURCES = data.providers;
  const select = $("provider");
  const current = select.value || "huggingface";
  select.textContent = "";
  for (const p of SOURCES) {
    const option = el("option", "", p.title + " (" + p.name + ")");
    option.value = p.name;
    option.title = p.summary;
    select.appendChild(option);
  }
  select.value = SOURCES.some((p) => p.name === current) ? current : SOURCES[0].name;
  updatePlaceholder();
}
function updatePlaceholder() {
  const source = SOURCES.find((p) => p.name === $("provider").value);
  $("model").placeholder = source ? source.example : "model name";
}
$("provider").addEventListener("change", updatePlaceholder);

$("start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = $("form-error");
  error.textContent = "";
  const body = { provider: $("provider").value, model: $("model").value.trim() };
  const token = $("token").value.trim();
  if (token) body.token = token;
  const baseUrl = $("base-url").value.trim();
  if (baseUrl) body.base_url = baseUrl;
  const rawOptions = $("options").value.trim();
  if (rawOptions) {
    try { body.options = JSON.parse(rawOptions); } catch (e) {
      error.textContent = "Options must be JSON, e.g. {\"revision\": \"main\"}";
      return;
    }
  }
  $("start").disabled = true;
  try {
    const data = await api("/downloads", { method: "POST", body: JSON.stringify(body) });
    $("token").value = "";
    upsertJob(data.job);
  } catch (e) {
    error.textContent = e.message + (e.code ? " (" + e.code + ")" : "");
  } finally {
    $("start").disabled = false;
  }
});

// ---- jobs ----------------------------------------------------------------------------
function jobCard(id) {
  let card = jobs.get(id);
  if (card) return card;
  card = el("li", "card job");
  card.dataset.id = id;
  const top = el("div", "top");
  const left = el("div");
  left.append(el("div", "name"), el("div", "sub"));
  const button = el("button", "quiet");
  button.type = "button";
  button.addEventListener("click", () => jobAction(id, button));
  top.append(left, button);
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.appendChild(el("div"));
  card.append(top, bar, el("div", "stats"), el("div", "msg"));
  jobs.set(id, card);
  $("jobs").prepend(card);
  $("no-jobs").hidden = true;
  return card;
}

function upsertJob(job) {
  const card = jobCard(job.id);
  // The POST answer and the live feed race: never let an older view overwrite a newer one.
  const seq = Number(job.last_event_id || 0);
  if (seq < Number(card.dataset.seq || 0)) return;
  card.dataset.seq = String(seq);
  const p = job.progress || {};
  const state = job.state;
  card.className = "card job " + state;
  card.dataset.state = state;
  card.querySelector(".name").textContent = job.model;
  const sub = card.querySelector(".sub");
  sub.textContent = job.provider + " · ";
  sub.appendChild(el("span", "badge " + state, state === "running" ? (p.status || "starting") : state));
  const percent = Math.max(0, Math.min(100, p.percent || 0));
  // 99.96 % is not done: show tenths rounded down, so only a finished download says 100 %.
  const shown = (Math.floor(percent * 10) / 10).toFixed(1);
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
  if (state === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined && p.speed_bps) {
    stats.push(fmtDuration(p.eta_seconds) + " left");
  }
  card.querySelector(".stats").textContent = stats.join(" · ");
  const msg = card.querySelector(".msg");
  msg.className = "msg" + (state === "error" || state === "cancelled" ? " error" : state === "complete" ? " done" : "");
  msg.textContent = state === "error" ? "Error: " + (p.message || "failed") : (p.message || "");
  const button = card.querySelector("button");
  button.textContent = state === "running" ? "Cancel" : "Remove";
  button.className = state === "running" ? "danger" : "quiet";
  button.disabled = false;
  if (state === "complete" && card.dataset.counted !== "1") {
    card.dataset.counted = "1";
    scheduleInventory();
  }
}

function removeJob(id) {
  const card = jobs.get(id);
  if (card) card.remove();
  jobs.delete(id);
  $("no-jobs").hidden = jobs.size > 0;
}

async function jobAction(id, button) {
  button.disabled = true;
  try {
    const data = await api("/downloads/" + encodeURIComponent(id), { method: "DELETE" });
    if (data && data.removed) removeJob(id); else if (data) upsertJob(data);
  } catch (e) {
    if (e.status === 404) removeJob(id);
    else { button.disabled = false; alert(e.message); }
  }
}

// One stream carries every job's changes (one connection, whatever the number of jobs).
async function followJobs() {
  if (feedAbort) feedAbort.abort();
  const abort = new AbortController();
  feedAbort = abort;
  let delay = 500;
  while (!abort.signal.aborted) {
    try {
      const res = await fetch(API + "/events?format=ndjson", { headers: headers(), signal: abort.signal });
      if (res.status === 401) { needKey(); setConn(false, "API key needed"); return; }
      if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
      setConn(true);
      delay = 500;
      for (const id of Array.from(jobs.keys())) removeJob(id); // the stream starts with every job
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
    setConn(false, "reconnecting…");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 8000);
  }
}

function setConn(up, text) {
  const conn = $("conn");
  conn.textContent = up ? "live" : text;
  conn.classList.toggle("down", !up);
}

// ---- inventory ---------------------------------------------------------------------
function scheduleInventory() {
  clearTimeout(inventoryTimer);
  inventoryTimer = setTimeout(loadInventory, 300);
}

async function loadInventory() {
  const list = $("models");
  let data;
  try {
    data = await api("/models");
  } catch (e) {
    $("inventory-notes").textContent = e.message;
    return;
  }
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
  const left = el("div");
  left.appendChild(el("div", "name", m.name));
  const label = m.provider + (m.mlx && m.provider === "huggingface" ? " · mlx" : "");
  let size = fmtBytes(m.size_bytes);
  if (m.partial_bytes) size += " + " + fmtBytes(m.partial_bytes) + " partial";
  left.appendChild(el("div", "sub", label + " · " + size + (m.complete ? "" : " · incomplete")));
  const button = el("button", "danger", "Delete");
  button.type = "button";
  button.addEventListener("click", async () => {
    if (!confirm("Delete " + m.name + " (" + fmtBytes(m.size_bytes) + ")?")) return;
    button.disabled = true;
    const path = m.name.split("/").map(encodeURIComponent).join("/");
    try {
      await api("/models/" + encodeURIComponent(m.provider) + "/" + path, { method: "DELETE" });
      card.remove();
      scheduleInventory();
    } catch (e) {
      button.disabled = false;
      $("inventory-notes").textContent = e.message;
    }
  });
  top.append(left, button);
  card.appendChild(top);
  return card;
}
$("refresh").addEventListener("click", loadInventory);

// ---- start -----------------------------------------------------------------------------
async function boot() {
  try {
    await loadProviders();
  } catch (e) {
    if (e.status !== 401) $("form-error").textContent = e.message;
    setConn(false, e.status === 401 ? "API key needed" : "offline");
    return;
  }
  followJobs();
  loadInventory();
}
boot();
