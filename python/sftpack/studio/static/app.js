// sftpack studio: one page, five views, all data from the JSON API under /api.
"use strict";

const studio = { charts: {}, runs: {}, chat: [], pages: { records: 0, rows: 0, rejects: 0 } };
window.studio = studio;

const $ = (selector) => document.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
};

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error + (data.hint ? `\nhint: ${data.hint}` : ""));
  return data;
}

function showError(id, error) { $(id).textContent = error ? String(error.message || error) : ""; }

function fillSelect(select, values, empty) {
  select.replaceChildren(...(values.length ? values : [empty || "(none found)"]).map((v) => el("option", { value: v }, v)));
}

function formData(form) {
  const out = {};
  for (const [key, value] of new FormData(form).entries()) out[key] = value;
  return out;
}

function tokenRuns(runs) {
  return el("div", { class: "tokens" }, runs.map(([text, trained]) => el("span", { class: trained ? "trained" : "context" }, text)));
}

// ---- navigation --------------------------------------------------------------------------------
// Every view has an address: #packs?path=packs/chat&row=6, #data?data=...&tokenizer=...,
// #runs?path=runs/a&path=runs/b, #chat?model=..., #launch. Opening one restores that state.
function address() {
  const [view, query] = (location.hash || "#data").slice(1).split("?");
  return { view: view || "data", params: new URLSearchParams(query || "") };
}

function remember(view, params) {  // the address of what is shown now, without a new history entry
  const query = new URLSearchParams(params).toString();
  history.replaceState(null, "", `#${view}${query ? `?${query}` : ""}`);
}

function selectValue(select, value) {
  if (value === null) return false;
  if (![...select.options].some((o) => o.value === value)) select.append(el("option", { value }, value));
  select.value = value;
  return true;
}

function route() {
  const { view, params } = address();
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (!studio.overview) return;  // restored once the folder's contents are known
  if (view === "packs" && selectValue($("#pack-path"), params.get("path"))) {
    openPack(null, Math.floor(Number(params.get("row") || 0) / ROWS_PER_PAGE));
  } else if (view === "data" && selectValue($("#data-dataset"), params.get("data"))) {
    selectValue($("#data-tokenizer"), params.get("tokenizer"));
    for (const name of ["template", "max_length"]) {
      if (params.has(name)) $(`#data-form [name=${name}]`).value = params.get(name);
    }
    openData(null);
  } else if (view === "runs" && params.has("path")) {
    const wanted = params.getAll("path");
    document.querySelectorAll("#run-list input").forEach((i) => { i.checked = wanted.includes(i.value); });
    refreshRuns();
  } else if (view === "chat") {
    selectValue($("#chat-model"), params.get("model"));
  }
}

async function loadOverview() {
  const overview = await api("/api/overview");
  studio.overview = overview;
  $("#root").textContent = overview.root;
  fillSelect($("#data-dataset"), overview.datasets);
  fillSelect($("#data-tokenizer"), overview.tokenizers);
  fillSelect($("#pack-path"), overview.packs);
  fillSelect($("#chat-model"), overview.models);
  fillSelect($("#launch-data"), overview.datasets);
  fillSelect($("#launch-tokenizer"), overview.tokenizers);
  fillSelect($("#launch-recipe"), overview.recipes);
  renderRunList(overview.runs);
}

// ---- data -------------------------------------------------------------------------------------
async function openData(event) {
  if (event) event.preventDefault();
  showError("#data-error");
  const form = formData($("#data-form"));
  remember("data", Object.fromEntries(Object.entries(form).filter(([, v]) => v !== "")));
  try {
    const report = await api("/api/data/check", form);
    renderCheck(report);
    await loadRecords();
  } catch (error) { showError("#data-error", error); }
}

