// promptgate dashboard: polls GET /stats every 2 s and renders it. Everything shown is set as
// text (never parsed as HTML): paths and route names come from clients and the config.
"use strict";

const REFRESH_MS = 2000;
const WINDOW_S = 15 * 60;
const TOKEN_KEY = "promptgate.admin_token";

const $ = (id) => document.getElementById(id);
let timer = null;
let charts = null;
let lastStats = null;

// ---- formatting ----

function pct(ratio) {
  if (ratio == null) return "–";
  return (ratio * 100).toFixed(1).replace(/\.0$/, "") + "%";
}

function usd(x) {
  if (x == null) return "–";
  if (x === 0) return "$0.00";
  if (x >= 1) return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (x < 0.000001) return "<$0.000001";
  return "$" + x.toPrecision(3);
}

function int(n) {
  return n == null ? "–" : Math.round(n).toLocaleString("en-US");
}

function secs(s) {
  if (s == null) return "–";
  if (s < 0.001) return Math.round(s * 1e6) + " µs";
  if (s < 1) return +(s * 1000).toPrecision(3) + " ms";
  return s.toFixed(2) + " s";
}

// Axis ticks on the log-scale latency chart: whole decades, compact.
function decade(s) {
  if (s == null) return "";
  if (s < 0.001) return Math.round(s * 1e6) + "µs";
  if (s < 1) return Math.round(s * 1000) + "ms";
  return Math.round(s) + "s";
}

