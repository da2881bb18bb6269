// usr explore: the page's behaviour. Every number on the page comes from the server's JSON answers
// (usr_es/explore_http.py); this file only asks for them and draws them. No build step, no library.
"use strict";

const state = {
  generation: 0,       // bumped by every change of dataset, as-of or filter: older answers are dropped
  dataset: null,
  asOf: null,          // null: the head
  overview: null,
  query: { where: [], motif: "", include_deleted: false, with_ns: [], without_ns: [] },
  offset: 0,
  limit: 50,
  total: 0,
};

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n));
const show = (value) => {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return fmt(value);
    const text = value.toPrecision(6);  // trailing zeros of a fraction go; an exponent or a whole part stays
    return text.includes(".") && !text.includes("e") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  }
  if (Array.isArray(value)) return "[" + value.map(show).join(", ") + "]";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
};

let pending = 0;
function busy(delta) {
  pending += delta;
  if (pending > 0) { $("status").textContent = "loading…"; $("status").className = ""; }
  else if ($("status").className !== "error") $("status").textContent = "";
}
function fail(message) {
  $("status").textContent = message;
  $("status").className = "error";
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) url.searchParams.set(k, v);
  busy(1);
  try {
    const answer = await fetch(url);
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error + (data.hint ? " — " + data.hint : ""));
    $("status").className = "";
    return data;
  } finally {
    busy(-1);
  }
}

const queryParam = () => JSON.stringify({ dataset: state.dataset, as_of: state.asOf, ...state.query });

// -- datasets --------------------------------------------------------------------------------------------
async function loadDatasets() {
  const list = await api("/api/datasets");
  const ul = $("dataset-list");
  ul.replaceChildren();
  for (const ds of list) {
    const button = el("button", { type: "button", "data-dataset": ds.dataset, onclick: () => openDataset(ds.dataset, null) },
      el("span", { class: "rows" }, ds.error ? "unreadable" : fmt(ds.rows)), ds.dataset);
    ul.append(el("li", {}, button));
  }
  if (!list.length) ul.append(el("li", { class: "muted" }, "no dataset in this root"));
}

async function openDataset(name, asOf) {
  state.dataset = name;
  state.asOf = asOf;
  state.offset = 0;
  state.query = { where: [], motif: "", include_deleted: false, with_ns: [], without_ns: [] };
  resetFilterForm();
  $("record").hidden = true;
  $("diff").hidden = true;
  $("diff-from").value = "";
  $("pred-column").replaceChildren();
  for (const b of document.querySelectorAll("#dataset-list button")) b.classList.toggle("current", b.dataset.dataset === name);
  writeHash();
  await refreshAll();
}

function writeHash() {
  const parts = [`dataset=${encodeURIComponent(state.dataset)}`];
  if (state.asOf !== null) parts.push(`as_of=${state.asOf}`);
  history.replaceState(null, "", "#" + parts.join("&"));
}

async function refreshAll() {
  const generation = ++state.generation;
  try {
    const overview = await api("/api/overview", { dataset: state.dataset, as_of: state.asOf });
    if (generation !== state.generation) return;
    state.overview = overview;
    drawOverview(overview);
    await Promise.all([refreshRows(generation), refreshSummary(generation)]);
  } catch (error) {
    fail(error.message);
  }
}

function drawOverview(o) {
  $("pick").hidden = true;
  for (const id of ["overview", "filters", "results", "summary"]) $(id).hidden = false;
  $("ds-name").textContent = o.dataset;
  const when = o.seq === o.head_seq ? "head" : `as of seq ${o.seq} (head is ${o.head_seq})`;
  $("ds-facts").textContent = `${fmt(o.rows)} rows · ${fmt(o.deleted)} deleted · seq ${o.seq} · ${when} · ` +
    `${o.columns.length} columns · namespaces: ${o.namespaces.join(", ") || "none"}`;
  $("ds-columns").replaceChildren(...o.columns.map((c) => el("span", { class: "chip", title: c.type }, c.name)));
  const slider = $("asof");
  slider.max = String(o.head_seq);
  slider.value = String(o.seq);
  $("asof-seq").max = String(o.head_seq);
  $("asof-seq").value = String(o.seq);
  const event = o.events.find((e) => e[0] === o.seq);
  $("asof-label").textContent = event ? `seq ${event[0]} · ${event[2]} · ${event[1]}` : "before the first event";
  $("diff-to").value = String(o.seq);
  if ($("diff-from").value === "") $("diff-from").value = String(Math.max(0, o.seq - 1));
  const pick = (select, keep) => {
    select.replaceChildren(el("option", { value: "" }, "—"), ...o.namespaces.map((ns) => el("option", { value: ns }, ns)));
    select.value = keep || "";
  };
  pick($("ns-with"), state.query.with_ns[0]);
  pick($("ns-without"), state.query.without_ns[0]);
  const column = $("pred-column");
  const was = column.value;
  column.replaceChildren(...o.columns.map((c) => el("option", { value: c.name, "data-kind": c.kind }, `${c.name} (${c.kind})`)));
  column.value = o.columns.some((c) => c.name === was) ? was : o.columns[0].name;
  offerValues();
}

