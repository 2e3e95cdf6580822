// The training monitor: a run's loss and images/s curves (a small <canvas> chart, the loss also smoothed without
// lag) and its newest samples, refreshed every few seconds while the tab is shown. A run says whether it is
// training, finished (its model exported, its trainer gone) or stopped; a newly exported model is added to the
// Model list by itself; the sample grid is fetched only once the listing says there is one (and again when it
// changes), so nothing 404s while a run has none yet.
import { $, state, api, el, showError, clearError, plural, UNREACHABLE } from "./util.js";

const POLL_MS = 3000;
const monitor = { sample: null, asked: new Set(), down: false };

export async function loadRuns() {
  let runs;
  try {
    runs = await api("/api/runs");
  } catch (err) {
    if (!monitor.down) showError(err.message);  // once, not every 3 s while the server is down
    monitor.down = err.message === UNREACHABLE;
    return;
  }
  if (monitor.down) { monitor.down = false; clearError(); }
  state.runs = runs;
  newModels(runs);
  const select = $("run-select");
  const previous = state.preferRun || select.value;  // a run another tab asked to show (Teach), else the one shown
  state.preferRun = null;
  select.replaceChildren(...runs.map((r) => el("option", { value: r.name, text: r.name })));
  if (!runs.length) {
    $("run-info").textContent = "No runs yet: start one with `tinydiffusion train --out RUNS/NAME` (a folder under --runs).";
    $("run-state").hidden = true;
    for (const [id, what] of [["chart-loss", "loss"], ["chart-ips", "images/s"]]) drawChart($(id), [], [], { empty: "no run yet", what });
    showSample(null, null);
    return;
  }
  select.value = runs.some((r) => r.name === previous) ? previous : runs[0].name;
  await refreshRun();
}

// A run that has exported its model since the Model list was made: rescan the list (app.js listens), once.
function newModels(runs) {
  const listed = new Set(state.models.map((m) => m.name));
  const fresh = runs.filter((r) => r.has_model && !listed.has(r.name) && !monitor.asked.has(r.name));
  for (const r of fresh) monitor.asked.add(r.name);
  if (fresh.length) document.dispatchEvent(new Event("modelschanged"));
}

function runPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

export async function refreshRun() {
  const name = $("run-select").value;
  if (!name) return;
  const run = state.runs.find((r) => r.name === name) || {};
  let m;
  try {
    m = await api(`/api/runs/${runPath(name)}/metrics`);
  } catch (err) {
    showError(err.message);
    return;
  }
  const steps = m.step.length ? m.step[m.step.length - 1] : 0;
  const ago = run.updated ? Math.max(0, Math.round(Date.now() / 1000 - run.updated)) : null;
  const when = ago == null ? "" : ` · updated ${ago < 120 ? ago + " s" : Math.round(ago / 60) + " min"} ago`;
  const label = { training: "training", finished: "finished", stopped: "stopped" }[run.state] || "";
  $("run-state").hidden = !label;
  $("run-state").textContent = label;
  $("run-state").className = `state ${run.state === "training" ? "running" : run.state === "finished" ? "done" : "cancelled"}`;
  const model = run.has_model ? ` · its model is in the Model list as ${name}` : "";
  $("run-info").textContent = `${plural(steps, "step")}${run.state === "training" ? when : ""}${model}`;
  drawChart($("chart-loss"), m.step, m.loss, { color: "#7aa2ff", smooth: true, what: "loss" });
  drawChart($("chart-ips"), m.step, m.images_per_s, { color: "#5ed3a0", what: "images/s" });
  const last = (a) => (a && a.length ? a[a.length - 1] : null);
  $("loss-last").textContent = last(m.loss) != null ? `last ${Number(last(m.loss)).toPrecision(3)}` : "";
  $("ips-last").textContent = last(m.images_per_s) != null ? `last ${Number(last(m.images_per_s)).toFixed(0)}` : "";
  $("chart-loss").setAttribute("aria-label", `Loss of ${name} over ${plural(steps, "step")}` + (last(m.loss) != null ? `, last ${Number(last(m.loss)).toPrecision(3)}` : ""));
  $("chart-ips").setAttribute("aria-label", `Images per second of ${name}` + (last(m.images_per_s) != null ? `, last ${Number(last(m.images_per_s)).toFixed(0)}` : ""));
  showSample(name, run.sample);
}

