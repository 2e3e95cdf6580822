// tinydiffusion studio: plain ES2020, no build step, no network beyond this server's /api/.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, es: null, job: null, runTimer: null, runs: [] };

// ---------- helpers ----------

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function fmtNum(x) {
  return Number(x).toFixed(2).replace(/\.?0+$/, "");
}

function fmtParams(p) {
  if (p == null) return "?";
  if (p >= 1e6) return (p / 1e6).toFixed(2) + " M";
  if (p >= 1e3) return (p / 1e3).toFixed(1) + " k";
  return String(p);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const SAMPLER_NAMES = { ddpm: "DDPM", ddim: "DDIM", dpmpp_2m: "DPM-Solver++ 2M", euler: "Euler" };

// ---------- tabs ----------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    const on = tab.dataset.tab === name;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", String(on));
  }
  for (const p of ["generate", "compare", "training"]) $(`panel-${p}`).hidden = p !== name;
  $("controls").classList.toggle("dim", name === "training");
  document.body.dataset.tab = name;
  if (name === "training") startRunMonitor(); else stopRunMonitor();
}

// ---------- models ----------

async function loadModels(rescan = false) {
  try {
    const models = await api("/api/models" + (rescan ? "?rescan=1" : ""));
    state.models = models;
    const select = $("model-select");
    const previous = select.value;
    select.replaceChildren();
    for (const m of models) {
      const label = m.source === "shipped" ? `${m.name} (shipped)` : m.name;
      select.append(el("option", { value: m.name, text: label }));
    }
    if (!models.length) {
      $("model-card").textContent = "No models found. Train one with `tinydiffusion train --out runs/NAME` and press ↻.";
      return;
    }
    select.value = models.some((m) => m.name === previous) ? previous : models[0].name;
    selectModel(select.value);
  } catch (err) {
    showError(err.message);
  }
}

function selectModel(name) {
  const m = state.models.find((x) => x.name === name);
  state.model = m;
  if (!m) return;
  renderModelCard(m);
  renderContext(m);
  const d = m.defaults || {};
  $("sampler").value = d.sampler || "ddpm";
  $("steps").value = d.steps || m.T || 50;
  $("steps").max = m.T || "";
  $("steps-max").textContent = m.T ? `(1–${m.T})` : "";
  $("guidance").value = d.guidance != null ? d.guidance : 1;
  updateEta();
  renderCompareSettings(true);
  document.body.dataset.model = m.name;
}

function renderModelCard(m) {
  const card = $("model-card");
  card.classList.remove("muted");
  card.replaceChildren();
  const d = m.defaults || {};
  const what = m.kind === "class"
    ? el("div", { class: "chips" }, ...m.classes.map((c) => el("span", { class: "chip", text: c })))
    : el("span", { text: m.kind === "text" ? "takes prompts" : "unconditional / vector context" });
  const rows = [
    ["context", what],
    ["image", `${m.image_size}×${m.image_size}`],
    ["parameters", fmtParams(m.parameters)],
    ["prediction", `${m.prediction || "eps"} · T = ${m.T}`],
    ["recommended", `${SAMPLER_NAMES[d.sampler] || d.sampler || "DDPM"} · ${d.steps || m.T} steps · guidance ${fmtNum(d.guidance ?? 1)}`],
  ];
  if (m.card && m.card.trained) rows.push(["trained", m.card.trained]);
  const dl = el("dl");
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", {}, v));
  card.append(dl);
  if (m.card && m.card.readme) {
    const details = el("details", {}, el("summary", { text: "model README" }), el("pre", { text: m.card.readme }));
    card.append(details);
  }
}

// ---------- context ----------