function offerValues() {
  // A column with known values (a record-state field, a bool) offers them as the value's choices.
  const meta = (state.overview ? state.overview.columns : []).find((c) => c.name === $("pred-column").value);
  $("pred-values").replaceChildren(...(meta ? meta.allowed : []).map((v) => el("option", { value: v })));
}

// -- rows ------------------------------------------------------------------------------------------------
async function refreshRows(generation = state.generation) {
  const page = await api("/api/rows", { q: queryParam(), offset: state.offset, limit: state.limit });
  if (generation !== state.generation || page.offset !== state.offset) return;  // a newer question was asked
  state.total = page.total;
  const shown = page.columns.filter((c) => c !== "usr__deleted");
  $("rows").querySelector("thead").replaceChildren(el("tr", {}, ...shown.map((c) => el("th", {}, c))));
  const body = $("rows").querySelector("tbody");
  body.replaceChildren(...page.rows.map((row) => {
    const tr = el("tr", { "data-id": row.id, onclick: () => openRecord(row.id) },
      ...shown.map((c) => {
        const long = c === "sequence" || c === "id";
        const text = c === "id" ? String(row[c]).slice(0, 12) + "…" : show(row[c]);
        return el("td", { class: c === "sequence" ? "seq" : typeof row[c] === "number" ? "num" : "", title: long ? row[c] : "" }, text);
      }));
    if (row.usr__deleted) tr.classList.add("deleted");
    return tr;
  }));
  const first = page.total ? page.offset + 1 : 0;
  $("count").textContent = `${fmt(first)}–${fmt(page.offset + page.rows.length)} of ${fmt(page.total)} rows`;
  const pages = Math.max(1, Math.ceil(page.total / state.limit));
  $("page").textContent = `page ${Math.floor(page.offset / state.limit) + 1} of ${fmt(pages)}`;
  $("prev").disabled = page.offset === 0;
  $("next").disabled = page.offset + state.limit >= page.total;
}

// -- summaries -------------------------------------------------------------------------------------------
function histogram(h, label, ends = null) {
  if (!h) return el("p", { class: "muted" }, "no values");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "hist");
  svg.setAttribute("viewBox", `0 0 ${h.counts.length * 10} 64`);
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...h.counts);
  h.counts.forEach((count, i) => {
    const rect = document.createElementNS(ns, "rect");
    const height = count ? Math.max(1, (count / top) * 62) : 0;
    rect.setAttribute("x", String(i * 10 + 1));
    rect.setAttribute("width", "8");
    rect.setAttribute("y", String(64 - height));
    rect.setAttribute("height", String(height));
    const title = document.createElementNS(ns, "title");
    title.textContent = ends ? `${label}: ${fmt(count)}` : `${label} ${show(h.edges[i])}–${show(h.edges[i + 1])}: ${fmt(count)}`;
    rect.append(title);
    svg.append(rect);
  });
  const [low, high] = ends || [show(h.edges[0]), show(h.edges[h.edges.length - 1])];
  return el("div", {}, svg, el("div", { class: "axis" }, el("span", {}, low), el("span", {}, high)));
}

function counts(map) {
  const entries = Object.entries(map).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return el("p", { class: "muted" }, "none");
  const total = entries.reduce((s, [, n]) => s + n, 0);
  return el("table", {}, el("tbody", {}, ...entries.map(([k, n]) =>
    el("tr", {}, el("td", {}, k), el("td", { class: "num" }, fmt(n)), el("td", { style: "width:40%" }, bar(100 * n / total))))));
}

function bar(pct) {
  const fill = el("span");
  fill.style.width = `${Math.min(100, pct)}%`;
  return el("div", { class: "bar", title: `${pct.toFixed(1)}%` }, fill);
}

