// clarion dashboard: a static page that asks for an API key, keeps it in sessionStorage and
// polls the API's JSON endpoints with it. Every value from the server goes in as text (never HTML).
"use strict";

const KEY = "clarion.key";
const POLL_MS = 2000;
const SLOW_POLL_MS = 5000;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class AuthFailed extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Authorization: `Bearer ${key}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const resp = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = { error: `HTTP ${resp.status}` }; }
  if (resp.status === 401) throw new AuthFailed(body.error || "invalid API key");
  return { status: resp.status, ok: resp.ok, body };
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function statusBadge(status) {
  return el("span", { class: `status ${status}`, text: status });
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", { class: "empty", colspan: String(columns), text: empty })));
    return;
  }
  for (const row of rows) tbody.append(row);
}

function showError(message) {
  $("#error").textContent = message || "";
}

// ---------- lanes ----------
const KNOWN = ["accepted", "sent", "retrying", "failed", "dead_lettered", "suppressed", "duplicate"];
let previous = null;  // the last lanes answer: rates are the difference to the next one

async function loadLanes() {
  const { body } = await api("/ui/api/lanes");
  const rows = new Map();
  const key = (lane, channel) => `${lane}/${channel}`;
  for (const c of body.counts) {
    const k = key(c.lane, c.channel);
    if (!rows.has(k)) rows.set(k, { lane: c.lane, channel: c.channel, counts: {}, total: 0 });
    const row = rows.get(k);
    row.counts[c.status] = (row.counts[c.status] || 0) + c.n;
    row.total += c.n;
  }
  const latency = new Map(body.latency.map((l) => [key(l.lane, l.channel), l]));
  const dt = previous ? body.now - previous.now : 0;
  const trs = [];
  for (const [k, row] of [...rows.entries()].sort()) {
    const before = previous && previous.rows.get(k);
    const rate = (n, m) => (dt > 0 && before ? ((n - m) / dt).toFixed(1) : "—");
    const other = row.total - KNOWN.reduce((sum, s) => sum + (row.counts[s] || 0), 0);
    const lat = latency.get(k);
    const ms = (v) => (lat ? `${v} ms` : "—");
    trs.push(el("tr", {},
      el("td", { text: row.lane }), el("td", { text: row.channel === "-" ? "(routing)" : row.channel }),
      ...KNOWN.map((s) => el("td", { class: "num", text: row.counts[s] || 0 })),
      el("td", { class: "num", text: other }),
      el("td", { class: "num", text: rate(row.counts.sent || 0, before ? before.counts.sent || 0 : 0) }),
      el("td", { class: "num", text: rate(row.total, before ? before.total : 0) }),
      el("td", { class: "num", text: lat ? ms(lat.p50_ms) : "—" }),
      el("td", { class: "num", text: lat ? ms(lat.p95_ms) : "—" }),
      el("td", { class: "num", text: lat ? ms(lat.max_ms) : "—" })));
  }
  previous = { now: body.now, rows };
  $("#lanes-since").textContent = body.since ? new Date(body.since * 1000).toLocaleString() : "—";
  fill($("#lanes tbody"), trs, 15, "no outcomes yet for this client");
}

// ---------- recent outcomes ----------
async function loadOutcomes() {
  const params = new URLSearchParams({ limit: "200" });
  for (const [name, value] of new FormData($("#outcome-filters"))) if (value) params.set(name, value);
  const { body } = await api(`/ui/api/outcomes?${params}`);
  const trs = body.outcomes.map((o) => el("tr", { "data-nid": o.notification_id },
    el("td", { class: "mono", text: when(o.ts) }),
    el("td", {}, el("a", { class: "nid mono", text: o.notification_id, onclick: () => lookUpStatus(o.notification_id) })),
    el("td", { text: o.user_id }),
    el("td", { text: o.lane }),
    el("td", { text: o.channel || "—" }),
    el("td", {}, statusBadge(o.status)),
    el("td", { class: "num", text: o.attempt || "" }),
    el("td", { text: o.reason || (o.duplicate_of ? `duplicate of ${o.duplicate_of}` : "") })));
  fill($("#outcomes tbody"), trs, 8, "nothing matches (outcomes are read from when the dashboard opened, and a little before)");
}

// ---------- dead letters ----------
async function loadDlq() {
  const { body } = await api("/ui/api/dlq");
  const canSend = me && me.scopes.includes("send");
  const trs = body.letters.map((d) => {
    let action;
    if (d.replayed_at) action = el("span", { class: "status sent", text: "replayed" });
    else if (d.replayable && canSend) action = el("button", { type: "button", text: "Replay", onclick: (ev) => replay(d.id, ev.target) });
    else action = el("code", { text: d.cli, title: "run where CLARION_KAFKA and CLARION_REDIS are set" });
    return el("tr", {},
      el("td", { class: "mono", text: when(d.ts) }), el("td", { class: "mono", text: d.id }),
      el("td", { class: "mono", text: d.source, title: d.source_topic }), el("td", { text: d.reason }),
      el("td", { class: "mono clip", text: d.notification_id || "", title: d.notification_id || "" }),
      el("td", {}, action));
  });
  fill($("#dlq tbody"), trs, 6, "no dead letters for this client");
}

async function replay(id, button) {
  button.disabled = true;
  const { ok, body } = await api("/ui/api/dlq/replay", { method: "POST", body: JSON.stringify({ ids: [id] }) });
  if (!ok) { showError(body.error); button.disabled = false; return; }
  await loadDlq();
}

// ---------- campaigns ----------
function progressBar(pct) {
  const fillSpan = el("span");
  fillSpan.style.width = `${pct}%`;  // CSSOM, which the page's CSP allows (a style attribute it would not)
  return el("span", { class: "bar", title: `${pct}%` }, fillSpan);
}

async function loadCampaigns() {
  const { ok, body } = await api("/ui/api/campaigns?limit=100");
  if (!ok) { $("#campaigns-note").textContent = body.error || ""; return; }
  $("#campaigns-note").textContent = body.complete ? "" : "(some partitions did not answer)";
  const trs = body.rows.map((c) => {
    const n = c.counters;
    const done = n.sent + n.failed + n.dead + n.cancelled;
    const total = n.executions || n.expanded || 0;
    const pct = total ? Math.min(100, Math.round((100 * done) / total)) : (c.state === "done" ? 100 : 0);
    const skipped = Object.values(n.skipped || {}).reduce((a, b) => a + b, 0);
    return el("tr", {},
      el("td", {}, el("a", { class: "nid mono", text: c.campaign_id, onclick: () => lookUpCampaign(c.campaign_id) })),
      el("td", {}, statusBadge(c.state)), el("td", { class: "mono", text: c.template }),
      el("td", {}, progressBar(pct), `${done}/${total}`),
      el("td", { class: "num", text: n.sent }), el("td", { class: "num", text: n.failed + n.dead }),
      el("td", { class: "num", text: skipped }));
  });
  fill($("#campaigns tbody"), trs, 7, "no campaigns");
}

// ---------- templates ----------
let templates = [];

async function loadTemplates() {
  if (!me || !me.scopes.includes("templates")) {
    $("#template-source").replaceChildren(el("dd", { class: "err", text: "this key lacks the templates scope" }));
    return;
  }
  const { body } = await api("/ui/api/templates");
  templates = body.templates;
  const select = $("#preview-form [name=template_id]");
  const chosen = select.value;
  select.replaceChildren(...templates.map((t) => el("option", { value: t.template_id, text: t.template_id })));
  if (chosen) select.value = chosen;
  await chooseTemplate();
}

async function chooseTemplate() {
  const form = $("#preview-form");
  const t = templates.find((x) => x.template_id === form.template_id.value);
  if (!t) return;
  const version = form.version.value;
  form.version.replaceChildren(...[...t.versions].reverse().map((v) => el("option", { value: String(v), text: String(v) })));
  if (version && t.versions.includes(Number(version))) form.version.value = version;
  await chooseVersion();
}

async function chooseVersion() {
  const form = $("#preview-form");
  const path = `/ui/api/templates/${encodeURIComponent(form.template_id.value)}/${encodeURIComponent(form.version.value)}`;
  const { ok, body } = await api(path);
  if (!ok) return;
  const channel = form.channel.value;
  form.channel.replaceChildren(...body.channels.map((c) => el("option", { text: c })));
  if (body.channels.includes(channel)) form.channel.value = channel;
  $("#template-source").replaceChildren(...Object.entries(body.parts).flatMap(([part, source]) =>
    [el("dt", { text: part }), el("dd", { text: source })]));
  const names = new Set();
  for (const source of Object.values(body.parts)) {
    for (const m of source.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]);
  }
  const params = form.params;
  try {
    const current = JSON.parse(params.value || "{}");
    for (const name of names) if (!(name in current) && name !== "user") current[name] = "";
    params.value = JSON.stringify(current);
  } catch (e) { /* the user's text: leave it */ }
}

async function renderPreview(event) {
  event.preventDefault();
  const form = $("#preview-form");
  const out = $("#template-preview");
  let params;
  try { params = JSON.parse(form.params.value || "{}"); } catch (e) {
    out.replaceChildren(el("dd", { class: "err", text: `params are not JSON: ${e.message}` }));
    return;
  }
  const request = { template_id: form.template_id.value, version: Number(form.version.value), channel: form.channel.value, params };
  const { ok, body } = await api("/ui/api/templates/preview", { method: "POST", body: JSON.stringify(request) });
  if (!ok) { out.replaceChildren(el("dd", { class: "err", text: body.error })); return; }
  out.replaceChildren(...Object.entries(body.rendered).flatMap(([part, text]) =>
    [el("dt", { text: part }), el("dd", { text })]));
}

// ---------- tables ----------
function recordView(target, status, body) {
  const rows = [];
  const add = (name, value) => rows.push(el("tr", {}, el("td", { text: name }),
    el("td", { class: "mono", text: typeof value === "object" && value !== null ? JSON.stringify(value) : String(value) })));
  if (status !== 200) add("error", body.error || `HTTP ${status}`);
  else for (const [name, value] of Object.entries(body)) add(name, value);
  $(target).replaceChildren(el("table", {}, el("tbody", {}, ...rows)));
}

function showTab(name) {
  for (const b of $$("#tables .tabs button")) b.classList.toggle("on", b.dataset.tab === name);
  for (const p of $$("#tables [data-pane]")) p.hidden = p.dataset.pane !== name;
  if (name === "users") guarded(() => loadUsers(""));
  if (name === "suppressed") guarded(() => loadSuppressed(""));
}

async function lookUpStatus(id) {
  showTab("status");
  $("#status-form [name=id]").value = id;
  const { status, body } = await api(`/notif/${encodeURIComponent(id)}`);
  recordView("#status-view", status, body);
}

async function lookUpCampaign(id) {
  showTab("campaign");
  $("#campaign-form [name=id]").value = id;
  const { status, body } = await api(`/promo/${encodeURIComponent(id)}`);
  recordView("#campaign-view", status, body);
}

const cursors = { users: [], suppressed: [] };

async function loadPage(name, after, render, columns) {
  const { ok, body } = await api(`/ui/api/${name}?limit=50&after=${encodeURIComponent(after)}`);
  const note = $(`#${name}-note`);
  if (!ok) { note.textContent = body.error || ""; return; }
  const trs = body.rows.flatMap(render);
  fill($(`#${name}-table tbody`), trs, columns, "none");
  cursors[name] = body.more && body.rows.length ? [after, body.rows[body.rows.length - 1].user_id] : [after, null];
  $(`#${name}-next`).disabled = !cursors[name][1];
  note.textContent = body.complete ? "" : "(some partitions did not answer)";
}

