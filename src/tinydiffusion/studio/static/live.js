// Live denoising: the EventSource stream of frames, the final grid and its downloads, cancel and replay.
import { $, state, el, api, showError, clearError, fmtNum } from "./util.js";
import { samplingParams } from "./controls.js";

export function setLiveState(s, label) {
  $("live").dataset.state = s;
  $("state-label").textContent = label || s;
  $("state-label").className = `state ${s}`;
  const busy = s === "queued" || s === "running" || s === "connecting";
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

// A new model: stop any running job and clear the stage.
export function resetLive() {
  if (state.es) cancel();
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
  if (state.es) { state.es.close(); state.es = null; }
}

export function generate() {
  clearError();
  if (!state.model) { showError("No model selected."); return; }
  closeStream();
  const params = samplingParams();
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) query.append(k, String(v));
  const url = "/api/stream?" + query.toString();
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
    if (!state.frames.length) fitLayout(d.x_t);
    state.frames.push(d);
    $("live-xt").src = d.x_t;
    $("live-x0").src = d.x0;
    live.dataset.frames = String(Number(live.dataset.frames) + 1);
    $("stat-step").textContent = `${d.step}/${d.steps}`;
    $("stat-t").textContent = d.t;
    $("stat-nfe").textContent = d.nfe;
    $("stat-ms").textContent = Number(d.elapsed_ms).toLocaleString("en-US");
    $("progress-bar").style.width = `${(100 * d.step) / d.steps}%`;
    setLiveState("running", "denoising…");
  });

  es.addEventListener("done", (e) => {
    settled = true;
    closeStream();
    showResult(JSON.parse(e.data));
  });

  // A server-sent "error" event carries JSON data; a connection failure is a plain Event.
  es.addEventListener("error", async (e) => {
    if (settled) return;
    settled = true;
    closeStream();
    if (e.data) {
      let msg = e.data, info = {};
      try { info = JSON.parse(e.data); msg = info.error || msg; } catch (_) { /* keep the raw text */ }
      if (info.cancelled) { setLiveState("cancelled", "cancelled"); live.classList.add("stale"); return; }
      if (info.retry_after) msg += ` (the server is busy: try again in ${info.retry_after} s)`;
      showError(msg);
      setLiveState("error", "error");
      live.classList.add("stale");
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
    live.classList.add("stale");
  });
}

// A finished job's grid (the stream's "done" event, or an instant preview's answer): the result with its row
// labels, timing and downloads, in place of the live view.
export function showResult(d, note = "") {
  state.lastDone = d;  // the Edit tab takes a sample from it
  const grid = $("final-grid");
  grid.src = d.grid;
  grid.dataset.job = d.job || "";
  grid.dataset.rows = (d.rows || []).join(" | ");
  const labels = $("row-labels");
  labels.replaceChildren();
  if (Array.isArray(d.rows) && d.rows.length > 1) {
    labels.style.gridTemplateRows = `repeat(${d.rows.length}, 1fr)`;
    for (const name of d.rows) labels.append(el("span", { text: name, title: name }));
  }
  $("result-info").textContent = `${fmtNum(d.seconds)} s · ${d.nfe} network evals${note ? ` · ${note}` : ""}`;
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
  setLiveState("done", `${note || "done"} in ${fmtNum(d.seconds)} s`);
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
    const d = state.frames[i];
    $("live-xt").src = d.x_t;
    $("live-x0").src = d.x0;
    $("stat-step").textContent = `${d.step}/${d.steps}`;
    $("stat-t").textContent = d.t;
    $("stat-nfe").textContent = d.nfe;
    $("stat-ms").textContent = Number(d.elapsed_ms).toLocaleString("en-US");
    $("progress-bar").style.width = `${(100 * d.step) / d.steps}%`;
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
  if (job) {
    try { await api(`/api/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" }); }
    catch (err) { showError(err.message); }
  }
}
