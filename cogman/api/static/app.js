// The cogman dashboard: reads the REST API of the page's own origin and renders with DOM nodes only.
// Every value from the API is set with textContent (never innerHTML), so a task named
// <img src=x onerror=alert(1)> shows as that text. No build step, no third-party script.
"use strict";

const STATUSES = ["initiated", "queued", "in_progress", "retry", "failed", "success", "cancelled"];
const PAGE = 20;
const REFRESH_MS = 5000;
const TOKEN_KEY = "cogman-api-token";

const state = { skip: 0, total: 0, filters: {}, detailId: null, timer: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child === null || child === undefined ? "" : String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

class AuthNeeded extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) throw new AuthNeeded();
  if (!response.ok) {
    const message = body && body.errors && body.errors.length ? body.errors[0].message : response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleString();
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const value = Number(seconds);
  if (value < 0.001) return `${(value * 1e6).toFixed(0)} µs`;
  if (value < 1) return `${(value * 1000).toFixed(1)} ms`;
  return `${value.toFixed(2)} s`;
}

function statusBadge(status) {
  return el("span", { className: `badge status-${STATUSES.includes(status) ? status : "unknown"}` }, status);
}

async function loadCounts() {
  const box = $("status-counts");
  const totals = await Promise.all(STATUSES.map((s) => api(`/list?status=${s}&limit=0`).then((b) => b.meta.total)));
  box.replaceChildren(...STATUSES.map((s, i) => el("div", { className: `count status-${s}` },
    el("span", { className: "number", "data-status": s }, totals[i]), el("span", { className: "label" }, s))));
}