function renderContext(m) {
  $("context-class").hidden = m.kind !== "class";
  $("context-text").hidden = m.kind !== "text";
  $("context-vector").hidden = m.kind === "class" || m.kind === "text";
  const box = $("class-sliders");
  box.replaceChildren();
  if (m.kind === "class") {
    m.classes.forEach((c, i) => {
      const out = el("output", { id: `out-${c}`, text: i === 0 ? "1" : "0" });
      const input = el("input", {
        type: "range", min: "0", max: "1", step: "0.05", value: i === 0 ? "1" : "0",
        "data-class": c, "data-testid": `slider-${c}`, id: `slider-${c}`, "aria-label": c,
      });
      input.addEventListener("input", () => {
        out.textContent = fmtNum(input.value);
        $("context-none").checked = false;
        $("context-all").checked = false;
        updateContextString();
      });
      box.append(el("label", { class: "slider" }, el("span", { class: "name", text: c }), input, out));
    });
  }
  $("context-none").checked = false;
  $("context-all").checked = false;
  updateContextString();
}

// The CLI's mixture syntax: "hero=1,item=0.6"; all zero (or the toggle) = "none".
function classMixture() {
  const parts = [];
  for (const input of document.querySelectorAll("#class-sliders input")) {
    const w = Number(input.value);
    if (w > 0) parts.push(`${input.dataset.class}=${fmtNum(w)}`);
  }
  return parts.length ? parts.join(",") : "none";
}

function contextParams() {
  const m = state.model;
  if (!m) return {};
  if (m.kind === "class") {
    if ($("context-all").checked) return {};
    if ($("context-none").checked) return { context: "none" };
    return { context: classMixture() };
  }
  if (m.kind === "text") {
    const prompt = $("prompt").value.trim();
    const to = $("prompt-to").value.trim();
    const params = {};
    if (prompt) params.context = prompt;
    if (prompt && to) { params.context_to = to; params.mix = Number($("mix").value); }
    return params;
  }
  return {};
}

function updateContextString() {
  const p = contextParams();
  let text = p.context === undefined ? (state.model && state.model.kind === "class" ? "(every class)" : "(default rows)") : p.context;
  if (p.context_to) text += `  →  ${p.context_to} @ ${fmtNum(p.mix)}`;
  $("context-string").textContent = text;
}

// ---------- sampling parameters ----------

function updateEta() {
  $("eta-field").hidden = $("sampler").value !== "ddim";
}

// Raw values go to the server, which validates them like the CLI (its message is shown on error).
function samplingParams() {
  const p = { model: state.model ? state.model.name : "", ...contextParams() };
  p.sampler = $("sampler").value;
  const num = (id, key) => { const v = $(id).value; if (v !== "") p[key] = Number(v); };
  num("steps", "steps");
  num("guidance", "guidance");
  num("guidance-rescale", "guidance_rescale");
  if (p.sampler === "ddim") num("eta", "eta");
  num("seed", "seed");
  num("n", "n");
  for (const [id, key] of [["steps", "steps"], ["seed", "seed"], ["n", "n"]]) {
    if ($(id).value === "" && $(id).validity.badInput) p[key] = "invalid";
  }
  return p;
}

// ---------- live denoising ----------

