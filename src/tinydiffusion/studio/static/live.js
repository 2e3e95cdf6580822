// Live denoising: POST /api/stream read as Server-Sent Events (queued, loading, frame…, done | error), the final
// grid and its downloads, cancel and replay. Generate stays focusable while it runs (aria-disabled, not
// disabled), so keyboard focus is still on it when the result comes; progress is announced to screen readers.
import { $, state, el, showError, clearError, fmtNum, plural, announce, postStream, cancelJob, describeGrid,
  InputError } from "./util.js";
import { samplingParams } from "./controls.js";

const BUSY = ["queued", "running", "connecting", "loading"];

export function busy() {
  return BUSY.includes($("live").dataset.state);
}

export function setLiveState(s, label) {
  $("live").dataset.state = s;
  $("state-label").textContent = label || s;
  $("state-label").className = `state ${s}`;
  const running = BUSY.includes(s);
  $("generate").setAttribute("aria-disabled", String(running));
  $("cancel").disabled = !running;
}

// A new model: stop any running job and clear the stage.
export function resetLive() {
  if (state.ctrl) cancel();
  stopReplay();
  state.frames = [];
  const live = $("live");
  live.hidden = false;
  live.classList.remove("stale", "stacked");
  live.dataset.frames = "0";
  for (const id of ["live-xt", "live-x0", "final-grid"]) $(id).removeAttribute("src");
  for (const id of ["stat-step", "stat-t", "stat-nfe", "stat-ms"]) $(id).textContent = "–";
  $("progress-bar").style.width = "0%";
  $("result").hidden = true;
  $("generate-hint").hidden = false;
  $("compare-results").replaceChildren();
  clearError();
  setLiveState("idle", "ready");
}

export function closeStream() {
  if (state.ctrl) { state.ctrl.abort(); state.ctrl = null; }  // the server cancels the job of a closed stream
}

export async function generate() {
  clearError();
  if (!state.model) { showError("No model selected."); return; }
  if (busy()) return;
  let params;
  try { params = samplingParams(); } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showError(err.message, err.field);
    return;
  }
  closeStream();
  const live = $("live");
  live.dataset.frames = "0";
  stopReplay();
  state.frames = [];
  live.hidden = false;
  live.classList.remove("stale");
  $("result").hidden = true;
  $("generate-hint").hidden = true;
  $("progress-bar").style.width = "0%";
  for (const id of ["stat-step", "stat-t", "stat-nfe", "stat-ms"]) $(id).textContent = "–";
  state.job = null;
  setLiveState("connecting", "connecting…");
  announce("Generating…");
  if (window.matchMedia("(max-width: 900px)").matches) $("stats").scrollIntoView({ block: "start", behavior: "smooth" });
  const ctrl = new AbortController();
  state.ctrl = ctrl;
  const t0 = performance.now();
  try {
    await postStream("/api/stream", params, (event, d) => onEvent(event, d, t0), ctrl.signal);
  } catch (err) {
    if (ctrl.signal.aborted) return;
    showError(err.message);
    setLiveState("error", "error");
    announce(`Error: ${err.message}`);
    live.classList.add("stale");
  } finally {
    if (state.ctrl === ctrl) state.ctrl = null;
  }
}

// One event of the stream; true when it was the last.
function onEvent(event, d, t0) {
  const live = $("live");
  if (d.job) state.job = d.job;
  if (event === "queued") {
    setLiveState("queued", d.position > 0 ? `queued (#${d.position + 1})` : "starting…");
    if (d.position > 0) announce(`Queued: ${d.position} job${d.position === 1 ? "" : "s"} ahead.`);
  } else if (event === "loading") {
    const what = d.what === "text encoder" ? "the text encoder (first prompt: a few seconds)"
      : `the ${d.what === "guide" ? "guide" : "model"} ${d.model || ""}`;
    setLiveState("loading", `loading ${what}…`);
    announce(`Loading ${what}.`);
  } else if (event === "frame") {
    if (!state.frames.length) fitLayout(d.x_t);
    state.frames.push(d);
    showFrame(d);
    live.dataset.frames = String(Number(live.dataset.frames) + 1);
    if (live.dataset.state !== "running") announce(`Denoising ${plural(d.steps, "step")}.`);
    setLiveState("running", "denoising…");
  } else if (event === "done") {
    showResult(d, "", (performance.now() - t0) / 1000);
    return true;
  } else if (event === "error") {
    live.classList.add("stale");
    if (d.cancelled) { setLiveState("cancelled", "cancelled"); announce("Cancelled."); return true; }
    let msg = d.error || "error";
    if (d.retry_after) msg += ` (the server is busy: try again in ${d.retry_after} s)`;
    showError(msg);
    setLiveState("error", "error");
    announce(`Error: ${msg}`);
    return true;
  }
  return false;
}

