// Instant preview, for distilled students (a model card with `distilled`): every change of the context (a class
// slider, a prompt, the toggles) or of the seed, images or steps samples again on its own with POST /api/sample,
// also while a slider is still being dragged. Throttled, not only debounced: a change starts a short wait
// (THROTTLE_MS) that further changes do not restart, then one request with the controls as they are then; while
// it is in flight further changes are remembered, and its answer is followed by one more request (at most one
// every THROTTLE_MS). Answers arrive in the order asked, so a stale picture never replaces a newer one; a new
// model, Generate or another tab drops the request in flight (the server cancels its job when the client goes
// away). Ordinary models keep the Generate button only.
import { $, state, postJSON, showError, clearError, InputError } from "./util.js";
import { samplingParams } from "./controls.js";
import { closeStream, setLiveState, showResult, stopReplay } from "./live.js";

export const THROTTLE_MS = 150;
const preview = { timer: null, ctrl: null, seq: 0, missed: false, dirty: false, started: 0 };

function student() {
  const m = state.model;
  return !!(m && m.distilled && m.available !== false && m.kind);
}

// On for a usable student while the Generate tab shows (the sliders also steer Edit and Compare).
export function instantOn() {
  return student() && (document.body.dataset.tab || "generate") === "generate";
}

// A change: sample again soon (see above). A change made on another tab is remembered, and previewed on coming
// back (resumePreview).
export function schedulePreview() {
  if (!instantOn()) { preview.missed = student(); return; }
  preview.missed = false;
  if (preview.ctrl) { preview.dirty = true; return; }
  if (preview.timer === null) preview.timer = setTimeout(runPreview, THROTTLE_MS);
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
  preview.dirty = false;
  preview.seq += 1;  // whatever answer is still on its way is stale now
  if (preview.ctrl) preview.ctrl.abort();
  preview.ctrl = null;
  $("result").classList.remove("updating");
}

async function runPreview() {
  preview.timer = null;
  if (!instantOn()) return;
  if (preview.ctrl) { preview.dirty = true; return; }
  if (state.ctrl) closeStream();  // a Generate stream still running (closing it cancels its job)
  let params;
  try { params = samplingParams(); } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showError(err.message, err.field);
    return;
  }
  const seq = preview.seq;
  const ctrl = new AbortController();
  preview.ctrl = ctrl;
  preview.dirty = false;
  preview.started = performance.now();
  stopReplay();
  state.frames = [];
  $("result").classList.add("updating");
  setLiveState("preview", "instant preview…");
  try {
    const d = await postJSON("/api/sample", params, { signal: ctrl.signal });
    if (seq !== preview.seq) return;  // dropped meanwhile (a new model, Generate, another tab)
    clearError();
    showResult(d, "instant preview");
    $("stat-step").textContent = `${d.steps}/${d.steps}`;
    $("stat-nfe").textContent = d.nfe;
    $("stat-ms").textContent = Math.round(1000 * d.seconds).toLocaleString("en-US");
  } catch (err) {
    if (seq !== preview.seq || err.name === "AbortError") return;
    $("result").classList.remove("updating");
    showError(err.message);
    setLiveState("error", "error");
  } finally {
    if (preview.ctrl === ctrl) preview.ctrl = null;
    if (seq === preview.seq && preview.dirty && preview.timer === null) {  // changes made meanwhile: one more
      preview.timer = setTimeout(runPreview, Math.max(0, THROTTLE_MS - (performance.now() - preview.started)));
    }
  }
}