async function refreshSummary(generation = state.generation) {
  const s = await api("/api/summary", { q: queryParam() });
  if (generation !== state.generation) return;
  const card = (title, ...body) => el("div", { class: "card", "data-card": title }, el("h4", {}, title), ...body);
  const coverage = Object.entries(s.coverage);
  $("cards").replaceChildren(
    card(`sequence length (${fmt(s.rows)} rows)`, histogram(s.lengths, "length")),
    card("alphabet", counts(s.alphabets)),
    card("bio type", counts(s.bio_types)),
    card(`GC fraction (DNA/RNA)${s.gc_mean === null ? "" : ", mean " + s.gc_mean.toFixed(3)}`, histogram(s.gc, "GC"),
      s.gc_rows && s.gc_rows < s.rows ? el("p", { class: "muted" }, `from ${fmt(s.gc_rows)} evenly spaced rows`) : ""),
    card("overlay coverage", coverage.length
      ? el("table", {}, el("tbody", {}, ...coverage.map(([ns, pct]) =>
        el("tr", {}, el("td", {}, ns), el("td", { class: "num" }, `${pct.toFixed(1)}%`), el("td", { style: "width:50%" }, bar(pct))))))
      : el("p", { class: "muted" }, "no overlay namespace")),
  );
  $("column-summary").querySelector("tbody").replaceChildren(...s.columns.map((c) => {
    let detail;
    if (c.histogram && c.kind === "time") detail = histogram(c.histogram, c.name, [show(c.min), show(c.max)]);
    else if (c.histogram) detail = el("div", {}, histogram(c.histogram, c.name), el("span", { class: "muted" }, `min ${show(c.min)} · mean ${show(c.mean)} · max ${show(c.max)}`));
    else if (c.list_lengths) detail = el("span", {}, `list length min ${c.list_lengths[0]} · mean ${show(c.list_lengths[1])} · max ${c.list_lengths[2]}`);
    else if (c.top && c.top.length) detail = el("span", {}, c.top.map(([v, n]) => `${v} (${fmt(n)})`).join(" · "));
    else if (c.distinct !== null && c.distinct !== undefined) detail = el("span", { class: "muted" }, `${fmt(c.distinct)} distinct`);
    else detail = el("span", { class: "muted" }, "—");
    return el("tr", { "data-column": c.name }, el("td", {}, c.name), el("td", {}, c.kind), el("td", { class: "num" }, c.null_pct.toFixed(1)), el("td", {}, detail));
  }));
}

// -- filters ---------------------------------------------------------------------------------------------
function resetFilterForm() {
  $("motif").value = "";
  $("include-deleted").checked = false;
  $("pred-value").value = "";
  drawPredicates();
}

function drawPredicates() {
  const symbols = { eq: "=", ne: "≠", lt: "<", le: "≤", gt: ">", ge: "≥", contains: "contains", startswith: "starts with", regex: "matches", null: "is empty", notnull: "has a value" };
  $("predicates").replaceChildren(...state.query.where.map((p, i) => el("span", { class: "chip" },
    `${p.column} ${symbols[p.op]} ${p.value ?? ""}`,
    el("button", { type: "button", title: "remove", "aria-label": `remove ${p.column}`, onclick: () => { state.query.where.splice(i, 1); drawPredicates(); applyFilters(); } }, "×"))));
}

function readFilterForm() {
  state.query.motif = $("motif").value.trim();
  state.query.include_deleted = $("include-deleted").checked;
  state.query.with_ns = $("ns-with").value ? [$("ns-with").value] : [];
  state.query.without_ns = $("ns-without").value ? [$("ns-without").value] : [];
}

async function applyFilters() {
  readFilterForm();
  state.offset = 0;
  const generation = ++state.generation;
  try {
    await Promise.all([refreshRows(generation), refreshSummary(generation)]);
  } catch (error) {
    fail(error.message);
  }
}

// -- one record ------------------------------------------------------------------------------------------
async function openRecord(id) {
  let r;
  try {
    r = await api("/api/record", { dataset: state.dataset, id, as_of: state.asOf });
  } catch (error) {
    fail(error.message);
    return;
  }
  $("record").hidden = false;
  $("record-title").textContent = `Record ${r.id}`;
  $("record-state").textContent = `at seq ${r.seq}` + (r.deleted ? " · deleted (tombstoned)" : "");
  $("record-values").querySelector("tbody").replaceChildren(...Object.entries(r.values).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, show(v)))));
  $("record-blame").querySelector("tbody").replaceChildren(...r.blame.cells.map((c) =>
    el("tr", {}, el("td", {}, c.column), el("td", { class: "num" }, c.credit.seq), el("td", {}, c.credit.action), el("td", { title: actor(c.credit) }, c.credit.tool || "—"), el("td", {}, c.credit.timestamp_utc.replace("T", " ").slice(0, 19)))));
  $("record-history").replaceChildren(...r.history.entries.map((e) => el("li", { "data-seq": e.credit.seq },
    el("strong", {}, `seq ${e.credit.seq} ${e.credit.action}`), ` by ${actor(e.credit)} at ${e.credit.timestamp_utc}`,
    e.note ? el("div", { class: "muted" }, e.note) : "",
    ...e.changes.map((c) => el("div", { class: "change" }, `${c.column}: ${show(c.before)} → ${show(c.after)}`)))));
}

