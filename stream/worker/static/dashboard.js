// kpi-stream dashboard: plain JS, no build step. Reads dashboard/data (values from Redis, as /kpi
// reads them; trends sampled by the worker) and renders one section after another. A later part of
// the page adds a renderer to SECTIONS and a <section> to dashboard.html.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const COUNT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const MONEY = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const PERCENT = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const SIGNED_PERCENT = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: "exceptZero" });

const state = { window: new URLSearchParams(location.search).get("window"), data: null, filter: "" };

// The API token (KPI_API_TOKENS), when the worker needs one: the page is opened as
// /dashboard#token=TOKEN. The fragment never reaches a server or a proxy log; the token is kept in
// this tab's sessionStorage, taken out of the address bar, and sent as a bearer token.
const TOKEN_KEY = "kpi-stream-token";
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    try { sessionStorage.setItem(TOKEN_KEY, given); } catch (error) { /* storage off: this load only */ }
    const url = new URL(location.href);
    url.hash = "";
    history.replaceState(null, "", url.pathname + url.search);
    return given;
  }
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (error) { return null; }
}
const token = takeToken();

function format(unit, value) {
  if (value === null || value === undefined) return "—";
  if (unit === "ratio") return PERCENT.format(value * 100) + "%";
  if (unit === "money") return MONEY.format(value);
  return COUNT.format(value);
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// A value as shown: its exact number and key ride along for tooltips and tests.
function valueNode(tag, headline, cell, extraClass) {
  const value = cell ? cell.value : null;
  const node = el(tag, { class: extraClass, text: format(headline.unit, value) });
  if (cell) {
    node.dataset.key = cell.key;
    node.dataset.value = value === null ? "null" : String(value);
    node.title = `${cell.key}\nvalue ${value}` + (cell.denominator !== null && cell.denominator !== undefined
      ? ` = ${cell.numerator} / ${cell.denominator}` : "") + `\nas of ${cell.as_of}`;
  }
  return node;
}

function direction(points) {
  const known = (points || []).filter((v) => v !== null);
  if (known.length < 2) return { dir: "flat", first: null, last: null };
  const first = known[0], last = known[known.length - 1];
  return { dir: last > first ? "up" : last < first ? "down" : "flat", first, last };
}

// An inline SVG sparkline; gaps (samples without a value) break the line. `stretch`: as wide as
// its box (the line scales, the dot is left out as it would be distorted).
function sparkline(points, width, height, stretch) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark " + direction(points).dir + (stretch ? " stretch" : ""));
  svg.setAttribute("width", stretch ? "100%" : width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (stretch) svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const known = (points || []).filter((v) => v !== null);
  if (known.length < 2) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", 0);
    text.setAttribute("y", height / 2 + 3);
    text.setAttribute("class", "none");
    text.textContent = "trend starting…";
    svg.append(text);
    return svg;
  }
  const min = Math.min(...known), max = Math.max(...known);
  const pad = 3, n = points.length;
  const x = (i) => (n === 1 ? width : (i / (n - 1)) * (width - 2 * pad) + pad);
  const y = (v) => (max === min ? height / 2 : height - pad - ((v - min) / (max - min)) * (height - 2 * pad));
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", run.join(" "));
      svg.append(line);
    }
    run = [];
  };
  points.forEach((v, i) => (v === null ? flush() : run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`)));
  flush();
  if (stretch) return svg;
  let last = n - 1;
  while (points[last] === null) last -= 1;
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", x(last).toFixed(1));
  dot.setAttribute("cy", y(points[last]).toFixed(1));
  dot.setAttribute("r", 2.2);
  svg.append(dot);
  return svg;
}

function minutes(seconds) {
  return seconds >= 60 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`;
}

function trendSpan(data) {
  const t = data.trend.instants;
  if (t.length < 2) return 0;
  return (Date.parse(t[t.length - 1]) - Date.parse(t[0])) / 1000;
}

function deltaNode(headline, points, span) {
  const { dir, first, last } = direction(points);
  if (first === null) return el("span", { class: "delta flat", text: "trend starting" });
  const change = last - first;
  let text;
  if (headline.unit === "ratio") text = (change >= 0 ? "+" : "−") + PERCENT.format(Math.abs(change) * 100) + " pts";
  else text = (change >= 0 ? "+" : "−") + format(headline.unit, Math.abs(change));
  if (change === 0) text = "no change";
  return el("span", { class: `delta ${dir}`, text: `${text} · ${minutes(span)}` });
}

// -- sections ------------------------------------------------------------------------------------

function renderCompany(data) {
  const cards = document.getElementById("company-cards");
  const row = (data.scopes.global || [])[0];
  const span = trendSpan(data);
  cards.replaceChildren(...data.headlines.map((h) => {
    const cell = row ? row.cells[h.id] : null;
    const points = row ? row.trends[h.id] : null;
    const name = h.label + (h.windowed ? ` · ${data.window}` : " · now");
    return el("article", { class: "card", "data-headline": h.id },
      el("span", { class: "name", text: name }),
      valueNode("span", h, cell, "value"),
      sparkline(points, 200, 34, true),
      deltaNode(h, points, span));
  }));
}

function renderMovers(data) {
  const table = document.getElementById("movers-table");
  const note = document.getElementById("movers-note");
  const rows = data.movers.rows;
  const span = trendSpan(data);
  note.textContent = `Largest drop of active accounts (${data.window}) over the last ${minutes(span)} of samples` +
    ` (${data.trend.samples} kept, every ${data.trend.sample_seconds} s, up to ${minutes(data.trend.seconds)}).`;
  const head = el("tr", null, ...["Territory", "Active now", "Change", "Change %", "Since", "Trend"]
    .map((t) => el("th", { text: t })));
  if (!rows.length) {
    table.replaceChildren(head, el("tr", null, el("td", { class: "empty", colspan: 6,
      text: data.trend.samples < 2 ? "Trends start with the worker: a few samples are needed."
        : "No territory lost active accounts over the trend window." })));
    return;
  }
  const active = data.headlines.find((h) => h.kpi === data.movers.kpi);
  table.replaceChildren(head, ...rows.map((m) => el("tr", { "data-scope-id": m.scope_id },
    el("td", { text: m.scope_id }),
    valueNode("td", active, { key: m.key, value: m.last, numerator: null, denominator: null, as_of: "last sample" }),
    el("td", { class: "delta down", text: "−" + COUNT.format(-m.change) }),
    el("td", { class: "delta down", text: m.change_ratio === null ? "—" : SIGNED_PERCENT.format(m.change_ratio * 100) + "%" }),
    el("td", { class: "muted", text: new Date(m.since).toLocaleTimeString() }),
    el("td", { class: "spark-cell" }, sparkline(m.trend, 110, 24)))));
}

function scopeTable(tableId, data, scope, filter) {
  const table = document.getElementById(tableId);
  const rows = (data.scopes[scope] || []).filter((r) => !filter || r.scope_id.toLowerCase().includes(filter));
  const columns = data.headlines.filter((h) => rows.some((r) => h.id in r.cells));
  const head = el("tr", null, el("th", { text: scope === "region" ? "Region" : "Territory" }),
    ...columns.map((h) => el("th", { text: h.label, title: h.windowed ? `window ${data.window}` : "now" })));
  if (!rows.length) {
    table.replaceChildren(head, el("tr", null, el("td", { class: "empty", text: filter ? "No match." : "No values yet." })));
    return;
  }
  table.replaceChildren(head, ...rows.map((r) => el("tr", { "data-scope-id": r.scope_id },
    el("td", { text: r.scope_id }),
    ...columns.map((h) => {
      if (r.trends[h.id] && h.kpi === "active_accounts") {
        return el("td", { class: "spark-cell" }, el("span", { class: "inline" },
          sparkline(r.trends[h.id], 64, 18), valueNode("span", h, r.cells[h.id] || null, "num")));
      }
      return valueNode("td", h, r.cells[h.id] || null);
    }))));
}

function renderRegions(data) { scopeTable("regions-table", data, "region", ""); }
function renderTerritories(data) { scopeTable("territories-table", data, "territory", state.filter); }

const SECTIONS = [renderCompany, renderMovers, renderRegions, renderTerritories];

// -- page ----------------------------------------------------------------------------------------

function renderWindows(data) {
  const nav = document.getElementById("windows");
  nav.replaceChildren(...data.windows.map((w) => {
    const button = el("button", { type: "button", "aria-pressed": String(w === data.window), text: w });
    button.addEventListener("click", () => {
      state.window = w;
      const url = new URL(location.href);
      url.searchParams.set("window", w);
      history.replaceState(null, "", url);
      refresh();
    });
    return button;
  }));
}

function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function render(data) {
  renderWindows(data);
  document.getElementById("as-of").textContent = data.as_of
    ? `as of ${data.as_of} · read ${new Date(data.read_at).toLocaleTimeString()}` : "no values in Redis yet";
  for (const section of SECTIONS) section(data);
  const t = data.trend;
  document.getElementById("footer").textContent =
    `Values are read from Redis, as /kpi reads them. Trends: ${t.series} series sampled every ${t.sample_seconds} s` +
    ` by this worker, kept ${minutes(t.seconds)} in its memory (at most ${t.max_series} series` +
    (t.refused ? `; ${t.refused} not kept` : "") + ").";
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

let inFlight = null;
async function refresh() {
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  const query = state.window ? `?window=${encodeURIComponent(state.window)}` : "";
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(`dashboard/data${query}`, { signal: controller.signal, cache: "no-store", headers });
    const body = await response.json();
    if (response.status === 401) {
      setStatus("error", token ? "token refused: open the page as /dashboard#token=TOKEN"
        : "this worker needs a token: open the page as /dashboard#token=TOKEN");
      return;
    }
    if (!response.ok) {
      if (response.status === 400 && state.window) state.window = null;  // a stale ?window=
      setStatus("error", body.error || `HTTP ${response.status}`);
      return;
    }
    state.data = body;
    render(body);
    setStatus("ok", "live");
  } catch (error) {
    if (error.name !== "AbortError") setStatus("error", "worker unreachable");
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

document.getElementById("territory-filter").addEventListener("input", (event) => {
  state.filter = event.target.value.trim().toLowerCase();
  if (state.data) renderTerritories(state.data);
});
refresh();
setInterval(refresh, REFRESH_MS);
