// cnnkit serve: helpers shared by the pages (no libraries: fetch, DOM and <canvas> only).
"use strict";

/** GET or POST `url`, return its JSON; throw an Error carrying the app's {"error": "..."} message. */
async function api(url, options) {
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

/** A DOM element: el("td", {class: "num"}, "1.5", childNode, ...). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "style") node.style.cssText = v;  // through the CSSOM: the CSP forbids style attributes
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** A number for people: up to `digits` significant decimals, no trailing zeros; "-" for null. */
function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return String(Number(v.toFixed(digits)));
}

function statusBadge(status) {
  return el("span", {class: `status status-${status}`, text: status});
}

/** The run name of a /runs/{name} page. */
function runNameFromPath() {
  return decodeURIComponent(location.pathname.split("/")[2] || "");
}

const COLORS = ["#2c6bed", "#e5533d", "#1a9e5c", "#9c4dcc", "#d98c00", "#00838f", "#6d4c41"];

/** Round tick values covering [lo, hi], about `n` of them. */
function ticks(lo, hi, n) {
  const span = hi - lo, raw = span / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => span / s <= n) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

/** Line chart of `series` [{name, points: [[x, y], ...]}] on `canvas`, with axes, grid and a legend. */
function drawChart(canvas, title, series, xLabel = "epoch") {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#1d2330";
  ctx.fillText(title, 10, 16);
  const pts = series.flatMap(s => s.points).filter(p => Number.isFinite(p[1]));
  if (!pts.length) {
    ctx.fillStyle = "#5d6677";
    ctx.fillText("no epoch finished yet", w / 2 - 60, h / 2);
    return;
  }
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const yPad = (y1 - y0) * 0.06; y0 -= yPad; y1 += yPad;
  const L = 58, R = 12, T = 26, B = 34;
  const X = x => L + (x - x0) / (x1 - x0) * (w - L - R);
  const Y = y => h - B - (y - y0) / (y1 - y0) * (h - T - B);
  ctx.strokeStyle = "#e4e7ec"; ctx.fillStyle = "#5d6677"; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of ticks(y0, y1, 5)) {
    ctx.beginPath(); ctx.moveTo(L, Y(t)); ctx.lineTo(w - R, Y(t)); ctx.stroke();
    ctx.fillText(fmt(t, 4), L - 6, Y(t));
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of ticks(x0, x1, Math.min(8, Math.max(2, Math.round(x1 - x0))))) {
    if (!Number.isInteger(t) && xLabel === "epoch") continue;
    ctx.beginPath(); ctx.moveTo(X(t), T); ctx.lineTo(X(t), h - B); ctx.stroke();
    ctx.fillText(fmt(t), X(t), h - B + 5);
  }
  ctx.fillText(xLabel, L + (w - L - R) / 2, h - 15);
  ctx.strokeStyle = "#9aa3b2";
  ctx.strokeRect(L, T, w - L - R, h - T - B);
  ctx.textAlign = "left"; ctx.textBaseline = "middle";
  const widths = series.map(s => ctx.measureText(s.name).width + 26);
  let legendX = w - R - 8 - widths.reduce((a, b) => a + b, 0);  // the legend reads left to right
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) { started = false; continue; }
      if (started) ctx.lineTo(X(x), Y(y)); else { ctx.moveTo(X(x), Y(y)); started = true; }
    }
    ctx.stroke();
    for (const [x, y] of s.points) {
      if (Number.isFinite(y)) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    }
    ctx.fillRect(legendX, 12, 14, 3);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(s.name, legendX + 18, 14);
    legendX += widths[i];
  });
}