function setLiveState(s, label) {
  $("live").dataset.state = s;
  $("state-label").textContent = label || s;
  $("state-label").className = `state ${s}`;
  const busy = s === "queued" || s === "running" || s === "connecting";
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

function closeStream() {
  if (state.es) { state.es.close(); state.es = null; }
}

function generate() {
  clearError();
  if (!state.model) { showError("No model selected."); return; }
  closeStream();
  const params = samplingParams();
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) query.append(k, String(v));
  const url = "/api/stream?" + query.toString();
  const live = $("live");
  live.dataset.frames = "0";
  $("result").hidden = true;
  $("generate-hint").hidden = true;
  $("progress-bar").style.width = "0%";
  for (const id of ["stat-step", "stat-t", "stat-nfe", "stat-ms"]) $(id).textContent = "–";
  state.job = null;
  setLiveState("connecting", "connecting…");
  let settled = false;
  const es = new EventSource(url);
  state.es = es;

  es.addEventListener("queued", (e) => {
    const d = JSON.parse(e.data);
    state.job = d.job;
    setLiveState("queued", d.position > 0 ? `queued (#${d.position + 1})` : "starting…");
  });

  es.addEventListener("frame", (e) => {
    const d = JSON.parse(e.data);
    state.job = d.job;
    $("live-xt").src = d.x_t;
    $("live-x0").src = d.x0;
    live.dataset.frames = String(Number(live.dataset.frames) + 1);
    $("stat-step").textContent = `${d.step}/${d.steps}`;
    $("stat-t").textContent = d.t;
    $("stat-nfe").textContent = d.nfe;
    $("stat-ms").textContent = d.elapsed_ms;
    $("progress-bar").style.width = `${(100 * d.step) / d.steps}%`;
    setLiveState("running", "denoising…");
  });

  es.addEventListener("done", (e) => {
    settled = true;
    closeStream();
    const d = JSON.parse(e.data);
    $("final-grid").src = d.grid;
    $("live-xt").src = d.grid;
    $("result-info").textContent = `${fmtNum(d.seconds)} s · ${d.nfe} network evals`;
    const dl = d.downloads || {};
    for (const kind of ["png", "npz", "gif"]) {
      const a = $(`dl-${kind}`);
      if (dl[kind]) { a.href = dl[kind]; a.hidden = false; } else { a.removeAttribute("href"); a.hidden = true; }
    }
    $("progress-bar").style.width = "100%";
    $("result").hidden = false;
    live.dataset.finalAfter = live.dataset.frames;
    setLiveState("done", `done in ${fmtNum(d.seconds)} s`);
  });

  // A server-sent "error" event carries JSON data; a connection failure is a plain Event.
  es.addEventListener("error", async (e) => {
    if (settled) return;
    settled = true;
    closeStream();
    if (e.data) {
      let msg = e.data;
      try { msg = JSON.parse(e.data).error || msg; } catch (_) { /* keep the raw text */ }
      showError(msg);
      setLiveState("error", "error");
      return;
    }
    // EventSource hides the body of a 4xx/5xx answer: ask again with fetch to read its JSON error.
    const ctrl = new AbortController();
    try {
      const res = await fetch(url, { signal: ctrl.signal, headers: { Accept: "application/json" } });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        showError(body && body.error ? body.error : `${res.status} ${res.statusText}`);
      } else {
        showError("The stream was interrupted.");
      }
    } catch (_) {
      showError("Lost the connection to the server.");
    } finally {
      ctrl.abort();
    }
    setLiveState("error", "error");
  });
}