function hhmm(t) {
  const d = new Date(t * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

function ms(x) {
  return x == null ? "–" : secs(x / 1000);
}

function rate(r) {
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

function duration(s) {
  if (s < 60) return Math.floor(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

// ---- DOM helpers (text only) ----

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function badge(text, kind) {
  return el("span", text, "badge " + kind);
}

// A row of cells: each a string, a Node, or {node|text, cls, title}.
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.append(c);
    else if (c && typeof c === "object") {
      if (c.node) td.append(c.node); else td.textContent = c.text;
      if (c.cls) td.className = c.cls;
      if (c.title) td.title = c.title;
    } else td.textContent = c;
    tr.append(td);
  }
  return tr;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el("td", empty, "empty");
    td.colSpan = columns;
    const tr = document.createElement("tr");
    tr.append(td);
    tbody.append(tr);
  }
}

function pairs(dl, items) {
  dl.replaceChildren();
  for (const [k, v] of items) {
    dl.append(el("dt", k));
    const dd = document.createElement("dd");
    if (v instanceof Node) dd.append(v); else dd.textContent = v;
    dl.append(dd);
  }
}

// ---- rendering ----

function render(s) {
  lastStats = s;
  $("version").textContent = "v" + s.version;
  $("updated").textContent = "updated " + clock(s.time) + " · up " + duration(s.uptime_seconds);

  const c = s.cache;
  const asked = c.hits + c.semantic_hits + c.coalesced + c.misses + c.errors;
  $("hit-ratio").textContent = asked ? pct(c.hit_ratio) : "–";
  $("hit-detail").textContent =
    int(c.hits) + " exact · " + int(c.semantic_hits) + " semantic · " + int(c.coalesced) +
    " coalesced · " + int(c.misses) + " missed";

  $("rps").textContent = rate(s.requests.per_second);
  $("rps-detail").textContent =
    int(s.requests.total) + " requests · " + int(s.requests.inflight) + " in flight";

  const cost = s.cost_usd;
  const t = s.tokens;
  $("saved").textContent = usd(cost.saved);
  const promptTokens = (side) =>
    t.input[side] + (t.cache_read ? t.cache_read[side] + t.cache_write[side] : 0);
  $("saved-detail").textContent =
    "response cache " + usd(cost.saved_response_cache) + " (" + int(promptTokens("saved")) +
    " input + " + int(t.output.saved) + " output tokens not paid again) · prompt caching " +
    usd(cost.saved_prompt_cache);
  $("spent").textContent = usd(cost.spent);
  $("spent-detail").textContent =
    int(promptTokens("paid")) + " input (" + int(t.cache_read ? t.cache_read.paid : 0) +
    " read from prompt caches) + " + int(t.output.paid) + " output tokens upstream";

  const lat = s.latency_seconds;
  const latRows = [["hit", lat.hit], ["miss", lat.miss], ["bypass", lat.bypass], ["uncached", lat.none]]
    .filter(([name, q]) => q.count > 0 || name === "hit" || name === "miss")
    .map(([name, q]) => row([name, int(q.count), secs(q.p50), secs(q.p95), secs(q.p99)]));
  $("latency").replaceChildren(...latRows);

  const cacheItems = [
    ["store", c.enabled ? c.backend : "off"],
    ["entries", int(c.memory.entries)],
    ["size", bytes(c.memory.bytes)],
  ];
  if (c.redis) {
    cacheItems.push(["redis breaker", badge(c.redis.breaker, c.redis.breaker === "open" ? "open" : "healthy")]);
    cacheItems.push(["redis errors", int(c.redis.errors)]);
  } else {
    cacheItems.push(["redis", "not used"]);
  }
  pairs($("cache"), cacheItems);

  const cfg = s.config;
  const cfgItems = [
    ["routes", int(cfg.routes)],
    ["loaded", cfg.loaded_at ? clock(cfg.loaded_at) : "–"],
    ["reloads", int(cfg.reloads_succeeded) + " ok · " + int(cfg.reloads_failed) + " failed"],
  ];
  if (cfg.last_reload) {
    const r = cfg.last_reload;
    const b = badge(r.result === "success" ? "ok" : "failed", r.result === "success" ? "healthy" : "open");
    if (r.error) b.title = r.error;
    const span = el("span", " " + r.trigger + " " + clock(r.time) + " ");
    span.prepend(b);
    cfgItems.push(["last reload", span]);
    if (r.error) cfgItems.push(["error", el("span", r.error.split("\n")[0], "bad")]);
  }
  pairs($("config"), cfgItems);

  fill($("routes"), s.routes.map((r) => {
    const asked = r.hits + r.semantic_hits + r.coalesced + r.misses + r.errors;
    return row([r.name, int(r.requests), asked ? pct(r.hit_ratio) : "–", int(r.hits + r.semantic_hits + r.coalesced),
      int(r.misses), int(r.bypasses), secs(r.p95_seconds), usd(r.cost_usd), usd(r.saved_usd + (r.saved_prompt_cache_usd || 0))]);
  }), 9, "no routes");

  fill($("upstreams"), s.upstreams.map((u) => {
    const health = u.state === "ejected"
      ? badge("ejected " + Math.ceil(u.ejected_for_seconds) + "s", "ejected")
      : badge("healthy", "healthy");
    const slots = u.max_concurrent == null ? "no cap" : int(u.free_slots) + " / " + int(u.max_concurrent);
    return row([u.name, { node: health, cls: "left" },
      int(u.consecutive_failures) + " in a row · " + int(u.failures) + " total",
      int(u.inflight), slots, ms(u.ttfb_ms)]);
  }), 6, "no upstreams");

  fill($("recent"), s.recent.map((r) => {
    const cacheCell = r.cache ? badge(r.cache, r.cache.toLowerCase()) : badge("–", "none");
    const status = el("span", String(r.status), r.status >= 500 ? "bad" : r.status >= 400 ? "warn" : "");
    return row([clock(r.time), { text: r.method, cls: "left" }, { text: r.path, cls: "path", title: r.path },
      { text: r.route || "–", cls: "left" }, { text: r.upstream || "–", cls: "left" },
      { node: cacheCell, cls: "left" }, status, secs(r.duration_ms / 1000)]);
  }), 8, "no requests yet");

  updateCharts(s);
}

// ---- charts (uPlot) ----

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function chartOptions(width, yAxis, series, scaleY) {
  const muted = cssVar("--muted");
  const line = cssVar("--line");
  const axis = { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
  return {
    width,
    height: 150,
    padding: [10, 20, 0, 0],
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: () => windowRange() },
      y: scaleY,
    },
    axes: [
      Object.assign({}, axis, { space: 70, values: (u, vals) => vals.map(hhmm) }),
      Object.assign({}, axis, yAxis),
    ],
    series: [{ label: "time", value: (u, v) => (v == null ? "–" : clock(v)) }].concat(series),
  };
}

function windowRange() {
  const now = lastStats ? lastStats.time : Date.now() / 1000;
  return [now - WINDOW_S, now];
}

function logRange(u, min, max) {
  if (min == null || !isFinite(min) || min <= 0) return [0.0001, 1];
  return uPlot.rangeLog(min, max, 10, true);
}

// Whole decades only (1 ms, 10 ms, 100 ms, …): uPlot's default log ticks crowd a small chart.
function decadeSplits(u, axis, min, max) {
  const out = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    const v = Math.pow(10, e);
    if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
  }
  return out;
}

