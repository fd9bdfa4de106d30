"use strict";
// The dashboard: one fetch of /api/v1/dashboard per refresh, redrawn on every
// commit the live stream reports. Every value from the data goes into the page
// as text (textContent, SVG attributes), never as HTML.

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const SVG = "http://www.w3.org/2000/svg";
const state = {filters: {}, loading: false, again: false, seen: new Set(), first: true,
               lastCommit: null, lastCommitAt: null};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// --- numbers and times ----------------------------------------------------------
// P&L: two decimals, from the server's decimal-rounded numbers (no float noise).
const MONEY = new Intl.NumberFormat(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
function money(v) {
  if (v === null || v === undefined) return "–";
  const text = MONEY.format(Math.abs(v));
  return (v > 0 ? "+" : v < 0 ? "−" : "") + text;
}
function moneyEl(v, tag) {
  return el(tag || "span", money(v), v > 0 ? "pos" : v < 0 ? "neg" : "");
}
// Prices and quantities exactly as stored (the server drops binary noise).
function exact(v) { return v === null || v === undefined ? "" : String(v); }
const TIME = new Intl.DateTimeFormat(undefined, {timeZone: ZONE, year: "numeric", month: "2-digit",
  day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
const DAY = new Intl.DateTimeFormat(undefined, {timeZone: ZONE, month: "short", day: "numeric"});
const DAYYEAR = new Intl.DateTimeFormat(undefined, {timeZone: ZONE, year: "2-digit", month: "short", day: "numeric"});
const CLOCK = new Intl.DateTimeFormat(undefined, {timeZone: ZONE, hour: "2-digit", minute: "2-digit", hour12: false});
const SECONDS = new Intl.DateTimeFormat(undefined, {timeZone: ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
function when(iso) { return iso ? TIME.format(new Date(iso)) : ""; }
function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

// --- tables ---------------------------------------------------------------------------
function table(id, columns, rows, empty) {
  const t = document.getElementById(id);
  const head = el("tr");
  for (const [name, , numeric] of columns) head.append(el("th", name, numeric ? "n" : ""));
  const body = [head];
  if (!rows.length) {
    const tr = el("tr"); const td = el("td", empty, "muted");
    td.colSpan = columns.length; tr.append(td); body.push(tr);
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const [, cell, numeric] of columns) {
      const td = el("td", null, numeric ? "n" : "");
      const value = cell(row);
      if (value instanceof Node) td.append(value); else td.textContent = value === null || value === undefined ? "" : String(value);
      tr.append(td);
    }
    body.push(tr);
    const key = row.source + "/" + (row.trade_id || "");
    if (row.trade_id) {
      tr.dataset.trade = key;
      if (!state.first && !state.seen.has(id + key)) tr.className = "fresh";
      state.seen.add(id + key);
    }
  }
  t.replaceChildren(...body);
}

// --- widgets ----------------------------------------------------------------------------
function renderHealth(d) {
  const h = d.health, strip = document.getElementById("health");
  state.lastCommitAt = h.last_commit_at ? Date.parse(h.last_commit_at) : null;
  const age = el("b", null); age.id = "commit-age";
  const items = [["last commit", age], ["events", el("b", (h.events || 0).toLocaleString())]];
  for (const [type, n] of Object.entries(h.events_by_type || {})) items.push([type, el("b", n.toLocaleString())]);
  if ("dead_letters" in h) items.push(["dead letters", el("b", h.dead_letters, h.dead_letters ? "neg" : "")]);
  if (h.pipeline) {
    const ok = h.pipeline.ok === true, state = el("b", ok ? "ok" : "not ok", ok ? "pos" : "neg");
    state.title = (h.pipeline.reasons || []).join("; ");
    state.id = "pipeline";
    items.push(["worker", state]);
  }
  const parts = items.map(([label, value]) => { const s = el("span", label + " "); s.append(value); return s; });
  strip.replaceChildren(...parts);
  tickAge();
}
function tickAge() {
  const e = document.getElementById("commit-age");
  if (e) e.textContent = state.lastCommitAt === null ? "never" : ago((Date.now() - state.lastCommitAt) / 1000);
}

const PERIODS = {all_time: "All time", year: "This year", month: "This month", week: "This week", today: "Today"};
function renderPnl(d) {
  const box = document.getElementById("pnl-cards");
  box.replaceChildren(...d.pnl.rows.map(r => {
    const f = el("div", null, "fig"); f.dataset.period = r.period;
    f.append(moneyEl(r.pnl, "b"), el("span", PERIODS[r.period] + " · " + r.trades + " trades"));
    return f;
  }));
}

function renderDailyLoss(d) {
  const box = document.getElementById("daily-loss");
  const rows = d.daily_loss.rows.filter(r => r.percent !== null && r.percent !== undefined);
  if (!rows.length) { box.replaceChildren(el("p", "no daily limits reported today", "muted")); return; }
  rows.sort((a, b) => b.percent - a.percent);
  const worst = rows[0];
  const head = el("div", worst.percent.toFixed(1) + " % used", "loss-head" + (worst.percent > 100 ? " over" : ""));
  head.id = "loss-worst";
  const parts = [head, el("p", "worst: " + worst.account + " / " + worst.source, "muted")];
  for (const r of rows) {
    const line = el("div", r.account + " / " + r.source + ": " + money(-r.daily_loss_used).replace("−", "") +
      " of " + MONEY.format(r.daily_loss_limit) + " (" + r.percent.toFixed(1) + " %)", "loss-row");
    const bar = el("div", null, "bar"), fill = el("div", null, r.percent > 100 ? "over" : "");
    fill.style.width = Math.min(100, r.percent) + "%";
    bar.append(fill);
    parts.push(line, bar);
  }
  box.replaceChildren(...parts);
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1, raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.round(v / step) * step + 0);  // + 0: never -0 (drawn "-0")
  return ticks;
}

function renderEquity(d) {
  const box = document.getElementById("equity");
  const eq = d.equity, pts = eq.points.map(([t, v]) => [Date.parse(t.length === 10 ? t + "T23:59:59Z" : t), v]);
  if (!pts.length) { box.replaceChildren(el("p", "no closed trades yet", "muted")); return; }
  const start = pts[0][0] - (pts.length > 1 ? (pts[pts.length - 1][0] - pts[0][0]) / pts.length : 60000);
  pts.unshift([start, eq.start]);
  const W = Math.max(300, box.clientWidth || 600), H = 220, L = 64, R = 10, T = 10, B = 26;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const ticksY = niceTicks(Math.min(0, ...ys), Math.max(0, ...ys), 4);
  const y0 = Math.min(ticksY[0], ...ys, 0), y1 = Math.max(ticksY[ticksY.length - 1], ...ys, 0);
  const X = x => L + (x - x0) / ((x1 - x0) || 1) * (W - L - R);
  const Y = y => T + (y1 - y) / ((y1 - y0) || 1) * (H - T - B);
  const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "cumulative P&L"});
  s.id = "equity-curve";
  for (const v of ticksY) {
    s.append(svg("line", {x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: "grid-line"}));
    s.append(svg("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end"}, MONEY.format(v).replace(/\.00$/, "")));
  }
  s.append(svg("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}));
  s.append(svg("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"}));
  s.append(svg("line", {x1: L, x2: W - R, y1: Y(0), y2: Y(0), class: "zero"}));
  const spanDays = (x1 - x0) / 86400000, n = Math.max(2, Math.min(6, Math.floor((W - L) / 90)));
  const fmt = spanDays < 0.01 ? SECONDS : spanDays < 2 ? CLOCK : spanDays > 300 ? DAYYEAR : DAY;
  for (let i = 0; i < n; i++) {
    const t = x0 + (x1 - x0) * i / (n - 1);
    s.append(svg("line", {x1: X(t), x2: X(t), y1: H - B, y2: H - B + 4, class: "axis"}));
    s.append(svg("text", {x: X(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle"}, fmt.format(new Date(t))));
  }
  const line = svg("polyline", {class: "curve", points: pts.map(p => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ")});
  line.append(svg("title", {}, "now: " + money(pts[pts.length - 1][1])));
  s.append(line);
  box.replaceChildren(s);
}

function localDay(date) {  // YYYY-MM-DD of a Date in the viewer's zone
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit"}).formatToParts(date).map(x => [x.type, x.value]));
  return p.year + "-" + p.month + "-" + p.day;
}

function renderCalendar(d) {
  const box = document.getElementById("calendar");
  const byDay = Object.fromEntries(d.calendar.rows.map(r => [r.date, r]));
  const weeks = 26, cell = 13, gap = 3, L = 28, T = 16;
  const today = new Date(localDay(new Date()) + "T12:00:00Z");
  const monday = new Date(today); monday.setUTCDate(today.getUTCDate() - ((today.getUTCDay() + 6) % 7) - 7 * (weeks - 1));
  const scale = Math.max(1, ...d.calendar.rows.map(r => Math.abs(r.pnl)));
  const cw = L + weeks * (cell + gap), ch = T + 7 * (cell + gap);
  const s = svg("svg", {viewBox: `0 0 ${cw} ${ch}`, width: cw, height: ch, class: "cal", role: "img", "aria-label": "P&L calendar"});
  ["Mon", "Wed", "Fri"].forEach((name, i) => s.append(svg("text", {x: 0, y: T + (i * 2) * (cell + gap) + 10}, name)));
  let lastMonth = -1;
  for (let w = 0; w < weeks; w++) {
    for (let dow = 0; dow < 7; dow++) {
      const day = new Date(monday); day.setUTCDate(monday.getUTCDate() + w * 7 + dow);
      if (day > today) continue;
      const key = day.toISOString().slice(0, 10), r = byDay[key];
      if (dow === 0 && day.getUTCMonth() !== lastMonth) {
        lastMonth = day.getUTCMonth();
        s.append(svg("text", {x: L + w * (cell + gap), y: 10}, new Intl.DateTimeFormat(undefined, {month: "short", timeZone: "UTC"}).format(day)));
      }
      const rect = svg("rect", {x: L + w * (cell + gap), y: T + dow * (cell + gap), width: cell, height: cell, rx: 2, class: "day"});
      rect.dataset.date = key;
      if (r && r.pnl) {
        const a = (0.25 + 0.75 * Math.min(1, Math.abs(r.pnl) / scale)).toFixed(2);
        rect.setAttribute("fill", r.pnl > 0 ? `rgba(46,160,67,${a})` : `rgba(218,54,51,${a})`);
      } else rect.setAttribute("class", "day empty-day");
      rect.append(svg("title", {}, key + ": " + (r ? money(r.pnl) + " (" + r.trades + " trades)" : "no trades")));
      s.append(rect);
    }
  }
  const sum = d.calendar.summary || {};
  const caption = el("div", null, "summary");
  caption.append(el("span", "days traded " + (sum.days_traded ?? 0)), el("span", "net "), moneyEl(sum.net ?? 0));
  box.replaceChildren(s, caption);
}

function renderBots(d) {
  table("bots", [
    ["bot", r => r.source], ["trades", r => r.trades, 1],
    ["win rate", r => r.win_rate === null || r.win_rate === undefined ? "–" : r.win_rate.toFixed(1) + " %", 1],
    ["net", r => moneyEl(r.net), 1],
    ["profit factor", r => r.profit_factor === null || r.profit_factor === undefined ? "–" : r.profit_factor.toFixed(2), 1],
    ["open trades", r => r.open_trades, 1], ["open positions", r => r.open_positions, 1],
    ["last activity", r => when(r.last_activity)],
  ], d.bots, "no bots yet");
}

function renderOpen(d) {
  table("open-trades", [
    ["opened", r => when(r.opened_at)], ["bot", r => r.source], ["account", r => r.account],
    ["trade", r => r.trade_id], ["symbol", r => r.symbol], ["side", r => r.side],
    ["qty", r => exact(r.quantity), 1], ["entry", r => exact(r.entry_price), 1],
    ["stop", r => exact(r.stop_loss), 1], ["unrealised", r => r.unrealized_pnl === null ? "" : moneyEl(r.unrealized_pnl), 1],
  ], d.open_trades.rows, "no open trades");
}

function renderHistory(d) {
  const s = d.history.summary || {}, box = document.getElementById("history-summary");
  const parts = [];
  const add = (label, node) => { const span = el("span", label + " "); span.append(node); parts.push(span); };
  add("trades", el("b", s.count ?? 0));
  add("win rate", el("b", s.win_rate === null || s.win_rate === undefined ? "–" : s.win_rate.toFixed(1) + " %"));
  add("net", moneyEl(s.net ?? 0, "b"));
  add("profit factor", el("b", s.profit_factor === null || s.profit_factor === undefined ? "–" : s.profit_factor.toFixed(2)));
  add("best", moneyEl(s.best, "b")); add("worst", moneyEl(s.worst, "b"));
  box.replaceChildren(...parts);
  table("history", [
    ["closed", r => when(r.closed_at)], ["bot", r => r.source], ["account", r => r.account],
    ["trade", r => r.trade_id], ["symbol", r => r.symbol], ["side", r => r.side],
    ["qty", r => exact(r.quantity), 1], ["entry", r => exact(r.entry_price), 1],
    ["exit", r => exact(r.exit_price), 1], ["P&L", r => moneyEl(r.realized_pnl), 1],
    ["reason", r => r.exit_reason],
  ], d.history.rows, "no closed trades match");
}

// --- loading and live ---------------------------------------------------------------------
// At most one fetch in flight, one more queued, and fetches at least MIN_GAP_MS
// apart: a burst of commits costs a few fetches, and a commit still shows within
// the poll (250 ms) + MIN_GAP_MS + one fetch.
const MIN_GAP_MS = 300;
async function refresh() {
  if (state.loading) { state.again = true; return; }
  const wait = (state.lastStart || 0) + MIN_GAP_MS - Date.now();
  if (wait > 0) {
    if (!state.timer) state.timer = setTimeout(() => { state.timer = null; refresh(); }, wait);
    return;
  }
  state.loading = true;
  state.lastStart = Date.now();
  const commit = state.lastCommit;  // the newest commit this refresh will show
  try {
    const params = new URLSearchParams({tz: ZONE, ...state.filters});
    if (commit) params.set("min_seq", String(commit.seq));  // an answer that holds it
    const r = await fetch("/api/v1/dashboard?" + params, {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/login"; return; }
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.statusText);
    const w = d.whoami;
    document.getElementById("who").textContent = w.name + " · " + (w.admin ? "all accounts" : w.accounts.join(", ") + (w.sources.length ? " · " + w.sources.join(", ") : ""));
    renderHealth(d); renderPnl(d); renderDailyLoss(d); renderEquity(d); renderBots(d);
    renderOpen(d); renderHistory(d); renderCalendar(d);
    state.first = false;
    document.body.dataset.rendered = String(Date.now());
    if (commit && commit.seq !== state.shownSeq) {
      // commit-to-screen: the worker's commit time to this render (same clock on one host)
      state.shownSeq = commit.seq;
      window.tradescribeLatencyMs = Date.now() - Date.parse(commit.committed_at);
      document.body.dataset.seq = String(commit.seq);
    }
  } catch (e) {
    document.getElementById("live").textContent = "error: " + e.message;
  } finally {
    state.loading = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/events/stream");
  source.addEventListener("hello", () => { live.textContent = "live"; live.className = "pill on"; });
  source.addEventListener("commit", e => { state.lastCommit = JSON.parse(e.data); refresh(); });
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill off"; };
}

document.getElementById("zone").textContent = "times in " + ZONE;
document.getElementById("filters").addEventListener("submit", e => {
  e.preventDefault();
  state.filters = Object.fromEntries([...new FormData(e.target)].filter(([, v]) => v));
  refresh();
});
setInterval(tickAge, 1000);
let resizeTimer = null;
addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(refresh, 200); });
refresh();
connect();
