// Teach: fine-tune a listed model on pictures of a new class (POST /api/teach: the pictures as data URLs, shrunk
// here first), then follow it (GET /api/teach every 2 s while it runs: its loss from the run's metrics and its newest
// sample grid) and, when it is done, show the report and put the new model in the Model list.
import { $, state, el, api, postJSON, showError, clearError, announce, plural, fmtNum, InputError } from "./util.js";
import { readNumber } from "./controls.js";
import { drawChart } from "./monitor.js";

const POLL_MS = 2000;
const SIDE = 128;  // a picture is shrunk so that its shorter side is at most this (the server centre-crops it)
const teach = { pictures: [], timer: null, limits: null, sample: null, seen: undefined, busy: false };

function runPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

// ---------- the form ----------

// The bases: the listed ordinary models that name things (classes or prompts); a student cannot be taught.
export function renderTeachBases() {
  const select = $("teach-base"), previous = select.value;
  const bases = state.models.filter((m) => m.available !== false && !m.distilled && (m.kind === "class" || m.kind === "text"));
  select.replaceChildren(...bases.map((m) => el("option", {
    value: m.name, text: `${m.name} (${m.kind === "class" ? m.classes.join(", ") : "prompts"})` })));
  const current = state.model && bases.some((m) => m.name === state.model.name) ? state.model.name : bases.length ? bases[0].name : "";
  select.value = bases.some((m) => m.name === previous) ? previous : current;
  baseChanged();
}

function baseChanged() {
  const m = state.models.find((x) => x.name === $("teach-base").value);
  const text = !!m && m.kind === "text";
  $("teach-class-field").hidden = text;
  $("teach-prompt-field").hidden = !text;
}

