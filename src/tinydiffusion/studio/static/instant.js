// Instant preview, for distilled students (a model card with `distilled`): every change of the context (a class
// slider, a prompt, the toggles) or of the seed, images or steps samples again on its own, after a short pause
// (debounced), with POST /api/sample. One request at a time: a newer change aborts the older request (the
// server cancels its job when the client goes away), and an answer that is no longer the newest is dropped, so
// a stale picture never replaces a newer one. Ordinary models keep the Generate button only.
import { $, state, api, showError, clearError } from "./util.js";
import { samplingParams } from "./controls.js";
import { closeStream, setLiveState, showResult, stopReplay } from "./live.js";

export const DEBOUNCE_MS = 200;
const preview = { timer: null, ctrl: null, seq: 0, missed: false };

function student() {
  const m = state.model;
  return !!(m && m.distilled && m.available !== false && m.kind);
}

// On for a usable student while the Generate tab shows (the sliders also steer Edit and Compare).
export function instantOn() {
  return student() && (document.body.dataset.tab || "generate") === "generate";
}

// A change: (re)start the pause; the preview runs once the controls are still for DEBOUNCE_MS. A change made
// on another tab is remembered, and previewed on coming back (resumePreview).
export function schedulePreview() {
  if (!instantOn()) { preview.missed = student(); return; }
  preview.missed = false;
  clearTimeout(preview.timer);
  preview.timer = setTimeout(runPreview, DEBOUNCE_MS);
}

// Leaving the Generate tab: stop, remembering a change not shown yet; coming back: show it.
export function pausePreview() {
  const pending = preview.timer !== null || preview.ctrl !== null;
  stopPreview();
  if (pending) preview.missed = true;
}

export function resumePreview() {
  if (preview.missed) schedulePreview();
}

// Drop the pending change and the request in flight (a new model, the Generate button, leaving the tab).
export function stopPreview() {
  clearTimeout(preview.timer);
  preview.timer = null;
  preview.seq += 1;  // whatever answer is still on its way is stale now
  if (preview.ctrl) preview.ctrl.abort();
  preview.ctrl = null;
  $("result").classList.remove("updating");
}

async function runPreview() {
  preview.timer = null;
  if (!instantOn()) return;
  stopPreview();  // a newer change supersedes the request in flight
  if (state.es) closeStream();  // … and a Generate stream still running (closing it cancels its job)
  const seq = preview.seq;
  const ctrl = new AbortController();
  preview.ctrl = ctrl;
  stopReplay();
  state.frames = [];
  $("result").classList.add("updating");
  setLiveState("preview", "instant preview…");
  try {
    const d = await api("/api/sample", {
      method: "POST", signal: ctrl.signal,
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(samplingParams()),
    });
    if (seq !== preview.seq) return;  // a newer change was made meanwhile: its answer is the one to show
    clearError();
    showResult(d, "instant preview");
    $("stat-step").textContent = `${d.steps}/${d.steps}`;
    $("stat-t").textContent = "–";
    $("stat-nfe").textContent = d.nfe;
    $("stat-ms").textContent = Math.round(1000 * d.seconds).toLocaleString("en-US");
  } catch (err) {
    if (seq !== preview.seq || err.name === "AbortError") return;
    $("result").classList.remove("updating");
    showError(err.message);
    setLiveState("error", "error");
  } finally {
    if (preview.ctrl === ctrl) preview.ctrl = null;
  }
}