function renderCheck(report) {
  const problems = Object.entries({ ...report.problems, ...report.drops });
  $("#data-check").replaceChildren(
    el("h3", {}, "Check"),
    el("p", {}, `${report.records} records: ${report.encoded} usable, ${report.rejected} rejected, ${report.dropped} dropped; `,
      `${report.tokens.toLocaleString()} tokens, ${(100 * report.trained_tokens / Math.max(1, report.tokens)).toFixed(1)}% trained`),
    el("p", { class: "muted" }, `tokens per valid record, before truncation: p50 ${report.lengths.p50}, p90 ${report.lengths.p90}, p99 ${report.lengths.p99}, max ${report.lengths.max}`),
    problems.length ? el("ul", { class: "problems" }, problems.map(([kind, entry]) => el("li", {},
      el("b", {}, `${kind}: ${entry.count}`),
      el("ul", {}, entry.examples.map((ex) => el("li", {},
        el("a", { href: "#data", class: "location", onclick: (e) => { e.preventDefault(); showLine(ex.file, ex.line); } }, `${ex.file}:${ex.line}`),
        ` ${ex.path ? ex.path + ": " : ""}${ex.message}`, ex.hint ? el("div", { class: "hint" }, `hint: ${ex.hint}`) : null)))))) :
      el("p", { class: "ok" }, "every record is usable"),
    el("pre", { id: "data-line", class: "raw", hidden: "" }));
}

async function showLine(file, line) {
  const pre = $("#data-line");
  try {
    const result = await api(`/api/file/line?path=${encodeURIComponent(file)}&line=${line}`);
    pre.textContent = `${file}:${line}\n${result.text}`;
  } catch (error) { pre.textContent = String(error.message); }
  pre.hidden = false;
}

async function loadRecords() {
  const form = formData($("#data-form"));
  const result = await api("/api/data/records", { ...form, offset: studio.pages.records * 5, count: 5 });
  $("#records-where").textContent = ` ${result.offset + 1}–${result.offset + result.records.length} of ${result.total} `;
  $("#data-records").replaceChildren(...result.records.map((r) => el("div", { class: "record" },
    el("div", { class: "muted" }, `${r.file}:${r.line} — ${r.tokens} tokens, ${r.trained_tokens} trained`), tokenRuns(r.runs))));
  drawHistogram(result);
  $("#data-roles").replaceChildren(el("table", {}, el("tr", {}, el("th", {}, "role"), el("th", {}, "tokens"), el("th", {}, "trained")),
    Object.entries(result.roles).map(([role, [tokens, trained]]) => el("tr", {}, el("td", {}, role), el("td", {}, tokens), el("td", {}, trained)))));
}

function drawHistogram(result) {
  const { counts, edges } = result.histogram;
  const labels = counts.map((_, i) => Math.round((edges[i] + edges[i + 1]) / 2));
  const max = result.max_length;
  // Bars of records longer than max_length are red: those records would be dropped or truncated.
  const colors = counts.map((_, i) => (max && edges[i + 1] > max ? "#e5484d" : "#4f7cff"));
  const over = max ? counts.filter((_, i) => edges[i + 1] > max).reduce((a, b) => a + b, 0) : 0;
  const data = { labels, datasets: [{ label: "records", data: counts, backgroundColor: colors }] };
  replaceChart("histogram", "#data-histogram", { type: "bar", data, options: { animation: false,
    scales: { x: { title: { display: true, text: "tokens" } } },
    plugins: { legend: { display: false }, title: { display: !!max,
      text: max ? `max_length ${max}: ${over ? `${over} record(s) in red bins reach past it` : "every record fits"}` : "" } } } });
}

function replaceChart(name, canvas, config) {
  if (studio.charts[name]) studio.charts[name].destroy();
  studio.charts[name] = new Chart($(canvas), config);
  return studio.charts[name];
}

// ---- packs ------------------------------------------------------------------------------------
const ROWS_PER_PAGE = 3;

async function openPack(event, rowsPage = 0) {
  if (event) event.preventDefault();
  showError("#pack-error");
  studio.pages.rows = rowsPage; studio.pages.rejects = 0;
  const path = $("#pack-path").value;
  try {
    const summary = await api(`/api/pack?path=${encodeURIComponent(path)}`);
    renderPackSummary(summary);
    await Promise.all([loadRows(), loadRejects()]);
  } catch (error) { showError("#pack-error", error); }
}