function buildCharts() {
  if (typeof uPlot === "undefined") return null;
  const accent = cssVar("--accent");
  const good = cssVar("--good");
  const miss = cssVar("--miss");
  const make = (id, opts) => {
    const box = $(id);
    box.replaceChildren();
    const plot = new uPlot(opts(box.clientWidth || 300), [[], []], box);
    new ResizeObserver(() => plot.setSize({ width: box.clientWidth, height: 150 })).observe(box);
    return plot;
  };
  return {
    hit: make("chart-hit", (w) => chartOptions(w,
      { values: (u, vals) => vals.map((v) => v + "%"), size: 50, splits: () => [0, 50, 100] },
      [{ label: "hit rate", stroke: good, width: 2, fill: good + "22", value: (u, v) => (v == null ? "–" : v.toFixed(1) + "%") }],
      { range: [0, 100] })),
    rps: make("chart-rps", (w) => chartOptions(w,
      { size: 44 },
      [{ label: "req/s", stroke: accent, width: 2, fill: accent + "22", value: (u, v) => (v == null ? "–" : rate(v)) }],
      { range: (u, min, max) => [0, Math.max(1, max * 1.1)] })),
    p95: make("chart-p95", (w) => chartOptions(w,
      { values: (u, vals) => vals.map(decade), splits: decadeSplits, filter: (u, vals) => vals, size: 56 },
      [
        // Joined across intervals without such requests: at a high hit rate misses are sparse.
        { label: "hit", stroke: good, width: 2, spanGaps: true, value: (u, v) => secs(v) },
        { label: "miss", stroke: miss, width: 2, spanGaps: true, value: (u, v) => secs(v) },
      ],
      { distr: 3, log: 10, range: logRange })),
  };
}

function updateCharts(s) {
  if (!charts) charts = buildCharts();
  if (!charts) return;
  const x = s.series.time;
  charts.hit.setData([x, s.series.hit_ratio.map((r) => (r == null ? null : r * 100))]);
  charts.rps.setData([x, s.series.requests_per_second]);
  charts.p95.setData([x, s.series.p95_hit_seconds, s.series.p95_miss_seconds]);
}

// Colours follow the browser's light/dark preference; rebuild the charts when it changes.
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  charts = null;
  if (lastStats) updateCharts(lastStats);
});

// ---- polling and the admin token ----

function setLive(ok, text) {
  $("live").className = "dot " + (ok ? "ok" : "down");
  if (text) $("updated").textContent = text;
}

function showLogin(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token").focus();
}

async function poll() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const resp = await fetch("/stats", { headers, cache: "no-store" });
    if (resp.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      setLive(false, "admin token needed");
      showLogin(token ? "That token was not accepted." : "");
      return; // until the form is sent
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const stats = await resp.json();
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = !token;
    render(stats);
    setLive(true);
  } catch (e) {
    setLive(false, "cannot reach /stats (" + e.message + "), retrying");
  }
  timer = setTimeout(poll, REFRESH_MS);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  poll();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  poll();
});

poll();
