// The training monitor: a run's loss and images/s curves (a small <canvas> chart) and its newest samples,
// refreshed every few seconds while the tab is shown.
import { $, state, api, el, showError } from "./util.js";

export async function loadRuns() {
  try {
    const runs = await api("/api/runs");
    state.runs = runs;
    const select = $("run-select");
    const previous = select.value;
    select.replaceChildren();
    for (const r of runs) select.append(el("option", { value: r.name, text: r.name }));
    if (!runs.length) {
      $("run-info").textContent = "No runs with a metrics.csv under --runs.";
      return;
    }
    select.value = runs.some((r) => r.name === previous) ? previous : runs[0].name;
    await refreshRun();
  } catch (err) {
    showError(err.message);
  }
}

function runPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

export async function refreshRun() {
  const name = $("run-select").value;
  if (!name) return;
  try {
    const m = await api(`/api/runs/${runPath(name)}/metrics`);
    const run = state.runs.find((r) => r.name === name) || {};
    const steps = m.step.length ? m.step[m.step.length - 1] : 0;
    const ago = run.updated ? Math.max(0, Math.round(Date.now() / 1000 - run.updated)) : null;
    $("run-info").textContent = `${steps} steps` + (ago != null ? ` · updated ${ago < 120 ? ago + " s" : Math.round(ago / 60) + " min"} ago` : "") + (run.has_model ? " · exported model" : "");
    drawChart($("chart-loss"), m.step, m.loss, { color: "#7aa2ff", smooth: true, log: false });
    drawChart($("chart-ips"), m.step, m.images_per_s, { color: "#5ed3a0" });
    const last = (a) => (a && a.length ? a[a.length - 1] : null);
    $("loss-last").textContent = last(m.loss) != null ? `last ${Number(last(m.loss)).toPrecision(3)}` : "";
    $("ips-last").textContent = last(m.images_per_s) != null ? `last ${Number(last(m.images_per_s)).toFixed(0)}` : "";
  } catch (err) {
    showError(err.message);
    return;
  }
  const img = $("run-latest");
  const probe = new Image();
  probe.onload = () => { img.src = probe.src; img.hidden = false; $("run-latest-none").hidden = true; };
  probe.onerror = () => { img.hidden = true; $("run-latest-none").hidden = false; };
  probe.src = `/api/runs/${runPath(name)}/samples/latest.png?t=${Date.now()}`;
}

export function startRunMonitor() {
  stopRunMonitor();
  loadRuns();
  // every few seconds while the tab is shown: the run list (new runs, "updated"), its curves and its samples
  state.runTimer = setInterval(() => { if (!document.hidden) loadRuns(); }, 3000);
}

export function stopRunMonitor() {
  if (state.runTimer) clearInterval(state.runTimer);
  state.runTimer = null;
}

// Round tick values (1, 2, 2.5 or 5 × 10^k apart) inside [lo, hi], and the decimals to print them with.
function niceTicks(lo, hi, count, minStep = 0) {
  const span = hi - lo || 1;
  const mag = Math.pow(10, Math.floor(Math.log10(span / count)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => span / st <= count) || 10 * mag;
  step = Math.max(step, minStep);
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * span; v += step) ticks.push(v);
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) + (String(step / mag).includes(".") ? 1 : 0) - 1e-9));
  return { ticks, decimals: Math.min(decimals, 6) };
}

// A line chart on a <canvas>: axes, 4 ticks each way, the raw series and (optionally) a smoothed one.
export function drawChart(canvas, xs, ys, opts = {}) {
  const points = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    if (xs[i] == null || ys[i] == null) continue;  // non-finite values arrive as null
    const x = Number(xs[i]), y = Number(ys[i]);
    if (Number.isFinite(x) && Number.isFinite(y)) points.push([x, y]);
  }
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = String(points.length);
  const css = getComputedStyle(document.body);
  const fg = css.getPropertyValue("--muted").trim() || "#999";
  const grid = css.getPropertyValue("--line").trim() || "#333";
  ctx.font = "11px system-ui, sans-serif";
  if (!points.length) {
    ctx.fillStyle = fg;
    ctx.fillText("no data yet", w / 2 - 30, h / 2);
    return;
  }
  const pad = { l: 52, r: 12, t: 10, b: 24 };
  let [x0, x1] = [points[0][0], points[points.length - 1][0]];
  let y0 = Math.min(...points.map((p) => p[1])), y1 = Math.max(...points.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 + 1e-3; y1 += Math.abs(y1) * 0.1 + 1e-3; }
  const margin = (y1 - y0) * 0.05; y0 -= margin; y1 += margin;
  if (y0 < 0 && points.every((p) => p[1] >= 0)) y0 = 0;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const Y = (y) => h - pad.b - ((y - y0) / (y1 - y0)) * (h - pad.t - pad.b);
  ctx.strokeStyle = grid; ctx.fillStyle = fg; ctx.lineWidth = 1;
  const yt = niceTicks(y0, y1, 4);
  ctx.textAlign = "right";
  for (const yv of yt.ticks) {
    const yy = Math.round(Y(yv)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(yv.toFixed(yt.decimals), pad.l - 6, yy + 4);
  }
  const xt = niceTicks(x0, x1, 5, 1);
  ctx.textAlign = "center";
  for (const xv of xt.ticks) ctx.fillText(xv.toFixed(xt.decimals), Math.min(Math.max(X(xv), pad.l + 8), w - pad.r - 8), h - 6);
  const line = (pts, color, width, alpha) => {
    ctx.globalAlpha = alpha; ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    if (pts.length === 1) { ctx.arc(X(pts[0][0]), Y(pts[0][1]), 2.5, 0, 2 * Math.PI); }
    ctx.stroke(); ctx.globalAlpha = 1;
  };
  if (opts.smooth && points.length > 8) {
    line(points, opts.color, 1, 0.35);
    const beta = Math.min(0.98, 1 - 8 / points.length);
    let avg = points[0][1];
    line(points.map(([x, y]) => [x, (avg = beta * avg + (1 - beta) * y)]), opts.color, 2, 1);
  } else {
    line(points, opts.color, 2, 1);
  }
  ctx.textAlign = "left";
}