function showFrame(d) {
  $("live-xt").src = d.x_t;
  $("live-x0").src = d.x0;
  $("live-xt").alt = `the noisy image x_t after step ${d.step} of ${d.steps}`;
  $("live-x0").alt = `the network's guess of the clean image at step ${d.step} of ${d.steps}`;
  $("stat-step").textContent = `${d.step}/${d.steps}`;
  $("stat-t").textContent = d.t;
  $("stat-nfe").textContent = d.nfe;
  $("stat-ms").textContent = Number(d.elapsed_ms).toLocaleString("en-US");
  $("progress-bar").style.width = `${(100 * d.step) / d.steps}%`;
}

// A finished job's grid (the stream's "done" event, or an instant preview's answer): the result with its row
// labels, timing and downloads, in place of the live view. `wall`: seconds the user waited (a model load too).
export function showResult(d, note = "", wall = null) {
  state.lastDone = d;  // the Edit tab takes a sample from it
  const grid = $("final-grid");
  grid.src = d.grid;
  grid.alt = `Result: ${describeGrid(d)}. Click an image to edit it.`;
  grid.dataset.job = d.job || "";
  grid.dataset.rows = (d.rows || []).join(" | ");
  const labels = $("row-labels");
  labels.replaceChildren();
  $("result").classList.toggle("labelled", Array.isArray(d.rows) && d.rows.length > 1);
  if (Array.isArray(d.rows) && d.rows.length > 1) {
    labels.style.gridTemplateRows = `repeat(${d.rows.length}, 1fr)`;
    for (const name of d.rows) labels.append(el("span", { text: name, title: name }));
  }
  const waited = wall != null && wall > d.seconds + 0.5 ? ` (${fmtNum(wall)} s with loading)` : "";
  const snapped = d.snap && Array.isArray(d.snapped_to) ? [...new Set(d.snapped_to.filter(Boolean))] : [];
  if (snapped.length) note = [note, `snapped to ${snapped.map((c) => `“${c}”`).join(", ")}`].filter(Boolean).join(" · ");
  $("result-info").textContent = `${fmtNum(d.seconds)} s · ${plural(d.steps, "step")} · ${d.nfe} network evals${note ? ` · ${note}` : ""}`;
  $("replay").hidden = state.frames.length < 2;
  const dl = d.downloads || {};
  for (const kind of ["png", "npz", "gif"]) {
    const a = $(`dl-${kind}`);
    if (dl[kind]) { a.href = dl[kind]; a.hidden = false; } else { a.removeAttribute("href"); a.hidden = true; }
  }
  $("progress-bar").style.width = "100%";
  $("result").hidden = false;
  $("result").classList.remove("updating");
  $("generate-hint").hidden = true;
  const live = $("live");
  live.hidden = true;
  live.classList.remove("stale");
  live.dataset.finalAfter = live.dataset.frames;
  $("stat-t").textContent = "–";  // no timestep after the last one
  setLiveState("done", `${note || "done"} in ${fmtNum(wall != null ? wall : d.seconds)} s`);
  if (!note) announce(`Done in ${fmtNum(d.seconds)} s${waited}: ${describeGrid(d)}.`);
}

// Side by side for squarish grids, one above the other for wide ones (a single row of images).
function fitLayout(dataUrl) {
  const probe = new Image();
  probe.onload = () => $("live").classList.toggle("stacked", probe.naturalWidth > 1.8 * probe.naturalHeight);
  probe.src = dataUrl;
}

// Play the stored frames again in the live view, then return to the result.
export function replay() {
  if (state.frames.length < 2) return;
  stopReplay();
  const live = $("live");
  live.hidden = false;
  $("result").hidden = true;
  let i = 0;
  state.replay = setInterval(() => {
    showFrame(state.frames[i]);
    i += 1;
    if (i >= state.frames.length) {
      stopReplay();
      setTimeout(() => { if (!state.replay && $("live").dataset.state === "done") { live.hidden = true; $("result").hidden = false; } }, 600);
    }
  }, Math.max(30, Math.min(150, 3000 / state.frames.length)));
}

export function stopReplay() {
  if (state.replay) clearInterval(state.replay);
  state.replay = null;
}

export async function cancel() {
  const job = state.job;
  closeStream();
  setLiveState("cancelled", "cancelled");
  $("live").classList.add("stale");
  announce("Cancelled.");
  if (job) {
    try { await cancelJob(job); } catch (err) { showError(err.message); }
  }
}