// A picture file as a PNG data URL no larger than it needs to be; null when the browser cannot read it.
async function shrink(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    const scale = Math.min(1, SIDE / Math.min(img.naturalWidth, img.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/png");
  } catch (err) {
    return null;
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function addFiles(files) {
  clearError();
  const max = teach.limits ? teach.limits.max_images : 100;
  let skipped = 0, over = 0;
  for (const file of files) {
    if (!/^image\/(png|jpeg)$/.test(file.type)) { skipped++; continue; }
    if (teach.pictures.length >= max) { over++; continue; }
    const url = await shrink(file);
    if (url) teach.pictures.push(url); else skipped++;
  }
  renderThumbs();
  const notes = [];
  if (skipped) notes.push(`${plural(skipped, "file")} skipped (not a PNG or JPEG picture this browser can read)`);
  if (over) notes.push(`${plural(over, "picture")} left out: at most ${max}`);
  if (notes.length) showError(notes.join("; "), "images");
}

function renderThumbs() {
  const n = teach.pictures.length, min = teach.limits ? teach.limits.min_images : 8;
  $("teach-thumbs").replaceChildren(...teach.pictures.map((src, i) => el("img", { src, alt: `picture ${i + 1}` })));
  $("teach-count").textContent = n ? `${plural(n, "picture")}${n < min ? ` (at least ${min} are needed)` : ""}` : "No pictures yet.";
}

// ---------- starting ----------

function teachBody() {
  const m = state.models.find((x) => x.name === $("teach-base").value);
  const body = { base: $("teach-base").value, images: teach.pictures };
  const minutes = readNumber("teach-minutes"), samples = readNumber("teach-report-samples");
  if (minutes !== undefined) body.minutes = minutes;
  if (samples !== undefined) body.report_samples = samples;
  const name = $("teach-class").value.trim(), prompt = $("teach-prompt").value.trim();
  if (m && m.kind === "text") { if (prompt) body.prompt = prompt; } else if (name) body.class = name;
  return body;
}

export async function startTeach() {
  if (teach.busy || $("teach-run").disabled) return;
  clearError();
  let body;
  try { body = teachBody(); } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showError(err.message, err.field);
    return;
  }
  teach.busy = true;
  $("teach-run").disabled = true;
  setState("running", "checking…");
  $("teach-report").hidden = true;
  announce("Starting the fine-tune…");
  try {
    const s = await postJSON("/api/teach", body);
    teach.seen = null;  // this one's end is news
    await show(s);
  } catch (err) {
    showError(err.message);
    setState("error", "refused");
    announce(`Error: ${err.message}`);
  } finally {
    teach.busy = false;
    await refreshTeach();
  }
}

// ---------- following it ----------

function setState(kind, label) {
  $("teach-state").className = `state ${kind}`;
  $("teach-state").textContent = label;
}

export async function refreshTeach() {
  let s;
  try { s = await api("/api/teach"); } catch (err) { return; }
  await show(s);
}

async function show(s) {
  teach.limits = s.limits;
  $("teach-disabled").hidden = s.enabled;
  $("teach-disabled").textContent = s.reason || "";
  const running = s.state === "preparing" || s.state === "training";
  $("teach-run").disabled = !s.enabled || running || teach.busy;
  const label = { preparing: "checking…", training: "training…", done: "done", error: "error" }[s.state];
  if (label && !teach.busy) setState(s.state === "done" ? "done" : s.state === "error" ? "error" : "running", label);
  if (s.run && s.state !== "refused") {
    const what = s.class ? `class “${s.class}”` : `“${s.prompt}”`;
    const took = s.state === "done" ? ` · ${plural(s.steps, "step")} in ${fmtNum(s.seconds)} s` : s.note ? ` · ${s.note}` : "";
    $("teach-info").textContent = `${what} on ${s.base} (${plural(s.pictures, "picture")}, ${fmtNum(s.minutes)} min) as ${s.run}${took}`;
    await progress(s.run);
  }
  if (running && !teach.timer) teach.timer = setInterval(() => { if (!teach.busy) refreshTeach(); }, POLL_MS);
  if (!running && teach.timer) { clearInterval(teach.timer); teach.timer = null; }
  if (!running && s.run && teach.seen !== s.run + s.state) finished(s, teach.seen !== undefined);
  if (teach.seen === undefined) teach.seen = s.run ? s.run + s.state : null;
}

// The run's loss and newest sample grid (the same files the Training tab shows).
async function progress(run) {
  let m, runs;
  try {
    [m, runs] = await Promise.all([api(`/api/runs/${runPath(run)}/metrics`), api("/api/runs")]);
  } catch (err) {
    return;  // not listed yet: its first metrics row is on its way
  }
  $("teach-progress").hidden = false;
  drawChart($("teach-chart"), m.step, m.loss, { color: "#7aa2ff", smooth: true, what: "loss" });
  const last = m.loss.length ? m.loss[m.loss.length - 1] : null;
  $("teach-loss-last").textContent = last != null ? `step ${m.step[m.step.length - 1]} · last ${Number(last).toPrecision(3)}` : "";
  const info = runs.find((r) => r.name === run);
  if (info && info.sample && teach.sample !== `${run}@${info.sample}`) {
    teach.sample = `${run}@${info.sample}`;
    $("teach-sample").src = `/api/runs/${runPath(run)}/samples/latest.png?t=${info.sample}`;
    $("teach-sample").alt = `The newest sample grid of ${run}: one row per class, the new one included`;
    $("teach-sample").hidden = false;
    $("teach-sample-none").hidden = true;
  }
}

// Done (or failed): the report, and the new model in the Model list. `news`: it ended while this page watched.
function finished(s, news) {
  teach.seen = s.run + s.state;
  if (s.state === "error") {
    if (news) { showError(`The fine-tune stopped: ${s.error}`); announce(`The fine-tune stopped: ${s.error}`); }
    return;
  }
  if (s.state !== "done") return;
  $("teach-report").hidden = false;
  $("teach-report").dataset.model = s.model;
  const lines = s.summary && s.summary.length ? s.summary : ["No report (report samples 0)."];
  $("teach-summary").replaceChildren(...lines.map((text) => el("li", { text: text.replace(/^- /, "") })));
  const img = $("teach-report-img");
  img.hidden = !s.report;
  if (s.report) img.src = `/api/teach/report.png?t=${s.finished}`;
  if (news) {
    document.dispatchEvent(new Event("modelschanged"));  // app.js rescans the Model list
    announce(`The fine-tune is done: ${s.model} is in the Model list.`);
  }
}

// ---------- wiring ----------

export function initTeach() {
  $("teach-base").addEventListener("change", baseChanged);
  $("teach-choose").addEventListener("click", () => $("teach-file").click());
  $("teach-file").addEventListener("change", async (e) => { await addFiles([...e.target.files]); e.target.value = ""; });
  $("teach-clear").addEventListener("click", () => { teach.pictures = []; renderThumbs(); });
  const drop = $("teach-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles([...e.dataTransfer.files]); });
  $("teach-run").addEventListener("click", startTeach);
  $("teach-use").addEventListener("click", () => {
    const select = $("model-select"), name = $("teach-report").dataset.model;
    if (![...select.options].some((o) => o.value === name)) return;
    select.value = name;
    select.dispatchEvent(new Event("change"));
    $("tab-generate").click();
  });
  $("teach-monitor").addEventListener("click", () => {
    state.preferRun = $("teach-report").dataset.model;
    $("tab-training").click();
  });
  renderThumbs();
  refreshTeach();
}