function renderPackSummary(summary) {
  const m = summary.manifest, c = m.counts;
  const rejectedKinds = Object.entries({ ...c.rejected_by_kind, ...c.dropped_by_reason }).map(([k, n]) => `${k} ${n}`).join(", ");
  $("#pack-summary").replaceChildren(
    el("h3", {}, summary.path),
    el("table", {},
      el("tr", {}, el("th", {}, "inputs"), el("td", {}, m.inputs.map((i) => i.path).join(", "))),
      el("tr", {}, el("th", {}, "tokenizer"), el("td", {}, `${m.tokenizer.path} (vocab ${m.tokenizer.vocab_size})`)),
      el("tr", {}, el("th", {}, "template"), el("td", {}, m.template.name)),
      el("tr", {}, el("th", {}, "records"), el("td", { class: summary.reconciles ? "ok" : "error" },
        `${c.records_read} read = ${c.packed} packed + ${c.rejected} rejected + ${c.dropped} dropped ${summary.reconciles ? "✓" : "✗"}`)),
      rejectedKinds ? el("tr", {}, el("th", {}, "not packed"), el("td", {}, rejectedKinds)) : null,
      el("tr", {}, el("th", {}, "tokens"), el("td", {}, `${c.tokens.toLocaleString()} (${(100 * c.trained_tokens / Math.max(1, c.tokens)).toFixed(1)}% trained)`)),
      el("tr", {}, el("th", {}, "rows"), el("td", {}, `${c.rows} of max ${m.max_length}; packing efficiency ${(100 * c.packing_efficiency).toFixed(2)}%`)),
      m.tokenizer_engine ? el("tr", {}, el("th", {}, "engine"), el("td", {}, m.tokenizer_engine.engine)) : null,
      m.validation ? el("tr", {}, el("th", {}, "validation"), el("td", {}, `${m.validation.records} records held out in ${m.validation.path}/`)) : null));
  const lengths = summary.row_lengths;
  replaceChart("rowLengths", "#pack-lengths", { type: "bar", data: { labels: lengths.map((_, i) => `${i * 5}%`),
    datasets: [{ label: "rows", data: lengths, backgroundColor: "#22a06b" }] }, options: { animation: false, plugins: { legend: { display: false } } } });
}

async function loadRows() {
  const path = $("#pack-path").value;
  const offset = studio.pages.rows * ROWS_PER_PAGE;
  remember("packs", offset ? { path, row: offset } : { path });
  const result = await api(`/api/pack/rows?path=${encodeURIComponent(path)}&offset=${offset}&count=${ROWS_PER_PAGE}`);
  $("#rows-where").textContent = ` rows ${result.offset}–${result.offset + result.rows.length - 1} of ${result.total} `;
  $("#pack-rows").replaceChildren(...result.rows.map((row) => el("div", { class: "row" },
    el("div", { class: "muted" }, `row ${row.row}: ${row.tokens} tokens, ${row.documents.length} documents`),
    row.documents.map((d) => el("div", { class: "document" },
      el("div", { class: "muted" }, `${d.file}:${d.line} — ${d.tokens} tokens, ${d.trained} trained`), tokenRuns(d.runs))))));
}

async function loadRejects() {
  const path = $("#pack-path").value;
  const result = await api(`/api/pack/rejects?path=${encodeURIComponent(path)}&offset=${studio.pages.rejects * 10}&count=10`);
  $("#rejects-where").textContent = result.total ? ` ${result.offset + 1}–${result.offset + result.rejects.length} of ${result.total} ` : " none ";
  $("#pack-rejects").replaceChildren(...result.rejects.map((r) => el("div", { class: "reject" },
    el("b", {}, `${r.file}:${r.line}`), " ", (r.problems || [r]).map((p) => `${p.kind}: ${p.message}`).join("; "),
    el("pre", { class: "raw" }, r.record || r.mapped_from || ""))));
}

// ---- runs -------------------------------------------------------------------------------------
const PALETTE = ["#4f7cff", "#e5484d", "#22a06b", "#f5a524", "#8e4ec6", "#0ea5e9"];

function renderRunList(runs) {
  $("#run-list").replaceChildren(...runs.map((run, i) => el("label", {},
    el("input", { type: "checkbox", value: run, ...(i === 0 ? { checked: "" } : {}), onchange: refreshRuns }), run)));
  ensureRunCharts();
  refreshRuns();
}

function lineChart(name, canvas, yTitle) {
  return replaceChart(name, canvas, { type: "line", data: { datasets: [] }, options: { animation: false, parsing: false,
    scales: { x: { type: "linear", title: { display: true, text: "step" } },
      y: { title: { display: !!yTitle, text: yTitle },
        ticks: { callback: (v) => (v !== 0 && Math.abs(v) < 0.01 ? Number(v).toExponential(1) : Number(Number(v).toPrecision(4))) } } },
    elements: { point: { radius: 0 } } } });
}