async function cancel() {
  const job = state.job;
  closeStream();
  setLiveState("cancelled", "cancelled");
  if (job) {
    try { await api(`/api/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" }); }
    catch (err) { showError(err.message); }
  }
}

// ---------- compare ----------

function settingRow(sampler, steps) {
  const select = el("select", { "data-testid": "compare-sampler", "aria-label": "sampler" });
  for (const [v, label] of Object.entries(SAMPLER_NAMES)) select.append(el("option", { value: v, text: label }));
  select.value = sampler;
  const input = el("input", { type: "number", min: "1", step: "1", value: String(steps), "data-testid": "compare-steps", "aria-label": "steps" });
  const remove = el("button", { class: "icon", title: "Remove", text: "×" });
  const row = el("div", { class: "setting row" }, select, el("span", { class: "muted", text: "steps" }), input, remove);
  remove.addEventListener("click", () => {
    if ($("compare-settings").children.length > 2) row.remove();
    updateCompareButtons();
  });
  return row;
}

function renderCompareSettings(reset = false) {
  const box = $("compare-settings");
  if (!reset && box.children.length) return;
  const m = state.model;
  const d = (m && m.defaults) || {};
  const T = (m && m.T) || 500;
  box.replaceChildren(settingRow("ddpm", T), settingRow(d.sampler && d.sampler !== "ddpm" ? d.sampler : "ddim", d.steps && d.sampler !== "ddpm" ? d.steps : Math.min(25, T)));
  updateCompareButtons();
}

function updateCompareButtons() {
  $("compare-add").disabled = $("compare-settings").children.length >= 4;
}

async function runCompare() {
  clearError();
  const settings = [...$("compare-settings").children].map((row) => {
    const [select, , input] = row.children;
    return `${select.value}:${input.value}`;
  });
  const params = samplingParams();
  delete params.sampler; delete params.steps; delete params.eta;
  const body = { ...params, settings };
  const results = $("compare-results");
  $("compare-run").disabled = true;
  $("compare-status").textContent = "sampling…";
  results.dataset.state = "running";
  const t0 = performance.now();
  try {
    const data = await api("/api/compare", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    results.replaceChildren();
    for (const r of data.rows) {
      const [sampler, steps] = r.setting.split(":");
      results.append(el("figure", { class: "card compare-item", "data-testid": "compare-item" },
        el("h3", { text: `${SAMPLER_NAMES[sampler] || sampler} · ${steps} steps` }),
        el("div", { class: "imgbox" }, el("img", { src: r.grid, alt: r.setting })),
        el("figcaption", { class: "muted", text: `${fmtNum(r.seconds)} s · ${r.nfe} network evals` })));
    }
    results.dataset.state = "done";
    $("compare-status").textContent = `done in ${fmtNum((performance.now() - t0) / 1000)} s`;
  } catch (err) {
    results.dataset.state = "error";
    $("compare-status").textContent = "";
    showError(err.message);
  } finally {
    $("compare-run").disabled = false;
  }
}

// ---------- training monitor ----------

async function loadRuns() {
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

async function refreshRun() {
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

function startRunMonitor() {
  stopRunMonitor();
  loadRuns();
  state.runTimer = setInterval(() => { if (!document.hidden) refreshRun(); }, 3000);
}

function stopRunMonitor() {
  if (state.runTimer) clearInterval(state.runTimer);
  state.runTimer = null;
}

// A line chart on a <canvas>: axes, 4 ticks each way, the raw series and (optionally) a smoothed one.
function drawChart(canvas, xs, ys, opts = {}) {
  const points = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
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
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, yy = Math.round(Y(yv)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(Number(yv.toPrecision(3)).toString(), pad.l - 6, yy + 4);
    const xv = x0 + ((x1 - x0) * i) / 4;
    ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
    ctx.fillText(String(Math.round(xv)), X(xv), h - 6);
  }
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

// ---------- wiring ----------

function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  $("model-select").addEventListener("change", (e) => selectModel(e.target.value));
  $("rescan").addEventListener("click", () => loadModels(true));
  $("context-none").addEventListener("change", (e) => {
    if (e.target.checked) $("context-all").checked = false;
    updateContextString();
  });
  $("context-all").addEventListener("change", (e) => {
    if (e.target.checked) $("context-none").checked = false;
    updateContextString();
  });
  for (const id of ["prompt", "prompt-to"]) $(id).addEventListener("input", updateContextString);
  $("mix").addEventListener("input", () => { $("mix-out").textContent = Number($("mix").value).toFixed(2); updateContextString(); });
  $("sampler").addEventListener("change", updateEta);
  $("dice").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 1e6)); });
  $("generate").addEventListener("click", generate);
  $("cancel").addEventListener("click", cancel);
  $("error-close").addEventListener("click", clearError);
  $("compare-add").addEventListener("click", () => {
    const box = $("compare-settings");
    if (box.children.length < 4) box.append(settingRow("dpmpp_2m", 10));
    updateCompareButtons();
  });
  $("compare-run").addEventListener("click", runCompare);
  $("run-select").addEventListener("change", refreshRun);
  $("run-refresh").addEventListener("click", loadRuns);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generate();
  });
  window.addEventListener("beforeunload", closeStream);
  setLiveState("idle", "ready");
  loadModels();
}

init();