const actor = (credit) => [credit.tool, credit.run_id].filter(Boolean).join(" / ") || "—";

// -- as of, diff -----------------------------------------------------------------------------------------
async function moveAsOf(seq) {
  const head = state.overview ? state.overview.head_seq : 0;
  state.asOf = seq === null || seq >= head ? null : Math.max(0, seq);
  state.offset = 0;
  $("record").hidden = true;
  writeHash();
  await refreshAll();
}

async function asOfTime(text) {
  try {
    const found = await api("/api/resolve", { dataset: state.dataset, point: text });
    await moveAsOf(found.seq);
  } catch (error) {
    fail(error.message);
  }
}

async function runDiff() {
  const from = $("diff-from").value, to = $("diff-to").value;
  let answer;
  try {
    answer = await api("/api/diff", { dataset: state.dataset, from, to });
  } catch (error) {
    fail(error.message);
    return;
  }
  const d = answer.diff;
  $("diff").hidden = false;
  $("diff-title").textContent = `Diff seq ${answer.from_seq} → ${answer.to_seq}`;
  $("diff-events").replaceChildren(...answer.events.map((e) => el("li", {},
    el("strong", {}, `seq ${e.credit.seq} ${e.credit.action}`), ` by ${actor(e.credit)} at ${e.credit.timestamp_utc} — ${e.summary}`)));
  if (d === null) {
    $("diff-facts").textContent = `${fmt(answer.events.length)} events with ${fmt(answer.mentions)} record mentions: too many to compare ` +
      `cell by cell here; \`usr diff ${answer.dataset} --from ${answer.from_seq} --to ${answer.to_seq}\` lists them.`;
    $("diff-rows").querySelector("tbody").replaceChildren();
    return;
  }
  $("diff-facts").textContent = `${fmt(d.events)} events · ${fmt(d.added)} added · ${fmt(d.removed)} removed · ${fmt(d.deleted)} deleted · ` +
    `${fmt(d.restored)} restored · ${fmt(d.changed)} changed · ${fmt(d.cells)} cells` + (d.rows.length > 200 ? " (first 200 rows below)" : "");
  $("diff-rows").querySelector("tbody").replaceChildren(...d.rows.slice(0, 200).map((row) => el("tr", {},
    el("td", {}, row.id), el("td", {}, row.kind),
    el("td", {}, ...row.cells.map((c) => el("div", { class: "change" }, `${c.column}: ${show(c.before)} → ${show(c.after)} (seq ${c.credit.seq})`))))));
}

// -- wiring ----------------------------------------------------------------------------------------------
function wire() {
  $("filter-form").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  $("clear").addEventListener("click", () => { state.query.where = []; resetFilterForm(); $("ns-with").value = ""; $("ns-without").value = ""; applyFilters(); });
  for (const id of ["include-deleted", "ns-with", "ns-without"]) $(id).addEventListener("change", applyFilters);
  $("pred-add").addEventListener("click", () => {
    const op = $("pred-op").value;
    const value = $("pred-value").value.trim();
    if (!["null", "notnull"].includes(op) && value === "") { fail("a value is needed for that comparison"); return; }
    state.query.where.push({ column: $("pred-column").value, op, value: ["null", "notnull"].includes(op) ? null : value });
    $("pred-value").value = "";
    drawPredicates();
    applyFilters();
  });
  $("prev").addEventListener("click", async () => { state.offset = Math.max(0, state.offset - state.limit); await refreshRows().catch((e) => fail(e.message)); });
  $("next").addEventListener("click", async () => { state.offset += state.limit; await refreshRows().catch((e) => fail(e.message)); });
  $("asof").addEventListener("change", () => moveAsOf(Number($("asof").value)));
  $("asof-seq").addEventListener("change", () => moveAsOf(Number($("asof-seq").value)));
  $("asof-time").addEventListener("change", () => { if ($("asof-time").value.trim()) asOfTime($("asof-time").value.trim()); });
  $("asof-head").addEventListener("click", () => { $("asof-time").value = ""; moveAsOf(null); });
  $("diff-run").addEventListener("click", runDiff);
  $("diff-close").addEventListener("click", () => { $("diff").hidden = true; });
  $("pred-column").addEventListener("change", offerValues);
  $("record-close").addEventListener("click", () => { $("record").hidden = true; });
}

async function start() {
  wire();
  try {
    await loadDatasets();
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.get("dataset")) await openDataset(hash.get("dataset"), hash.get("as_of") ? Number(hash.get("as_of")) : null);
  } catch (error) {
    fail(error.message);
  }
}

start();