// The newest sample grid, fetched only when the listing has one newer than the one shown.
function showSample(name, updated) {
  const img = $("run-latest");
  if (!name || !updated) {
    monitor.sample = null;
    img.hidden = true;
    $("run-latest-box").hidden = true;
    $("run-latest-none").hidden = false;
    $("run-latest-when").textContent = "";
    return;
  }
  const key = `${name}@${updated}`;
  if (monitor.sample === key) return;
  monitor.sample = key;
  const probe = new Image();
  probe.onload = () => {
    img.src = probe.src;
    img.alt = `The newest sample grid of ${name}: one row per class`;
    img.hidden = false;
    $("run-latest-box").hidden = false;
    $("run-latest-none").hidden = true;
    $("run-latest-when").textContent = `written ${new Date(updated * 1000).toLocaleTimeString()}`;
  };
  probe.onerror = () => { monitor.sample = null; };
  probe.src = `/api/runs/${runPath(name)}/samples/latest.png?t=${updated}`;
}

export function startRunMonitor() {
  stopRunMonitor();
  loadRuns();
  // every few seconds while the tab is shown: the run list (new runs, "updated"), its curves and its samples
  state.runTimer = setInterval(() => { if (!document.hidden) loadRuns(); }, POLL_MS);
}

export function stopRunMonitor() {
  if (state.runTimer) clearInterval(state.runTimer);
  state.runTimer = null;
}

// The loss smoothed without lag: at each logged step, the mean of the points within ±window/2 steps (a centred
// moving average over steps, not over points, so an uneven logging interval does not bend it). The window is
// 4% of the steps shown (at least 5 points' worth); near either end it is one-sided, halving the lag there.
export function smooth(points, fraction = 0.04) {
  if (points.length < 3) return points.slice();
  const span = points[points.length - 1][0] - points[0][0];
  const spacing = span / Math.max(1, points.length - 1);
  const half = Math.max(fraction * span, 5 * spacing) / 2;
  const out = [];
  let lo = 0, hi = 0, sum = 0;  // the points in [x - half, x + half] are lo..hi-1
  for (const [x] of points) {
    while (hi < points.length && points[hi][0] <= x + half) sum += points[hi++][1];
    while (points[lo][0] < x - half) sum -= points[lo++][1];
    out.push([x, sum / (hi - lo)]);
  }
  return out;
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

function finitePoints(xs, ys) {
  const points = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    if (xs[i] == null || ys[i] == null) continue;  // non-finite values arrive as null
    const x = Number(xs[i]), y = Number(ys[i]);
    if (Number.isFinite(x) && Number.isFinite(y)) points.push([x, y]);
  }
  return points;
}

// A line chart on a <canvas>: axes with titles, 4 ticks each way, the raw series and (optionally) a smoothed one.
export function drawChart(canvas, xs, ys, opts = {}) {
  const points = finitePoints(xs, ys);
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
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = fg;
  if (!points.length) {
    ctx.textAlign = "center";
    ctx.fillText(opts.empty || "no data yet", w / 2, h / 2);
    return;
  }
  const pad = { l: 56, r: 12, t: 10, b: 38 };
  let [x0, x1] = [points[0][0], points[points.length - 1][0]];
  let y0 = Math.min(...points.map((p) => p[1])), y1 = Math.max(...points.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 + 1e-3; y1 += Math.abs(y1) * 0.1 + 1e-3; }
  const margin = (y1 - y0) * 0.05; y0 -= margin; y1 += margin;
  if (y0 < 0 && points.every((p) => p[1] >= 0)) y0 = 0;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const Y = (y) => h - pad.b - ((y - y0) / (y1 - y0)) * (h - pad.t - pad.b);
  ctx.strokeStyle = grid; ctx.lineWidth = 1;
  const yt = niceTicks(y0, y1, 4);
  ctx.textAlign = "right";
  for (const yv of yt.ticks) {
    const yy = Math.round(Y(yv)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(yv.toFixed(yt.decimals), pad.l - 6, yy + 4);
  }
  const xt = niceTicks(x0, x1, 5, 1);
  ctx.textAlign = "center";
  for (const xv of xt.ticks) ctx.fillText(xv.toFixed(xt.decimals), Math.min(Math.max(X(xv), pad.l + 8), w - pad.r - 8), h - 22);
  ctx.fillText("training step", pad.l + (w - pad.l - pad.r) / 2, h - 5);  // the axes' titles
  ctx.save(); ctx.translate(12, pad.t + (h - pad.t - pad.b) / 2); ctx.rotate(-Math.PI / 2);
  ctx.fillText(opts.what || "", 0, 0); ctx.restore();
  const line = (pts, color, width, alpha) => {
    ctx.globalAlpha = alpha; ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    if (pts.length === 1) { ctx.arc(X(pts[0][0]), Y(pts[0][1]), 2.5, 0, 2 * Math.PI); }
    ctx.stroke(); ctx.globalAlpha = 1;
  };
  if (opts.smooth && points.length > 8) {
    line(points, opts.color, 1, 0.35);
    line(smooth(points), opts.color, 2, 1);
  } else {
    line(points, opts.color, 2, 1);
  }
  ctx.textAlign = "left";
}