function ensureRunCharts() {
  if (studio.charts.loss) return;
  lineChart("loss", "#chart-loss", "loss");
  lineChart("lr", "#chart-lr", "lr");
  lineChart("speed", "#chart-speed", "tokens/s");
  lineChart("mfu", "#chart-mfu", "");
}

function selectedRuns() { return [...document.querySelectorAll("#run-list input:checked")].map((i) => i.value); }

// One refresh at a time: two in flight would both read from the same offset and draw each
// record twice (a deep link refreshes while the run list's first refresh still runs).
function refreshRuns() {
  studio.refreshing = (studio.refreshing || Promise.resolve()).then(fetchRuns, fetchRuns);
  return studio.refreshing;
}

async function fetchRuns() {
  showError("#run-error");
  const selected = selectedRuns();
  if (!$("#view-runs").hidden) remember("runs", selected.map((path) => ["path", path]));
  try {
    for (const path of selected) {
      const state = studio.runs[path] || (studio.runs[path] = { offset: 0, records: [] });
      const result = await api(`/api/run?path=${encodeURIComponent(path)}&offset=${state.offset}`);
      state.offset = result.offset;
      state.records.push(...result.records);
      state.samples = result.samples;
      state.recipe = result.recipe;
    }
  } catch (error) { showError("#run-error", error); }
  drawRuns(selected);
}

function series(path, i, key, label, dashed) {
  const points = studio.runs[path].records.filter((r) => typeof r[key] === "number").map((r) => ({ x: r.step, y: r[key] }));
  const color = PALETTE[i % PALETTE.length];
  return { label: `${path} ${label}`, data: points, borderColor: color, backgroundColor: color, borderDash: dashed ? [6, 4] : [], pointRadius: key === "eval_loss" ? 3 : 0 };
}

function drawRuns(selected) {
  const sets = { loss: [], lr: [], speed: [], mfu: [] };
  selected.forEach((path, i) => {
    if (!studio.runs[path]) return;
    const keys = new Set(studio.runs[path].records.flatMap((r) => Object.keys(r)));
    sets.loss.push(series(path, i, "loss", "loss"));
    if (keys.has("eval_loss")) sets.loss.push(series(path, i, "eval_loss", "eval_loss", true));
    [...keys].filter((k) => k.startsWith("loss/")).forEach((k) => sets.loss.push(series(path, i, k, k, true)));
    sets.lr.push(series(path, i, "lr", "lr"));
    sets.speed.push(series(path, i, "tokens_per_s", "tokens/s"));
    if (keys.has("mfu")) sets.mfu.push(series(path, i, "mfu", "MFU"));
    if (keys.has("max_memory_gb")) sets.mfu.push(series(path, i, "max_memory_gb", "memory GB", true));
  });
  // A run on the CPU logs neither: say so rather than draw empty axes.
  studio.charts.mfu.options.plugins.title = { display: selected.length > 0 && !sets.mfu.length,
    text: "no MFU or memory in these runs' metrics: sftpack train logs them on a CUDA GPU" };
  for (const [name, datasets] of Object.entries(sets)) {
    studio.charts[name].data.datasets = datasets;
    studio.charts[name].update();
  }
  const first = selected.find((p) => studio.runs[p]);
  const state = first ? studio.runs[first] : null;
  $("#run-samples").replaceChildren(...(state && state.samples.length ? state.samples.map((s) =>
    el("div", { class: "sample" }, el("div", { class: "muted" }, `step ${s.step}: ${s.prompt}`), el("div", {}, s.reply))) : [el("p", { class: "muted" }, "no samples")]));
  $("#run-recipe").textContent = state && state.recipe ? JSON.stringify(state.recipe, null, 2) : "(written with the first checkpoint)";
}

// ---- chat -------------------------------------------------------------------------------------
function renderChat() {
  $("#chat-log").replaceChildren(...studio.chat.map((m) => el("div", { class: `message ${m.role}` }, el("b", {}, m.role), el("div", { class: "content" }, m.content))));
}

async function sendChat(event) {
  event.preventDefault();
  showError("#chat-error");
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  studio.chat.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "" };
  studio.chat.push(reply);
  renderChat();
  const live = [...document.querySelectorAll("#chat-log .message.assistant .content")].pop();
  try {
    const response = await fetch("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("#chat-model").value, messages: studio.chat.slice(0, -1),
        max_new_tokens: Number(new FormData($("#chat-model-form")).get("max_new_tokens")) }) });
    if (!response.ok) throw new Error((await response.json()).error);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const event = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        if (event.delta) { reply.content += event.delta; live.textContent = reply.content; }
        if (event.error) throw new Error(event.error);
        if (event.reply !== undefined) { reply.content = event.reply; live.textContent = reply.content; live.classList.add("done"); }
      }
    }
  } catch (error) { showError("#chat-error", error); studio.chat.pop(); }
}