function loadUsers(after) {
  return loadPage("users", after, (u) => [el("tr", {},
    el("td", { class: "mono", text: u.user_id }), el("td", { class: "mono", text: u.email || "" }),
    el("td", { class: "mono", text: u.phone || "" }),
    el("td", { text: `apns ${u.apns_tokens}, fcm ${u.fcm_tokens}` }), el("td", { text: `${u.locale} ${u.timezone}` }),
    el("td", { text: u.tags.join(", ") }), el("td", { text: u.attributes.join(", ") }),
    el("td", { text: [u.promo_opt_out ? "promo" : "", ...u.channel_opt_out].filter(Boolean).join(", ") }))], 8);
}

function loadSuppressed(after) {
  return loadPage("suppressed", after, (s) => s.entries.map((e) => el("tr", {},
    el("td", { class: "mono", text: e.user_id }), el("td", { text: e.channel }),
    el("td", { class: "mono", text: e.address }), el("td", { text: e.reason }))), 4);
}

// ---------- wiring ----------
let me = null;
let timers = [];

async function guarded(load) {
  try {
    await load();
    $("#live").classList.remove("stale");
  } catch (e) {
    if (e instanceof AuthFailed) { signOut(e.message); return; }
    $("#live").classList.add("stale");
    showError(String(e.message || e));
  }
}