async function loadChart() {
  const [minutes, interval] = $("chart-range").value.split(":").map(Number);
  const end = new Date();
  const start = new Date(end.getTime() - minutes * 60000);
  const query = `startDate=${encodeURIComponent(start.toISOString())}&endDate=${encodeURIComponent(end.toISOString())}&interval=${interval}`;
  const body = await api(`/daterangecount?${query}`);
  const slots = Math.max(1, Math.ceil(minutes / interval));
  const totals = new Array(slots).fill(0);
  const failed = new Array(slots).fill(0);
  for (const bucket of body.data) {
    const index = Math.floor((new Date(bucket.ID) - start) / (interval * 60000));
    if (index >= 0 && index < slots) { totals[index] += bucket.Total; failed[index] += bucket.CountFailed; }
  }
  const width = 600, height = 140, pad = 20;
  const top = Math.max(1, ...totals);
  const bar = (width - pad) / slots;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + pad}`, role: "img", "aria-label": "tasks created and failed over time" });
  chart.append(svg("line", { x1: pad, y1: height, x2: width, y2: height, class: "axis" }));
  totals.forEach((total, i) => {
    const x = pad + i * bar;
    const h = (total / top) * (height - 10);
    const f = (failed[i] / top) * (height - 10);
    const created = svg("rect", { x, y: height - h, width: Math.max(1, bar - 1), height: h, class: "bar-total" });
    const title = svg("title", {});
    title.textContent = `${new Date(start.getTime() + i * interval * 60000).toLocaleString()}: ${total} created, ${failed[i]} failed`;
    created.append(title);
    chart.append(created, svg("rect", { x, y: height - f, width: Math.max(1, bar - 1), height: f, class: "bar-failed" }));
  });
  const label = svg("text", { x: pad, y: 12, class: "chart-label" });
  label.textContent = `max ${top} per ${interval} min`;
  chart.append(label);
  $("chart").replaceChildren(chart);
}

async function loadQueues() {
  const body = await api("/info");
  $("app-name").textContent = body.data.app || "";
  const rows = body.data.queues.map((q) => el("tr", {}, el("td", {}, q.name), el("td", { className: "num" }, q.exists ? q.ready : "-"), el("td", { className: "num" }, q.consumers)));
  rows.push(el("tr", { className: "total" }, el("td", {}, "total"), el("td", { className: "num" }, body.data.total_task), el("td", { className: "num" }, body.data.total_consumers)));
  rows.push(el("tr", {}, el("td", {}, "delayed (cogman.delay.*)"), el("td", { className: "num" }, body.data.delayed), el("td", { className: "num" }, "-")));
  $("queues").tBodies[0].replaceChildren(...rows);
}

async function loadWorkers() {
  const body = await api("/workers");
  const rows = body.data.map((w) => el("tr", {}, el("td", {}, w.id), el("td", {}, (w.queues || []).join(", ")),
    el("td", { className: "num" }, w.concurrency), el("td", { className: "num" }, w.tasks_done), el("td", {}, formatTime(w.last_seen))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", className: "muted" }, "no worker reported")));
  $("workers").tBodies[0].replaceChildren(...rows);
}

async function loadTasks() {
  const params = new URLSearchParams({ skip: String(state.skip), limit: String(PAGE) });
  for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
  const body = await api(`/list?${params}`);
  state.total = body.meta.total;
  const rows = body.data.map((t) => {
    const row = el("tr", { className: "task-row", "data-task-id": t.task_id },
      el("td", { className: "mono" }, t.task_id), el("td", { className: "task-name" }, t.name), el("td", {}, statusBadge(t.status)),
      el("td", { className: "num" }, t.attempt), el("td", {}, formatTime(t.created_at)), el("td", { className: "num" }, formatDuration(t.duration)),
      el("td", { className: "task-error" }, t.fail_error || ""));
    row.addEventListener("click", () => openDetail(t.task_id));
    return row;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", className: "muted" }, "no task matches")));
  $("tasks").tBodies[0].replaceChildren(...rows);
  const first = state.total ? state.skip + 1 : 0;
  $("page-info").textContent = `${first}-${Math.min(state.skip + PAGE, state.total)} of ${state.total}`;
  $("prev").disabled = state.skip === 0;
  $("next").disabled = state.skip + PAGE >= state.total;
}

function pretty(value) {
  return value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
}

async function openDetail(taskId) {
  state.detailId = taskId;
  const body = await api(`/get?task_id=${encodeURIComponent(taskId)}`);
  const t = body.data;
  $("detail").hidden = false;
  $("detail-id").textContent = t.task_id;
  const fields = [["name", t.name], ["status", t.status], ["attempt", t.attempt], ["priority", t.priority],
    ["primary key", t.primary_key], ["original task", t.original_task_id], ["retries left", t.retry],
    ["duration", formatDuration(t.duration)], ["created", formatTime(t.created_at)], ["updated", formatTime(t.updated_at)]];
  $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  $("detail-payload").textContent = pretty(t.payload);
  $("detail-result").textContent = pretty(t.result);
  $("detail-error").textContent = t.fail_error || "";
  const attempts = body.meta.attempts.map((a) => {
    const row = el("tr", { className: "attempt-row", "data-task-id": a.task_id },
      el("td", { className: "num" }, a.attempt), el("td", { className: "mono" }, a.task_id), el("td", {}, statusBadge(a.status)),
      el("td", {}, formatTime(a.created_at)), el("td", { className: "num" }, formatDuration(a.duration)), el("td", {}, a.fail_error || ""));
    if (a.task_id === t.task_id) row.classList.add("current");
    row.addEventListener("click", () => openDetail(a.task_id));
    return row;
  });
  $("attempts").tBodies[0].replaceChildren(...attempts);
}

async function retryTask() {
  const result = $("retry-result");
  result.textContent = "";
  try {
    const body = await api("/retry", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ task_id: state.detailId, retry: Number($("retry-count").value) || 1, force: $("retry-force").checked }),
    });
    result.textContent = `retrying as ${body.data.task_id} (attempt ${body.data.attempt})`;
    result.className = "ok";
    await refresh();
  } catch (error) {
    if (error instanceof AuthNeeded) return askToken();
    result.textContent = error.message;
    result.className = "error";
  }
}

function askToken() {
  $("token-panel").hidden = false;
  showError("");
}

async function refresh() {
  try {
    await Promise.all([loadCounts(), loadChart(), loadQueues(), loadWorkers(), loadTasks()]);
    if (state.detailId) await openDetail(state.detailId);
    $("token-panel").hidden = true;
    showError("");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof AuthNeeded) askToken();
    else showError(error.message);
  }
}

function schedule() {
  clearInterval(state.timer);
  if ($("auto-refresh").checked) state.timer = setInterval(refresh, REFRESH_MS);
}

function readFilters() {
  state.filters = { status: $("filter-status").value, name: $("filter-name").value.trim(),
    primary_key: $("filter-pk").value.trim(), task_id: $("filter-id").value.trim() };
  state.skip = 0;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    refresh();
  });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); readFilters(); refresh(); });
  $("clear-filters").addEventListener("click", () => { $("filters").reset(); readFilters(); refresh(); });
  $("prev").addEventListener("click", () => { state.skip = Math.max(0, state.skip - PAGE); refresh(); });
  $("next").addEventListener("click", () => { state.skip += PAGE; refresh(); });
  $("refresh").addEventListener("click", refresh);
  $("auto-refresh").addEventListener("change", schedule);
  $("chart-range").addEventListener("change", refresh);
  $("retry-button").addEventListener("click", retryTask);
  $("close-detail").addEventListener("click", () => { state.detailId = null; $("detail").hidden = true; });
  refresh();
  schedule();
});