// ---- launch -----------------------------------------------------------------------------------
function launchRequest() {
  const form = formData($("#launch-form"));
  const command = form.command;
  if (command === "configs copy") return { command, form: { name: form.name, directory: form.directory } };
  if (command === "train") {
    return { command, form: { recipe: form.recipe, overrides: (form.overrides || "").split(/\s+/).filter(Boolean) } };
  }
  return { command, form: { data: form.data, tokenizer: form.tokenizer, out: form.out, template: form.template || null,
    max_length: form.max_length || null, val_size: form.val_size || null, overwrite: !!form.overwrite } };
}

async function previewLaunch() {
  const command = $("#launch-command").value;
  document.querySelectorAll("[data-command]").forEach((d) => { d.hidden = d.dataset.command !== command; });
  const asked = (studio.previews = (studio.previews || 0) + 1);  // answers can arrive out of order
  try {
    const { command: line } = await api("/api/jobs/preview", launchRequest());
    if (asked !== studio.previews) return;
    $("#launch-preview").textContent = line;
    showError("#launch-error");
  } catch (error) {
    if (asked !== studio.previews) return;
    $("#launch-preview").textContent = "";
    showError("#launch-error", error);
  }
}

async function startJob(event) {
  event.preventDefault();
  try {
    const job = await api("/api/jobs", launchRequest());
    studio.job = { id: job.id, offset: 0 };
    $("#job-log").textContent = "";
    await refreshJobs();
  } catch (error) { showError("#launch-error", error); }
}

async function refreshJobs() {
  const jobs = await api("/api/jobs");
  if (!studio.job && jobs.length) studio.job = { id: jobs[0].id, offset: 0 };
  $("#job-list").replaceChildren(...jobs.map((job) => el("div", { class: `job ${job.state}`, "data-job": job.id,
    onclick: () => { studio.job = { id: job.id, offset: 0 }; $("#job-log").textContent = ""; refreshJobs(); } },
    el("span", { class: "state" }, job.state), " ", el("code", {}, job.command))));
  if (studio.job) {
    const log = await api(`/api/jobs/${studio.job.id}/log?offset=${studio.job.offset}`);
    studio.job.offset = log.offset;
    $("#job-log").textContent += log.text;
    $("#log-title").textContent = `${log.command} — ${log.state}`;
    $("#log-title").dataset.state = log.state;
    $("#job-stop").hidden = log.state !== "running";
  }
}

// ---- wiring -----------------------------------------------------------------------------------
function page(event) {
  const which = event.target.dataset.for;
  studio.pages[which] = Math.max(0, studio.pages[which] + Number(event.target.dataset.page));
  ({ records: loadRecords, rows: loadRows, rejects: loadRejects })[which]().catch((e) => showError(which === "records" ? "#data-error" : "#pack-error", e));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  route();
  $("#data-form").addEventListener("submit", (e) => { studio.pages.records = 0; openData(e); });
  $("#pack-form").addEventListener("submit", openPack);
  $("#chat-form").addEventListener("submit", sendChat);
  $("#chat-model").addEventListener("change", () => remember("chat", { model: $("#chat-model").value }));
  $("#chat-reset").addEventListener("click", () => { studio.chat = []; renderChat(); });
  $("#launch-form").addEventListener("submit", startJob);
  $("#launch-form").addEventListener("input", previewLaunch);
  $("#job-stop").addEventListener("click", async () => { await api(`/api/jobs/${studio.job.id}/stop`, {}); refreshJobs(); });
  document.querySelectorAll("[data-page]").forEach((b) => b.addEventListener("click", page));
  try { await loadOverview(); previewLaunch(); route(); } catch (error) { showError("#data-error", error); }
  setInterval(() => { if (!$("#view-runs").hidden) refreshRuns(); }, 2000);
  setInterval(() => { if (!$("#view-launch").hidden) refreshJobs().catch(() => {}); }, 1500);
  document.body.dataset.ready = "1";
});