function every(ms, ...loads) {
  const run = () => { if (!document.hidden) for (const load of loads) guarded(load); };
  run();
  timers.push(setInterval(run, ms));
}

async function start() {
  try {
    const { ok, body } = await api("/ui/api/me");
    if (!ok) { signOut(body.error); return; }
    me = body;
  } catch (e) {
    if (e instanceof AuthFailed) { signOut(e.message); return; }
    showError(String(e.message || e));
    return;
  }
  showError("");
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#signout").hidden = false;
  $("#live").hidden = false;
  $("#client").hidden = false;
  $("#client").textContent = `client ${me.client_id}`;
  every(POLL_MS, loadLanes, loadOutcomes, loadDlq);
  every(SLOW_POLL_MS, loadCampaigns);
  guarded(loadTemplates);
}

function signOut(message) {
  for (const t of timers) clearInterval(t);
  timers = [];
  sessionStorage.removeItem(KEY);
  me = null;
  previous = null;
  $("#dashboard").hidden = true;
  $("#signout").hidden = true;
  $("#live").hidden = true;
  $("#client").hidden = true;
  $("#login").hidden = false;
  showError(message || "");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#key").value = "";
    start();
  });
  $("#signout").addEventListener("click", () => signOut(""));
  $("#outcome-filters").addEventListener("input", () => guarded(loadOutcomes));
  $("#outcome-filters").addEventListener("submit", (event) => event.preventDefault());
  $("#preview-form").addEventListener("submit", (event) => guarded(() => renderPreview(event)));
  $("#preview-form [name=template_id]").addEventListener("change", () => guarded(chooseTemplate));
  $("#preview-form [name=version]").addEventListener("change", () => guarded(chooseVersion));
  $("#status-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => lookUpStatus($("#status-form [name=id]").value.trim()));
  });
  $("#campaign-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => lookUpCampaign($("#campaign-form [name=id]").value.trim()));
  });
  for (const b of $$("#tables .tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#users-first").addEventListener("click", () => guarded(() => loadUsers("")));
  $("#users-next").addEventListener("click", () => guarded(() => loadUsers(cursors.users[1] || "")));
  $("#suppressed-first").addEventListener("click", () => guarded(() => loadSuppressed("")));
  $("#suppressed-next").addEventListener("click", () => guarded(() => loadSuppressed(cursors.suppressed[1] || "")));
  if (sessionStorage.getItem(KEY)) start(); else signOut("");
});
